"""Streaming correlation statistics: merge law, stability, constant channels, layers."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import jax
from gaugejax import stats
from gaugejax.errors import GaugeJaxError, StatsError


def _ref_corr(x, y):
    """float64 two-pass reference Pearson correlation (0 for constant channels)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xc = x - x.mean(-2, keepdims=True)
    yc = y - y.mean(-2, keepdims=True)
    sx = np.sqrt((xc**2).sum(-2))
    sy = np.sqrt((yc**2).sum(-2))
    cxy = np.einsum("...ni,...nj->...ij", xc, yc)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = cxy / (sx[..., :, None] * sy[..., None, :])
    return np.nan_to_num(c)


def _acc(x, y, splits, n_layers=None):
    s = stats.init(x.shape[-1], y.shape[-1], n_layers=n_layers)
    for a, b in zip(np.split(x, splits, axis=-2), np.split(y, splits, axis=-2)):
        s = stats.update(s, a, b)
    return s


@given(cuts=st.lists(st.integers(1, 95), max_size=4, unique=True), seed=st.integers(0, 2**31 - 1))
def test_streamed_equals_one_batch(cuts, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(96, 5)).astype(np.float32)
    y = (x[:, [1, 0, 2, 4, 3]] + 0.5 * rng.normal(size=(96, 5))).astype(np.float32)
    one = stats.finalize(_acc(x, y, []))
    many = stats.finalize(_acc(x, y, sorted(cuts)))
    # float32 sums over 96 tokens in a different order: agreement to ~100 ulps of O(1) values.
    np.testing.assert_allclose(np.asarray(many.corr), np.asarray(one.corr), atol=2e-6)
    np.testing.assert_allclose(np.asarray(one.corr), _ref_corr(x, y), atol=2e-6)
    assert int(many.n) == 96


def test_merge_is_commutative_and_empty_is_identity():
    rng = np.random.default_rng(0)
    a = stats.batch_stats(rng.normal(size=(30, 4)).astype(np.float32), rng.normal(size=(30, 3)).astype(np.float32))
    b = stats.batch_stats(rng.normal(size=(11, 4)).astype(np.float32), rng.normal(size=(11, 3)).astype(np.float32))
    ab, ba = stats.merge(a, b), stats.merge(b, a)
    for u, v in zip(ab, ba):
        # Chan's formula is symmetric up to float32 rounding of the weighted means.
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6, atol=1e-6)
    e = stats.init(4, 3)
    for u, v in zip(stats.merge(e, a), a):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))  # exact: every correction term is 0


def test_large_offsets_stay_accurate():
    # Residual streams have channel means far above their spread; the naive Σxy - n x̄ ȳ in float32
    # would lose every digit here. Centered batches + Chan keep ~1e-4 (float32 eps * offset/std).
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4096, 6))
    x = (1e3 + z).astype(np.float32)
    y = (-5e2 + z[:, ::-1] + 0.1 * rng.normal(size=z.shape)).astype(np.float32)
    c = stats.finalize(_acc(x, y, list(range(256, 4096, 256))))
    np.testing.assert_allclose(np.asarray(c.corr), _ref_corr(x, y), atol=1e-4)


def test_constant_channels_give_zero_and_flag():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    x[:, 1] = 3.25
    x[:, 2] = 0.0
    y = x.copy()
    y[:, 3] = 7.0
    c = stats.finalize(_acc(x, y, [10, 40]))
    corr = np.asarray(c.corr)
    assert np.isfinite(corr).all()
    assert np.asarray(c.const_x).tolist() == [False, True, True, False]
    assert np.asarray(c.const_y).tolist() == [False, True, True, True]
    assert (corr[[1, 2]] == 0).all() and (corr[:, [1, 2, 3]] == 0).all()
    assert corr[0, 0] == pytest.approx(1.0, abs=1e-6)  # float32 rounding of a self-correlation


