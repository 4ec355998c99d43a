"""Exact linear assignment, with a certified fast path for near-gauge score matrices.

:func:`solve` maximises (or minimises) ``Σ S[rows[k], cols[k]]`` over assignments of
``min(n, m)`` pairs, like ``scipy.optimize.linear_sum_assignment``. Solvers:

* ``"scipy"``: ``scipy.optimize.linear_sum_assignment`` (the reference).
* ``"lapjv"``: ``lap.lapjv`` (Jonker-Volgenant; optional dependency, ``pip install lap``).
* ``"optax"``: ``optax.assignment.hungarian_algorithm``, pure JAX and jittable (``O(d³)`` with a
  scalar inner loop, slow on CPU at large ``d``, see ``benchmarks/bench_assignment.py``).
* ``"device"``: :func:`gaugejax.assignment_device.solve`, pure JAX, jittable and vmap-able: the
  row-argmax certificate, a priced warm start and vectorised shortest augmenting paths on the
  default JAX device (float32; exact on integer-valued scores, float32-rounding-exact otherwise).
* ``"auto"`` (default): the certified reduction below, then the fastest exact solver installed.

The reduction (always exact):

1. **Row-argmax.** Let ``a_i = argmax_j S[i, j]``. If the ``a_i`` are pairwise distinct, the
   assignment ``i → a_i`` is optimal: every row attains its own maximum, and no assignment can
   exceed ``Σ_i max_j S[i, j]`` because each row contributes one entry of its row. This costs one
   pass over ``S`` (argmax) plus ``O(n)``, and is the common case of a near-gauge correlation matrix.
2. **Conflict block.** Otherwise split the rows into *clean* rows ``R`` (their argmax column is
   claimed by no other row) and the rest ``K``. Give each clean column ``a_r`` the price
   ``p = S[r, a_r] - max_{j ≠ a_r} S[r, j]`` (its owner's margin; 0 for every other column) and
   solve the rectangular block ``max Σ_{i∈K} (S[i, σ(i)] - p[σ(i)])`` over injective
   ``σ: K → all columns`` exactly. If ``σ`` uses no clean column, the union (clean rows on their
   argmax, ``K`` on ``σ``) is optimal. Proof by LP duality: take column duals ``P = p + q`` with
   ``(u, q)`` an optimal dual of the block (``u_i + q_j ≥ S[i,j] - p_j``, ``q ≥ 0``, and ``q_j = 0``
   on every column the block leaves unused, by complementary slackness, so on all clean columns),
   and ``u_r = S[r, a_r] - p[a_r]`` (= the second-best entry of row ``r``) for clean rows. Then
   ``u_r + P_j ≥ S[r, j]`` for all ``j`` (``P ≥ 0`` and ``S[r, j] ≤`` the second best off ``a_r``),
   ``u_i + P_j ≥ S[i, j]`` for ``i ∈ K``, and every assigned pair is tight (unassigned columns have
   ``P = 0``): a feasible dual whose value equals the union's, so the union is optimal. If ``σ``
   does take clean columns, their owners join ``K`` (their columns' prices drop to 0) and the
   block is solved again, for a few rounds. The proof only needs ``0 ≤ p ≤`` the owner's margin on
   clean columns, so prices are computed lazily: 0 at first, then the margin for the clean columns
   that attract rows of ``K`` (``O(m)`` each). No tolerance enters the certificates (the prices are
   float64 differences of the matrix's entries, exact for float32 input). The block is only tried while it is
   small (see ``_BLOCK_FRACTION``); otherwise, and when rounds run out, the whole matrix goes to
   :func:`fastest_exact_solver`.

Example:
  >>> import numpy as np
  >>> S = np.array([[0.1, 0.9, 0.0], [0.8, 0.2, 0.1], [0.0, 0.3, 0.7]])
  >>> a = solve(S)
  >>> a.cols.tolist(), a.solver
  ([1, 0, 2], 'argmax')
  >>> solve(S, method="scipy").objective == a.objective
  True
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from gaugejax.errors import InputError

__all__ = ["Assignment", "solve", "METHODS", "fastest_exact_solver", "row_argmax_certificate"]

METHODS = ("auto", "scipy", "lapjv", "optax", "device")
"""Accepted ``method`` names of :func:`solve`."""

# The conflict block is tried while it holds at most this fraction of the rows (or _BLOCK_MIN rows),
# for at most _BLOCK_ROUNDS rounds. Measured (benchmarks/bench_assignment.py): conflicts of a
# near-gauge matrix (a few weak coordinates) certify in one or two rounds; widespread conflicts
# (e.g. the raw signed score of a gauge with many negative signs) exceed the size limit at once and
# go to the whole-matrix solver, so a failed attempt costs at most one extra pass over the matrix.
_BLOCK_FRACTION = 0.05
_BLOCK_MIN = 8
_BLOCK_ROUNDS = 8
_PRICE_TOP = 16


class Assignment(NamedTuple):
    """An optimal assignment.

    Attributes:
      rows: ``(k,)`` int64 row indices, increasing (``k = min(n, m)``).
      cols: ``(k,)`` int64 column assigned to each row.
      objective: ``Σ S[rows, cols]`` as a Python float (float64 sum).
      solver: what produced it: ``"argmax"``, ``"argmax+block(k)"``, ``"scipy"``, ``"lapjv"``,
        ``"optax"``, ``"device"``.
    """

    rows: np.ndarray
    cols: np.ndarray
    objective: float
    solver: str


@lru_cache(maxsize=None)
def _has_lap() -> bool:
    import importlib.util

    return importlib.util.find_spec("lap") is not None


def fastest_exact_solver() -> str:
    """``"lapjv"`` when the ``lap`` package is installed, else ``"scipy"``.

    Measured on 2 CPU cores (``benchmarks/bench_assignment.py``): ``lap.lapjv`` beats scipy on
    dense random matrices by 2-4× at d ≥ 1024.
    """
    return "lapjv" if _has_lap() else "scipy"


def row_argmax_certificate(score: np.ndarray) -> np.ndarray | None:
    """The row-argmax columns when they form an injective assignment (then optimal), else ``None``.

    Args:
      score: ``(n, m)`` with ``n <= m``, to maximise.

    Example:
      >>> row_argmax_certificate(np.eye(3)[[2, 0, 1]]).tolist()
      [2, 0, 1]
      >>> row_argmax_certificate(np.ones((2, 2))) is None
      True
    """
    a = np.argmax(score, axis=1)
    if np.bincount(a, minlength=score.shape[1]).max(initial=0) <= 1:
        return a
    return None


_NON_FINITE = "score has NaN or infinite entries; replace them with finite values (e.g. np.nan_to_num)"


def _validate(score: Any) -> np.ndarray:
    s = np.asarray(score)
    if s.ndim != 2:
        raise InputError(f"score has shape {s.shape}; pass a 2-D (n, m) matrix")
    if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
        raise InputError(f"score has dtype {s.dtype}; pass a real (integer or floating) matrix")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    return s


def _check_finite(s: np.ndarray) -> None:
    # One streaming pass without a temporary: the float64 sum is finite iff every entry is (NaN and
    # ±inf propagate); only a float64 overflow needs the elementwise check.
    if not np.isfinite(s.sum(dtype=np.float64)) and not np.isfinite(s).all():
        raise InputError(_NON_FINITE)


def _scipy(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(s, maximize=True)


def _lapjv(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import lap

    n, m = s.shape
    cost = np.negative(s, dtype=np.float64)
    if n == m:
        _, x, _ = lap.lapjv(cost, extend_cost=False)
    else:
        # lapjv pads a rectangular matrix to a square one; shift so the padding (0) is never preferred.
        _, x, _ = lap.lapjv(cost - cost.max(), extend_cost=True)
    rows = np.flatnonzero(x >= 0)
    return rows, x[rows].astype(np.int64)


@lru_cache(maxsize=1)
def _optax_jitted():
    import jax
    import optax

    return jax.jit(lambda s: optax.assignment.hungarian_algorithm(-s))


def _optax(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = _optax_jitted()(np.asarray(s, np.float32))
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    order = np.argsort(i)
    return i[order], j[order]


def _device(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from gaugejax.assignment_device import solve_numpy

    return solve_numpy(s)


_FULL = {"scipy": _scipy, "lapjv": _lapjv, "optax": _optax, "device": _device}


def _second_max(s: np.ndarray, rows: np.ndarray, cols: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``max_{j ≠ cols[k]} s[rows[k], j]`` per k, in row chunks (no full copy)."""
    n, m = s.shape
    if m == 1:
        return np.full(rows.size, -np.inf)
    if rows.size > n // 8:  # many rows: stream contiguous chunks of the whole matrix (memcpy-speed)
        excl = np.zeros(n, np.int64)
        excl[rows] = cols
        every = np.empty(n, np.float64)
        for k0 in range(0, n, chunk):
            block = s[k0:k0 + chunk].copy()
            block[np.arange(block.shape[0]), excl[k0:k0 + chunk]] = -np.inf
            every[k0:k0 + chunk] = block.max(axis=1)
        return every[rows]
    out = np.empty(rows.size, np.float64)
    for k0 in range(0, rows.size, chunk):
        block = s[rows[k0:k0 + chunk]]  # a small copy
        block[np.arange(block.shape[0]), cols[k0:k0 + chunk]] = -np.inf
        out[k0:k0 + chunk] = block.max(axis=1)
    return out


