"""Correlation statistics accumulated on the host: shifted token chunks, an in-place BLAS GEMM, one
worker thread per core.

This is the CPU engine behind :func:`gaugejax.stats.update`. It reaches the speed of one plain
``Xᵀ Y`` GEMM because it never makes a pass over the data that the GEMM does not need:

* **Shift, not mean.** Every batch is shifted by a pilot estimate ``K`` of its mean (the float64
  mean of at most :data:`PILOT_ROWS` evenly spaced tokens) instead of its exact mean, so no pass
  computes the mean first. The GEMM sees ``x - K``, which is centered up to a fraction of a standard
  deviation, and the float32 sums keep their digits whatever the channel offsets (the textbook
  ``Σxy - n·x̄·ȳ`` loses all of them when ``|mean| ≫ std``). The shifted sums ``S = Σ(x-K)(y-K')ᵀ``,
  ``Σ(x-K)``, ``Σ(x-K)²`` turn into centered moments exactly, and the merge into the running state
  is Chan's formula: together a rank-two correction of the co-moment,
  ``M = M_a + S - Sx Syᵀ/n_b + (n_a n_b / n)·δx δyᵀ``, applied as one ``k = 2`` GEMM.
* **Chunks that stay in cache.** Tokens go through in chunks of :data:`CHUNK_ROWS`: a chunk is
  shifted into a small buffer (which stays in the core's L2 cache), its sum and sum of squares are
  taken there, and the GEMM accumulates it in place into the co-moment (``beta = 1``), so the data
  is read from memory once.
* **One worker per core.** The chunks are split between worker threads, each running numpy's
  OpenBLAS single-threaded (:mod:`gaugejax.hostblas` releases the GIL), so the elementwise work is
  parallel too. The first worker on a layer accumulates straight into the state's co-moment; a
  worker that starts inside a layer another one began keeps a private accumulator, added in at the
  end together with the rank-two correction (split by rows between the workers).
* **Pure by default.** The GEMMs write a fresh co-moment (``beta = 0`` on a layer's first chunk)
  and the old state's co-moment is added in that final row-block pass, where the block is in cache
  anyway: the input state is never written, at the cost of one read of its co-moment. With
  ``inplace=True`` (:func:`gaugejax.stats.update_inplace`, for a caller that owns the state) the
  GEMMs accumulate straight into the state's co-moment when it is a writeable float32 numpy array.

Example:
  >>> x = np.arange(12, dtype=np.float32).reshape(4, 3)
  >>> count, mean_x, mean_y, m2_x, m2_y, cxy = accumulate(None, x, x)
  >>> int(count), mean_x.tolist(), float(cxy[0, 0])
  (4, [4.5, 5.5, 6.5], 45.0)
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import numpy as np

from gaugejax import hostblas
from gaugejax.errors import StatsError

__all__ = ["accumulate", "aligned", "pilot_shift", "workers", "set_workers", "CHUNK_ROWS", "PILOT_ROWS",
           "GEMM_BACKENDS", "gemm_backend", "set_gemm_backend", "on_host"]

GEMM_BACKENDS = ("auto", "numpy", "jax")
_gemm_choice = os.environ.get("GAUGEJAX_GEMM", "auto")

CHUNK_ROWS = 256
"""Tokens per chunk: a (256, d) float32 buffer per stream stays in L2 up to d = 2048, and a
k = 256 GEMM runs at the speed of one large GEMM (measured; smaller chunks lose GEMM speed)."""

PILOT_ROWS = 64
"""Tokens averaged for the shift ``K``: its error is then ~std/8, which costs the float32 sums a
factor ``1 + (K - mean)²/std²`` ≈ 1.02 of their rounding error."""

_MIN_ROWS = 32
_MAX_WORKERS = 8
_workers_override: int | None = None
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] = (0, 0)  # (pid, threads): a forked child or a larger share needs a new pool
_scratch: dict[tuple, np.ndarray] = {}


def set_gemm_backend(name: str) -> None:
    """Pins the GEMM of :func:`gaugejax.stats.update`: ``"numpy"`` (this host engine), ``"jax"`` or
    ``"auto"`` (numpy on a CPU backend, JAX on accelerators); ``GAUGEJAX_GEMM`` sets the default."""
    global _gemm_choice
    if name not in GEMM_BACKENDS:
        raise StatsError(f"unknown GEMM backend {name!r}; use one of {', '.join(GEMM_BACKENDS)}")
    _gemm_choice = name


def gemm_backend() -> str:
    """The GEMM backend :func:`gaugejax.stats.update` uses for host-resident inputs: ``"numpy"`` or ``"jax"``.

    Example:
      >>> gemm_backend() in ("numpy", "jax")
      True
    """
    if _gemm_choice in ("numpy", "jax"):
        return _gemm_choice
    return "numpy" if jax.default_backend() == "cpu" else "jax"


def on_host(a: Any) -> bool:
    """A numpy array, or a JAX array held whole by one CPU device (zero-copy view): input this engine
    takes.

    Example:
      >>> on_host(np.zeros(2)), on_host(jax.jit(lambda: 1.0)()) == (jax.default_backend() == "cpu")
      (True, True)
    """
    if isinstance(a, np.ndarray):
        return True
    if isinstance(a, jax.core.Tracer) or not isinstance(a, jax.Array):
        return not isinstance(a, jax.core.Tracer)
    try:
        devs = a.devices()
    except Exception:  # noqa: BLE001 - deleted or otherwise unusable arrays: let JAX raise
        return False
    return len(devs) == 1 and next(iter(devs)).platform == "cpu" and a.is_fully_addressable


def workers() -> int:
    """Worker threads an update uses: the usable cores (at most 8) where numpy's OpenBLAS can be
    called without the GIL, else 1.

    Example:
      >>> workers() >= 1
      True
    """
    if _workers_override is not None:
        return _workers_override
    if not hostblas.threads_free():
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_WORKERS))


def set_workers(n: int | None) -> None:
    """Pins the number of worker threads (``None``: one per usable core); for tests and tuning."""
    global _workers_override
    if n is not None and int(n) < 1:
        raise StatsError(f"need at least one worker thread, got {n}: pass n >= 1, or None for one per core")
    _workers_override = None if n is None else int(n)


def pilot_shift(x3: np.ndarray) -> np.ndarray:
    """``(L, d)`` float32 shift: the float64 mean of at most :data:`PILOT_ROWS` evenly spaced tokens
    of ``x3: (L, n, d)`` after their cast to float32 (exactly the value of a constant channel)."""
    n = x3.shape[1]
    rows = np.unique(np.linspace(0, n - 1, min(n, PILOT_ROWS)).round().astype(np.int64))
    return x3[:, rows, :].astype(np.float32).astype(np.float64).mean(axis=1).astype(np.float32)


def aligned(shape: tuple, *, zero: bool = False) -> np.ndarray:
    """A float32 array whose data starts on a 64-byte (cache line, AVX-512) boundary: numpy's own
    large allocations start 16 bytes past one, which costs the shift 15 % and the sums 25 %
    (measured). ``zero`` gives zeros (lazily mapped pages, like ``np.zeros``).

    Example:
      >>> aligned((3, 5)).ctypes.data % 64
      0
    """
    size = int(np.prod(shape))
    raw = (np.zeros if zero else np.empty)(size + 16, np.float32)
    start = (-raw.ctypes.data % 64) // 4
    return raw[start:start + size].reshape(shape)


def _buffer(key: tuple, shape: tuple) -> np.ndarray:
    buf = _scratch.get(key)
    if buf is None or buf.shape != shape:
        buf = _scratch[key] = aligned(shape)
    return buf


def _shifted(src: np.ndarray, k: np.ndarray, buf: np.ndarray) -> np.ndarray:
    out = buf[: src.shape[0]]
    if src.dtype == np.float32:
        np.subtract(src, k, out=out)
    else:  # float16 / bfloat16 / float64 / ints: to float32 first, as the JAX path does
        np.copyto(out, src, casting="unsafe")
        np.subtract(out, k, out=out)
    return out


def _plan(n_layers: int, n: int, w: int) -> list[list[tuple[int, int, int]]]:
    """Contiguous shares of the (layer, chunk) units, layer-major, one per worker."""
    chunks = -(-n // CHUNK_ROWS)
    if n_layers * chunks < w:
        chunks = max(chunks, min(-(-w // n_layers), n // _MIN_ROWS))
    size = -(-n // chunks)
    units = [(l, i, min(i + size, n)) for l in range(n_layers) for i in range(0, n, size)]
    w = min(w, len(units))
    return [units[k * len(units) // w:(k + 1) * len(units) // w] for k in range(w)]


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_key
    if _pool is None or _pool_key[0] != os.getpid() or _pool_key[1] < n:
        _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="gaugejax-stats")
        _pool_key = (os.getpid(), n)
    return _pool


def _run(jobs: list) -> list:
    """Runs the callables, the first on this thread, the others on the pool; their results."""
    if len(jobs) == 1:
        return [jobs[0]()]
    futures = [_executor(len(jobs) - 1).submit(job) for job in jobs[1:]]
    try:
        first = jobs[0]()
    finally:
        rest = [f.result() for f in futures]
    return [first] + rest


def _host_matrix(a: Any, shape: tuple) -> np.ndarray | None:
    if isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable:
        return a if a.shape == shape else None
    return None


def accumulate(state: Any, x: Any, y: Any, *, inplace: bool = False) -> tuple:
    """Adds the batch ``(x, y)`` to ``state``; the six :class:`~gaugejax.stats.CorrStats` fields.

    Args:
      state: ``(count, mean_x, mean_y, m2_x, m2_y, cxy)`` (numpy or JAX arrays), or ``None`` for an
        empty state. Never written unless ``inplace``.
      x: ``(n, d_x)`` or ``(L, n, d_x)``; y: same leading axes, ``d_y`` columns; any real dtype
        (computed in float32).
      inplace: accumulate into ``state``'s ``cxy`` when it is a writeable float32 C-contiguous numpy
        array, and return that array (the caller gives the state up); otherwise the result has
        arrays of its own.

    Returns:
      numpy ``(count, mean_x, mean_y, m2_x, m2_y, cxy)``: int32 count, float32 moments.

    Example:
      >>> x = np.ones((2, 3), np.float32)
      >>> s1 = accumulate(None, x, x)
      >>> s2 = accumulate(s1, x, 2 * x)
      >>> int(s1[0]), int(s2[0]), s2[5] is s1[5], accumulate(s2, x, x, inplace=True)[5] is s2[5]
      (2, 4, False, True)
    """
    x = np.asarray(x)
    y = np.asarray(y)
    lead = x.shape[:-2]
    x3 = x.reshape((int(np.prod(lead)),) + x.shape[-2:])
    y3 = y.reshape((int(np.prod(lead)),) + y.shape[-2:])
    n_layers, n, dx = x3.shape
    dy = y3.shape[-1]
    cshape = lead + (dx, dy)
    na = 0 if state is None else int(np.asarray(state[0]))
    if state is not None and tuple(np.shape(state[5])) != cshape:
        raise StatsError(f"the state's co-moment has shape {tuple(np.shape(state[5]))} but this batch needs "
                              f"{cshape}: pass batches of the widths and layer count the state was made for")
    if n == 0 or n_layers == 0:
        if state is None or n_layers == 0:
            z = np.zeros
            return (np.asarray(na + n, np.int32), z(lead + (dx,), np.float32), z(lead + (dy,), np.float32),
                    z(lead + (dx,), np.float32), z(lead + (dy,), np.float32), z(cshape, np.float32))
        return tuple(state) if inplace else tuple(np.array(f) if isinstance(f, np.ndarray) else f for f in state)
    with _lock:
        return _accumulate(state, na, x3, y3, lead, cshape, inplace)


class _Batch(NamedTuple):
    """One update's inputs as ``(L, n, d)`` views, their shifts, the ``(L, d_x, d_y)`` co-moment it
    accumulates into, whether that starts empty, and the workers' shares of the chunks."""

    x3: np.ndarray
    y3: np.ndarray
    kx: np.ndarray
    ky: np.ndarray
    acc: np.ndarray
    fresh: bool
    parts: list


