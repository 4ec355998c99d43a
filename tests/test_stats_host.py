"""The host (numpy + BLAS) statistics engine: shifted chunks, worker threads, in-place GEMM."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import jax
import jax.numpy as jnp
from gaugejax import hostblas, hoststats, stats
from gaugejax.errors import StatsError


def _ref(x, y):
    """float64 two-pass reference: means, centered second moments and co-moment."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xc = x - x.mean(-2, keepdims=True)
    yc = y - y.mean(-2, keepdims=True)
    return x.mean(-2), y.mean(-2), (xc**2).sum(-2), (yc**2).sum(-2), np.einsum("...ni,...nj->...ij", xc, yc)


def _ref_corr(x, y):
    _, _, m2x, m2y, cxy = _ref(x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(cxy / np.sqrt(m2x[..., :, None] * m2y[..., None, :]))


@pytest.fixture(params=[1, 2, 3], ids=lambda w: f"workers{w}")
def n_workers(request):
    hoststats.set_workers(request.param)
    yield request.param
    hoststats.set_workers(None)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 16 tokens, so that small test batches exercise many chunks and worker splits."""
    monkeypatch.setattr(hoststats, "CHUNK_ROWS", 16)
    monkeypatch.setattr(hoststats, "_MIN_ROWS", 4)


def _stream(x, y, cuts, n_layers=None, inplace=False):
    s = stats.init(x.shape[-1], y.shape[-1], n_layers=n_layers)
    for a, b in zip(np.split(x, cuts, axis=-2), np.split(y, cuts, axis=-2)):
        s = (stats.update_inplace if inplace else stats.update)(s, a, b)
    return s


def test_default_backend_is_the_host_engine():
    if jax.default_backend() != "cpu":
        pytest.skip("the host engine is the default on CPU backends only")
    x = np.ones((8, 3), np.float32)
    s = stats.update(stats.init(3), x, x)
    assert all(isinstance(f, np.ndarray) for f in s)


@settings(max_examples=25)
@given(n=st.integers(1, 200), dx=st.integers(1, 9), dy=st.integers(1, 9), layers=st.sampled_from([None, 1, 3]),
       cuts=st.lists(st.integers(1, 199), max_size=3, unique=True), workers=st.integers(1, 4),
       inplace=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_equals_float64_reference(n, dx, dy, layers, cuts, workers, inplace, seed):
    """Every field within float32 rounding of the float64 two-pass values, for any batch split,
    layer axis and worker count, pure or in-place updates. Tolerance: sums of ≤ 200 float32 terms of size O(1-10) agree to
    a few 1e-6 relative; 1e-5 relative plus 1e-4 absolute (co-moment entries that cancel to ~0)."""
    rng = np.random.default_rng(seed)
    lead = () if layers is None else (layers,)
    x = (rng.normal(size=lead + (n, dx)) * rng.uniform(0.1, 3, dx) + rng.normal(0, 5, dx)).astype(np.float32)
    y = (rng.normal(size=lead + (n, dy)) + x[..., :1] - 2.0).astype(np.float32)
    hoststats.set_workers(workers)
    try:
        s = _stream(x, y, sorted(c for c in cuts if c < n), n_layers=layers, inplace=inplace)
    finally:
        hoststats.set_workers(None)
    assert int(s.count) == n
    for got, want in zip(s[1:], _ref(x, y)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_large_offsets_keep_float32_accuracy(n_workers, small_chunks):
    """Offsets of 1e3·std (and -5e2): the shift makes x - K exact in float32 (Sterbenz), so the
    correlation is as good as for centered data: 5e-6 (measured 1.4e-6, float32 sums over ~1000
    tokens), 20× tighter than the 1e-4 the batch-mean JAX path is held to."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 1024, 6))
    x = (1e3 + z).astype(np.float32)
    y = (-5e2 + z[..., ::-1] + 0.1 * rng.normal(size=z.shape)).astype(np.float32)
    s = _stream(x, y, [100, 101, 700], n_layers=2)
    np.testing.assert_allclose(np.asarray(stats.finalize(s).corr), _ref_corr(x, y), atol=5e-6)


def test_outlier_token_and_drift_between_batches(n_workers, small_chunks):
    """A first token 1e4·std away in a few channels (the attention-sink token of real residual
    streams; it is one of the pilot rows, so it moves its batch's shift by ~1e4/64·std) and a batch
    whose means jump by 100·std (shifts are per batch, so the jump never enters a float32 GEMM):
    within 3e-6 of the float64 reference (measured ≤ 7e-7; float32 sums over ~1000 tokens)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2048, 8)).astype(np.float32)
    y = (x[:, ::-1] + 0.5 * rng.normal(size=x.shape)).astype(np.float32)
    x[0, :3] = 1e4
    y[0, 5:] = -1e4
    x[1024:] += 100.0
    y[1024:] -= 100.0
    s = _stream(x, y, [1024, 1030])
    np.testing.assert_allclose(np.asarray(stats.finalize(s).corr), _ref_corr(x, y), atol=3e-6)


def test_constant_channels_exact(n_workers, small_chunks):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(200, 5)) + 7).astype(np.float32)
    x[:, 1] = 3.25
    x[:, 2] = 0.0
    x[:, 4] = 1e6 + 0.5
    y = x.copy()
    y[:, 3] = -7.0
    s = _stream(x, y, [1, 64, 65])
    assert np.asarray(s.m2_x)[[1, 2, 4]].tolist() == [0.0, 0.0, 0.0]  # x - K is exactly 0 there
    assert np.asarray(s.mean_x)[[1, 2, 4]].tolist() == [3.25, 0.0, np.float32(1e6 + 0.5)]
    c = stats.finalize(s)
    corr = np.asarray(c.corr)
    assert np.asarray(c.const_x).tolist() == [False, True, True, False, True]
    assert np.asarray(c.const_y).tolist() == [False, True, True, True, True]
    assert (corr[[1, 2, 4]] == 0).all() and (corr[:, [1, 2, 3, 4]] == 0).all()
    assert corr[0, 0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_empty_batch_is_identity(backend):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 40, 4)).astype(np.float32)
    stats.set_gemm_backend(backend)
    try:
        s = stats.update(stats.init(4, n_layers=3), x, x)
        want = [np.array(f) for f in s]
        s = stats.update(s, x[:, :0], x[:, :0])
        e = stats.update(stats.init(4, n_layers=3), x[:, :0], x[:, :0])
    finally:
        stats.set_gemm_backend("auto")
    for got, w in zip(s, want):
        np.testing.assert_array_equal(np.asarray(got), w)
    assert int(e.count) == 0 and not np.isnan(np.asarray(e.mean_x)).any()
    assert (np.asarray(stats.finalize(e).corr) == 0).all()


def test_layer_axis_equals_separate_streams(n_workers, small_chunks):
    """Three layers split over 1-3 workers (a worker starting mid-layer keeps a private
    accumulator): the same as each layer alone, to float32 rounding of a different chunk order."""
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(3, 90, 6)) + 20).astype(np.float32)
    y = (x + rng.normal(size=x.shape)).astype(np.float32)
    joint = _stream(x, y, [37], n_layers=3)
    for l in range(3):
        sep = _stream(x[l], y[l], [37])
        for a, b in zip(list(joint)[1:], list(sep)[1:]):
            np.testing.assert_allclose(np.asarray(a)[l], np.asarray(b), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16, np.float64])
def test_low_and_high_precision_inputs_equal_their_float32_cast(dtype, small_chunks):
    """Inputs are cast to float32 before the shift, as in the JAX path: bitwise the same statistics
    as for the float32 cast of the same data."""
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(2, 70, 5)) * 4 + 10).astype(dtype)
    y = (rng.normal(size=(2, 70, 3)) - 3).astype(dtype)
    a = _stream(x, y, [33], n_layers=2)
    b = _stream(x.astype(np.float32), y.astype(np.float32), [33], n_layers=2)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_host_and_jax_states_merge():
    """A host state merges with a JAX state (both orders), a JAX state takes a host update and a
    host state a JAX update: all equal the one-batch float64 values to float32 rounding."""
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(300, 6)) + 50).astype(np.float32)
    y = (x[:, ::-1] * 2 + rng.normal(size=x.shape)).astype(np.float32)
    want = _ref_corr(x, y)
    host = stats.update(stats.init(6), x[:120], y[:120])
    assert isinstance(host.cxy, np.ndarray)
    dev = stats.batch_stats(jnp.asarray(x[120:]), jnp.asarray(y[120:]))
    for merged in (stats.merge(host, dev), stats.merge(dev, host)):
        np.testing.assert_allclose(np.asarray(stats.finalize(merged).corr), want, atol=2e-6)
    jax_then_host = stats.update(stats.batch_stats(jnp.asarray(x[:120]), jnp.asarray(y[:120])), x[120:], y[120:])
    np.testing.assert_allclose(np.asarray(stats.finalize(jax_then_host).corr), want, atol=2e-6)
    stats.set_gemm_backend("jax")
    try:
        host_then_jax = stats.update(stats.update(stats.init(6), x[:120], y[:120]), x[120:], y[120:])
    finally:
        stats.set_gemm_backend("auto")
    np.testing.assert_allclose(np.asarray(stats.finalize(host_then_jax).corr), want, atol=2e-6)


def test_update_never_writes_its_input_and_update_inplace_does():
    """``update`` leaves the input state's arrays bitwise unchanged (JAX or host state, non-empty
    or empty batch); ``update_inplace`` accumulates into a host state's own co-moment, and a JAX
    state (not writeable) is read, never written."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    s0 = stats.batch_stats(jnp.asarray(x), jnp.asarray(x))
    before = np.array(s0.cxy)
    s1 = stats.update_inplace(s0, x, x)
    np.testing.assert_array_equal(np.asarray(s0.cxy), before)  # the JAX buffer is never written
    kept = [np.array(f) for f in s1]
    for batch in (x, x[:0]):
        s2 = stats.update(s1, batch, batch)
        assert not any(np.shares_memory(a, b) for a, b in zip(s1, s2) if isinstance(b, np.ndarray))
        for f, k in zip(s1, kept):
            np.testing.assert_array_equal(f, k)
    s3 = stats.update_inplace(s1, x, x)
    assert s3.cxy is s1.cxy and int(s3.count) == 192
    with pytest.raises(StatsError, match="co-moment has shape"):
        stats.update(s3, x[:, :3], x)


