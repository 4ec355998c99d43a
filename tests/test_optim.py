"""Optimizer-state transport (docs/conventions.md §3): AdamW mu signed, nu permutation-only, counts untouched;
the transported run follows the gauged original run step for step; unknown states raise."""

import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gaugejax as gj
from gaugejax import train
from gaugejax.errors import TransportError
from gaugejax.optim import register_state_rule, transport_opt_state


def _maxdiff(a, b):
    return max(float(jnp.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def adamw_run():
    """Train tiny_config('llama') k=8 steps with AdamW (weight decay 0.1), then continue N=12 steps:
    the original run, the run resumed from gauged params + transported state, and the run resumed with
    mu transported without signs."""
    cfg = gj.tiny_config("llama")
    opt = train.adamw(3e-3, weight_decay=0.1)
    batches = train.markov_batches(0, cfg.vocab_size, steps=20, batch=4, seq=32)
    step = train.make_step(cfg, opt)
    params = gj.random_model(cfg, seed=0).params
    state = opt.init(params)
    for b in batches[:8]:
        params, state, _ = step(params, state, b)
    g = gj.SignedPermutation.random(1, cfg.d_model)
    spec = gj.gauge_spec(cfg)
    runs = {"orig": (params, state),
            "signed": (gj.apply_spec(params, spec, g), transport_opt_state(state, g, cfg)),
            "unsigned_mu": (gj.apply_spec(params, spec, g), transport_opt_state(state, g, cfg, moment_signs=False))}
    gaps = {"signed": [], "unsigned_mu": []}
    losses = {k: [] for k in runs}
    for b in batches[8:]:
        for name, (p, s) in runs.items():
            p, s, loss = step(p, s, b)
            runs[name] = (p, s)
            losses[name].append(float(loss))
        ref = gj.apply_spec(runs["orig"][0], spec, g)
        for name in gaps:
            gaps[name].append(_maxdiff(ref, runs[name][0]))
    scale = max(float(jnp.abs(x).max()) for x in jax.tree.leaves(runs["orig"][0]))
    return dict(gaps=gaps, losses=losses, scale=scale, state=state, g=g, cfg=cfg, opt=opt)


def test_adamw_transported_run_matches_gauged_original(adamw_run):
    gaps, scale = adamw_run["gaps"], adamw_run["scale"]
    # Tolerance: float32. The gauged forward/backward pass sums the same products in a permuted order
    # (einsums over the residual axis), so gradients differ at ~1 ulp; Adam's normalized update keeps
    # that at the level of the parameters' ulp. Measured max gap 1.2e-7 with |params| ≤ 1.5.
    tol = 1e-5 * scale
    assert max(gaps["signed"]) <= tol, gaps["signed"]
    np.testing.assert_allclose(adamw_run["losses"]["signed"], adamw_run["losses"]["orig"], rtol=1e-5)


def test_adamw_unsigned_mu_diverges(adamw_run):
    gaps, scale = adamw_run["gaps"], adamw_run["scale"]
    # Dropping mu's signs reverses the momentum of every flipped coordinate: measured gap 5e-3 after one
    # step, growing to 4e-2 after 12 (lr 3e-3), i.e. > 1000x the signed run's.
    assert gaps["unsigned_mu"][0] > 1e-3 * scale
    assert gaps["unsigned_mu"][-1] > 1e3 * max(max(gaps["signed"]), 1e-7)
    assert gaps["unsigned_mu"][-1] > gaps["unsigned_mu"][0]


def test_adamw_fields(adamw_run):
    state, g, cfg = adamw_run["state"], adamw_run["g"], adamw_run["cfg"]
    spec = gj.gauge_spec(cfg)
    moved = transport_opt_state(state, g, spec)
    adam = state[0]
    madam = moved[0]
    assert type(madam) is type(adam)
    assert madam.count is adam.count                       # integer part untouched (bit-identical)
    for mu, ref in zip(jax.tree.leaves(madam.mu), jax.tree.leaves(gj.apply_spec(adam.mu, spec, g))):
        assert np.array_equal(mu, ref)
    nu_ref = gj.apply_spec(adam.nu, spec, g, signed=False)
    for nu, ref in zip(jax.tree.leaves(madam.nu), jax.tree.leaves(nu_ref)):
        assert np.array_equal(nu, ref) and bool((nu >= 0).all())
    back = transport_opt_state(moved, g.inverse(), spec)    # exact round trip
    assert all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(state)))
    assert jax.tree.structure(back) == jax.tree.structure(state)


def test_sgd_momentum_run():
    cfg = gj.tiny_config("llama", n_layers=1)
    opt = optax.sgd(0.3, momentum=0.9)
    batches = train.markov_batches(1, cfg.vocab_size, steps=8, batch=2, seq=16)
    step = train.make_step(cfg, opt)
    p = gj.random_model(cfg, seed=1).params
    s = opt.init(p)
    for b in batches[:4]:
        p, s, _ = step(p, s, b)
    g = gj.SignedPermutation.random(2, cfg.d_model)
    spec = gj.gauge_spec(cfg)
    assert type(s[0]).__name__ == "TraceState"
    pg, sg = gj.apply_spec(p, spec, g), transport_opt_state(s, g, cfg)
    pw, sw = pg, transport_opt_state(s, g, cfg, moment_signs=False)
    for b in batches[4:]:
        p, s, _ = step(p, s, b)
        pg, sg, _ = step(pg, sg, b)
        pw, sw, _ = step(pw, sw, b)
    ref = gj.apply_spec(p, spec, g)
    assert _maxdiff(ref, pg) < 1e-5     # float32 reassociation only (SGD is linear in the gradient)
    assert _maxdiff(ref, pw) > 1e-3