def test_empty_state_finalizes_to_zeros():
    c = stats.finalize(stats.init(3, n_layers=2))
    assert np.asarray(c.corr).shape == (2, 3, 3)
    assert (np.asarray(c.corr) == 0).all() and int(c.n) == 0


def test_layers_equal_separate_accumulators():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 50, 4)).astype(np.float32)
    y = (x + rng.normal(size=x.shape)).astype(np.float32)
    joint = np.asarray(stats.finalize(_acc(x, y, [20], n_layers=3)).corr)
    for l in range(3):
        sep = np.asarray(stats.finalize(_acc(x[l], y[l], [20])).corr)
        np.testing.assert_allclose(joint[l], sep, atol=1e-6)  # same arithmetic up to batched GEMM order


def test_shape_errors():
    """Bad shapes are StatsError: a GaugeJaxError (the CLI's one line) and a ValueError."""
    with pytest.raises(StatsError, match="same layers and tokens"):
        stats.batch_stats(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(StatsError, match=r"\(n, d\)"):
        stats.batch_stats(np.zeros((4,)), np.zeros((4,)))
    assert issubclass(StatsError, GaugeJaxError) and issubclass(StatsError, ValueError)


def test_sharded_update_on_local_mesh_equals_update():
    rng = np.random.default_rng(4)
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    upd = stats.make_sharded_update(mesh)
    x = rng.normal(size=(2, 64, 5)).astype(np.float32)
    y = rng.normal(size=(2, 64, 5)).astype(np.float32)
    s1 = stats.init(5, n_layers=2)
    s2 = stats.init(5, n_layers=2)
    for k in range(2):
        sl = slice(32 * k, 32 * (k + 1))
        s1 = upd(s1, stats.shard_tokens(x[:, sl], mesh), stats.shard_tokens(y[:, sl], mesh))
        s2 = stats.update(s2, x[:, sl], y[:, sl])
    np.testing.assert_allclose(np.asarray(stats.finalize(s1).corr), np.asarray(stats.finalize(s2).corr), atol=1e-6)


@pytest.mark.parametrize("shape", [(96, 5), (2, 64, 7)])
def test_numpy_gemm_path_equals_jax_path(shape):
    """The host (numpy BLAS) and JAX updates give the same statistics: same centering, float32 GEMM;
    means/second moments differ by float32 vs float64 accumulation only (~1e-6 relative)."""
    rng = np.random.default_rng(5)
    x = (rng.normal(size=shape) + 100.0).astype(np.float32)
    y = (x[..., ::-1] + 0.3 * rng.normal(size=shape) - 50.0).astype(np.float32)
    lead = None if len(shape) == 2 else shape[0]
    d = shape[-1]
    out = {}
    for backend in ("numpy", "jax"):
        stats.set_gemm_backend(backend)
        try:
            assert stats.gemm_backend() == backend
            s = stats.init(d, n_layers=lead, backend=backend)
            for a, b in zip(np.split(x, [20, 50], axis=-2), np.split(y, [20, 50], axis=-2)):
                s = stats.update(s, a, b)
            out[backend] = s
        finally:
            stats.set_gemm_backend("auto")
    for u, v in zip(out["numpy"], out["jax"]):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=2e-5, atol=2e-4)
    np.testing.assert_allclose(np.asarray(stats.finalize(out["numpy"]).corr), _ref_corr(x, y), atol=2e-6)


def test_gemm_backend_choice():
    assert stats.gemm_backend() == ("numpy" if jax.default_backend() == "cpu" else "jax")
    with pytest.raises(StatsError, match="unknown GEMM backend"):
        stats.set_gemm_backend("blas")
    # under jit the inputs are tracers: the JAX path is taken (and works)
    f = jax.jit(lambda x, y: stats.update(stats.init(3), x, y).cxy)
    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(f(x, x)), np.asarray(stats.host_batch_stats(x, x).cxy), rtol=1e-5, atol=1e-5)
