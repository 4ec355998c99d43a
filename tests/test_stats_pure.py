"""``stats.update`` is a pure function on both engines: every state stays what its own history says.

Issue 18 item 5: the host engine wrote a later update into the previous state's co-moment (and the
JAX path donated, i.e. deleted, the previous state). ``update_inplace`` is the explicit consuming
variant; ``init`` takes its array kind as an argument instead of reading the GEMM-backend global.
"""

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import jax
from gaugejax import hostblas, hoststats, stats
from gaugejax.errors import GaugeJaxError, StatsError

ENGINES = ("numpy", "jax")  # the host (numpy + BLAS) engine and the jitted JAX update


@contextlib.contextmanager
def _engine(name):
    stats.set_gemm_backend(name)
    try:
        yield
    finally:
        stats.set_gemm_backend("auto")


def _reference(xs, ys):
    """float64 two-pass (count, means, centered second moments, co-moment) of concatenated batches."""
    x = np.concatenate(xs, axis=-2).astype(np.float64)
    y = np.concatenate(ys, axis=-2).astype(np.float64)
    n = x.shape[-2]
    if n == 0:
        z = np.zeros
        return 0, z(x.shape[:-2] + x.shape[-1:]), z(y.shape[:-2] + y.shape[-1:]), \
            z(x.shape[:-2] + x.shape[-1:]), z(y.shape[:-2] + y.shape[-1:]), z(x.shape[:-2] + (x.shape[-1], y.shape[-1]))
    xc = x - x.mean(-2, keepdims=True)
    yc = y - y.mean(-2, keepdims=True)
    return (n, x.mean(-2), y.mean(-2), (xc**2).sum(-2), (yc**2).sum(-2), np.einsum("...ni,...nj->...ij", xc, yc))


def _assert_state(state, xs, ys):
    """Tolerance: float32 sums of ≤ 200 tokens of size O(1-5): ~1e-6 relative; 1e-5 relative plus
    1e-4 absolute (co-moment entries that cancel to ~0), as in test_stats_host."""
    want = _reference(xs, ys)
    assert int(state.count) == want[0]
    for got, w in zip(list(state)[1:], want[1:]):
        np.testing.assert_allclose(np.asarray(got), w, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("engine", ENGINES)
def test_issue_repro_old_states_stay_valid(engine):
    """The exact report: ``s1 = update(s0, x, x); s2 = update(s1, x, -x)`` must leave s0 empty and s1
    holding one batch (before the fix: ``s1.cxy is s2.cxy`` and s0 had a non-zero co-moment with
    count 0 on the host engine; the JAX engine deleted s0 and s1)."""
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    with _engine(engine):
        s0 = stats.init(4, backend=engine)
        s1 = stats.update(s0, x, x)
        s2 = stats.update(s1, x, -x)
    assert s1.cxy is not s2.cxy
    assert int(s0.count) == 0 and not np.any(np.asarray(s0.cxy))
    _assert_state(s1, [x], [x])
    _assert_state(s2, [x, x], [x, -x])


@settings(deadline=None, max_examples=25)
@given(engine=st.sampled_from(ENGINES), dims=st.sampled_from([(3, 2), (4, 4)]), layers=st.sampled_from([None, 2]),
       steps=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from([0, 1, 5, 40]), st.integers(0, 2**31 - 1)),
                      min_size=1, max_size=7))
def test_interleaved_branches_each_match_their_own_history(engine, dims, layers, steps):
    """A tree of states: each step updates any earlier state (the empty one, one already updated
    twice, an old one after a newer one...) with a new batch. At the end EVERY state equals the
    float64 statistics of the batches on its own path from the root, on both engines."""
    dx, dy = dims
    lead = () if layers is None else (layers,)
    with _engine(engine):
        states = [stats.init(dx, dy, n_layers=layers, backend=engine)]
        history = [([np.zeros(lead + (0, dx), np.float32)], [np.zeros(lead + (0, dy), np.float32)])]
        for pick, n, seed in steps:
            parent = pick % len(states)
            rng = np.random.default_rng(seed)
            x = (rng.normal(size=lead + (n, dx)) * rng.uniform(0.5, 2, dx) + rng.normal(0, 5, dx)).astype(np.float32)
            y = (rng.normal(size=lead + (n, dy)) + x[..., :1] - 2.0).astype(np.float32)
            states.append(stats.update(states[parent], x, y))
            history.append((history[parent][0] + [x], history[parent][1] + [y]))
    for state, (xs, ys) in zip(states, history):
        _assert_state(state, xs, ys)


