"""A recovered gauge with its per-coordinate diagnostics (:class:`MatchResult`) and their warning.

:mod:`gaugejax.matching` builds a :class:`MatchResult`; :mod:`gaugejax.certificate` decides which
coordinates are certified. :class:`MatchResult` and :class:`AmbiguousMatchWarning` are also
importable from :mod:`gaugejax.matching` and from ``gaugejax``.

Example:
  >>> import numpy as np, gaugejax as gj
  >>> X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
  >>> r = gj.match(X, -X)
  >>> isinstance(r, MatchResult), r.certified, r.summary()["negative_signs"]
  (True, True, 8)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gaugejax.gauge import SignedPermutation

__all__ = ["AmbiguousMatchWarning", "MatchResult", "warn_uncertain"]


class AmbiguousMatchWarning(UserWarning):
    """Some coordinates of a recovered gauge are not certified (see ``MatchResult.ambiguous``)."""


@dataclass(frozen=True, eq=False)
class MatchResult:
    """A recovered gauge A→B with per-coordinate diagnostics (arrays indexed by B's coordinate j).

    Attributes:
      gauge: the recovered :class:`~gaugejax.gauge.SignedPermutation` A→B.
      method: the matching method (:data:`gaugejax.matching.METHODS`).
      group: the group the gauge lives in (:data:`gaugejax.matching.GROUPS`).
      matched_corr: ``(d,)`` float32, the (layer-mean) correlation ``C̄[perm[j], j]``.
      margin: ``(d,)`` float32, matched score minus the best competing score in its row and column
        (score = ``|C̄|`` for ``sign_marginalized``/``permutation``, ``C̄`` for ``signed``,
        ``s·C̄`` for ``S_d x ±1``); ≤ 0 where the match is not row/column dominant.
      sign_confidence: ``(d,)`` float32 in ``[0.5, 1]``, ``Φ(atanh|r| · sqrt(n-3))`` for the matched
        ``r``: how sure the sign of the matched correlation is (1 where ``n`` is unknown and r ≠ 0).
      ambiguous: ``(d,)`` bool, the match of ``j`` is not certified at ``confidence`` (and every
        ``sign_conflict``).
      sign_conflict: ``(d,)`` bool, for ``S_d x ±1`` results: coordinates whose best sign disagreed
        with the global sign (a ``B_d`` match that is not a LayerNorm symmetry); else all False.
      n_tokens: tokens behind the statistics (``None`` if unknown).
      objective: the assignment objective ``Σ_j score[perm[j], j]``.
      layers: the layers pooled (``None`` if a single matrix was given).
      solver: which assignment path produced it (see :func:`gaugejax.assignment.solve`).
      confidence: the level of the certificate.
      error_bound: ``t``, the half-width of the interval of a zero correlation.
    """

    gauge: SignedPermutation
    method: str
    group: str
    matched_corr: np.ndarray
    margin: np.ndarray
    sign_confidence: np.ndarray
    ambiguous: np.ndarray
    sign_conflict: np.ndarray
    n_tokens: int | None
    objective: float
    layers: tuple[int, ...] | None = None
    solver: str = ""
    confidence: float = 0.99
    error_bound: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def d(self) -> int:
        """Residual width."""
        return self.gauge.d

    @property
    def certified(self) -> bool:
        """True when every coordinate is certified (no ambiguous match) with a known token count."""
        return self.n_tokens is not None and not bool(self.ambiguous.any())

    def weakest(self, k: int = 5) -> list[tuple[int, float, float]]:
        """The ``k`` coordinates with the smallest margins: ``(j, margin, matched_corr)``."""
        order = np.argsort(self.margin, kind="stable")[:k]
        return [(int(j), float(self.margin[j]), float(self.matched_corr[j])) for j in order]

    def summary(self) -> dict[str, Any]:
        """Plain-Python summary (JSON-serialisable).

        Example:
          >>> import gaugejax as gj
          >>> X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
          >>> s = gj.match(X, -X).summary()
          >>> s["negative_signs"], s["confident_fraction"]
          (8, 1.0)
        """
        return {
            "d": self.d,
            "method": self.method,
            "group": self.group,
            "n_tokens": self.n_tokens,
            "layers": list(self.layers) if self.layers is not None else None,
            "solver": self.solver,
            "objective": float(self.objective),
            "certified": self.certified,
            "confidence": self.confidence,
            "error_bound": float(self.error_bound),
            "n_ambiguous": int(self.ambiguous.sum()),
            "confident_fraction": float(1.0 - self.ambiguous.mean()) if self.d else 1.0,
            "n_sign_conflicts": int(self.sign_conflict.sum()),
            "positive_signs": int((self.gauge.signs > 0).sum()),
            "negative_signs": int((self.gauge.signs < 0).sum()),
            "mean_abs_matched_corr": float(np.abs(self.matched_corr).mean()) if self.d else 0.0,
            "min_margin": float(self.margin.min()) if self.d else 0.0,
            "weakest": self.weakest(5),
            "notes": list(self.notes),
        }

    def metadata(self) -> dict[str, np.ndarray]:
        """The diagnostics as plain arrays for the gauge file (no pickling needed)."""
        return {
            "method": np.asarray(self.method),
            "group": np.asarray(self.group),
            "n_tokens": np.asarray(-1 if self.n_tokens is None else self.n_tokens, np.int64),
            "layers": np.asarray(self.layers if self.layers is not None else [], np.int64),
            "solver": np.asarray(self.solver),
            "objective": np.asarray(self.objective, np.float64),
            "confidence": np.asarray(self.confidence, np.float64),
            "error_bound": np.asarray(self.error_bound, np.float64),
            "certified": np.asarray(self.certified),
            "matched_corr": self.matched_corr.astype(np.float32),
            "margin": self.margin.astype(np.float32),
            "sign_confidence": self.sign_confidence.astype(np.float32),
            "ambiguous": self.ambiguous.astype(bool),
            "sign_conflict": self.sign_conflict.astype(bool),
        }

    def save(self, path: Any, **extra: Any) -> None:
        """Writes the gauge file with the diagnostics (and ``extra``) as metadata (atomic)."""
        self.gauge.save(path, **{**self.metadata(), **extra})


def warn_uncertain(result: MatchResult, stacklevel: int = 2) -> None:
    """Emits :class:`AmbiguousMatchWarning` for sign conflicts and for coordinates not certified."""
    k = int(result.ambiguous.sum())
    if result.sign_conflict.any():
        warnings.warn(
            f"the sign-marginalized (B_d) match is not a LayerNorm symmetry: {int(result.sign_conflict.sum())} "
            f"of {result.d} coordinates prefer the opposite of the global sign; projected onto S_d × {{±1}} and "
            "flagged in .sign_conflict", AmbiguousMatchWarning, stacklevel=stacklevel + 1)
    if k:
        where = ", ".join(str(j) for j, _, _ in result.weakest(min(k, 8)))
        n = "unknown" if result.n_tokens is None else str(result.n_tokens)
        warnings.warn(
            f"{k} of {result.d} coordinates are matched ambiguously (margin not above the {result.confidence:.0%} "
            f"error bound with n={n} tokens), e.g. j = {where}; they are flagged in .ambiguous",
            AmbiguousMatchWarning, stacklevel=stacklevel + 1)
