"""Closed-world config parsing, checked against transformers flag by flag.

For every supported model type we take transformers' own config class, give each of its flags (the
dataclass fields, plus keys it accepts from older files) a non-default value on a tiny random model,
``save_pretrained`` it, and require one of two outcomes:

* ``gj.load_model`` refuses it with a :class:`CheckpointError` naming a key whose value differs
  from the plain checkpoint's ``config.json``, or
* our logits and every hidden state equal transformers' forward within ``RTOL`` (never silently
  wrong).

Cases transformers itself cannot build or run are skipped (nothing to compare with). Tolerance: both
sides compute in float32 with different summation orders; measured parity is ~1e-6 relative, a
wrong flag shows up at 1e-3 or more (e.g. Qwen2 windows 0.3-0.9, GPT-2 scale 2e-3-0.7, dynamic
RoPE 1.7e-3), so 1e-4 relative to each tensor's scale separates them.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import gaugejax as gj  # noqa: E402
from gaugejax.models import runner  # noqa: E402
from helpers_hf import randomize_norms, rel_err  # noqa: E402

RTOL = 1e-4
TOKENS = np.random.default_rng(0).integers(0, 96, (2, 10))  # 10 positions: past a window of 4, a max_pos of 8

_DEC = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64)
BASE = {  # model_type → (config class, model class, tiny kwargs)
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(_DEC, num_key_value_heads=2)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(_DEC, num_key_value_heads=2)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(_DEC, num_key_value_heads=2)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(_DEC)),
    "bert": ("BertConfig", "BertModel", dict(_DEC)),
}

ACTIVATIONS = ["relu", "relu2", "quick_gelu", "gelu_10", "gelu_python", "gelu_accurate", "mish", "tanh", "sigmoid",
               "linear", "leaky_relu", "relu6", "laplace", "xielu", "hardswish", "prelu", "sqrtsoftplus"]
SKIP = {"architectures", "transformers_version", "dtype", "return_dict", "torchscript", "_name_or_path"}
"""Fields that are not flags of the computation: names, versions, the storage dtype, and the output
container (``return_dict=False`` changes the return type, not the numbers)."""

_ROPE = [
    {"rope_type": "linear", "factor": 2.0},
    {"rope_type": "dynamic", "factor": 2.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 16},
    {"rope_type": "yarn", "factor": 2.0},
    {"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4, "original_max_position_embeddings": 8},
    {"rope_type": "default", "rope_theta": 500.0},
]
EXTRA = {  # keys tried beyond the config class's fields: (key, value, other overrides)
    "*": [("some_unknown_flag", 1, {}), ("auto_map", {"AutoModel": "x.Y"}, {}),
          ("quantization_config", {"quant_method": "bitsandbytes"}, {})],
    "llama": [("rope_parameters", {"rope_type": "dynamic", "factor": 2.0}, {"max_position_embeddings": 8}),
              ("rope_parameters", {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 4},
               {"max_position_embeddings": 8}),
              ("rope_scaling", {"rope_type": "linear", "factor": 4.0}, {}),
              ("rope_parameters", {"rope_type": "default", "partial_rotary_factor": 0.5}, {})],
    "qwen2": [("use_sliding_window", True, {"sliding_window": 4, "max_window_layers": 1}),
              ("use_sliding_window", True, {"sliding_window": 4, "max_window_layers": 0}),
              ("use_sliding_window", True, {"sliding_window": 4, "max_window_layers": 2}),
              ("layer_types", ["sliding_attention", "full_attention"], {"use_sliding_window": True, "sliding_window": 4}),
              ("head_dim", 16, {})],
    "mistral": [("sliding_window", 4, {}), ("sliding_window", None, {}), ("attention_bias", True, {}),
                ("rope_parameters", {"rope_type": "dynamic", "factor": 2.0}, {"max_position_embeddings": 8})],
    "gpt2": [("scale_attn_weights", False, {}), ("scale_attn_by_inverse_layer_idx", True, {}),
             ("reorder_and_upcast_attn", True, {}), ("n_ctx", 32, {})],
    "gpt_neox": [("rope_parameters", {"rope_type": "dynamic", "factor": 2.0, "partial_rotary_factor": 0.5},
                  {"max_position_embeddings": 8}),
                 ("rope_parameters", {"rope_type": "linear", "factor": 2.0}, {}),
                 ("rotary_pct", 0.5, {}), ("rotary_emb_base", 500.0, {}), ("rope_theta", 500.0, {}),
                 ("attention_bias", False, {})],
    "bert": [("position_embedding_type", "relative_key", {}), ("is_decoder", True, {})],
}
SPECIAL = {  # values for flags whose default is None or not a simple scalar
    "head_dim": [8], "num_key_value_heads": [1, 4], "n_inner": [40], "sliding_window": [4], "pad_token_id": [3],
    "bos_token_id": [5], "eos_token_id": [5], "summary_activation": ["tanh"], "classifier_dropout": [0.3],
    "id2label": [{"0": "a", "1": "b", "2": "c"}], "label2id": [{"a": 0, "b": 1, "c": 2}],
    "summary_type": ["last"], "problem_type": ["regression"], "max_window_layers": [1],
    "layer_types": [["full_attention", "sliding_attention"]], "rope_parameters": _ROPE,
}


def _cases():
    out = []
    for mt, (cfg_cls, _, base) in BASE.items():
        cls = getattr(transformers, cfg_cls)
        flags = [f for f in dataclasses.fields(cls) if f.name not in SKIP and f.name not in base]
        for f in flags:
            acts = ACTIVATIONS if mt == "llama" else ["relu2", "quick_gelu", "laplace"]
            if f.name in ("hidden_act", "activation_function"):
                values = acts
            elif f.name in SPECIAL:
                values = SPECIAL[f.name]
            elif isinstance(f.default, bool):
                values = [not f.default]
            elif isinstance(f.default, int):
                values = [f.default + 1]
            elif isinstance(f.default, float):
                values = [2 * f.default + 1e-3]
            else:
                continue  # no meaningful non-default value to try
            out += [pytest.param(mt, f.name, v, {}, id=f"{mt}-{f.name}={v}") for v in values]
        for key, v, over in EXTRA["*"] + EXTRA.get(mt, []):
            out.append(pytest.param(mt, key, v, over, id=f"{mt}-{key}={v}-{over}"))
    return out


def _build(mt: str, overrides: dict, directory):
    """Saves a tiny random transformers model; ``None`` when transformers refuses the config."""
    cfg_cls, model_cls, base = BASE[mt]
    torch.manual_seed(0)
    try:
        cfg = getattr(transformers, cfg_cls)(**dict(base, **overrides))
        model = getattr(transformers, model_cls)(cfg).eval()
    except Exception as e:  # noqa: BLE001 - any refusal by transformers means there is nothing to compare
        return None, f"{type(e).__name__}: {e}"
    with torch.no_grad():  # O(1) attention scores: transformers' 0.02-std init makes softmax ~uniform,
        g = torch.Generator().manual_seed(1)  # which would hide attention-scaling and RoPE flags
        for prm in model.parameters():
            if prm.ndim == 2:
                prm.copy_(0.3 * torch.randn(prm.shape, generator=g))
    randomize_norms(model, 0)
    model.save_pretrained(directory, safe_serialization=True)
    return directory, None


def _reference(directory, mt):
    cfg_cls, model_cls, _ = BASE[mt]
    model = getattr(transformers, model_cls).from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(torch.as_tensor(TOKENS), output_hidden_states=True)
    main = out.last_hidden_state if mt == "bert" else out.logits
    return main.numpy(), [h.numpy() for h in out.hidden_states]


@pytest.fixture(scope="module")
def plain_configs(tmp_path_factory):
    """model_type → the ``config.json`` of the plain tiny checkpoint (to tell which keys a flag changed)."""
    out = {}
    for mt in BASE:
        d, _ = _build(mt, {}, tmp_path_factory.mktemp(mt))
        out[mt] = json.loads((d / "config.json").read_text())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mt,key,value,over", _cases())
def test_flag_is_computed_or_refused(tmp_path, plain_configs, mt, key, value, over):
    d, why = _build(mt, {**over, key: value}, tmp_path / "ckpt")
    if d is None:
        pytest.skip(f"transformers refuses it: {why[:100]}")
    try:
        ref_main, ref_hidden = _reference(d, mt)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"transformers cannot run it: {type(e).__name__}: {str(e)[:100]}")
    saved = json.loads((d / "config.json").read_text())
    changed = {k for k in set(saved) | set(plain_configs[mt]) if saved.get(k) != plain_configs[mt].get(k)}
    try:
        model = gj.load_model(d)
    except gj.CheckpointError as e:
        msg = str(e)
        assert "\n" not in msg
        assert any(k in msg for k in changed) or ("RoPE" in msg and changed & {"rope_parameters", "rope_scaling"}), \
            f"refusal names none of the changed keys {sorted(changed)}: {msg}"
        return
    hidden = np.asarray(gj.residual_stream(model, TOKENS))  # one compile per case: logits from the last entry
    main = np.asarray(runner.unembed(model.config, runner.upcast(model.params), hidden[-1]))
    assert rel_err(main, ref_main) < RTOL, f"silently wrong logits (changed keys {sorted(changed)})"
    for i, h in enumerate(ref_hidden):
        assert rel_err(hidden[i], h) < RTOL, f"hidden state {i} silently wrong (changed keys {sorted(changed)})"


@pytest.mark.parametrize("text,match", [
    ("[1, 2]", "JSON object"),
    ('{"model_type": "llama", "vocab_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, '
     '"intermediate_size": 8}', "lacks 'hidden_size'"),
    ('{"model_type": "llama", "vocab_size": 8, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 0, '
     '"intermediate_size": 8}', "'num_attention_heads'=0 must be an integer >= 1"),
    ('{"model_type": "llama", "vocab_size": 8, "hidden_size": "64", "num_hidden_layers": 1, '
     '"num_attention_heads": 2, "intermediate_size": 8}', "'hidden_size'='64' must be an integer"),
    ('{"model_type": ["llama"]}', "model_type"),
    ('{"model_type": "gpt2", "vocab_size": 8, "n_embd": 8, "n_layer": 1, "n_head": 2, "activation_function": "nope"}',
     "'activation_function'='nope' is not supported"),
])
def test_malformed_config_json_is_one_line_checkpoint_error(tmp_path, text, match):
    d = gj.save_model(gj.random_model("llama"), tmp_path / "m")
    (d / "config.json").write_text(text)
    with pytest.raises(gj.CheckpointError, match=match) as e:
        gj.load_model(d)
    assert "\n" not in str(e.value)