def _chunk_pass(b: _Batch, w: int) -> tuple:
    """Worker ``w``: shifts its chunks, sums them, accumulates their GEMMs; the float64 sums
    ``(Σx', Σy', Σx'², Σy'²)`` per layer and ``(layer, private accumulator)`` if it kept one."""
    part = b.parts[w]
    n_layers, _, dx = b.x3.shape
    dy = b.y3.shape[-1]
    private = part[0][0] if w > 0 and b.parts[w - 1][-1][0] == part[0][0] else None
    priv = _buffer((w, "acc"), (dx, dy)) if private is not None else None
    size = max(j - i for _, i, j in part)
    bx, by = _buffer((w, "x"), (size, dx)), _buffer((w, "y"), (size, dy))
    ones = np.ones(size, np.float32)
    rows = [np.empty((len(part), d), np.float32) for d in (dx, dy, dx, dy)]  # per chunk, float32
    started: set[int] = set()
    for u, (l, i, j) in enumerate(part):
        xb, yb = _shifted(b.x3[l, i:j], b.kx[l], bx), _shifted(b.y3[l, i:j], b.ky[l], by)
        np.matmul(ones[: j - i], xb, out=rows[0][u])  # a BLAS gemv: 2x faster than add.reduce here
        np.matmul(ones[: j - i], yb, out=rows[1][u])
        np.einsum("ni,ni->i", xb, xb, out=rows[2][u])
        np.einsum("ni,ni->i", yb, yb, out=rows[3][u])
        own = l == private
        beta = 0.0 if l not in started and (own or b.fresh) else 1.0
        started.add(l)
        hostblas.gemm_acc(xb, yb, priv if own else b.acc[l], beta)
    layer = np.array([l for l, _, _ in part])
    sums = []
    for r in rows:
        total = np.zeros((n_layers, r.shape[1]))
        np.add.at(total, layer, r.astype(np.float64))
        sums.append(total)
    return sums, (private, priv)


