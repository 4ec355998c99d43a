"""The exact law of a decorrelated Gaussian pair's sample correlation, drawn without tokens (Bartlett).

:func:`wishart_correlation` samples the sample correlation matrix of ``n`` tokens of
``Y = G(ρX + sqrt(1-ρ²)Z)`` (``X, Z`` white Gaussian, ``G`` a signed permutation) from the joint law
of the centered moments: ``1.5 d²`` normal draws and a triangular-times-dense product instead of
``2 n d`` draws and an ``n d²`` GEMM. :mod:`gaugejax.simulate` uses it as ``sampler="wishart"``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> c = wishart_correlation(jax.random.key(0), d=4, n=4096, rho=1.0, perm=jnp.arange(4), signs=jnp.ones(4))
  >>> bool(jnp.allclose(jnp.diag(c), 1.0, atol=1e-5))
  True
"""

from __future__ import annotations

import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from gaugejax.errors import InputError

__all__ = ["wishart_correlation"]


def _normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Standard normal float32 draws: ``jax.random.normal``'s transform (uniform on (-1, 1) from 23 random
    mantissa bits, then ``sqrt(2) erfinv``) over Threefry-2x32 counter-mode bits that use both output
    words of every block. Measured on CPU (1024², jax 0.10): 6.6 ms against 11.3 ms for
    ``jax.random.normal``, whose default ``jax_threefry_partitionable`` stream spends one block per word.
    Used for the Bartlett factor's triangle (the Wishart sampler's other draw is faster as
    ``jax.random.normal`` fused into its consumer: measured 38 vs 47 ms per d = 1024 trial).
    Keys of another implementation (e.g. ``rbg``) go to ``jax.random.normal``.
    """
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if "threefry" not in str(jax.random.key_impl(key)):
            return jax.random.normal(key, shape, jnp.float32)
        key = jax.random.key_data(key)
    count = math.prod(shape)
    bits = jax.extend.random.threefry_2x32(key, jax.lax.iota(jnp.uint32, count))
    f = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0  # [0, 1)
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    u = jnp.maximum(lo, f * (np.float32(1.0) - lo) + lo)
    # The barrier materialises the draws once: XLA would otherwise fuse (and so repeat) the Threefry
    # rounds into every consumer of a slice (measured: the Wishart sampler got slower, not faster).
    return jax.lax.optimization_barrier((np.float32(math.sqrt(2.0)) * jax.lax.erf_inv(u)).reshape(shape))


def _tdot(u: jax.Array, x: jax.Array) -> jax.Array:
    """``uᵀ @ x`` as one GEMM with a transposed operand (no transpose is materialised)."""
    return jax.lax.dot_general(u, x, (((0,), (0,)), ((), ())))


def _triu_t_matmul(u: jax.Array, x: jax.Array, leaf: int = 128) -> jax.Array:
    """``uᵀ @ x`` for an upper-triangular ``u``, skipping its zero blocks (recursive halving: about
    0.6 of the dense product's flops at d = 1024; static shapes, so XLA sees plain GEMMs)."""
    k = u.shape[0]
    if k <= leaf or k % 2:
        return _tdot(u, x)
    h = k // 2
    top = _triu_t_matmul(u[:h, :h], x[:h], leaf)
    return jnp.concatenate([top, _tdot(u[:h, h:], x[:h]) + _triu_t_matmul(u[h:, h:], x[h:], leaf)])


def _bartlett_upper(key: jax.Array, d: int) -> jax.Array:
    """A ``(d, d)`` matrix whose strict upper triangle is i.i.d. standard normal (zeros elsewhere),
    from ``d²/2`` draws when ``d`` is even: a ``(d/2, d)`` draw ``[Q | P]`` gives the upper-right block
    ``P``, the upper-left triangle from ``Q``'s strict upper part and the lower-right one from its
    strict lower part turned by 180° (disjoint entries, hence independent; no transpose needed)."""
    if d % 2:
        return jnp.triu(_normal(key, (d, d)), 1)
    h = d // 2
    r = _normal(key, (h, d))
    q, p = r[:, :h], r[:, h:]
    top = jnp.concatenate([jnp.triu(q, 1), p], axis=1)
    return jnp.concatenate([top, jnp.concatenate([jnp.zeros((h, h), jnp.float32), jnp.triu(q[::-1, ::-1], 1)], axis=1)])


def wishart_correlation(key: jax.Array, *, d: int, n: int, rho: float, perm, signs) -> jax.Array:
    """The sample correlation of a decorrelated Gaussian pair without drawing tokens (exact law).

    Bartlett: ``XcᵀXc = Uᵀ U`` with ``U`` upper triangular, ``U_kk² ~ χ²(n-1-k)``, ``U_kl ~ N(0,1)``;
    with ``Xc = V U`` (``V`` orthonormal) and ``N = VᵀZ`` (d×d standard normal),
    ``XcᵀYc = Uᵀ (ρU + cN) Q`` and ``|Yc[:, j]|² = |(ρU + cN)[:, p_j]|² + c² χ²(n-1-d)``,
    ``c = sqrt(1-ρ²)``. Needs ``n > d``. Cost: ``1.5 d²`` normal draws (:func:`_bartlett_upper`) and a
    triangular-times-dense product (:func:`_triu_t_matmul`).
    """
    if n <= d:
        raise InputError(f"the wishart sampler needs n > d (got n={n}, d={d}); use sampler='tokens'")
    kc, kn, kl, kr = jax.random.split(key, 4)
    c = jnp.sqrt(jnp.maximum(1.0 - rho * rho, 0.0))
    dof = (n - 1 - jnp.arange(d)).astype(jnp.float32)
    diag = jnp.sqrt(2.0 * jax.random.gamma(kc, dof / 2.0))
    umat = _bartlett_upper(kl, d) + jnp.diag(diag)
    a = rho * umat + c * jax.random.normal(kn, (d, d), jnp.float32)
    sxy = _triu_t_matmul(umat, a)[:, perm] * signs.astype(jnp.float32)
    sxx = jnp.sum(umat * umat, axis=0)
    rest = 2.0 * jax.random.gamma(kr, jnp.full((d,), (n - 1 - d) / 2.0, jnp.float32))
    syy = (jnp.sum(a * a, axis=0) + c * c * rest)[perm]
    return jnp.clip(sxy * jax.lax.rsqrt(sxx)[:, None] * jax.lax.rsqrt(syy)[None, :], -1.0, 1.0)
