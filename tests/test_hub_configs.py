"""Published Hub ``config.json`` files, shrunk to tiny sizes, against transformers.

``tests/data/hub_configs`` holds ``config.json`` files as released on the Hugging Face Hub (sources in
its ``SOURCES.md``). For each one we change **only the size fields** (hidden size, intermediate
sizes, layers, heads and key/value heads, head_dim, vocab, experts; never a flag, a scale, a RoPE
parameter or a token id), build it with transformers (every matrix ~ N(0, 0.3²), generic norms),
``save_pretrained`` it, write the published (shrunk) ``config.json`` back over the saved one
(transformers renames and drops keys on save) and require one of two outcomes:

* ``gj.load_model`` loads it and our logits and every hidden state equal transformers' forward
  within ``RTOL``, or
* it is refused with a one-line :class:`CheckpointError` listed in :data:`EXPECTED_REFUSALS`, each
  entry saying why the published value changes the forward pass.

A refusal that is not listed (a false refusal), a wrong logit or a traceback fails the test.

Tolerance: both sides compute in float32 with different summation orders; parity measures
~1e-6 relative, a wrong flag shows up at 1e-3 or more (see tests/test_config_sweep.py), so 1e-4
relative to each tensor's scale separates them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import gaugejax as gj  # noqa: E402
from gaugejax.models import MODEL_TYPES, config_from_hf, runner  # noqa: E402
from helpers_hf import randomize_norms, rel_err  # noqa: E402

RTOL = 1e-4
VOCAB = 96
TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, 10))
CONFIG_DIR = Path(__file__).parent / "data" / "hub_configs"
FILES = sorted(p.name for p in CONFIG_DIR.glob("*.json"))

EXPECTED_REFUSALS: dict[str, tuple[str, str]] = {}
"""file name → (text the refusal names, why the published value changes the forward pass)."""

NOT_FOUND = {"falcon", "granite", "opt", "smollm3"}
"""Supported model types with no published ``config.json`` found verbatim (SOURCES.md says which
copies were searched and why they were not used); their keys are covered by the family tests only."""

_HIDDEN = {"hidden_size": 64, "n_embd": 64}
_FFN = {"intermediate_size": 48, "n_inner": 48, "ffn_dim": 48, "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 40}
_LAYERS = ("num_hidden_layers", "n_layer")
_HEADS = ("num_attention_heads", "n_head")


def _keeps_head_width(cfg: dict) -> bool:
    """Whether the head must keep its published width: longrope's factor lists have one entry per
    rotated frequency, and GPT-J's ``rotary_dim`` counts rotated channels of the head (kept as
    published, so the head keeps the published rotated fraction)."""
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    return (isinstance(rope, dict) and "long_factor" in rope) or cfg.get("rotary_dim") is not None


def _head_dim(cfg: dict) -> int:
    heads = next(cfg[k] for k in _HEADS if k in cfg)
    hidden = next(cfg[k] for k in _HIDDEN if k in cfg)
    return cfg.get("head_dim") or hidden // heads


def shrink(cfg: dict) -> dict:
    """The published config with only its size fields made tiny (every other key and value kept).

    Heads become 4 (key/value heads 4, 2 or 1 as the published ratio is MHA, GQA or MQA), the head
    16 wide (its published width where longrope lists or GPT-J's ``rotary_dim`` fix it), 2 layers, vocab 96 (or just past the
    published ``pad_token_id``, which indexes the embedding), experts ``top-k + 2``.
    """
    out = dict(cfg)
    heads_key = next(k for k in _HEADS if k in cfg)
    heads, kv = cfg[heads_key], cfg.get("num_key_value_heads") or cfg[heads_key]
    head_dim = _head_dim(cfg) if _keeps_head_width(cfg) else 16
    new_heads = 2 if _keeps_head_width(cfg) else 4
    new_kv = new_heads if kv == heads else (1 if kv == 1 else new_heads // 2)
    out[heads_key] = new_heads
    if "num_key_value_heads" in cfg:
        out["num_key_value_heads"] = new_kv
    if cfg.get("head_dim") is not None:
        out["head_dim"] = head_dim
    for k in _HIDDEN:
        if k in cfg:
            out[k] = new_heads * head_dim
    for k, v in _FFN.items():
        if cfg.get(k) is not None:
            out[k] = v
    for k in _LAYERS:
        if k in cfg:
            out[k] = 2
    pad = cfg.get("pad_token_id")
    out["vocab_size"] = max(VOCAB, pad + 1) if isinstance(pad, int) else VOCAB
    top_k = cfg.get("num_experts_per_tok")
    for k in ("num_experts", "num_local_experts"):
        if k in cfg:
            out[k] = min(cfg[k], top_k + 2)
    return out


def _hf_model(cfg: dict, hf_cfg):
    if cfg["model_type"] == "bert":
        return transformers.BertModel(hf_cfg)
    return transformers.AutoModelForCausalLM.from_config(hf_cfg)


def build(cfg: dict, directory: Path):
    """Builds ``cfg`` with transformers (random weights), saves it and writes ``cfg`` back as config.json."""
    torch.manual_seed(0)
    hf_cfg = transformers.AutoConfig.for_model(**cfg)
    model = _hf_model(cfg, hf_cfg).float().eval()
    with torch.no_grad():  # O(1) attention scores, so that scaling and RoPE flags show (see test_config_sweep)
        g = torch.Generator().manual_seed(1)
        for prm in model.parameters():
            if prm.ndim == 2:
                prm.copy_(0.3 * torch.randn(prm.shape, generator=g))
    randomize_norms(model, 0)
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    return model


def reference(model, bert: bool):
    with torch.no_grad():
        out = model(torch.as_tensor(TOKENS), output_hidden_states=True)
    main = out.last_hidden_state if bert else out.logits
    return main.float().numpy(), [h.float().numpy() for h in out.hidden_states]


def test_corpus_covers_the_families():
    """At least 40 published configs with a SOURCES.md row each, covering every supported model type
    but the ones listed as not found."""
    sources = (CONFIG_DIR / "SOURCES.md").read_text()
    assert len(FILES) >= 40
    assert all(f"`{name}`" in sources for name in FILES)
    assert set(EXPECTED_REFUSALS) <= set(FILES)
    covered = {json.loads((CONFIG_DIR / name).read_text())["model_type"] for name in FILES}
    assert covered | NOT_FOUND == set(MODEL_TYPES), sorted(set(MODEL_TYPES) ^ (covered | NOT_FOUND))


@pytest.mark.parametrize("name", FILES)
def test_published_config_loads_with_parity_or_expected_refusal(tmp_path, name):
    published = json.loads((CONFIG_DIR / name).read_text())
    cfg = shrink(published)
    assert set(cfg) == set(published), "shrink() must not add or drop keys"
    model = build(cfg, tmp_path)
    ref_main, ref_hidden = reference(model, published["model_type"] == "bert")
    try:
        loaded = gj.load_model(tmp_path)
    except gj.CheckpointError as e:
        msg = str(e)
        assert "\n" not in msg
        assert name in EXPECTED_REFUSALS, f"false refusal: {msg}"
        assert EXPECTED_REFUSALS[name][0] in msg, msg
        return
    assert name not in EXPECTED_REFUSALS, f"expected a refusal ({EXPECTED_REFUSALS.get(name)}) but it loaded"
    hidden = np.asarray(gj.residual_stream(loaded, TOKENS))
    main = np.asarray(runner.unembed(loaded.config, runner.upcast(loaded.params), hidden[-1]))
    assert rel_err(main, ref_main) < RTOL, f"wrong logits: {rel_err(main, ref_main):.2e}"
    for i, h in enumerate(ref_hidden):
        assert rel_err(hidden[i], h) < RTOL, f"hidden state {i} wrong: {rel_err(hidden[i], h):.2e}"


@pytest.mark.parametrize("name,key,value", [
    ("HuggingFaceTB__SmolLM2-135M-Instruct.json", "rope_interleaved", True),
    ("Qwen__Qwen2.5-7B.json", "use_mrope", True),
    ("microsoft__Phi-4-mini-instruct.json", "attention_bias", True),
    ("microsoft__Phi-4-mini-instruct.json", "mlp_bias", True),
    ("microsoft__Phi-4-mini-instruct.json", "lm_head_bias", True),
    ("microsoft__Phi-4-mini-instruct.json", "full_attn_mod", 4),
    ("microsoft__Phi-4-mini-instruct.json", "interpolate_factor", 2),
])
def test_remote_code_key_refused_at_a_value_transformers_does_not_compute(name, key, value):
    """Keys accepted above only at the value transformers computes stay refused at any other."""
    cfg = {**json.loads((CONFIG_DIR / name).read_text()), key: value}
    with pytest.raises(gj.CheckpointError, match=key):
        config_from_hf(cfg)