def test_worker_counts_agree(small_chunks):
    rng = np.random.default_rng(9)
    x = (rng.normal(size=(2, 333, 7)) + 3).astype(np.float32)
    y = (rng.normal(size=(2, 333, 5)) - 1).astype(np.float32)
    out = []
    for w in (1, 2, 5):
        hoststats.set_workers(w)
        try:
            out.append(_stream(x, y, [100], n_layers=2))
        finally:
            hoststats.set_workers(None)
    for other in out[1:]:
        for a, b in zip(out[0], other):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError):
        hoststats.set_workers(0)


def test_gemm_acc_matches_numpy(monkeypatch):
    rng = np.random.default_rng(10)
    a = rng.normal(size=(50, 20)).astype(np.float32)
    b = rng.normal(size=(50, 9)).astype(np.float32)
    for blas in ([hostblas._BLAS, None] if hostblas._BLAS is not None else [None]):
        monkeypatch.setattr(hostblas, "_BLAS", blas)
        c = rng.normal(size=(20, 9)).astype(np.float32)
        want = a.T.astype(np.float64) @ b + c
        hostblas.gemm_acc(a, b, c)
        np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)
        big = np.full((12, 9), np.nan, np.float32)  # beta = 0 ignores garbage (NaN) in c
        hostblas.gemm_acc(a[:, 4:16], b, big, 0.0)  # strided rows of a
        np.testing.assert_allclose(big, a[:, 4:16].T.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
        empty = np.full((20, 9), np.nan, np.float32)
        hostblas.gemm_acc(a[:0], b[:0], empty, 0.0)
        assert (empty == 0).all()
    with pytest.raises(ValueError, match="shapes"):
        hostblas.gemm_acc(a, b[:3], np.zeros((20, 9), np.float32))


def test_single_threaded_restores_thread_count():
    before = hostblas.blas_threads()
    with hostblas.single_threaded():
        assert hostblas.blas_threads() in (None, 1)
    assert hostblas.blas_threads() == before


def test_single_threaded_overlapping_blocks_restore_thread_count():
    """Two threads whose blocks overlap (the second enters while the first is inside and leaves
    after it): a naive save/restore would leave BLAS single-threaded for good."""
    import threading

    before = hostblas.blas_threads()
    inside, first_left = threading.Event(), threading.Event()
    seen = []

    def second():
        with hostblas.single_threaded():
            inside.set()
            first_left.wait(5)
            seen.append(hostblas.blas_threads())  # the first block's exit must not restore yet

    t = threading.Thread(target=second)
    with hostblas.single_threaded():
        t.start()
        assert inside.wait(5)
    first_left.set()
    t.join(5)
    assert seen and seen[0] in (None, 1)
    assert hostblas.blas_threads() == before
