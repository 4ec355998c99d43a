"""gaugejax.testing: strategies, assertions, diagnosis and spec inference on models gaugejax does not know.

Models under test: every supported family (``gj.forward`` as ``fn``), the Flax linen transformer
of ``examples/your_own_model.py`` (RMSNorm and LayerNorm), an Equinox transformer with a q-norm
over ``n_heads · head_dim == d`` (not residual), a Flax NNX model, and an optax AdamW state with
one update step as ``fn``. Tolerance: the library default ``1000 · eps(float32) ≈ 1.2e-4``
relative to the output scale; a wrong rule moves outputs by 1e-2 to O(1) (asserted below).
"""

import importlib.util
import pathlib
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

import gaugejax as gj
import gaugejax.testing as gt
from gaugejax import models
from gaugejax.errors import GaugeError
from gaugejax.group import Group
from gaugejax.spec import RESIDUAL, RESIDUAL_PERM, Axes
from gaugejax.testing.flat import path_name

R, P, N1, N2 = Axes(RESIDUAL), Axes(RESIDUAL_PERM), Axes(None), Axes(None, None)
READ_OUT_IN, WRITE_OUT_IN = Axes(None, RESIDUAL), Axes(RESIDUAL, None)  # torch / equinox (out, in)


def _spec_leaves(spec):
    return jax.tree.leaves(spec, is_leaf=lambda a: isinstance(a, Axes))


def _family_fn(cfg):
    """``gj.forward`` (plus BERT's pooler, the one parameter ``forward`` does not read)."""
    mod = getattr(models.family_module(cfg), "module", None)
    if hasattr(mod, "pooled"):
        return lambda p, t: mod.pooled(cfg, p, gj.forward(gj.Model(cfg, p), t))
    return lambda p, t: gj.forward(gj.Model(cfg, p), t)


