"""Synthetic residual-stream pairs under a hidden gauge, and the ceiling Monte Carlo, on device.

Generative model (all in ``jax.random``, batched over trials with ``vmap``). Model A's stream
``X ∈ R^{n×d}`` has unit-variance coordinates with a chosen :class:`Structure`; model B's stream is
the same stream in another chart plus an independent perturbation:

    Y = G(ρ X + sqrt(1 - ρ²) Z),        G(v)[:, j] = s_j v[:, p_j],

with ``Z`` white (standard normal, or Student-t for heavy tails) and ``G = (p, s)`` a uniformly
random permutation with exactly ``m = round((1 - positive_fraction) d)`` negative signs. The
population correlation is ``C = ρ R Q`` (``R`` the correlation matrix of ``X``, ``Q`` the signed
permutation): with decorrelated coordinates (``R = I``) this is the setting of the ceiling theorem
(``theory/ceiling.py``); structured ``R`` puts competitors of size ``ρ|R_ik|`` next to every true
entry. Structures (``Structure.kind``, with ``strength``):

* ``"none"``: decorrelated Gaussian coordinates (the theorem's setting).
* ``"ar1"``: AR(1) along the coordinate axis, ``R_ik = φ^|i-k|`` (``strength = φ``).
* ``"block"``: blocks of ``block`` coordinates with within-block correlation ``strength``.
* ``"factors"``: ``rank`` shared factors with random-sign loadings carrying a ``strength`` share
  of every coordinate's variance (``R_ik`` of both signs).
* ``"outliers"``: ``outliers`` coordinates with standard deviation ``strength`` (e.g. 20); the
  white perturbation makes them easier to match (Pearson correlation is scale-invariant, so only
  their SNR changes).
* ``"student_t"``: i.i.d. Student-t coordinates and perturbation with ``strength`` degrees of
  freedom (> 2), scaled to unit variance: heavier tails make sample correlations noisier.

:func:`ceiling` draws ``trials`` independent pairs, correlates them and matches with the three
objectives on device (:mod:`gaugejax.assignment_device`, the same optimum as the host solvers),
returning per-trial accuracies. For decorrelated Gaussian data it can skip the tokens entirely
(``sampler="wishart"``): the Bartlett decomposition gives the exact joint law of the centered
moments ``(XcᵀXc, XcᵀYc, diag YcᵀYc)`` at ``O(d³)`` cost instead of ``O(n d²)``
(see :func:`gaugejax.wishart.wishart_correlation`).

Example:
  >>> import jax, numpy as np
  >>> out = ceiling(jax.random.key(0), d=16, n=512, rho=0.9, positive_fraction=0.5, trials=4)
  >>> np.asarray(out["signed"]["perm"]).tolist(), float(np.mean(out["sign_marginalized"]["signed"]))
  ([0.5, 0.5, 0.5, 0.5], 1.0)
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from gaugejax import assignment_device
from gaugejax.errors import InputError
from gaugejax.wishart import wishart_correlation

__all__ = ["Structure", "STRUCTURES", "METHODS", "parse_structure", "random_gauge", "generate",
           "correlation", "wishart_correlation", "accuracies", "ceiling"]

METHODS = ("signed", "permutation", "sign_marginalized")
STRUCTURES = ("none", "ar1", "block", "factors", "outliers", "student_t")


@dataclass(frozen=True)
class Structure:
    """Coordinate structure of the synthetic stream (see the module docstring).

    Attributes:
      kind: one of :data:`STRUCTURES`.
      strength: φ (``ar1``), within-block correlation (``block``), factor variance share
        (``factors``), outlier standard deviation (``outliers``), degrees of freedom (``student_t``).
      block: block size for ``block``.
      rank: number of factors for ``factors``.
      outliers: number of outlier coordinates for ``outliers``.
    """

    kind: str = "none"
    strength: float = 0.0
    block: int = 16
    rank: int = 4
    outliers: int = 4

    def __post_init__(self):
        if self.kind not in STRUCTURES:
            raise InputError(f"unknown structure {self.kind!r}; use one of {', '.join(STRUCTURES)}")
        s = float(self.strength)
        ok = {"none": True, "ar1": -1 < s < 1, "block": 0 <= s < 1, "factors": 0 <= s < 1,
              "outliers": s > 0, "student_t": s > 2}[self.kind]
        if not ok:
            raise InputError(f"strength {s} out of range for {self.kind!r}; pick ar1: -1 < φ < 1; block, factors: "
                             "0 <= share < 1; outliers: std > 0; student_t: dof > 2")
        if min(self.block, self.rank, self.outliers) < 1:
            raise InputError(f"block, rank and outliers must be >= 1, got {self.block}, {self.rank}, {self.outliers}")

    def label(self) -> str:
        """Short text, e.g. ``"ar1:0.5"``."""
        return "none" if self.kind == "none" else f"{self.kind}:{self.strength:g}"


def parse_structure(spec: Structure | str | Mapping[str, Any] | None) -> Structure:
    """A :class:`Structure` from ``None``, ``"ar1:0.5"``, ``"block:0.3:32"`` (block size),
    ``"factors:0.5:8"`` (rank), ``"outliers:20:4"`` (count), ``"student_t:3"`` or a mapping.

    Example:
      >>> parse_structure("ar1:0.5")
      Structure(kind='ar1', strength=0.5, block=16, rank=4, outliers=4)
    """
    if spec is None:
        return Structure()
    if isinstance(spec, Structure):
        return spec
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(Structure.__dataclass_fields__))
        if unknown:
            raise InputError(f"unknown structure fields {unknown}; use {', '.join(Structure.__dataclass_fields__)}")
        return Structure(**spec)
    parts = str(spec).split(":")
    kind = parts[0].strip().lower().replace("-", "_")
    try:
        strength = float(parts[1]) if len(parts) > 1 else 0.0
        extra = int(parts[2]) if len(parts) > 2 else None
    except ValueError:
        raise InputError(f"cannot parse structure {spec!r}; write KIND[:STRENGTH[:INT]], e.g. ar1:0.5") from None
    key = {"block": "block", "factors": "rank", "outliers": "outliers"}.get(kind)
    return Structure(kind, strength, **({key: extra} if key and extra is not None else {}))


def random_gauge(key: jax.Array, d: int, m: int) -> tuple[jax.Array, jax.Array]:
    """A uniformly random permutation and signs with exactly ``m`` entries -1 (jittable)."""
    kp, ks = jax.random.split(key)
    perm = jax.random.permutation(kp, d)
    neg = jax.random.permutation(ks, d) < m
    return perm.astype(jnp.int32), jnp.where(neg, -1, 1).astype(jnp.int32)


def _white(key, shape, st: Structure):
    if st.kind == "student_t":
        nu = float(st.strength)
        if nu == int(nu) and nu <= 16:  # χ²_ν as a sum of ν squared normals: much faster than gamma draws
            g = jax.random.normal(key, (int(nu) + 1, *shape), jnp.float32)
            t = g[0] * jax.lax.rsqrt(jnp.mean(g[1:] * g[1:], axis=0))
        else:
            t = jax.random.t(key, nu, shape, jnp.float32)
        return t * math.sqrt((nu - 2.0) / nu)
    return jax.random.normal(key, shape, jnp.float32)


def _stream(key, n: int, d: int, st: Structure, loadings=None) -> jax.Array:
    """``(n, d)`` unit-variance coordinates with the structure (outliers: std ``strength``)."""
    k0, k1 = jax.random.split(key)
    e = _white(k0, (n, d), st)
    if st.kind == "ar1":  # x_k = φ x_{k-1} + sqrt(1-φ²) e_k, x_0 = e_0: stationary, R_ik = φ^|i-k|
        phi = float(st.strength)
        a = jnp.full((d,), phi, jnp.float32).at[0].set(0.0)
        b = e * jnp.where(jnp.arange(d) == 0, 1.0, math.sqrt(1 - phi**2))

        def comb(p, q):
            return p[0] * q[0], q[0] * p[1] + q[1]

        return jax.lax.associative_scan(comb, (jnp.broadcast_to(a, (n, d)), b), axis=1)[1]
    if st.kind == "block":
        nb = -(-d // st.block)
        f = jax.random.normal(k1, (n, nb), jnp.float32)
        return math.sqrt(1 - st.strength) * e + math.sqrt(st.strength) * f[:, jnp.arange(d) // st.block]
    if st.kind == "factors":
        f = jax.random.normal(k1, (n, st.rank), jnp.float32)
        return math.sqrt(1 - st.strength) * e + math.sqrt(st.strength) * (f @ loadings)
    if st.kind == "outliers":
        scale = jnp.where(jnp.arange(d) < st.outliers, st.strength, 1.0)  # which ones: irrelevant (random gauge)
        return e * scale
    return e


def _loadings(key, d: int, st: Structure):
    """Unit-norm columns: every coordinate gets the factor share ``strength`` exactly."""
    if st.kind != "factors":
        return None
    w = jax.random.normal(key, (st.rank, d), jnp.float32)
    return w / jnp.linalg.norm(w, axis=0, keepdims=True)


def generate(key: jax.Array, *, d: int, n: int, rho: float, m: int, structure: Any = None):
    """One synthetic pair ``(X, Y, perm, signs)`` with ``Y = G(ρX + sqrt(1-ρ²)Z)`` (jittable, vmap over keys).

    Example:
      >>> x, y, perm, signs = generate(jax.random.key(1), d=4, n=8, rho=1.0, m=2)
      >>> bool(jnp.allclose(y, x[:, perm] * signs)), int((signs < 0).sum())
      (True, 2)
    """
    st = parse_structure(structure)
    kg, kx, kz, kw = jax.random.split(key, 4)
    perm, signs = random_gauge(kg, d, m)
    x = _stream(kx, n, d, st, _loadings(kw, d, st))
    z = _white(kz, (n, d), st)
    y = (rho * x + jnp.sqrt(jnp.maximum(1.0 - rho * rho, 0.0)) * z)[:, perm] * signs.astype(jnp.float32)
    return x, y, perm, signs


def correlation(x: jax.Array, y: jax.Array) -> jax.Array:
    """Pearson ``C[i, j] = corr(x[:, i], y[:, j])`` via :mod:`gaugejax.stats` (centered, float32)."""
    from gaugejax import stats

    return stats._finalize(stats.batch_stats(x, y), stats.CONSTANT_RTOL).corr


def _perm_of(res: assignment_device.DeviceAssignment, d: int) -> jax.Array:
    """B's coordinate j takes A's ``perm_hat[j]`` (rows = A, columns = B)."""
    return jnp.zeros((d,), jnp.int32).at[res.cols].set(res.rows)


def accuracies(corr: jax.Array, perm: jax.Array, signs: jax.Array, methods=METHODS) -> dict:
    """Per-method ``{"perm": fraction right, "signed": fraction right with sign}`` of one matrix
    (jittable; the ``|C|`` assignment is shared by ``permutation`` and ``sign_marginalized``)."""
    d = corr.shape[-1]
    out, cols = {}, jnp.arange(d)
    if "signed" in methods:
        ph = _perm_of(assignment_device.solve(corr), d)
        right = ph == perm
        out["signed"] = {"perm": jnp.mean(right), "signed": jnp.mean(right & (signs > 0))}
    if "permutation" in methods or "sign_marginalized" in methods:
        ph = _perm_of(assignment_device.solve(jnp.abs(corr)), d)
        right = ph == perm
        if "permutation" in methods:
            out["permutation"] = {"perm": jnp.mean(right), "signed": jnp.mean(right & (signs > 0))}
        if "sign_marginalized" in methods:
            sh = jnp.where(corr[ph, cols] < 0, -1, 1)
            out["sign_marginalized"] = {"perm": jnp.mean(right), "signed": jnp.mean(right & (sh == signs))}
    return {k: {q: v.astype(jnp.float32) for q, v in out[k].items()} for k in methods}


@partial(jax.jit, static_argnames=("d", "n", "trials", "methods", "structure", "sampler", "chunk", "solve_batch"))
def _ceiling(key, rho, m, start, *, d, n, trials, methods, structure, sampler, chunk, solve_batch):
    # rho, m and start (the first trial's index) are traced: a sweep over SNR or sign fraction, and
    # every worker's share of the trials, compile once per (d, n, structure).
    def one_sample(k):
        if sampler == "wishart":
            kg, kc = jax.random.split(k)
            perm, signs = random_gauge(kg, d, m)
            return wishart_correlation(kc, d=d, n=n, rho=rho, perm=perm, signs=signs), perm, signs
        x, y, perm, signs = generate(k, d=d, n=n, rho=rho, m=m, structure=structure)
        return correlation(x, y), perm, signs

    def one_chunk(keys):
        # Sample the whole chunk, then solve it: one program per stage keeps XLA from fusing the
        # sampler into the solvers' passes (measured on CPU at d = 1024: 100 -> 61 ms per trial).
        # Batch 1 (CPU): plain sequential maps, so the certificate branch is a real branch, not a select.
        if solve_batch > 1:
            xs = jax.vmap(one_sample)(keys)
        else:
            xs = jax.lax.map(one_sample, keys)
        return jax.lax.map(lambda a: accuracies(*a, methods=methods), xs,
                           batch_size=solve_batch if solve_batch > 1 else None)

    n_chunks = -(-trials // chunk)
    keys = jax.vmap(lambda t: jax.random.fold_in(key, t))(start + jnp.arange(n_chunks * chunk))
    out = jax.lax.map(one_chunk, keys.reshape(n_chunks, chunk, *keys.shape[1:]))
    return jax.tree.map(lambda a: a.reshape(-1)[:trials], out)


def _default_chunk(d: int, n: int, sampler: str, trials: int) -> int:
    """Trials per vmapped chunk: about 128 MB of the largest buffers (measured on CPU: larger chunks
    are slower, memory-bound), at most 16, split evenly so that little padding is computed."""
    per_trial = (3 * n * d if sampler == "tokens" else 4 * d * d) * 4
    cap = int(max(1, min(16, (128 << 20) // max(per_trial, 1), trials)))
    return -(-trials // -(-trials // cap))


def _default_workers() -> int:
    """Concurrent trial streams by default: one per CPU core on a CPU backend (at most 4), else 1.

    XLA's CPU backend runs a program's shortest-path loops and most element-wise work on one
    thread, so two programs over disjoint shares of the trials keep two cores busy (measured on
    2 idle vCPUs: 345 -> 748 trials/s at d = 256, 26 -> 34 at d = 1024; a core taken by another
    job takes that gain away); an accelerator runs a whole chunk under ``vmap`` instead.
    """
    if jax.default_backend() != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(max(1, min(4, cores)))


def ceiling(key: jax.Array, *, d: int, n: int, rho: float, positive_fraction: float, trials: int,
            methods=METHODS, correlation: Any = None, sampler: str = "auto", chunk: int | None = None,
            solve_batch: int | None = None, workers: int | None = None) -> dict:
    """Per-trial accuracy of the three matchers on synthetic pairs, computed on device.

    Args:
      key: a ``jax.random.key``; trial ``t`` uses ``fold_in(key, t)``.
      d: width; n: tokens per trial; rho: population correlation of matched coordinates
        (``τ = ρ sqrt(n)`` is the signal-to-noise ratio of the ceiling theory).
      positive_fraction: fraction of +1 signs; the gauge has ``m = round((1 - f) d)`` negatives.
      trials: number of independent trials.
      methods: subset of :data:`METHODS`.
      correlation: coordinate structure (``None``: decorrelated; see :func:`parse_structure`).
      sampler: ``"tokens"`` (draw ``X, Y``), ``"wishart"`` (decorrelated Gaussian only: exact
        sufficient statistics, no tokens) or ``"auto"`` (wishart when allowed and ``n > 2d``).
      chunk: trials generated at once with ``vmap`` (default: by memory, at most 16).
      solve_batch: trials sampled and solved at once under ``vmap`` (default: 1 on CPU, where
        lockstep searches and batched random draws cost more than they save; the whole chunk on
        accelerators).
      workers: concurrent streams of trials, each a contiguous share run by the same compiled
        program in its own thread (default: one per CPU core on a CPU backend, at most 4; 1 on
        accelerators; see :func:`_default_workers`). The result does not depend on it: trial
        ``t`` always uses ``fold_in(key, t)``.

    Returns:
      ``{method: {"perm": (trials,), "signed": (trials,)}}`` float32 arrays: the fraction of
      coordinates whose source (resp. source and sign) is right.

    Example:
      >>> r = ceiling(jax.random.key(1), d=8, n=256, rho=0.95, positive_fraction=1.0, trials=3,
      ...             methods=("signed",), correlation="ar1:0.3")
      >>> np.asarray(r["signed"]["signed"]).tolist()
      [1.0, 1.0, 1.0]
    """
    methods = tuple(methods)
    if not methods or any(mt not in METHODS for mt in methods):
        raise InputError(f"methods must be a non-empty subset of {METHODS}, got {methods}")
    if d < 1 or n < 4 or trials < 1:
        raise InputError(f"need d >= 1, n >= 4, trials >= 1 (got d={d}, n={n}, trials={trials})")
    if not 0.0 <= rho <= 1.0 or not 0.0 <= positive_fraction <= 1.0:
        raise InputError(f"need 0 <= rho <= 1 and 0 <= positive_fraction <= 1 (got {rho}, {positive_fraction})")
    st = parse_structure(correlation)
    if sampler not in ("auto", "tokens", "wishart"):
        raise InputError(f"sampler must be 'auto', 'tokens' or 'wishart', got {sampler!r}")
    if sampler == "wishart" and (st.kind != "none" or n <= d):
        raise InputError("sampler='wishart' needs decorrelated Gaussian coordinates (correlation=None) and n > d; "
                         "use sampler='tokens'")
    if sampler == "auto":
        sampler = "wishart" if st.kind == "none" and n > 2 * d else "tokens"
    m = int(round((1.0 - positive_fraction) * d))
    workers = int(max(1, min(trials, _default_workers() if workers is None else workers)))
    per = -(-trials // workers)  # every worker runs the same compiled program on `per` trials
    chunk = int(chunk or _default_chunk(d, n, sampler, per))
    chunk = max(1, min(chunk, per))
    if solve_batch is None:
        solve_batch = 1 if jax.default_backend() == "cpu" else chunk
    run = partial(_ceiling, key, jnp.float32(rho), jnp.int32(m), d=int(d), n=int(n), trials=per, methods=methods,
                  structure=st, sampler=sampler, chunk=chunk, solve_batch=int(max(1, min(solve_batch, chunk))))
    if workers == 1:
        return run(jnp.int32(0))
    with ThreadPoolExecutor(workers) as pool:  # JAX releases the GIL while a program runs
        parts = list(pool.map(lambda w: jax.block_until_ready(run(jnp.int32(w * per))), range(workers)))
    return jax.tree.map(lambda *a: jnp.concatenate(a)[:trials], *parts)
