"""GGUF architectures: llama.cpp's metadata and tensor layout, per architecture, as Hugging Face configs.

llama.cpp's converter (``convert_hf_to_gguf.py``) writes each supported architecture with a few
layout facts that a reader must undo; ``transformers``' GGUF loader undoes the same ones:

* ``llama`` (also Mistral, SmolLM, TinyLlama): the rows of ``attn_q`` / ``attn_k`` are permuted
  from the "rotate half" RoPE layout to llama.cpp's interleaved one (:func:`reverse_permute`).
  No other architecture here is permuted (Qwen2/3, Gemma and Phi-3 use NeoX-style RoPE).
* ``gemma``, ``gemma2``, ``gemma3``: every ``*norm.weight`` is stored as ``w + 1`` (llama.cpp
  computes ``x * g``, transformers ``x * (1 + w)``); the reader subtracts 1.
* ``phi3``: ``attn_qkv`` and ``ffn_up`` hold the fused ``qkv_proj`` / ``gate_up_proj``.

Metadata becomes a ``config.json`` dict that the family's closed-world ``config_from_hf`` parses,
so a GGUF model and its Hugging Face twin get the same config. Values llama.cpp does not store are
set as llama.cpp computes them (Gemma 2/3: ``query_pre_attn_scalar = head_dim``, except the 27B
models, ``d_model / n_heads``; Gemma 3: every sixth layer global, local RoPE base 10000; Phi-3's
sliding window is ignored, as llama.cpp and transformers do). Metadata keys of the architecture
that gaugejax does not compute are refused, naming the key.

Example:
  >>> ARCHITECTURES["gemma3"].model_type, ARCHITECTURES["llama"].permute_qk
  ('gemma3_text', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gaugejax.errors import CheckpointError
from gaugejax.io.bounds import check_config_sizes, largest_dimension

__all__ = ["Arch", "ARCHITECTURES", "hf_config", "reverse_permute"]


@dataclass(frozen=True)
class Arch:
    """One llama.cpp architecture.

    Attributes:
      model_type: the Hugging Face ``model_type`` it is read as.
      permute_qk: llama.cpp permuted the ``attn_q`` / ``attn_k`` rows (undo with :func:`reverse_permute`).
      norm_shift: added by llama.cpp to every ``*norm.weight`` (subtracted on reading).
      activation: the ``config.json`` key and value of the MLP activation llama.cpp computes.
      keys: metadata keys (after ``{arch}.``) computed on top of :data:`_COMMON`.
    """

    model_type: str
    permute_qk: bool = False
    norm_shift: float = 0.0
    activation: tuple[str, str] = ("hidden_act", "silu")
    keys: frozenset[str] = frozenset()


_GELU = ("hidden_activation", "gelu_pytorch_tanh")
_SWA = frozenset({"attention.sliding_window"})
ARCHITECTURES: dict[str, Arch] = {
    "llama": Arch("llama", permute_qk=True, keys=frozenset({"rope.scaling.type", "rope.scaling.factor"})),
    "qwen2": Arch("qwen2"),
    "qwen3": Arch("qwen3"),
    "gemma": Arch("gemma", norm_shift=1.0, activation=("hidden_act", "gelu_pytorch_tanh")),
    "gemma2": Arch("gemma2", norm_shift=1.0, activation=_GELU,
                   keys=_SWA | {"attn_logit_softcapping", "final_logit_softcapping"}),
    "gemma3": Arch("gemma3_text", norm_shift=1.0, activation=_GELU,
                   keys=_SWA | {"rope.scaling.type", "rope.scaling.factor"}),
    "phi3": Arch("phi3", keys=_SWA | {"rope.scaling.original_context_length"}),
}
"""``general.architecture`` → how llama.cpp wrote it."""

_COMMON = frozenset({
    "context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
    "attention.head_count_kv", "attention.layer_norm_rms_epsilon", "rope.freq_base", "rope.dimension_count",
    "attention.key_length", "attention.value_length", "vocab_size",
})
"""Metadata keys every architecture's config reads."""

_LAYERS_27B = {"gemma2": 46, "gemma3": 62}
"""llama.cpp scales Gemma 2/3 27B queries by ``(d_model / n_heads) ** -0.5``; it detects them by depth."""