def _not_read(fn, params, path, tokens):
    """Independently of infer: replacing the leaf by large noise leaves fn's output bit-identical."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [path_name(p) for p, _ in leaves]
    noisy = [np.full(x.shape, 1e3, np.float32) if n == path else x for n, (_, x) in zip(names, leaves)]
    return np.array_equal(np.asarray(fn(params, tokens)), np.asarray(fn(jax.tree.unflatten(treedef, noisy), tokens)))


def _tokens(cfg, seed=0):
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, (2, 8))


# --------------------------------------------------------------------------------------- strategies
@pytest.mark.parametrize("group", list(Group))
def test_gauge_strategies_draw_elements_of_their_group(group):
    @given(gt.gauges(group), gt.small_gauges(group, d=gt.dims()))
    def check(g, h):
        assert group.contains(g) and group.contains(h)
        assert g.d in gt.DIMS and h.d in gt.DIMS

    check()


def test_small_gauges_shrink_to_one_transposition_or_one_flip():
    flip = find(gt.small_gauges("B_d", d=8), lambda g: not g.is_permutation, settings=settings(database=None))
    assert gt.describe(flip) == "flip the sign of coordinate 0"
    swap = find(gt.small_gauges("B_d", d=8), lambda g: (g.perm != np.arange(8)).any(), settings=settings(database=None))
    assert gt.describe(swap) == "swap 0 and 1"
    glob = find(gt.small_gauges("S_d x ±1", d=8), lambda g: not g.is_permutation, settings=settings(database=None))
    assert gt.describe(glob) == "flip every sign"


def test_ci_profile_is_registered_and_derandomized():
    ci = settings.get_profile(gt.CI_PROFILE)
    assert ci.derandomize and ci.deadline is None and ci.database is None


def test_families_cover_the_registry():
    """Every registered family has a tiny config, so the strategies and the sweeps below cover it."""
    kinds = gt.families()
    assert {models.tiny_config(k).family for k in kinds} == set(models.FAMILIES)


@settings(max_examples=10)
@given(gt.tiny_configs())
def test_tiny_configs_are_valid_configs(cfg):
    assert cfg.family in models.FAMILIES and cfg.n_layers in (1, 2)
    assert gj.gauge_spec(cfg)  # builds: every drawn option is one the family supports


def test_generic_makes_gains_distinct_and_biases_nonzero():
    p = {"scale": jnp.ones(16), "bias": jnp.zeros(16), "w": jnp.ones((4, 16)) * 0.5, "n": np.arange(3)}
    q = gt.generic(p, 3)
    assert len(set(np.asarray(q["scale"]).tolist())) == 16 and float(q["scale"].min()) > 0
    assert bool((q["bias"] != 0).all()) and len(set(np.asarray(q["w"]).ravel().tolist())) == 64
    assert isinstance(q["scale"], jax.Array) and q["n"] is p["n"]
    assert jax.tree.map(lambda a, b: a.tolist() == b.tolist(), q, gt.generic(p, 3)) == {k: True for k in p}


# --------------------------------------------------------------------------------------- families
@pytest.mark.parametrize("family", [f for f in sorted(models.FAMILIES) if f in gt.families()])  # all: see above
def test_infer_spec_equals_the_library_spec_on_every_family(family):
    cfg = models.tiny_config(family)
    m = gj.random_model(cfg, seed=1)
    fn, tokens = _family_fn(cfg), _tokens(cfg)
    found = gt.infer(fn, m.params, tokens, m.d)
    assert found.group is Group.of(cfg)
    inferred = {e.path: e for e in found.leaves}
    lib = dict(zip([e.path for e in found.leaves], _spec_leaves(gj.gauge_spec(m))))
    for path, rule in lib.items():  # equal, except where fn never reads the leaf (OPT's unused position rows)
        assert inferred[path].axes == rule or (inferred[path].status == "unused" and _not_read(fn, m.params, path, tokens))


def test_infer_splits_off_mlp_neurons_when_d_ff_equals_d():
    cfg = models.tiny_config("llama", d_ff=64, n_kv_heads=4)  # gate/up/down and k/v are all 64 x 64
    m = gj.random_model(cfg, seed=2)
    found = gt.infer(_family_fn(cfg), m.params, _tokens(cfg), m.d)
    assert found.spec == gj.gauge_spec(m)
    assert found.other_symmetries == (("layers/down:2", "layers/gate:1", "layers/up:1"),)


# --------------------------------------------------------------------------------------- Flax example
def _example():
    path = pathlib.Path(__file__).parents[1] / "examples" / "your_own_model.py"
    if "your_own_model" not in sys.modules:  # registered first: Flax dataclasses look their module up
        spec = importlib.util.spec_from_file_location("your_own_model", path)
        sys.modules["your_own_model"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["your_own_model"])
    return sys.modules["your_own_model"]


def _flax_truth(params, norm):
    """The example's spec, by hand: Flax ``Dense`` kernels are ``(in, out)``."""
    def rule(path, x):
        names = [k.key for k in path]
        module, leaf = names[-2], names[-1]
        if module == "embed":
            return READ_OUT_IN
        if module.endswith("norm"):
            return P if leaf == "scale" else R
        if module in ("q", "k", "v", "up", "lm_head"):
            return WRITE_OUT_IN if leaf == "kernel" else N1  # reads: residual axis is the input, axis 0
        if module in ("o", "down"):
            return READ_OUT_IN if leaf == "kernel" else R
        raise AssertionError(names)
    return jax.tree_util.tree_map_with_path(rule, params)


@pytest.fixture(scope="module")
def flax_rms():
    return _example().build("rms", d=32, n_layers=2, seed=0)


