"""Exact linear assignment, with a certified fast path for near-gauge score matrices.

:func:`solve` maximises (or minimises) ``Σ S[rows[k], cols[k]]`` over assignments of
``min(n, m)`` pairs, like ``scipy.optimize.linear_sum_assignment``. Solvers:

* ``"scipy"``: ``scipy.optimize.linear_sum_assignment`` (the reference).
* ``"lapjv"``: ``lap.lapjv`` (Jonker-Volgenant; optional dependency, ``pip install lap``).
* ``"optax"``: ``optax.assignment.hungarian_algorithm``, pure JAX and jittable (on-device use;
  ``O(d³)`` in a ``while_loop``, slow on CPU at large ``d``, see ``benchmarks/bench_assignment.py``).
* ``"auto"`` (default): the certified reduction below, then the fastest exact solver installed.

The reduction (always exact):

1. **Row-argmax.** Let ``a_i = argmax_j S[i, j]``. If the ``a_i`` are pairwise distinct, the
   assignment ``i → a_i`` is optimal: every row attains its own maximum, and no assignment can
   exceed ``Σ_i max_j S[i, j]`` because each row contributes one entry of its row. This costs one
   pass over ``S`` (argmax) plus ``O(n)``, and is the common case of a near-gauge correlation matrix.
2. **Conflict block.** Otherwise split the rows into *clean* rows ``R`` (their argmax column is
   claimed by no other row) and the rest ``K``. Solve the rectangular problem of the ``K`` rows
   against *all* columns exactly. If its solution uses no column claimed by a clean row, the union
   (clean rows on their argmax, ``K`` on the block solution) is optimal. Proof: for any assignment
   ``π``, ``Σ_{i∈R} S[i,π(i)] ≤ Σ_{i∈R} max_j S[i,j]`` and ``Σ_{i∈K} S[i,π(i)] ≤ OPT(K × all)``
   (``π`` restricted to ``K`` is a feasible assignment of ``K`` into all columns), and the union
   attains both bounds at once. If the block solution does take clean columns, their owners move to
   ``K`` and the block is solved again (a few rounds). No tolerance enters either certificate:
   both only compare entries of the matrix itself (and the exact block solver's optimum). The block is only tried while it is small (see ``_BLOCK_FRACTION``); otherwise, and when the
   certificate fails, the whole matrix goes to :func:`fastest_exact_solver`.

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

__all__ = ["Assignment", "solve", "METHODS", "fastest_exact_solver", "row_argmax_certificate"]

METHODS = ("auto", "scipy", "lapjv", "optax")
"""Accepted ``method`` names of :func:`solve`."""

# The conflict block is tried while it holds at most this fraction of the rows (or _BLOCK_MIN rows),
# for at most _BLOCK_ROUNDS rounds. Measured: blocks of conflicts that are local (near-ties between
# a few coordinates) certify in one round; widespread conflicts (e.g. the raw signed score of a
# gauge with many negative signs) keep pulling in clean rows, and there the whole-matrix solver
# is faster, so the attempt is kept cheap: a k × m solve with k ≤ 5 % of n.
_BLOCK_FRACTION = 0.05
_BLOCK_MIN = 8
_BLOCK_ROUNDS = 2


class Assignment(NamedTuple):
    """An optimal assignment.

    Attributes:
      rows: ``(k,)`` int64 row indices, increasing (``k = min(n, m)``).
      cols: ``(k,)`` int64 column assigned to each row.
      objective: ``Σ S[rows, cols]`` as a Python float (float64 sum).
      solver: what produced it: ``"argmax"``, ``"argmax+block(k)"``, ``"scipy"``, ``"lapjv"``,
        ``"optax"``.
    """

    rows: np.ndarray
    cols: np.ndarray
    objective: float
    solver: str


@lru_cache(maxsize=None)
def _has_lap() -> bool:
    try:
        import lap  # noqa: F401
    except ImportError:
        return False
    return True


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


def _validate(score: Any) -> np.ndarray:
    s = np.asarray(score)
    if s.ndim != 2:
        raise ValueError(f"score must be a 2-D matrix, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
        raise ValueError(f"score must be real, got dtype {s.dtype}")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    return s


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


_FULL = {"scipy": _scipy, "lapjv": _lapjv, "optax": _optax}


def _auto(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The certified reduction for ``n <= m`` (see the module docstring)."""
    n, m = s.shape
    a = np.argmax(s, axis=1)
    rowmax = s[np.arange(n), a]
    if not np.isfinite(rowmax).all():  # argmax returns the first NaN of a row, and +inf is a max
        raise ValueError("score has NaN or infinite entries")
    counts = np.bincount(a, minlength=m)
    clean = counts[a] == 1
    if clean.all():
        return np.arange(n), a.astype(np.int64), "argmax"
    K = np.flatnonzero(~clean)
    if K.size <= max(_BLOCK_MIN, _BLOCK_FRACTION * n):
        cols = a.astype(np.int64)
        owner = np.full(m, -1, np.int64)
        owner[a[clean]] = np.flatnonzero(clean)
        for _ in range(_BLOCK_ROUNDS):
            _, c = _scipy(s[K])  # all of K is assigned (k <= m)
            taken = owner[c]
            hit = taken >= 0
            if not hit.any():
                cols[K] = c
                return np.arange(n), cols, f"argmax+block({K.size})"
            displaced = taken[hit]
            owner[cols[displaced]] = -1
            K = np.union1d(K, displaced)
    if not np.isfinite(s).all():
        raise ValueError("score has NaN or infinite entries")
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
      ValueError: bad shape, non-finite entries or unknown method; ImportError for ``"lapjv"``
        without the ``lap`` package.

    Example:
      >>> a = solve([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]], maximize=False)
      >>> a.cols.tolist(), a.objective
      ([1, 0, 2], 5.0)
    """
    if method not in METHODS:
        raise ValueError(f"unknown assignment method {method!r}; use one of {', '.join(METHODS)}")
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
        if not np.isfinite(work).all():
            raise ValueError("score has NaN or infinite entries")
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
