"""Gauge equivariance of norms and whole models, and exactness of apply_gauge.

Tolerances: float32 forward passes through a few layers accumulate rounding of order
1e-6 relative; we assert 1e-4 relative to the logit / activation scale, far below the O(1)
changes a wrong rule produces (asserted alongside).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gaugejax as gj
import gaugejax.testing as gt
from gaugejax.group import Group
from gaugejax.models import layers as L
from gaugejax.spec import RESIDUAL, Axes, AxisAction, apply_spec

RTOL = 1e-4


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@st.composite
def vectors_and_gauges(draw, group="B_d"):
    d = draw(gt.dims())
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.normal(size=(5, d)).astype(np.float32)
    gain = rng.uniform(0.5, 1.5, d).astype(np.float32)  # generic: pairwise distinct a.s.
    bias = rng.normal(size=d).astype(np.float32)
    return x, gain, bias, draw(gt.gauges(group, d))


@given(vectors_and_gauges())
def test_rmsnorm_equivariant_under_bd(data):
    x, gain, _, g = data
    lhs = L.rms_norm(g.apply(x), g.apply(gain, signed=False), 1e-6)
    rhs = g.apply(L.rms_norm(x, gain, 1e-6))
    assert _rel(lhs, rhs) < 1e-6


@given(vectors_and_gauges("S_d x ±1"))
def test_layernorm_equivariant_under_sd_times_global_sign(data):
    x, gain, bias, g = data
    lhs = L.layer_norm(g.apply(x), g.apply(gain, signed=False), g.apply(bias), 1e-5)
    rhs = g.apply(L.layer_norm(x, gain, bias, 1e-5))
    assert _rel(lhs, rhs) < 1e-5


@given(vectors_and_gauges())
def test_layernorm_not_equivariant_under_nonglobal_signs(data):
    x, gain, bias, g = data
    if g.is_global_sign:  # d >= 3 random signs can all agree; that element is a true symmetry
        return
    lhs = L.layer_norm(g.apply(x), g.apply(gain, signed=False), g.apply(bias), 1e-5)
    rhs = g.apply(L.layer_norm(x, gain, bias, 1e-5))
    assert _rel(lhs, rhs) > 1e-2  # mean subtraction does not commute with a non-global sign flip


FAMILIES = gt.families()  # every kind tiny_config builds, read from the registry


@given(gt.tiny_models(), st.data())
def test_whole_model_invariance(model, data):
    g = data.draw(gt.gauges(Group.of(model.config), model.d))
    tokens = np.random.default_rng(model.d).integers(0, model.config.vocab_size, (2, 9))
    moved = gj.apply_gauge(model, g)
    out = gj.forward(model, tokens)
    if out.shape[-1] != model.config.vocab_size:  # an encoder's output is its residual stream (BERT)
        out = g.apply(out)
    assert _rel(gj.forward(moved, tokens), out) < RTOL
    h, h2 = gj.residual_stream(model, tokens), gj.residual_stream(moved, tokens)
    assert _rel(h2, g.apply(h)) < RTOL
    hp, hp2 = (gj.residual_stream(m, tokens, final_norm=False) for m in (model, moved))
    assert _rel(hp2, g.apply(hp)) < RTOL


def test_apply_gauge_round_trip_is_exact():
    for family in FAMILIES:
        m = gj.random_model(family, seed=3)
        g = gj.SignedPermutation.random(4, m.d, signed=m.config.norm == "rmsnorm", global_sign=True)
        back = gj.apply_gauge(gj.apply_gauge(m, g), g.inverse())
        for a, b in zip(jax.tree.leaves(back.params), jax.tree.leaves(m.params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_signed_gain_is_the_wrong_rule():
    m = gj.random_model("llama", seed=0)
    g = gj.SignedPermutation.random(1, m.d, negative_fraction=0.5)
    spec = gj.gauge_spec(m)
    wrong = jax.tree.map(lambda a: Axes(*(None if x is None else AxisAction(x.group, True) for x in a.actions)),
                         spec, is_leaf=lambda a: isinstance(a, Axes))
    bad = gj.Model(m.config, apply_spec(m.params, wrong, g))
    tokens = np.arange(12)[None]
    assert _rel(gj.forward(bad, tokens), gj.forward(m, tokens)) > 0.05


def test_permutation_only_alignment_breaks_rmsnorm_models():
    """S_d is symmetry-incomplete: moving by the permutation part of a signed gauge is not the same model."""
    m = gj.random_model("llama", seed=0)
    g = gj.SignedPermutation.random(1, m.d, negative_fraction=0.5)
    moved = gj.apply_gauge(m, g)
    tokens = np.arange(12)[None]
    via_perm = gj.residual_stream(gj.apply_gauge(m, g.permutation_part()), tokens)
    assert _rel(via_perm, gj.residual_stream(moved, tokens)) > 0.5


def test_layernorm_models_refuse_nonglobal_signs_and_accept_global():
    m = gj.random_model("gpt2", seed=0)
    with pytest.raises(gj.GaugeError, match="global sign"):
        gj.apply_gauge(m, gj.SignedPermutation.random(1, m.d, negative_fraction=0.5))
    flip = gj.SignedPermutation(np.arange(m.d), -np.ones(m.d))
    tokens = np.arange(10)[None]
    assert _rel(gj.forward(gj.apply_gauge(m, flip), tokens), gj.forward(m, tokens)) < RTOL


def test_apply_gauge_wrong_dimension():
    m = gj.random_model("llama")
    with pytest.raises(gj.GaugeError, match="d=8"):
        gj.apply_gauge(m, gj.SignedPermutation.identity(8))


def test_spec_on_user_flax_params():
    import flax.linen as nn

    class Probe(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x)  # kernel (d, 3): reads the stream on axis 0

    d = 6
    x = np.random.default_rng(0).normal(size=(4, d)).astype(np.float32)
    params = Probe().init(jax.random.key(0), x)
    spec = {"params": {"Dense_0": {"kernel": Axes(RESIDUAL, None), "bias": Axes(None)}}}
    g = gj.SignedPermutation.random(2, d)
    moved = apply_spec(params, spec, g)
    np.testing.assert_allclose(Probe().apply(moved, g.apply(x)), Probe().apply(params, x), rtol=1e-5, atol=1e-6)
    with pytest.raises(gj.GaugeError, match="structure"):
        apply_spec(params, {"params": {}}, g)


def test_bad_tokens():
    m = gj.random_model("llama")
    with pytest.raises(gj.GaugeError, match="vocab|lie in"):
        gj.forward(m, np.array([[0, 999]]))
    with pytest.raises(gj.GaugeError, match="integers"):
        gj.forward(m, np.zeros((1, 3), np.float32))
    with pytest.raises(gj.GaugeError, match="shape"):
        gj.forward(m, np.zeros((1, 1, 3), np.int32))


def test_bf16_weights_upcast():
    m = gj.random_model("llama", seed=0)
    m16 = gj.Model(m.config, jax.tree.map(lambda x: x.astype(jnp.bfloat16), m.params))
    tokens = np.arange(8)[None]
    out = gj.forward(m16, tokens)
    assert out.dtype == jnp.float32
    assert _rel(out, gj.forward(m, tokens)) < 0.05  # bf16 storage: 8 mantissa bits


def test_one_plus_scale_gain_variant_permutes_scale():
    """(1 + scale) gains (Gemma-style): the gauge permutes ``scale``, never signs it."""
    m = gj.random_model(gj.tiny_config("llama", norm_offset=1.0), seed=2)
    g = gj.SignedPermutation.random(3, m.d, negative_fraction=0.5)
    moved = gj.apply_gauge(m, g)
    np.testing.assert_array_equal(np.asarray(moved.params["final_norm"]), np.asarray(m.params["final_norm"])[g.perm])
    tokens = np.arange(10)[None]
    assert _rel(gj.forward(moved, tokens), gj.forward(m, tokens)) < RTOL


# ----------------------------------------------------------------------------- parameter tables

@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2", "neox", "bert"])
def test_table_derivations_agree(kind):
    from gaugejax.models import family_module
    from gaugejax.models.table import check_table

    c = gj.tiny_config(kind, tie_embeddings=False) if kind != "bert" else gj.tiny_config(kind)
    fam = family_module(c)
    check_table(fam.params(c))
    m = gj.random_model(c, seed=0)
    shapes, spec, shards = fam.param_shapes(c), gj.gauge_spec(c), fam.shard_axes(c)
    assert jax.tree.structure(m.params) == jax.tree.structure(spec, is_leaf=lambda a: isinstance(a, Axes))
    for name, shape in shapes.items():
        if name == "layers":
            for k, s in shape.items():
                assert m.params["layers"][k].shape == (c.n_layers, *s)
                assert len(spec["layers"][k].actions) == len(s) + 1
                assert shards["layers"][k] is None or 1 <= shards["layers"][k] <= len(s)
        else:
            assert m.params[name].shape == shape
    names = [t.name for t in fam.hf_tensors(c)]
    assert len(names) == len(set(names)) == len(fam.hf_axes(c))
    assert shards["embed"] == 0  # the vocabulary axis may be split


def test_fused_hf_tensor_splits_and_joins():
    """Several params naming one HF key (Phi-3 ``qkv_proj``) are one fused tensor, split on read."""
    from gaugejax.io.hf import _split_fused
    from gaugejax.models.table import READ, WRITE, Param, check_table, hf_axes, hf_tensors

    tbl = [Param("q", (4, 3), READ, "l.{i}.qkv.weight"), Param("k", (2, 3), READ, "l.{i}.qkv.weight"),
           Param("o", (3, 4), WRITE, "l.{i}.o.weight")]
    check_table(tbl)
    ts = hf_tensors(tbl, 2)
    assert [t.name for t in ts] == ["l.0.qkv.weight", "l.0.o.weight", "l.1.qkv.weight", "l.1.o.weight"]
    assert ts[0].parts == (("q", 4), ("k", 2)) and ts[1].parts == ()
    fused = np.arange(18.0).reshape(6, 3)
    (kq, q), (kk, k) = _split_fused(ts[0], fused)
    assert (kq, kk) == ("q", "k")
    np.testing.assert_array_equal(np.concatenate([q, k]), fused)
    with pytest.raises(gj.CheckpointError, match="fused tensor"):
        _split_fused(ts[0], fused[:5])
    with pytest.raises(ValueError, match="mixes gauge roles"):
        hf_axes(tbl + [Param("x", (3, 3), WRITE, "l.{i}.qkv.weight")])


# ----------------------------------------------------------------------------- residual hook

def _manual_stream(model, tokens, layer, v):
    """Reference: embed, then each block by hand in a Python loop, ``v`` added at ``layer``."""
    from gaugejax.models import family_module

    c, p = model.config, model.params
    mod = family_module(c).module
    ctx = mod.context(c, tokens.shape[1])
    x = mod.embed(c, p, jnp.asarray(tokens))
    xs = []
    for i in range(c.n_layers + 1):
        if i == layer:
            x = x + v
        xs.append(x)
        if i < c.n_layers:
            x = mod.block(c, jax.tree.map(lambda a: a[i], p["layers"]), x, {**ctx, "layer": i})
    return np.stack(xs), mod.final_norm(c, p, x)


@pytest.mark.parametrize("kind", ["bert", "llama", "gpt2"])
def test_steering_hook_matches_blocks_run_by_hand(kind):
    """Adding v at layer i through the hook = running the blocks manually with the edit (BERT's
    embedding LayerNorm is applied once, before index 0, and not again after the edit)."""
    from gaugejax.interventions import forward_with_steering

    m = gj.random_model(kind, seed=4)
    tokens = np.random.default_rng(1).integers(0, m.config.vocab_size, (2, 7))
    v = np.random.default_rng(2).normal(size=m.d).astype(np.float32)
    add = lambda x: x + 2.0 * v  # noqa: E731  (one function object: compiled once per layer)
    want = gj.forward(m, tokens)  # unsteered, to show the edit matters
    for layer in ((0, 1) if kind == "bert" else (1,)):  # 0: right after BERT's embedding LayerNorm
        ref_stream, ref_final = _manual_stream(m, tokens, layer, 2.0 * v)
        got = np.asarray(gj.residual_stream(m, tokens, final_norm=False, hook=(layer, add)))
        assert _rel(got, ref_stream) < 1e-5  # same float32 ops, loop vs scan: rounding only
        logits = forward_with_steering(m, tokens, layer, v, 2.0)
        ref_logits = ref_final if kind == "bert" else jnp.einsum("btd,vd->btv", ref_final, m.params["embed"]
                                                                 if m.config.tie_embeddings else m.params["lm_head"])
        assert _rel(logits, ref_logits) < 1e-5
        assert _rel(logits, want) > 1e-3


def test_identity_hook_changes_nothing_and_bad_hooks_refused():
    m = gj.random_model("llama", seed=0)
    tokens = np.arange(9)[None]
    ident = lambda x: x  # noqa: E731
    for layer in (0, 1, m.config.n_layers):
        np.testing.assert_allclose(gj.forward(m, tokens, hook=(layer, ident)), gj.forward(m, tokens), rtol=1e-6,
                                   atol=1e-6)
    for bad in ((m.config.n_layers + 1, ident), (-1, ident), (1, None), 3):
        with pytest.raises(gj.GaugeError, match="hook"):
            gj.forward(m, tokens, hook=bad)