def test_flax_example_infer_assert_diagnose(flax_rms):
    _, params, tokens, fn = flax_rms
    truth = _flax_truth(params, "rms")
    found = gt.infer(fn, params, tokens, 32)
    assert found.spec == truth and found.group is Group.B_D
    assert max(dev for _, dev in found.checks) < 1e-4
    gt.assert_invariant(fn, params, found.spec, group="B_d", inputs=tokens)

    wrong = jax.tree.map(lambda a: a, truth, is_leaf=lambda a: isinstance(a, Axes))
    wrong["params"]["block_1"]["mlp_norm"]["scale"] = R
    with pytest.raises(AssertionError, match=r"'flip the sign of coordinate 0' \(a minimal counterexample") as e:
        gt.assert_invariant(fn, params, wrong, group="B_d", inputs=tokens)
    assert float(str(e.value).split("output by ")[1].split()[0]) > 1e-2
    findings = gt.diagnose_spec(fn, params, wrong, tokens, group="B_d")
    assert [(f.path, f.suggested, f.restores) for f in findings] == [("params/block_1/mlp_norm/scale", P, True)]
    assert findings[0].message == "params/block_1/mlp_norm/scale: permute only, do not sign"


def test_flax_layernorm_variant_only_admits_a_global_sign():
    _, params, tokens, fn = _example().build("layer", d=32, n_layers=1, seed=1)
    found = gt.infer(fn, params, tokens, 32)
    assert found.spec == _flax_truth(params, "layer") and found.group is Group.S_D_SIGN
    gt.assert_invariant(fn, params, found.spec, group="S_d x ±1", inputs=tokens)
    with pytest.raises(AssertionError, match="'flip the sign of coordinate 0'"):
        gt.assert_invariant(fn, params, found.spec, group=Group.B_D, inputs=tokens)


def test_the_other_sign_placement_also_passes_and_the_convention_wins(flax_rms):
    """After an RMSNorm the sign can sit in the gain or in the readers: both are symmetries."""
    _, params, tokens, fn = flax_rms
    truth = _flax_truth(params, "rms")
    other = jax.tree.map(lambda a: a, truth, is_leaf=lambda a: isinstance(a, Axes))
    other["params"]["final_norm"]["scale"] = R                   # the sign in the gain ...
    other["params"]["lm_head"]["kernel"] = Axes(RESIDUAL_PERM, None)  # ... and not in its reader
    blk = other["params"]["block_0"]
    blk["attn_norm"]["scale"] = R
    for name in "qkv":
        blk[name]["kernel"] = Axes(RESIDUAL_PERM, None)
    gt.assert_invariant(fn, params, other, group="B_d", inputs=tokens)
    assert gt.diagnose_spec(fn, params, other, tokens, group="B_d") == []
    # Sign in both places is wrong; either single change restores invariance, the convention picks the gain.
    both = jax.tree.map(lambda a: a, truth, is_leaf=lambda a: isinstance(a, Axes))
    both["params"]["final_norm"]["scale"] = R
    findings = gt.diagnose_spec(fn, params, both, tokens, group="B_d")
    assert [(f.path, f.suggested) for f in findings] == [("params/final_norm/scale", P)]


# --------------------------------------------------------------------------------------- Equinox, NNX
class EqxBlock(eqx.Module):
    norm1: eqx.nn.RMSNorm
    q: eqx.nn.Linear
    k: eqx.nn.Linear
    v: eqx.nn.Linear
    o: eqx.nn.Linear
    q_norm: eqx.nn.RMSNorm
    norm2: eqx.nn.RMSNorm
    up: eqx.nn.Linear
    down: eqx.nn.Linear
    n_heads: int = eqx.field(static=True)

    def __init__(self, d, n_heads, d_ff, key):
        ks = jax.random.split(key, 6)
        self.norm1 = eqx.nn.RMSNorm(d)                       # with a bias: it takes the sign
        self.q, self.k, self.v = (eqx.nn.Linear(d, d, use_bias=False, key=k) for k in ks[:3])
        self.o = eqx.nn.Linear(d, d, use_bias=False, key=ks[3])
        self.q_norm = eqx.nn.RMSNorm(d, use_bias=False)      # over n_heads * head_dim == d: not residual
        self.norm2 = eqx.nn.RMSNorm(d, use_bias=False)
        self.up = eqx.nn.Linear(d, d_ff, key=ks[4])
        self.down = eqx.nn.Linear(d_ff, d, key=ks[5])
        self.n_heads = n_heads

    def __call__(self, x):  # (T, D)
        t, d = x.shape
        hd = d // self.n_heads
        h = jax.vmap(self.norm1)(x)
        q = jax.vmap(self.q_norm)(jax.vmap(self.q)(h)).reshape(t, self.n_heads, hd)
        k, v = (jax.vmap(m)(h).reshape(t, self.n_heads, hd) for m in (self.k, self.v))
        s = jnp.einsum("qnh,knh->nqk", q, k) / np.sqrt(hd)
        a = jnp.einsum("nqk,knh->qnh", jax.nn.softmax(s, -1), v).reshape(t, d)
        x = x + jax.vmap(self.o)(a)
        return x + jax.vmap(self.down)(jax.nn.gelu(jax.vmap(self.up)(jax.vmap(self.norm2)(x))))