def _params():
    return {"w": jnp.arange(12.0).reshape(3, 4), "b": jnp.arange(4.0) - 1.5}


AXES = {"w": gj.Axes(None, gj.RESIDUAL), "b": gj.Axes(gj.RESIDUAL)}


@pytest.mark.parametrize("name", ["adamw_schedule_clip", "masked", "inject", "multisteps", "lion", "amsgrad",
                                  "apply_if_finite", "multi_transform", "rmsprop"])
def test_wrapped_states_transport_structure(name):
    p = _params()
    g = gj.SignedPermutation([3, 0, 2, 1], [-1, 1, -1, 1])
    tx = {
        "adamw_schedule_clip": lambda: optax.chain(optax.clip_by_global_norm(1.0),
                                                   optax.adamw(optax.linear_schedule(1e-2, 0.0, 10))),
        "masked": lambda: optax.masked(optax.adam(1e-2), {"w": True, "b": False}),
        "inject": lambda: optax.inject_hyperparams(optax.adamw)(learning_rate=1e-2),
        "multisteps": lambda: optax.MultiSteps(optax.adam(1e-2), 2),
        "lion": lambda: optax.lion(1e-2),
        "amsgrad": lambda: optax.amsgrad(1e-2),
        "apply_if_finite": lambda: optax.apply_if_finite(optax.adam(1e-2), 3),
        "multi_transform": lambda: optax.multi_transform({"a": optax.adam(1e-2), "s": optax.sgd(1e-2, 0.9)},
                                                         {"w": "a", "b": "s"}),
        "rmsprop": lambda: optax.rmsprop(1e-2),
    }[name]()
    s = tx.init(p)
    grads = jax.tree.map(lambda x: jnp.sin(x) + 0.1, p)
    for _ in range(2):
        _, s = tx.update(grads, s, p)
    moved = transport_opt_state(s, g, AXES)
    assert jax.tree.structure(moved) == jax.tree.structure(s)
    back = transport_opt_state(moved, g.inverse(), AXES)
    assert all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(s)))
    # equivariance of one update: transported state + gauged params/grads = gauged update
    gp, gg = gj.apply_spec(p, AXES, g), gj.apply_spec(grads, AXES, g)
    u1, _ = tx.update(grads, s, p)
    u2, _ = tx.update(gg, moved, gp)
    assert _maxdiff(gj.apply_spec(u1, AXES, g), u2) < 1e-6


def test_unknown_state_raises():
    class Mystery(typing.NamedTuple):
        acc: dict

    state = (optax.EmptyState(), Mystery({"w": jnp.ones((3, 4)), "b": jnp.ones(4)}))
    g = gj.SignedPermutation.identity(4)
    with pytest.raises(TransportError, match="no transport rule for optimizer state .*Mystery"):
        transport_opt_state(state, g, AXES)
    register_state_rule(Mystery, {"acc": "unsigned"})
    assert jax.tree.structure(transport_opt_state(state, g, AXES)) == jax.tree.structure(state)
    with pytest.raises(TransportError, match="missing"):
        register_state_rule(Mystery, {})


def test_factored_state_refused():
    # Adafactor's factored second moments live on reduced shapes: no per-field rule applies.
    p = _params()
    s = optax.adafactor(1e-2, min_dim_size_to_factor=2).init(p)
    with pytest.raises(TransportError, match="FactoredState"):
        transport_opt_state(s, gj.SignedPermutation.identity(4), AXES)


def test_structure_mismatch_raises():
    s = optax.adam(1e-2).init({"w": jnp.ones((3, 4))})
    with pytest.raises(TransportError, match="structure"):
        transport_opt_state(s, gj.SignedPermutation.identity(4), AXES)


def test_orbax_round_trip(tmp_path):
    pytest.importorskip("orbax.checkpoint")
    from gaugejax.optim import restore_train_state, save_train_state

    cfg = gj.tiny_config("llama", n_layers=1)
    m = gj.random_model(cfg, seed=0)
    opt = train.adamw(1e-3)
    run = train.train(m, opt, train.markov_batches(0, cfg.vocab_size, steps=2, batch=2, seq=8))
    save_train_state(tmp_path / "ckpt", run.model.params, run.opt_state)
    params, state = restore_train_state(tmp_path / "ckpt", m.params, opt.init(m.params))
    assert jax.tree.structure(state) == jax.tree.structure(run.opt_state)
    g = gj.SignedPermutation.random(0, cfg.d_model)
    a = transport_opt_state(state, g, cfg)
    b = transport_opt_state(run.opt_state, g, cfg)
    assert all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
