"""Tiny random ``transformers`` checkpoints for tests, written with ``save_pretrained``.

Import only after ``pytest.importorskip("torch")`` and ``pytest.importorskip("transformers")``:

    >>> from helpers_hf import save_tiny, hf_reference       # doctest: +SKIP
    >>> d = save_tiny("qwen2", tmp_path / "ckpt")             # doctest: +SKIP
    >>> logits, hidden = hf_reference(d, tokens)              # doctest: +SKIP

Every norm gain and bias is randomised (``gain ~ 1 + 0.3·N(0,1)``, ``bias ~ 0.3·N(0,1)``) so
that gains are pairwise distinct (the generic case in which the RMSNorm gauge group is exactly
B_d, docs/conventions.md §2) and biases are not zero (a zero bias would hide a sign bug in its rule).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

VOCAB = 128
D = 64

# name → (transformers config class, model class, config kwargs). Sizes are tiny: 2 layers, d=64,
# so that a save/load/forward cycle takes well under a second on 2 cores.
_LLAMA = dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64)
KINDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(_LLAMA)),
    "llama_tied": ("LlamaConfig", "LlamaForCausalLM", dict(_LLAMA, tie_word_embeddings=True)),
    "llama_rope_linear": ("LlamaConfig", "LlamaForCausalLM",
                          dict(_LLAMA, rope_scaling={"rope_type": "linear", "factor": 2.0})),
    # original_max_position_embeddings=16 puts the head_dim=16 frequencies in all three llama3
    # regimes (scaled, smoothed, kept) so the test exercises each branch.
    "llama_rope_llama3": ("LlamaConfig", "LlamaForCausalLM",
                          dict(_LLAMA, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    "llama_head_dim": ("LlamaConfig", "LlamaForCausalLM", dict(_LLAMA, head_dim=8)),  # n_heads·head_dim ≠ d
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(_LLAMA, tie_word_embeddings=False)),
    "qwen2_tied": ("Qwen2Config", "Qwen2ForCausalLM", dict(_LLAMA, tie_word_embeddings=True)),
    # a window of 4 < sequence length 10 makes the band mask matter
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(_LLAMA, sliding_window=4)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             dict(vocab_size=VOCAB, n_embd=D, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)),
    "neox_parallel": ("GPTNeoXConfig", "GPTNeoXForCausalLM",
                      dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=64, rotary_pct=0.5,
                           use_parallel_residual=True)),
    "neox_sequential": ("GPTNeoXConfig", "GPTNeoXForCausalLM",
                        dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=96, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=64, rotary_pct=0.25,
                             use_parallel_residual=False, tie_word_embeddings=True)),
}
RMSNORM_KINDS = tuple(k for k in KINDS if not k.startswith(("gpt2", "neox")))


def tiny_hf_model(kind: str, seed: int = 0, **overrides: Any):
    """A tiny random ``transformers`` causal LM of ``kind`` (see :data:`KINDS`) in eval mode."""
    import torch
    import transformers

    cfg_cls, model_cls, kwargs = KINDS[kind]
    torch.manual_seed(seed)
    cfg = getattr(transformers, cfg_cls)(**dict(kwargs, **overrides))
    model = getattr(transformers, model_cls)(cfg).eval()
    randomize_norms(model, seed)
    return model


def randomize_norms(model, seed: int = 0) -> None:
    """Makes every norm gain generic and every bias non-zero, in place."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm = "norm" in name or ".ln_" in name or name.startswith("ln_") or "layernorm" in name
            if name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif is_norm and p.ndim == 1:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))


def save_tiny(kind: str, directory: str | Path, *, seed: int = 0, dtype: str | None = None, **overrides: Any) -> Path:
    """Builds a tiny model with :func:`tiny_hf_model` and ``save_pretrained``'s it to ``directory``.

    Args:
      dtype: ``"bfloat16"`` / ``"float16"`` to store the weights in that dtype (default float32).
    """
    import torch

    model = tiny_hf_model(kind, seed, **overrides)
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def load_hf_model(directory: str | Path, dtype: str = "float32"):
    """Loads a directory with ``transformers`` (the class named in its ``config.json``), in eval mode."""
    import torch
    import transformers

    arch = json.loads((Path(directory) / "config.json").read_text())["architectures"][0]
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"  # renamed in 4.56; the compat lane runs 4.4x
    return getattr(transformers, arch).from_pretrained(directory, **{key: getattr(torch, dtype)}).eval()


def run_hf(model, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (B, T, V), hidden (L+1, B, T, D))`` of a torch model, as float32 numpy arrays.

    ``hidden`` is ``output_hidden_states``: index 0 the embeddings, the last entry after the final
    norm.
    """
    import torch

    with torch.no_grad():
        out = model(torch.as_tensor(np.asarray(tokens), dtype=torch.long), output_hidden_states=True)
    logits = out.logits.float().numpy()
    hidden = np.stack([h.float().numpy() for h in out.hidden_states])
    return logits, hidden


def hf_reference(directory: str | Path, tokens: np.ndarray, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """Loads ``directory`` with ``transformers`` and runs it: see :func:`run_hf`."""
    return run_hf(load_hf_model(directory, dtype), tokens)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|``: the error relative to the reference's scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def tokens_for(vocab: int = VOCAB, batch: int = 2, seq: int = 10, seed: int = 0) -> np.ndarray:
    """Random token ids ``(batch, seq)``; ``seq=10`` exceeds Mistral's window of 4."""
    return np.random.default_rng(seed).integers(0, vocab, (batch, seq))