class EqxModel(eqx.Module):
    embed: eqx.nn.Embedding
    blocks: list
    norm: eqx.nn.RMSNorm
    head: eqx.nn.Linear

    def __init__(self, key, vocab=48, d=24, n_layers=2, n_heads=3, d_ff=40):
        ks = jax.random.split(key, n_layers + 2)
        self.embed = eqx.nn.Embedding(vocab, d, key=ks[0])
        self.blocks = [EqxBlock(d, n_heads, d_ff, k) for k in ks[1:-1]]
        self.norm = eqx.nn.RMSNorm(d, use_bias=False)
        self.head = eqx.nn.Linear(d, vocab, use_bias=False, key=ks[-1])

    def __call__(self, tokens):
        x = jax.vmap(self.embed)(tokens)
        for b in self.blocks:
            x = b(x)
        return jax.vmap(self.head)(jax.vmap(self.norm)(x))


def _eqx_truth(model):
    def rule(path, x):
        names = [str(getattr(k, "name", getattr(k, "idx", k))) for k in path]
        mod, leaf = names[-2], names[-1]
        if mod in ("embed", "q", "k", "v", "up", "head"):
            return READ_OUT_IN if leaf == "weight" else N1
        if mod in ("o", "down"):
            return WRITE_OUT_IN if leaf == "weight" else R
        if mod == "q_norm":
            return N1
        return P if leaf == "weight" else R  # norm1, norm2, norm
    return jax.tree_util.tree_map_with_path(rule, model)


@pytest.fixture(scope="module")
def eqx_model():
    model = gt.generic(EqxModel(jax.random.key(0)), 1)
    return model, jnp.arange(10) % 48, lambda m, t: m(t)


def test_equinox_model_infer_assert_diagnose(eqx_model):
    model, tokens, fn = eqx_model
    truth = _eqx_truth(model)
    found = gt.infer(fn, model, tokens, 24)
    assert _spec_leaves(found.spec) == _spec_leaves(truth) and found.group is Group.B_D
    q_norm = [e for e in found.leaves if e.path == "blocks/0/q_norm/weight"][0]
    assert q_norm.status == "untouched" and "moves the output by" in q_norm.note
    gt.assert_invariant(fn, model, found.spec, group="B_d", inputs=tokens)

    wrong = eqx.tree_at(lambda s: s.blocks[1].down.bias, truth, N1)  # forget a writer's bias
    with pytest.raises(AssertionError, match=r"'(swap 0 and 1|flip the sign of coordinate 0)' \(a minimal"):
        gt.assert_invariant(fn, model, wrong, group="B_d", inputs=tokens)
    findings = gt.diagnose_spec(fn, model, wrong, tokens, group="B_d")
    assert [(f.path, f.suggested) for f in findings] == [("blocks/1/down/bias", R)]