def _combine(acc: np.ndarray, privates: list, a: np.ndarray, b: np.ndarray, share: list) -> None:
    """Adds the private accumulators and the rank-two correction ``aᵀ b`` to row blocks of ``acc``."""
    for l, r0, r1 in share:
        for pl, p in privates:
            if pl == l:
                np.add(acc[l, r0:r1], p[r0:r1], out=acc[l, r0:r1])
        hostblas.gemm_acc(a[l][:, r0:r1], b[l], acc[l, r0:r1])


def _accumulate(state, na, x3, y3, lead, cshape, inplace) -> tuple:
    n_layers, n, dx = x3.shape
    out = _host_matrix(state[5], cshape) if inplace and state is not None else None
    fresh = na == 0 or out is None  # the GEMMs overwrite (beta = 0) rather than accumulate
    prior = [] if na == 0 or out is not None else list(enumerate(np.asarray(state[5]).reshape(n_layers, dx, -1)))
    if out is None:
        out = aligned(cshape)
    acc = out.reshape(n_layers, dx, y3.shape[-1])
    kx, ky = pilot_shift(x3), pilot_shift(y3)
    batch = _Batch(x3, y3, kx, ky, acc, fresh, _plan(n_layers, n, workers()))
    w = len(batch.parts)
    with hostblas.single_threaded() if w > 1 else contextlib.nullcontext():
        results = _run([(lambda k=k: _chunk_pass(batch, k)) for k in range(w)])
        sx, sy, qx, qy = (sum(r[0][k] for r in results) for k in range(4))
        privates = [r[1] for r in results if r[1][0] is not None] + prior  # the old co-moment is one more
        means, m2s, a, b = _moments(state, na, n, (kx, ky), (sx, sy), (qx, qy), lead)
        blocks = [(l, r0, min(r0 + 64, dx)) for l in range(n_layers) for r0 in range(0, dx, 64)]
        _run([(lambda s=s: _combine(acc, privates, a, b, s)) for s in (blocks[k::w] for k in range(w)) if s])
    return (np.asarray(na + n, np.int32), means[0], means[1], m2s[0], m2s[1], out)


def _moments(state, na, nb, shifts, sums, squares, lead) -> tuple:
    """New means and second moments (float64 arithmetic), and the rank-two correction ``aᵀ b`` of
    the co-moment (``(L, 2, d)`` float32 factors)."""
    n = na + nb
    w = na * nb / n
    means, m2s, factors = [], [], []
    for side, (k, s, q) in enumerate(zip(shifts, sums, squares)):
        mb = k.astype(np.float64) + s / nb
        if na:
            ma = np.asarray(state[1 + side], np.float64).reshape(mb.shape)
            m2a = np.asarray(state[3 + side], np.float64).reshape(mb.shape)
        else:
            ma, m2a = mb, 0.0
        d = mb - ma
        means.append((ma + d * (nb / n)).astype(np.float32).reshape(lead + mb.shape[1:]))
        m2s.append(np.maximum(m2a + (q - s * s / nb) + w * d * d, 0.0).astype(np.float32).reshape(lead + mb.shape[1:]))
        sign = 1.0 if side == 0 else -1.0
        factors.append(np.stack([sign * s / np.sqrt(nb), np.sqrt(w) * d], axis=1).astype(np.float32))
    return means, m2s, factors[0], factors[1]
