"""Llama variants against ``transformers``: ``mlp_bias``, YaRN and LongRoPE, ``partial_rotary_factor``.

Per variant: load parity (logits and every hidden state, float32), the gauge round trip (the
gauged checkpoint written by ``gj.save_model`` reloads in transformers with the same logits and
hidden states ``h[..., perm] * signs``). YaRN runs on sequences longer than its
``original_max_position_embeddings``; LongRoPE on sequences below it (short factors) and above it
(long factors), as transformers' forward picks them from the sequence length. The RoPE tables are
also compared with transformers' own ``_compute_yarn_parameters`` / ``_compute_longrope_parameters``
over a grid of their options. Traps: ``down_proj``'s bias is a signed stream vector (moving it
without its signs breaks the model); each RoPE feature changes the logits, so parity covers it.

Tolerance: :data:`family_helpers.RTOL` (1e-4 of the reference's max |value|, float32 parity; a
wrong frequency, factor regime or attention factor shows at 1e-3 or more). RoPE tables: 1e-6
relative (the same float32 formulas).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import gaugejax as gj  # noqa: E402
from family_helpers import (RTOL, assert_align, assert_changes_logits, assert_gauge_round_trip,  # noqa: E402
                            assert_group, assert_parity, build, tokens)
from gaugejax.group import Group  # noqa: E402
from gaugejax.models import layers as L  # noqa: E402
from helpers_hf import hf_reference, rel_err  # noqa: E402

V = 89
_BASE = dict(vocab_size=V, hidden_size=42, intermediate_size=27, num_hidden_layers=2, num_attention_heads=3,
             num_key_value_heads=1, max_position_embeddings=64, initializer_range=0.1)  # head_dim 14, GQA 3/1
_HALF = 7  # RoPE frequencies of a 14-wide head
_SHORT = [1.0 + 0.15 * i for i in range(_HALF)]
_LONG = [1.5 + 0.9 * i for i in range(_HALF)]
# (config class, model class, kwargs, sequence lengths tested)
KINDS = {
    # q/k/v/o and gate/up/down biases
    "mlp_bias": ("LlamaConfig", "LlamaForCausalLM", dict(_BASE, attention_bias=True, mlp_bias=True), (12,)),
    # YaRN defaults (beta 32/1, truncated ramp, attention factor 0.1 ln 4 + 1) past its original 16 tokens
    "yarn": ("LlamaConfig", "LlamaForCausalLM",
             dict(_BASE, max_position_embeddings=64, rope_parameters={
                 "rope_type": "yarn", "rope_theta": 100.0, "factor": 4.0, "original_max_position_embeddings": 16}),
             (20,)),
    # YaRN options: untruncated ramp, beta 4/1.5, mscale ratio; a tied head
    "yarn_options": ("LlamaConfig", "LlamaForCausalLM",
                     dict(_BASE, tie_word_embeddings=True, rope_parameters={
                         "rope_type": "yarn", "rope_theta": 100.0, "factor": 3.0, "original_max_position_embeddings": 16,
                         "beta_fast": 4.0, "beta_slow": 1.5, "truncate": False, "mscale": 1.0,
                         "mscale_all_dim": 0.4}),
                     (20,)),
    # LongRoPE, factor from max / original positions (64 / 16): short factors up to 16 tokens, long past
    "longrope": ("LlamaConfig", "LlamaForCausalLM",
                 dict(_BASE, rope_parameters={"rope_type": "longrope", "rope_theta": 100.0,
                                              "original_max_position_embeddings": 16, "short_factor": _SHORT,
                                              "long_factor": _LONG}),
                 (16, 20)),
    # Qwen2 (q/k/v biases) with YaRN, as long-context Qwen2.5 checkpoints ship
    "qwen2_yarn": ("Qwen2Config", "Qwen2ForCausalLM",
                   dict(_BASE, rope_parameters={"rope_type": "yarn", "rope_theta": 100.0, "factor": 2.0,
                                                "original_max_position_embeddings": 16, "attention_factor": 1.3}),
                   (20,)),
    # transformers' Llama ignores partial_rotary_factor for plain RoPE: the whole head rotates
    "partial_default": ("LlamaConfig", "LlamaForCausalLM",
                        dict(_BASE, rope_parameters={"rope_type": "default", "rope_theta": 100.0,
                                                     "partial_rotary_factor": 0.5}), (12,)),
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """kind → (directory, {seq: (tokens, reference logits, reference hidden states)})."""
    root = tmp_path_factory.mktemp("llama_variants")
    out = {}
    for kind, (cfg_cls, model_cls, kw, seqs) in KINDS.items():
        d = build(cfg_cls, model_cls, kw, root / kind)
        refs = {}
        for t in seqs:
            toks = tokens(V, seq=t, seed=t)
            refs[t] = (toks, *hf_reference(d, toks))
        out[kind] = (d, refs)
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_parity_with_transformers(ckpts, kind):
    d, refs = ckpts[kind]
    model = gj.load_model(d)
    assert model.config.family == "llama"
    for toks, ref_logits, ref_hidden in refs.values():
        assert_parity(model, toks, ref_logits, ref_hidden)


@pytest.mark.parametrize("kind", ["mlp_bias", "yarn", "longrope", "qwen2_yarn"])
def test_gauged_checkpoint_reloads_in_transformers(ckpts, tmp_path, kind):
    d, refs = ckpts[kind]
    toks, ref_logits, ref_hidden = refs[max(refs)]
    assert_gauge_round_trip(d, toks, ref_logits, ref_hidden, tmp_path)
    saved = json.loads((tmp_path / "gauged" / "config.json").read_text())
    theirs = json.loads((d / "config.json").read_text())
    assert saved["rope_parameters"] == theirs["rope_parameters"]
    assert saved.get("mlp_bias") == theirs.get("mlp_bias")


def test_mlp_bias_roles_group_and_align(ckpts):
    d, refs = ckpts["mlp_bias"]
    model = gj.load_model(d)
    spec = gj.gauge_spec(model)["layers"]
    assert str(spec["gate_bias"]) == str(spec["up_bias"]) == "Axes(None, None)"  # MLP hidden space
    assert str(spec["down_bias"]) == str(spec["o_bias"]) == "Axes(None, residual)"  # signed
    assert_group(d, Group.B_D)
    assert_align(model)


def test_down_bias_needs_its_signs(ckpts):
    """Trap: moving ``down_proj.bias`` by the permutation alone (no signs) breaks the model."""
    d, refs = ckpts["mlp_bias"]
    toks, ref_logits, _ = refs[12]
    model = gj.load_model(d)
    g = gj.SignedPermutation.random(3, model.config.d_model)
    moved = gj.apply_gauge(model, g)
    assert rel_err(np.asarray(gj.forward(moved, toks)), ref_logits) < RTOL
    unsigned = np.asarray(model.params["layers"]["down_bias"])[..., g.perm]
    params = {**moved.params, "layers": {**moved.params["layers"], "down_bias": unsigned}}
    assert rel_err(np.asarray(gj.forward(gj.Model(model.config, params), toks)), ref_logits) > 1e-3


@pytest.mark.parametrize("kind", ["yarn", "yarn_options", "longrope", "qwen2_yarn"])
def test_rope_scaling_matters(ckpts, kind):
    d, refs = ckpts[kind]
    toks, ref_logits, _ = refs[max(refs)]
    assert_changes_logits(gj.load_model(d), toks, ref_logits, rope_scaling=None)


def _with_rope(model, **changes):
    s = {**model.config.rope_scaling_dict, **changes}
    return gj.Model(model.config.replace(rope_scaling=json.dumps(s, sort_keys=True)), model.params)


def test_longrope_factor_regimes(ckpts):
    """Up to 16 tokens only the short factors count, past 16 only the long ones; the attention
    factor sqrt(1 + ln 4 / ln 16) scales cos/sin in both regimes."""
    d, refs = ckpts["longrope"]
    model = gj.load_model(d)
    for t, (toks, ref_logits, _) in refs.items():
        swapped_long = _with_rope(model, long_factor=[9.0] * _HALF)
        swapped_short = _with_rope(model, short_factor=[9.0] * _HALF)
        err_long = rel_err(np.asarray(gj.forward(swapped_long, toks)), ref_logits)
        err_short = rel_err(np.asarray(gj.forward(swapped_short, toks)), ref_logits)
        if t <= 16:
            assert err_long < RTOL < 1e-3 < err_short, (t, err_long, err_short)
        else:
            assert err_short < RTOL < 1e-3 < err_long, (t, err_long, err_short)
        assert rel_err(np.asarray(gj.forward(_with_rope(model, attention_factor=1.0), toks)), ref_logits) > 1e-3


def test_yarn_attention_factor_matters(ckpts):
    d, refs = ckpts["yarn"]
    toks, ref_logits, _ = refs[20]
    model = gj.load_model(d)
    assert rel_err(np.asarray(gj.forward(_with_rope(model, attention_factor=1.0), toks)), ref_logits) > 1e-3


# ----------------------------------------------------------------------- RoPE tables vs transformers

def _hf_rope(kind_params: dict, seq_len: int | None = None, head_dim: int = 14, max_pos: int = 64):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = transformers.LlamaConfig(hidden_size=42, num_attention_heads=3, head_dim=head_dim,
                                   max_position_embeddings=max_pos, rope_parameters=dict(kind_params))
    inv, att = ROPE_INIT_FUNCTIONS[kind_params["rope_type"]](cfg, "cpu", seq_len=seq_len)
    return inv.numpy(), float(att), cfg.rope_parameters


_YARN_GRID = [
    dict(factor=4.0),
    dict(factor=8.0, original_max_position_embeddings=32, rope_theta=10000.0),
    dict(factor=2.0, beta_fast=8, beta_slow=2, truncate=False),
    dict(factor=16.0, mscale=0.707, mscale_all_dim=0.707),
    dict(factor=16.0, mscale=1.0, mscale_all_dim=0.0),  # falsy mscale_all_dim: the plain 0.1 ln(factor) + 1
    dict(factor=3.0, attention_factor=0.9, beta_fast=0),  # beta_fast 0 falls back to 32 as in transformers
    dict(factor=1.0),
]


@pytest.mark.parametrize("opts", _YARN_GRID, ids=[str(o) for o in _YARN_GRID])
def test_yarn_tables_match_transformers(opts):
    params = {"rope_type": "yarn", "rope_theta": 100.0, "original_max_position_embeddings": 16, **opts}
    inv_ref, att_ref, resolved = _hf_rope(params, head_dim=16)
    c = gj.models.config_from_hf(dict(model_type="llama", vocab_size=8, hidden_size=42, num_hidden_layers=1,
                                      num_attention_heads=3, head_dim=16, intermediate_size=8,
                                      max_position_embeddings=64, rope_parameters=params))
    inv, att = L.yarn_inv_freq(16, c.rope_theta, c.rope_scaling_dict)
    np.testing.assert_allclose(np.asarray(inv), inv_ref, rtol=1e-6)
    assert att == pytest.approx(att_ref, rel=1e-12)
    cos, _ = L.rope_cos_sin(np.arange(5), 16, c.rope_theta, c.rope_scaling_dict, c.max_positions)
    np.testing.assert_allclose(np.asarray(cos[0]), att_ref * np.ones(16), rtol=1e-6)  # cos/sin carry the factor


@pytest.mark.parametrize("opts,max_pos", [({}, 64), ({}, 16), ({"factor": 2.0}, 64), ({"attention_factor": 0.8}, 64),
                                          ({"factor": 0.5}, 64)])
def test_longrope_tables_match_transformers(opts, max_pos):
    params = {"rope_type": "longrope", "rope_theta": 100.0, "original_max_position_embeddings": 16,
              "short_factor": _SHORT, "long_factor": _LONG, **opts}
    scaling = {k: v for k, v in params.items() if k not in ("rope_theta",)}
    for t, hf_seq in ((16, None), (17, 17)):  # transformers: short at init, long once seq > original
        inv_ref, att_ref, _ = _hf_rope(params, seq_len=hf_seq, max_pos=max_pos)
        inv, att = L.longrope_inv_freq(np.arange(t), 14, 100.0, scaling, max_pos)
        np.testing.assert_allclose(np.asarray(inv), inv_ref, rtol=1e-6)
        assert att == pytest.approx(att_ref, rel=1e-12)


# --------------------------------------------------------------------------------------- refusals

_HF = dict(model_type="llama", vocab_size=8, hidden_size=42, num_hidden_layers=1, num_attention_heads=3,
           intermediate_size=8, max_position_embeddings=64)


@pytest.mark.parametrize("extra,match", [
    (dict(rope_parameters={"rope_type": "yarn", "factor": 2.0, "partial_rotary_factor": 0.5}), "partial_rotary_factor"),
    (dict(partial_rotary_factor=0.5, rope_parameters={"rope_type": "linear", "factor": 2.0}), "partial_rotary_factor"),
    (dict(rope_parameters={"rope_type": "longrope", "short_factor": [1.0] * 3, "long_factor": [1.0] * 7,
                           "original_max_position_embeddings": 16}), "short_factor has 3 entries"),
    (dict(rope_parameters={"rope_type": "longrope", "short_factor": [1.0] * 7, "long_factor": "x"}), "long_factor"),
    (dict(rope_parameters={"rope_type": "longrope", "long_factor": [1.0] * 7}), "lacks 'short_factor'"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 2.0, "truncate": "yes"}), "truncate"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 2.0, "beta_gamma": 1.0}), "beta_gamma"),
    (dict(rope_parameters={"rope_type": "yarn"}), "lacks 'factor'"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 2.0, "beta_slow": -1.0}), "beta_slow"),
    (dict(mlp_bias="yes"), "mlp_bias"),
])
def test_refused_in_one_line(extra, match):
    with pytest.raises(gj.CheckpointError, match=match) as e:
        gj.models.config_from_hf({**_HF, **extra})
    assert "\n" not in str(e.value)


def test_other_model_types_cannot_carry_mlp_bias():
    with pytest.raises(gj.CheckpointError, match="mlp_bias"):
        gj.models.config_from_hf({**_HF, "model_type": "mistral", "mlp_bias": True})
    c = gj.models.config_from_hf(_HF).replace(model_type="qwen2", qkv_bias=True, mlp_bias=True)
    from gaugejax.models.llama import config_to_hf

    with pytest.raises(gj.CheckpointError, match="mlp_bias"):
        config_to_hf(c)