def test_flax_nnx_state():
    from flax import nnx

    class Tiny(nnx.Module):
        def __init__(self, rngs, d=12, vocab=20):
            self.embed = nnx.Embed(vocab, d, rngs=rngs)
            self.norm = nnx.RMSNorm(d, rngs=rngs)
            self.up = nnx.Linear(d, 16, rngs=rngs)
            self.down = nnx.Linear(16, d, rngs=rngs)
            self.head = nnx.Linear(d, vocab, use_bias=False, rngs=rngs)

        def __call__(self, t):
            x = self.embed(t)
            x = x + self.down(jax.nn.gelu(self.up(self.norm(x))))
            return self.head(x)

    graphdef, state = nnx.split(Tiny(nnx.Rngs(0)))
    state = gt.generic(state, 2)
    fn = lambda s, t: nnx.merge(graphdef, s)(t)  # noqa: E731
    found = gt.infer(fn, state, jnp.arange(7), 12)
    got = {e.path: e.axes for e in found.leaves}
    assert got == {"down/bias": R, "down/kernel": READ_OUT_IN, "embed/embedding": READ_OUT_IN,
                   "head/kernel": WRITE_OUT_IN, "norm/scale": P, "up/bias": N1, "up/kernel": WRITE_OUT_IN}
    gt.assert_invariant(fn, state, found.spec, group="B_d", inputs=jnp.arange(7))


# --------------------------------------------------------------------------------------- mutations
@pytest.fixture(scope="module")
def adamw():
    """A tiny Llama, an AdamW state after two steps, and ``fn`` = logits after one more step."""
    cfg = models.tiny_config("llama", n_layers=1)
    m = gj.random_model(cfg, seed=0)
    tokens = _tokens(cfg)
    tx = optax.adamw(1e-2, weight_decay=0.1)

    def loss(p):
        logits = gj.forward(gj.Model(cfg, p), tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    def step(tree, _):
        p, s = tree
        updates, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, updates), s

    tree = (m.params, tx.init(m.params))
    for _ in range(2):
        tree = jax.jit(step)(tree, None)
    fn = lambda tree, t: gj.forward(gj.Model(cfg, step(tree, None)[0]), t)  # noqa: E731
    pspec = gj.gauge_spec(cfg)
    adam = tree[1][0]
    unsigned = jax.tree.map(lambda a: Axes(*(x and RESIDUAL_PERM for x in a.actions)), pspec,
                            is_leaf=lambda a: isinstance(a, Axes))
    spec = (pspec, (adam._replace(count=Axes(), mu=pspec, nu=unsigned),) + tuple(tree[1][1:]))
    return tree, spec, tokens, fn


def test_infer_on_adamw_state_gives_nu_permutation_only(adamw):
    tree, spec, tokens, fn = adamw
    found = gt.infer(fn, tree, tokens, 64)
    assert _spec_leaves(found.spec) == _spec_leaves(spec) and found.group is Group.B_D


