"""Phi-3 (fused ``qkv_proj`` and ``gate_up_proj``) against ``transformers``.

Per variant: load parity (logits and every hidden state), the gauge round trip (the gauged
checkpoint, written back with its fused tensors, reloads in transformers), ``info``'s group and
``gj.align``. Traps: the fused tensors are split along their output rows (``q | k | v`` with GQA
sizes, ``gate | up``) and gauged on their input axis only; partial rotary, a sliding window and
``longrope`` (short and long factors, attention scaling) matter.

Tolerance: :data:`family_helpers.RTOL` (1e-4 relative, float32 parity).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import gaugejax as gj  # noqa: E402
from family_helpers import (RTOL, assert_align, assert_changes_logits, assert_gauge_round_trip,  # noqa: E402
                            assert_group, assert_parity, build, tokens)
from gaugejax.group import Group  # noqa: E402
from gaugejax.spec import RESIDUAL, Axes  # noqa: E402
from family_checks import build_cases  # noqa: E402
from helpers_hf import hf_reference, load_hf_model, rel_err, run_hf  # noqa: E402

V = 89
_BASE = dict(vocab_size=V, hidden_size=42, intermediate_size=27, num_hidden_layers=2, num_attention_heads=3,
             num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
             initializer_range=0.1)
_ROT = 10  # rotated dims of a 14-wide head at partial_rotary_factor 5/7
KINDS = {
    # GQA 3/1 (q, k, v parts of qkv_proj of sizes 42, 14, 14), a sliding window of 5 < 12 tokens
    "phi3": dict(_BASE, sliding_window=5),
    # partial rotary, longrope past its original context of 8 < 12 tokens (long factors), tied head
    "phi3_longrope": dict(_BASE, tie_word_embeddings=True, max_position_embeddings=32,
                          rope_parameters={"rope_type": "longrope", "rope_theta": 500.0,
                                           "partial_rotary_factor": _ROT / 14, "original_max_position_embeddings": 8,
                                           "short_factor": [1.0 + 0.1 * i for i in range(_ROT // 2)],
                                           "long_factor": [2.0 + 0.7 * i for i in range(_ROT // 2)]}),
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """kind → (directory, tokens, reference logits, reference hidden states)."""
    return build_cases(tmp_path_factory.mktemp("phi3"), {k: ("Phi3Config", "Phi3ForCausalLM", kw) for k, kw in KINDS.items()}, V, builder=build)


@pytest.mark.parametrize("kind", list(KINDS))
def test_parity_with_transformers(ckpts, kind):
    d, toks, ref_logits, ref_hidden = ckpts[kind]
    model = gj.load_model(d)
    assert (model.config.family, model.config.model_type) == ("phi3", "phi3")
    assert_parity(model, toks, ref_logits, ref_hidden)


@pytest.mark.parametrize("kind", list(KINDS))
def test_gauged_checkpoint_reloads_in_transformers(ckpts, tmp_path, kind):
    d, toks, ref_logits, ref_hidden = ckpts[kind]
    assert_gauge_round_trip(d, toks, ref_logits, ref_hidden, tmp_path)
    from safetensors.numpy import load_file

    assert "model.layers.0.self_attn.qkv_proj.weight" in load_file(tmp_path / "gauged" / "model.safetensors")


def test_group_info_and_align(ckpts):
    d = ckpts["phi3"][0]
    assert_group(d, Group.B_D)
    assert_align(gj.load_model(d))


def test_fused_tensors_split_on_output_rows(ckpts, tmp_path):
    from gaugejax.models.family import family_module

    d = ckpts["phi3"][0]
    model = gj.load_model(d)
    c, fam = model.config, family_module(model.config)
    qkv = next(t for t in fam.hf_tensors(c) if t.name.endswith("layers.1.self_attn.qkv_proj.weight"))
    gate_up = next(t for t in fam.hf_tensors(c) if t.name.endswith("layers.0.mlp.gate_up_proj.weight"))
    assert qkv.parts == (("q", 42), ("k", 14), ("v", 14)) and qkv.fuse_axis == 0
    assert gate_up.parts == (("gate", 27), ("up", 27)) and gate_up.fuse_axis == 0
    assert fam.hf_axes(c)[qkv.name] == Axes(None, RESIDUAL)  # gauged on the input axis only
    from safetensors.numpy import load_file

    theirs = load_file(d / "model.safetensors")
    fused = theirs["model.layers.1.self_attn.qkv_proj.weight"]
    np.testing.assert_array_equal(np.asarray(model.params["layers"]["k"][1]), fused[42:56])
    ours = load_file(gj.save_model(model, tmp_path / "m") / "model.safetensors")
    assert set(ours) == set(theirs)
    for name, arr in theirs.items():  # written back fused, bit for bit
        np.testing.assert_array_equal(ours[name], arr, err_msg=name)


@pytest.mark.parametrize("kind,change", [("phi3", dict(sliding_window=None)), ("phi3_longrope", dict(rope_scaling=None))])
def test_features_matter(ckpts, kind, change):
    d, toks, ref_logits, _ = ckpts[kind]
    assert_changes_logits(gj.load_model(d), toks, ref_logits, **change)


def test_longrope_short_factors_within_original_context(ckpts):
    """8 tokens fit the original context: transformers and gaugejax both use the short factors."""
    d, *_ = ckpts["phi3_longrope"]
    toks = tokens(V, seq=8, seed=1)
    ref_logits, ref_hidden = hf_reference(d, toks)
    assert_parity(gj.load_model(d), toks, ref_logits, ref_hidden)


def test_saved_config_reloads_in_transformers(ckpts, tmp_path):
    for kind in KINDS:
        d, toks, ref_logits, _ = ckpts[kind]
        out = gj.save_model(gj.load_model(d), tmp_path / kind)
        assert rel_err(run_hf(load_hf_model(out), toks)[0], ref_logits) < RTOL


@pytest.mark.parametrize("change,key", [
    (dict(rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}), "yarn"),
    (dict(rope_parameters={"rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0], "long_factor": [1.0],
                           "original_max_position_embeddings": 8}), "short_factor"),
    (dict(num_key_value_heads=2), "num_key_value_heads"),
    (dict(mlp_bias=True), "mlp_bias"),
])
def test_config_is_closed_world(change, key):
    from gaugejax.models import config_from_hf

    cfg = dict(model_type="phi3", vocab_size=V, hidden_size=24, intermediate_size=8, num_hidden_layers=1,
               num_attention_heads=3, num_key_value_heads=1)
    assert config_from_hf(cfg).head_dim == 8
    with pytest.raises(gj.CheckpointError, match=key):
        config_from_hf({**cfg, **change})