def reverse_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undoes llama.cpp's Q/K row permutation (interleaved RoPE pairs → Hugging Face "rotate half").

    llama.cpp writes ``w.reshape(n, 2, hd/2, in).swapaxes(1, 2)``; this is its inverse, the same
    as ``transformers``' ``LlamaTensorProcessor._reverse_permute_weights``. ``n_heads`` is the
    number of heads the rows belong to (``n_kv_heads`` for ``attn_k``).

    Example:
      >>> w = np.arange(8.0).reshape(8, 1)
      >>> reverse_permute(w, 1).ravel().tolist()
      [0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 5.0, 7.0]
    """
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise CheckpointError(f"cannot undo the RoPE row permutation: {rows} rows for {n_heads} heads")
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def supported() -> str:
    """The supported architectures, comma-separated (for refusals)."""
    return ", ".join(ARCHITECTURES)


def hf_config(meta: Mapping[str, Any], tensors: Mapping[str, tuple], path: Path) -> tuple[Arch, dict[str, Any]]:
    """The architecture and the ``config.json`` dict of a GGUF file.

    Args:
      meta: metadata key → value (vocabulary arrays may be left out).
      tensors: tensor name → GGUF shape (innermost dimension first).
      path: the file, for messages.

    Raises:
      CheckpointError: an architecture not in :data:`ARCHITECTURES`, missing, mistyped or unknown
        metadata, sizes the stored tensors cannot hold (checked before anything is built),
        per-layer head counts, per-frequency RoPE factors, unsupported RoPE scaling.
    """
    name = meta.get("general.architecture")
    arch = ARCHITECTURES.get(name) if isinstance(name, str) else None
    if arch is None:
        shown = name if isinstance(name, (str, int, float, type(None))) else f"<{type(name).__name__}>"
        raise CheckpointError(f"{path}: GGUF architecture {shown!r} is not supported (supported: {supported()})")
    known = _COMMON | arch.keys
    for k in meta:
        if k.startswith(f"{name}.") and k[len(name) + 1:] not in known:
            raise CheckpointError(f"{path}: GGUF metadata key {k!r} is not supported by gaugejax's {name} reader")
    check_config_sizes(meta, n_tensors=len(tensors), max_dim=largest_dimension(tensors.values()), where=str(path),
                       prefix=f"{name}.")
    get = _Getter(meta, f"{name}.", path)
    for t in ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"):
        if t in tensors:
            raise CheckpointError(f"{path}: per-frequency RoPE factors ({t}) are not supported")
    d, n_layers = get.integer("embedding_length"), get.integer("block_count")
    n_heads = get.integer("attention.head_count")
    head_dim = get.integer("attention.key_length", d // n_heads)
    if get.integer("attention.value_length", head_dim) != head_dim:
        raise CheckpointError(f"{path}: value heads of another width than key heads are not supported")
    embd = tensors.get("token_embd.weight")
    if embd is None or len(embd) != 2:
        raise CheckpointError(f"{path}: missing tensor 'token_embd.weight'" if embd is None else
                              f"{path}: tensor 'token_embd.weight' has {len(embd)} dimensions, not 2")
    vocab = int(embd[-1])  # GGUF shape lists the innermost dimension first: [d, vocab]
    declared = get.integer("vocab_size", vocab)
    if declared != vocab:
        raise CheckpointError(f"{path}: {name}.vocab_size={declared} but token_embd has {vocab} rows")
    cfg: dict[str, Any] = {
        "model_type": arch.model_type, "vocab_size": vocab, "hidden_size": d, "num_hidden_layers": n_layers,
        "intermediate_size": get.integer("feed_forward_length"), "num_attention_heads": n_heads,
        "num_key_value_heads": get.kv_heads(n_heads),
        "rms_norm_eps": get.number("attention.layer_norm_rms_epsilon", 1e-5),
        "max_position_embeddings": get.integer("context_length", 2048), "rope_theta": get.number("rope.freq_base", 1e4),
        "tie_word_embeddings": "output.weight" not in tensors, arch.activation[0]: arch.activation[1],
    }
    if head_dim != d // n_heads or arch.model_type in ("gemma", "gemma2", "gemma3_text", "qwen3"):
        cfg["head_dim"] = head_dim
    rot = get.integer("rope.dimension_count", head_dim)
    if rot != head_dim:
        if name != "phi3":
            raise CheckpointError(f"{path}: partial rotary embeddings (rope.dimension_count={rot}, "
                                  f"head_dim={head_dim}) are not supported for {name}")
        cfg["partial_rotary_factor"] = rot / head_dim
    scaling = get.text("rope.scaling.type", "none")
    if scaling == "linear":
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": get.number("rope.scaling.factor")}
    elif scaling != "none":
        raise CheckpointError(f"{path}: rope scaling {scaling!r} is not supported (supported: linear)")
    cfg.update(_specific(name, get, head_dim, d // n_heads, n_layers))
    for key in ("bos_token_id", "eos_token_id"):
        tid = meta.get(f"tokenizer.ggml.{key}")
        if isinstance(tid, int) and not isinstance(tid, bool):
            cfg[key] = tid
    if isinstance(meta.get("general.name"), str) and meta["general.name"]:
        cfg["_name_or_path"] = meta["general.name"]
    return arch, cfg


_MISSING = object()


class _Getter:
    """Typed reads of ``{arch}.*`` metadata: a missing or mistyped value is one line naming the key."""

    def __init__(self, meta: Mapping[str, Any], prefix: str, path: Path):
        self.meta, self.prefix, self.path = meta, prefix, path

    def _raw(self, key: str, default: Any) -> Any:
        v = self.meta.get(self.prefix + key, default)
        if v is _MISSING:
            raise CheckpointError(f"{self.path}: GGUF metadata lacks {self.prefix}{key}")
        return v

    def _bad(self, key: str, v: Any, want: str) -> CheckpointError:
        shown = repr(v) if isinstance(v, (int, float, str)) else f"a {type(v).__name__}"
        return CheckpointError(f"{self.path}: GGUF metadata {self.prefix}{key} is {shown[:60]}, not {want}")

    def integer(self, key: str, default: Any = _MISSING) -> int:
        """A positive integer."""
        v = self._raw(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise self._bad(key, v, "a positive integer")
        return v

    def number(self, key: str, default: Any = _MISSING) -> float:
        """A finite number."""
        v = self._raw(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise self._bad(key, v, "a finite number")
        return float(v)

    def text(self, key: str, default: Any = _MISSING) -> str:
        """A string."""
        v = self._raw(key, default)
        if not isinstance(v, str):
            raise self._bad(key, v, "a string")
        return v

    def kv_heads(self, n_heads: int) -> int:
        """``attention.head_count_kv``: one number, or a per-layer array of one repeated number."""
        v = self._raw("attention.head_count_kv", n_heads)
        if isinstance(v, np.ndarray):
            counts = sorted(set(v.tolist()))
            if len(counts) > 1:
                raise CheckpointError(f"{self.path}: per-layer key/value head counts {counts[:8]} are not supported")
            if not counts:
                raise self._bad("attention.head_count_kv", v, "a positive integer")
            v = counts[0]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise self._bad("attention.head_count_kv", v, "a positive integer")
        return v


def _specific(name: str, get: _Getter, head_dim: int, d_head: int, n_layers: int) -> dict:
    """The config keys one architecture needs beyond the common ones (llama.cpp's own defaults)."""
    if name == "qwen2":
        return {"use_sliding_window": False}
    if name == "phi3":
        return {"sliding_window": None}  # llama.cpp disables Phi-3's sliding window; transformers ignores it
    if name in ("gemma2", "gemma3"):
        out = {"sliding_window": get.integer("attention.sliding_window", 4096),
               "query_pre_attn_scalar": d_head if n_layers == _LAYERS_27B[name] else head_dim}
        if name == "gemma2":
            out.update(attn_logit_softcapping=get.number("attn_logit_softcapping", 50.0),
                       final_logit_softcapping=get.number("final_logit_softcapping", 30.0))
        else:
            out.update(sliding_window_pattern=6, rope_local_base_freq=10000.0, attn_logit_softcapping=None,
                       final_logit_softcapping=None)
        return out
    return {}