def _mutate(spec, path, axes):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(spec, is_leaf=lambda a: isinstance(a, Axes))
    names = ["/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in p) for p, _ in leaves]
    assert path in names, names
    return jax.tree.unflatten(treedef, [axes if n == path else a for n, (_, a) in zip(names, leaves)])


MUTATIONS = {  # way of breaking a rule → (model, leaf, wrong rule, right rule)
    "sign a gain": ("llama", "layers/attn_norm", Axes(None, RESIDUAL), Axes(None, RESIDUAL_PERM)),
    "swap read/write": ("llama", "layers/o", Axes(None, None, RESIDUAL), Axes(None, RESIDUAL, None)),
    "forget a bias": ("gpt2", "layers/o_bias", N2, Axes(None, RESIDUAL)),
    "sign nu": ("adamw", "1/0/nu/layers/gate", Axes(None, None, RESIDUAL), Axes(None, None, RESIDUAL_PERM)),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_each_way_of_breaking_a_rule_is_caught_and_diagnosed(mutation, adamw):
    kind, path, bad, good = MUTATIONS[mutation]
    if kind == "adamw":
        params, spec, tokens, fn = adamw
    else:
        cfg = models.tiny_config(kind)
        m = gj.random_model(cfg, seed=3)
        params, spec, tokens, fn = m.params, gj.gauge_spec(m), _tokens(cfg), _family_fn(cfg)
    group = Group.B_D if kind in ("llama", "adamw") else Group.S_D_SIGN
    wrong = _mutate(spec, path, bad)
    with pytest.raises(AssertionError, match=r"'(swap 0 and 1|flip the sign of coordinate 0|flip every sign)' \(a minimal"):
        gt.assert_invariant(fn, params, wrong, group=group, inputs=tokens)
    findings = gt.diagnose_spec(fn, params, wrong, tokens, group=group)
    assert [(f.path, f.suggested, f.restores) for f in findings] == [(path, good, True)]


# --------------------------------------------------------------------------------------- API details
def test_assert_equivariant_on_the_residual_stream():
    m = gj.random_model("llama", seed=0)
    fn = lambda p, t: gj.residual_stream(gj.Model(m.config, p), t)  # noqa: E731
    tokens = _tokens(m.config)
    stream = Axes(None, None, None, RESIDUAL)
    gt.assert_equivariant(fn, m.params, gj.gauge_spec(m), out_axes=stream, group="B_d", inputs=tokens,
                          max_examples=10)
    with pytest.raises(AssertionError, match="does not move by the gauge"):
        gt.assert_equivariant(fn, m.params, gj.gauge_spec(m), out_axes=Axes(None, None, None, RESIDUAL_PERM),
                              group="B_d", inputs=tokens, max_examples=10)
    dev = gt.deviation(fn, m.params, gj.gauge_spec(m), gj.SignedPermutation.random(0, 64), inputs=tokens,
                       out_axes=stream)
    assert dev < 1e-4


def test_infer_with_an_equivariant_output():
    """BERT's forward returns the residual stream: ``out_axes`` says how it moves. The pooler is
    not read, and the key bias cannot matter (softmax is invariant to adding the same score to
    every key): both are reported unused and left untouched."""
    cfg = models.tiny_config("bert", n_layers=1)
    m = gj.random_model(cfg, seed=0)
    fn = lambda p, t: gj.forward(gj.Model(cfg, p), t)  # noqa: E731
    found = gt.infer(fn, m.params, _tokens(cfg), m.d, out_axes=Axes(None, None, RESIDUAL))
    lib = gj.gauge_spec(m)
    unused = {e.path for e in found.leaves if e.status == "unused"}
    assert unused == {"pooler", "pooler_bias", "layers/k_bias"}
    assert {k: v for k, v in found.spec.items() if k not in unused} == {k: v for k, v in lib.items() if k not in unused}


def test_inside_a_hypothesis_test_the_probes_are_used():
    m = gj.random_model("llama", seed=0)
    fn = lambda p, t: gj.forward(gj.Model(m.config, p), t)  # noqa: E731
    wrong = dict(gj.gauge_spec(m), final_norm=R)

    @settings(max_examples=2)
    @given(st.just(0))
    def outer(_):
        gt.assert_invariant(fn, m.params, gj.gauge_spec(m), group="B_d", inputs=np.arange(6)[None])
        with pytest.raises(AssertionError, match="the first failing probe"):
            gt.assert_invariant(fn, m.params, wrong, group="B_d", inputs=np.arange(6)[None])

    outer()


def test_bad_inputs_raise_one_line_errors():
    m = gj.random_model("llama", seed=0)
    fn = lambda p, t: gj.forward(gj.Model(m.config, p), t)  # noqa: E731
    tokens = np.arange(6)[None]
    with pytest.raises(GaugeError, match="different structures"):
        gt.assert_invariant(fn, m.params, {"embed": READ_OUT_IN}, group="B_d", inputs=tokens)
    with pytest.raises(GaugeError, match="moves no parameter"):
        gt.diagnose_spec(fn, m.params, jax.tree.map(lambda a: Axes(), gj.gauge_spec(m), is_leaf=lambda a: isinstance(a, Axes)),
                         tokens, group="B_d")
    with pytest.raises(GaugeError, match="NaN or infinite"):
        gt.infer(lambda p, t: fn(p, t) / 0.0, m.params, tokens, m.d)
    with pytest.raises(GaugeError, match="no parameter has an axis of size d=7"):
        gt.infer(fn, m.params, tokens, 7)
    with pytest.raises(GaugeError, match="unknown gauge group"):
        gt.assert_invariant(fn, m.params, gj.gauge_spec(m), group="O(d)", inputs=tokens)
