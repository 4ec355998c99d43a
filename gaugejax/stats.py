"""Streaming cross-correlation statistics of two residual streams.

The matcher needs ``C[i, j] = corr(X[:, i], Y[:, j])`` over many tokens. It is accumulated here as
merge-able partial sums (count, means, centered second moments, centered cross-moment), optax
style: pure functions ``init`` / ``update`` / ``merge`` / ``finalize`` over a :class:`CorrStats`
``NamedTuple`` (every state stays valid; :func:`update_inplace` is for a loop that owns its state).

Numerics: every batch is centered on its own mean and batches are combined with Chan et al.'s
parallel formula, so the float32 sums never subtract two large nearly equal numbers (the textbook
``Σxy - n·x̄·ȳ`` loses every digit on residual streams with large means). The cost of an update is
one ``Xcᵀ Yc`` GEMM per layer plus ``O((n + d) d)`` elementwise work.

Several layers at once: with a leading layer axis, ``X: (L, n, d)`` gives a ``(L, d, d)``
cross-moment; one residual gauge is shared by all layers, so the matcher can sum the evidence.

GEMM backend: on a CPU host :func:`update` runs in numpy (:mod:`gaugejax.hoststats`): each batch is
shifted by a pilot estimate of its mean in cache-sized chunks, the GEMMs accumulate into a fresh
co-moment through numpy's OpenBLAS on one worker thread per core, and a last pass adds the old
co-moment and a rank-two correction that makes the moments exactly centered, so an update costs
about one plain ``Xᵀ Y`` (``benchmarks/bench_stats.py``). On accelerators, under ``jit`` and for
sharded inputs it stays in JAX; both give the same statistics, and host states (numpy arrays) merge
with JAX states. :func:`set_gemm_backend` or ``GAUGEJAX_GEMM=jax|numpy|auto`` pins the backend.

Data parallel: :func:`make_sharded_update` shards the token axis over a device mesh (one or many
processes, ``jax.distributed``); each device computes its shard's centered moments and they are
all-reduced with the same exact merge (:func:`allreduce`).

Example:
  >>> import numpy as np
  >>> from gaugejax import stats
  >>> rng = np.random.default_rng(0)
  >>> x = rng.normal(size=(512, 8)).astype(np.float32)
  >>> s = stats.init(8)
  >>> for part in np.split(x, 4):
  ...     s = stats.update(s, part, -part[:, ::-1])
  >>> c = stats.finalize(s)
  >>> int(c.n), bool(np.allclose(np.asarray(c.corr)[np.arange(8), 7 - np.arange(8)], -1, atol=1e-5))
  (512, True)
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gaugejax import hoststats
from gaugejax.hoststats import GEMM_BACKENDS, gemm_backend, set_gemm_backend
from gaugejax.errors import StatsError

__all__ = [
    "CorrStats", "Correlation", "init", "batch_stats", "merge", "update", "update_inplace", "allreduce",
    "make_sharded_update", "shard_tokens", "finalize", "CONSTANT_RTOL", "GEMM_BACKENDS", "gemm_backend",
    "set_gemm_backend", "host_batch_stats", "StatsError",
]

CONSTANT_RTOL = 1e-5
"""A channel is *constant* when its standard deviation is at most ``CONSTANT_RTOL · |mean|``
(float32 rounding of the mean of a constant leaves a residue of a few ulps, far below this)."""


class CorrStats(NamedTuple):
    """Merge-able partial sums of two streams (``...`` is an optional leading layer axis ``L``).

    Attributes:
      count: ``()`` int32, number of tokens seen.
      mean_x: ``(..., d_x)`` float32, running mean of X.
      mean_y: ``(..., d_y)`` float32, running mean of Y.
      m2_x: ``(..., d_x)`` float32, sum of squared deviations of X from its mean.
      m2_y: ``(..., d_y)`` float32, same for Y.
      cxy: ``(..., d_x, d_y)`` float32, sum of products of deviations (co-moment).
    """

    count: jax.Array
    mean_x: jax.Array
    mean_y: jax.Array
    m2_x: jax.Array
    m2_y: jax.Array
    cxy: jax.Array


class Correlation(NamedTuple):
    """Finalized statistics.

    Attributes:
      corr: ``(..., d_x, d_y)`` float32 Pearson correlation in ``[-1, 1]``; exactly 0 in every row or
        column of a constant channel (never NaN).
      mean_x, mean_y: ``(..., d)`` means.
      std_x, std_y: ``(..., d)`` population standard deviations.
      const_x, const_y: ``(..., d)`` bool, constant channels (see :data:`CONSTANT_RTOL`).
      n: ``()`` int, number of tokens.
    """

    corr: Any
    mean_x: Any
    mean_y: Any
    std_x: Any
    std_y: Any
    const_x: Any
    const_y: Any
    n: Any


def init(d_x: int, d_y: int | None = None, *, n_layers: int | None = None, backend: str = "auto") -> CorrStats:
    """Empty statistics.

    Either kind of array works with every function here (``jit`` takes numpy inputs); the choice
    saves work: numpy zeros cost nothing on the host, JAX zeros live on the default device.

    Args:
      d_x: width of X.
      d_y: width of Y (default ``d_x``).
      n_layers: size of a leading layer axis; ``None`` for none.
      backend: ``"numpy"`` (numpy arrays), ``"jax"`` (JAX arrays) or ``"auto"``: numpy when JAX's
        default backend is the CPU (where :func:`update` runs on the host), JAX otherwise. Not
        affected by :func:`set_gemm_backend`.

    Example:
      >>> init(4, n_layers=3).cxy.shape
      (3, 4, 4)
      >>> type(init(2, backend="numpy").cxy).__name__, isinstance(init(2, backend="jax").cxy, jax.Array)
      ('ndarray', True)
    """
    if backend not in GEMM_BACKENDS:
        raise StatsError(f"unknown statistics backend {backend!r}; pass backend= one of {', '.join(GEMM_BACKENDS)}")
    d_y = d_x if d_y is None else d_y
    lead = () if n_layers is None else (int(n_layers),)
    if backend == "numpy" or (backend == "auto" and jax.default_backend() == "cpu"):
        z = lambda *s: np.zeros(lead + s, np.float32)  # noqa: E731
        cxy = hoststats.aligned(lead + (d_x, d_y), zero=True)
        return CorrStats(np.zeros((), np.int32), z(d_x), z(d_y), z(d_x), z(d_y), cxy)
    z = lambda *s: jnp.zeros(lead + s, jnp.float32)  # noqa: E731
    return CorrStats(jnp.zeros((), jnp.int32), z(d_x), z(d_y), z(d_x), z(d_y), z(d_x, d_y))


def _check(x, y):
    if x.ndim not in (2, 3) or y.ndim != x.ndim:
        raise StatsError(f"X and Y have shapes {x.shape} and {y.shape}: pass both as (n, d) or both as (layers, n, d)")
    if x.shape[:-1] != y.shape[:-1]:
        raise StatsError(f"X and Y have shapes {x.shape} and {y.shape}: pass the same layers and tokens for both")


def batch_stats(x: jax.Array, y: jax.Array) -> CorrStats:
    """The statistics of one batch, centered on the batch mean.

    Args:
      x: ``(..., n, d_x)`` activations of A (any float dtype; computed in float32).
      y: ``(..., n, d_y)`` activations of B on the same tokens.
    """
    _check(x, y)
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    n = x.shape[-2]
    mx = jnp.sum(x, axis=-2) / max(n, 1)  # an empty batch gives zeros (merge's identity), not NaN
    my = jnp.sum(y, axis=-2) / max(n, 1)
    xc = x - mx[..., None, :]
    yc = y - my[..., None, :]
    cxy = jnp.einsum("...ni,...nj->...ij", xc, yc, preferred_element_type=jnp.float32)
    return CorrStats(jnp.asarray(n, jnp.int32), mx, my, jnp.sum(xc * xc, axis=-2), jnp.sum(yc * yc, axis=-2), cxy)


def merge(a: CorrStats, b: CorrStats) -> CorrStats:
    """Chan's parallel merge of two partial statistics (exact in exact arithmetic; commutative).

    ``n = na + nb``, ``δ = mean_b - mean_a``, ``mean = mean_a + δ·nb/n``,
    ``M = M_a + M_b + δx δyᵀ · na·nb/n``. Empty operands are handled (no division by zero).
    """
    na = a.count.astype(jnp.float32)
    nb = b.count.astype(jnp.float32)
    n = na + nb
    safe = jnp.where(n > 0, n, 1.0)
    fb = nb / safe
    w = na * nb / safe
    dx = b.mean_x - a.mean_x
    dy = b.mean_y - a.mean_y
    return CorrStats(
        a.count + b.count,
        a.mean_x + dx * fb,
        a.mean_y + dy * fb,
        a.m2_x + b.m2_x + w * dx * dx,
        a.m2_y + b.m2_y + w * dy * dy,
        a.cxy + b.cxy + w * dx[..., :, None] * dy[..., None, :],
    )


def host_batch_stats(x: Any, y: Any) -> CorrStats:
    """:func:`batch_stats` computed with numpy on the host (:func:`gaugejax.hoststats.accumulate`).

    Float32 GEMM and sums over data shifted by a pilot mean, converted to centered moments in
    float64. Returns a :class:`CorrStats` of numpy arrays.

    Example:
      >>> x = np.arange(12, dtype=np.float32).reshape(4, 3)
      >>> float(host_batch_stats(x, x).cxy[0, 0])
      45.0
    """
    x, y = np.asarray(x), np.asarray(y)
    _check(x, y)
    return CorrStats(*hoststats.accumulate(None, x, y))


_update_jax = jax.jit(lambda state, x, y: merge(state, batch_stats(x, y)))
_update_jax_donated = jax.jit(_update_jax.__wrapped__, donate_argnums=0)  # update_inplace: reuses the state's buffers


def _update(state: CorrStats, x: Any, y: Any, inplace: bool) -> CorrStats:
    if gemm_backend() == "numpy" and hoststats.on_host(x) and hoststats.on_host(y):
        x, y = np.asarray(x), np.asarray(y)
        _check(x, y)
        return CorrStats(*hoststats.accumulate(state, x, y, inplace=inplace))
    if inplace and all(isinstance(f, jax.Array) for f in state):
        return _update_jax_donated(state, x, y)
    return _update_jax(state, x, y)


def update(state: CorrStats, x: jax.Array, y: jax.Array) -> CorrStats:
    """Adds a batch: ``merge(state, batch_stats(x, y))``, a pure function (``state`` stays valid).

    Host-resident inputs on a CPU backend are accumulated by :mod:`gaugejax.hoststats` (see
    :func:`gemm_backend`) into a fresh state of numpy arrays; otherwise it is one jitted JAX call. A
    loop that owns its state and never looks back at old ones can use :func:`update_inplace`.

    Args:
      state: statistics so far (read, never written).
      x: ``(..., n, d_x)``; y: ``(..., n, d_y)`` on the same tokens. Any sharding works (XLA
        partitions the GEMM); :func:`make_sharded_update` makes the data-parallel reduction explicit.

    Example:
      >>> x = np.ones((4, 2), np.float32) * np.arange(4)[:, None]
      >>> s1 = update(init(2), x, x)
      >>> s2, s2b = update(s1, x, x), update(s1, 2 * x, 2 * x)  # two branches from s1
      >>> int(s1.count), float(s1.cxy[0, 0]), float(s2.cxy[0, 0]), float(s2b.cxy[0, 0])
      (4, 5.0, 10.0, 29.5)
    """
    return _update(state, x, y, inplace=False)


def update_inplace(state: CorrStats, x: jax.Array, y: jax.Array) -> CorrStats:
    """:func:`update` that consumes ``state``: the host engine accumulates into its co-moment (when
    a writeable float32 numpy array), the JAX path donates its buffers.

    For a loop that owns its state (``s = update_inplace(s, x, y)``): it saves a read of the co-moment
    per host update and a co-moment of device memory under JAX. ``state`` (and any state sharing its
    arrays) may be overwritten or deleted.

    Example:
      >>> x = np.ones((4, 2), np.float32) * np.arange(4)[:, None]
      >>> s = init(2)
      >>> for _ in range(3): s = update_inplace(s, x, x)
      >>> int(s.count), float(s.cxy[0, 0])
      (12, 15.0)
    """
    return _update(state, x, y, inplace=True)


def allreduce(s: CorrStats, axis_name: str) -> CorrStats:
    """Exact k-way Chan merge of per-device statistics across a mapped axis (``psum`` only).

    ``mean = Σ n_k mean_k / n``; ``M = Σ (M_k + n_k δx_k δy_kᵀ)`` with ``δ_k = mean_k - mean``.
    Call inside ``shard_map`` / ``pmap``.
    """
    nk = s.count.astype(jnp.float32)
    n = jax.lax.psum(nk, axis_name)
    safe = jnp.where(n > 0, n, 1.0)
    mx = jax.lax.psum(nk * s.mean_x, axis_name) / safe
    my = jax.lax.psum(nk * s.mean_y, axis_name) / safe
    dx = s.mean_x - mx
    dy = s.mean_y - my
    return CorrStats(
        jax.lax.psum(s.count, axis_name),
        mx,
        my,
        jax.lax.psum(s.m2_x + nk * dx * dx, axis_name),
        jax.lax.psum(s.m2_y + nk * dy * dy, axis_name),
        jax.lax.psum(s.cxy + nk * dx[..., :, None] * dy[..., None, :], axis_name),
    )


def _token_spec(ndim: int, axis_name: str) -> P:
    return P(*([None] * (ndim - 2)), axis_name, None)


def make_sharded_update(mesh: Mesh, axis_name: str | None = None):
    """A data-parallel :func:`update`: tokens sharded over ``mesh``, moments all-reduced.

    Every device centers its own shard and the shards are combined by :func:`allreduce`, then merged
    into the (replicated) running state. Works across processes after ``jax.distributed.initialize``
    (build the inputs with :func:`shard_tokens`).

    Args:
      mesh: a device mesh of any axis types (e.g. ``jax.make_mesh((jax.device_count(),), ("data",))``,
        ``Explicit`` since JAX 0.9); the state stays on it.
      axis_name: the mesh axis the tokens are split over (default: the mesh's first axis).

    Returns:
      ``update(state, x, y) -> state``, jitted, consuming ``state`` as :func:`update_inplace` does
      (its buffers are donated); the token count of every call must be divisible by the devices.

    Example:
      >>> mesh = jax.make_mesh((jax.device_count(),), ("data",))
      >>> upd = make_sharded_update(mesh)
      >>> x = np.ones((8, 3), np.float32) * np.arange(8)[:, None]
      >>> s = upd(init(3), shard_tokens(x, mesh), shard_tokens(x, mesh))
      >>> int(s.count)
      8
    """
    axis_name = _token_axis(mesh, axis_name)
    k = mesh.shape[axis_name]

    @partial(jax.jit, donate_argnums=0)
    def sharded_update(state: CorrStats, x: jax.Array, y: jax.Array) -> CorrStats:
        _check(x, y)
        if x.shape[-2] % k:
            raise StatsError(f"{x.shape[-2]} tokens do not split evenly over {k} devices: pass a multiple of {k}")
        spec = _token_spec(x.ndim, axis_name)
        local = jax.shard_map(
            lambda a, b: allreduce(batch_stats(a, b), axis_name),
            mesh=mesh, in_specs=(spec, spec), out_specs=P(), check_vma=False,
        )(x, y)
        return merge(state, local)

    def update_on_mesh(state: CorrStats, x: Any, y: Any) -> CorrStats:
        from gaugejax.sharding import without_current_mesh

        x, y = (_split_tokens(a, mesh, axis_name, k) for a in (x, y))  # Explicit axes reshard nothing themselves
        with without_current_mesh():  # another current mesh (jax.set_mesh) would clash with ``mesh``
            return sharded_update(state, x, y)

    return update_on_mesh


def _token_axis(mesh: Mesh, axis_name: str | None) -> str:
    """The mesh axis the tokens are split over: ``axis_name``, or the mesh's first."""
    axis_name = axis_name or mesh.axis_names[0]
    if axis_name not in mesh.axis_names:
        raise StatsError(f"the mesh has no axis {axis_name!r}; pass axis_name= one of {tuple(mesh.axis_names)}")
    return axis_name


def _split_tokens(x: Any, mesh: Mesh, axis_name: str, k: int) -> Any:
    """``x`` split along its token axis over ``axis_name`` as the sharded update takes it (numpy: this
    process's rows, :func:`shard_tokens`); as given when it does not split evenly (the update says so)."""
    shape = np.shape(x)
    if len(shape) < 2 or shape[-2] % k:
        return x
    if not isinstance(x, jax.Array):
        return shard_tokens(x, mesh, axis_name)
    target = NamedSharding(mesh, _token_spec(len(shape), axis_name))
    return x if x.sharding == target else jax.device_put(x, target)


def shard_tokens(x: Any, mesh: Mesh, axis_name: str | None = None) -> jax.Array:
    """A global array from this process's rows, sharded along the token axis (``-2``).

    In a single process ``x`` is the whole batch; with several processes each passes its own slice
    of tokens (equal sizes), in process order.
    """
    axis_name = _token_axis(mesh, axis_name)
    x = np.asarray(x)
    sharding = NamedSharding(mesh, _token_spec(x.ndim, axis_name))
    return jax.make_array_from_process_local_data(sharding, x)


def _local(a: jax.Array) -> jax.Array:
    """A host-addressable copy of a replicated (possibly multi-process) array."""
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        return a.addressable_data(0)
    return a


@partial(jax.jit, static_argnames=("rtol",))
def _finalize(s: CorrStats, rtol: float) -> Correlation:
    n = jnp.maximum(s.count.astype(jnp.float32), 1.0)
    var_x = jnp.maximum(s.m2_x, 0.0) / n
    var_y = jnp.maximum(s.m2_y, 0.0) / n
    const_x = var_x <= jnp.square(rtol * jnp.abs(s.mean_x))
    const_y = var_y <= jnp.square(rtol * jnp.abs(s.mean_y))
    inv_x = jnp.where(const_x, 0.0, jax.lax.rsqrt(jnp.where(const_x, 1.0, s.m2_x)))
    inv_y = jnp.where(const_y, 0.0, jax.lax.rsqrt(jnp.where(const_y, 1.0, s.m2_y)))
    corr = jnp.clip(s.cxy * inv_x[..., :, None] * inv_y[..., None, :], -1.0, 1.0)
    return Correlation(corr, s.mean_x, s.mean_y, jnp.sqrt(var_x), jnp.sqrt(var_y), const_x, const_y, s.count)


def finalize(state: CorrStats, *, rtol: float = CONSTANT_RTOL) -> Correlation:
    """Pearson correlation and per-channel diagnostics from accumulated statistics.

    Constant channels (zero variance up to ``rtol``) get correlation exactly 0 and a flag; an empty
    state gives all zeros. Fetches replicated multi-process arrays from the local device first.

    Example:
      >>> x = np.stack([np.arange(4.0), np.full(4, 3.0)], 1).astype(np.float32)
      >>> c = finalize(update(init(2), x, x))
      >>> np.asarray(c.corr).tolist(), np.asarray(c.const_x).tolist()
      ([[1.0, 0.0], [0.0, 0.0]], [False, True])
    """
    return _finalize(CorrStats(*(_local(a) for a in state)), float(rtol))