def _auto(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The certified reduction for ``n <= m`` (see the module docstring)."""
    n, m = s.shape
    a = np.argmax(s, axis=1)
    rowmax = s[np.arange(n), a]
    if not np.isfinite(rowmax).all():  # argmax returns the first NaN of a row, and +inf is a max
        raise InputError(_NON_FINITE)
    counts = np.bincount(a, minlength=m)
    clean = counts[a] == 1
    if clean.all():
        return np.arange(n), a.astype(np.int64), "argmax"
    K = np.flatnonzero(~clean)
    limit = max(_BLOCK_MIN, _BLOCK_FRACTION * n)
    if K.size <= limit:
        R = np.flatnonzero(clean)
        owner = np.full(m, -1, np.int64)
        owner[a[R]] = R
        price = np.zeros(m, np.float64)  # 0 ≤ price ≤ owner's margin on clean columns, 0 elsewhere
        priced = np.zeros(m, bool)
        all_priced = False
        for rnd in range(_BLOCK_ROUNDS):
            block = s[K].astype(np.float64) - price
            _, c = _scipy(block)  # every row of K is assigned (k <= m)
            taken = owner[c]
            hit = taken >= 0
            if not hit.any():
                cols = a.astype(np.int64)
                cols[K] = c
                return np.arange(n), cols, f"argmax+block({K.size})"
            # Price (lazily, at the owner's margin) the clean columns that can attract rows of K: the
            # hit ones and each row's top t by current score, t growing 4× per round; past n/4 priced
            # rows it is cheaper to price every clean column in one pass.
            if not all_priced:
                t = min(m, _PRICE_TOP * 4**rnd)
                top = np.argpartition(-block, t - 1, axis=1)[:, :t] if t < m else np.arange(m)[None]
                cand = np.zeros(m, bool)
                cand[top.ravel()] = True
                cand[c[hit]] = True
                cand &= (owner >= 0) & ~priced
                if cand.any():
                    if priced.sum() + cand.sum() > n / 4:
                        cc = np.flatnonzero(owner >= 0)
                        all_priced = True
                    else:
                        cc = np.flatnonzero(cand)
                    price[cc] = rowmax[owner[cc]].astype(np.float64) - _second_max(s, owner[cc], cc)
                    priced[cc] = True
                    continue
            displaced = taken[hit]  # worth taking even at full price: their owners join K
            cols_d = a[displaced]
            owner[cols_d] = -1
            price[cols_d] = 0.0
            priced[cols_d] = False
            K = np.union1d(K, displaced)
            if K.size > limit:
                break
    _check_finite(s)
    name = fastest_exact_solver()
    r, c = _FULL[name](s)
    return r, c, name


def solve(score: Any, *, maximize: bool = True, method: str = "auto") -> Assignment:
    """An optimal assignment of a (possibly rectangular) score matrix.

    Args:
      score: ``(n, m)`` real matrix, finite.
      maximize: maximise the total score (``False``: minimise a cost).
      method: one of :data:`METHODS`.

    Returns:
      :class:`Assignment` with ``min(n, m)`` pairs, rows increasing.

    Raises:
      InputError: bad shape, non-finite entries or unknown method (a ``ValueError``); ImportError for ``"lapjv"``
        without the ``lap`` package.

    Example:
      >>> a = solve([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]], maximize=False)
      >>> a.cols.tolist(), a.objective
      ([1, 0, 2], 5.0)
    """
    if method not in METHODS:
        raise InputError(f"unknown assignment method {method!r}; use one of {', '.join(METHODS)}")
    s = _validate(score)
    if not maximize:
        s = np.negative(s)
    n, m = s.shape
    if n == 0 or m == 0:
        e = np.zeros(0, np.int64)
        return Assignment(e, e, 0.0, method)
    transposed = n > m
    work = np.ascontiguousarray(s.T) if transposed else s
    if method == "auto":
        r, c, name = _auto(work)
    else:
        _check_finite(work)
        r, c = _FULL[method](work)
        name = method
    r = np.asarray(r, np.int64)
    c = np.asarray(c, np.int64)
    if transposed:
        r, c = c, r
    order = np.argsort(r, kind="stable")
    r, c = r[order], c[order]
    total = float(np.sum(s[r, c], dtype=np.float64))
    return Assignment(r, c, total if maximize else -total, name)