@pytest.mark.parametrize("engine", ENGINES)
def test_update_inplace_streams_and_reuses_the_buffer(engine):
    """The consuming variant gives the same statistics; on the host it accumulates into the state's
    own co-moment (zero copy), under JAX it donates the old buffers."""
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(2, 96, 5)) + 3).astype(np.float32)
    y = (rng.normal(size=(2, 96, 4)) - 1).astype(np.float32)
    with _engine(engine):
        s = stats.update_inplace(stats.init(5, 4, n_layers=2, backend=engine), x[:, :32], y[:, :32])
        first = s.cxy
        for k in (32, 64):
            s = stats.update_inplace(s, x[:, k:k + 32], y[:, k:k + 32])
    _assert_state(s, [x], [y])
    if engine == "numpy":
        assert s.cxy is first
    else:
        assert first.is_deleted()


def test_init_backend_is_an_argument_not_the_gemm_pin():
    with _engine("jax"):
        auto = stats.init(3)
        host = stats.init(3, backend="numpy")
    with _engine("numpy"):
        dev = stats.init(3, backend="jax")
    assert type(host.cxy) is np.ndarray and isinstance(dev.cxy, jax.Array)
    assert (type(auto.cxy) is np.ndarray) == (jax.default_backend() == "cpu")
    with pytest.raises(StatsError, match="backend= one of"):
        stats.init(3, backend="blas")


def test_bad_input_raises_gaugejax_errors():
    x = np.zeros((8, 3), np.float32)
    cases = [
        lambda: stats.update(stats.init(3), x, x[:5]),
        lambda: stats.batch_stats(x[0], x[0]),
        lambda: stats.update(stats.update(stats.init(3), x, x), x[:, :2], x),
        lambda: stats.set_gemm_backend("blas"),
        lambda: hoststats.set_workers(0),
        lambda: hostblas.gemm_acc(x, x[:, :2], np.zeros((3, 3), np.float32)),
    ]
    for case in cases:
        with pytest.raises(GaugeJaxError) as err:
            case()
        assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_align_activations_leaves_resume_and_checkpoint_states_intact():
    """align_activations updates in place only a state it owns: the caller's resume state and every
    RunState handed to checkpoint() keep their values to the last bit while the loop goes on (before
    the fix the host engine overwrote them: a kept checkpoint ended up holding later batches)."""
    from gaugejax.align import align_activations

    rng = np.random.default_rng(2)
    batches = [(rng.normal(size=(32, 6)).astype(np.float32), rng.normal(size=(32, 6)).astype(np.float32))
               for _ in range(8)]  # independent streams: never certified, every batch is consumed
    kept = []
    snapshot = lambda rs: [np.array(f) for f in rs.stats]  # noqa: E731
    run = dict(min_tokens=10**6, max_tokens=None, warn=False, checkpoint_tokens=64)
    align_activations(batches[:4], checkpoint=lambda rs: kept.append((rs, snapshot(rs))), **run)
    resume = kept[-1][0]  # finished=True: take the state but continue it from the 5th batch
    resume = resume._replace(finished=False)
    align_activations(batches[4:], resume=resume, checkpoint=lambda rs: kept.append((rs, snapshot(rs))), **run)
    assert len(kept) >= 4
    for rs, before in kept:
        for f, b in zip(rs.stats, before):
            np.testing.assert_array_equal(np.asarray(f), b)
    xs, ys = zip(*batches)
    _assert_state(kept[-1][0].stats, list(xs), list(ys))
