"""The statistical certificate of a match: Fisher-z intervals with a union bound over all entries.

A match (:mod:`gaugejax.matching`) is certified coordinate by coordinate. Certification uses
Fisher-z confidence intervals with a union bound over all ``L·d²`` entries at level ``confidence``:
with ``t = tanh(z*/sqrt(n-3))`` an entry ``r`` lies in ``[(r-t)/(1-rt), (r+t)/(1+rt)]``; a
coordinate is certified when the lower end of its matched score exceeds the upper end of every
competitor in its row and column (then the population optimum assigns it the same way: each
population row maximum sits on the matched entry). The interval functions are concave/convex in
``r``, so the interval around the layer mean contains the mean of the per-layer intervals (Jensen):
pooling layers stays conservative. Tokens are treated as independent samples, which is optimistic
for tokens of the same text; the token budget in :mod:`gaugejax.align` therefore also requires a
minimum count.

Example:
  >>> lo, hi = correlation_interval(0.0, error_halfwidth(1024, 64 * 64, 0.99))
  >>> round(float(hi), 3)
  0.146
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Certificate", "certify", "competitors", "correlation_interval", "error_halfwidth", "sign_confidence"]


def error_halfwidth(n_tokens: int | None, n_entries: int, confidence: float) -> float:
    """``t = tanh(z*/sqrt(n-3))``, ``z*`` the two-sided normal quantile at level
    ``1 - (1-confidence)/n_entries`` (union bound). 0 when ``n_tokens`` is ``None``; 1 (no
    information) for ``n ≤ 3``.

    Example:
      >>> round(error_halfwidth(1024, 576 * 576, 0.99), 3)
      0.172
    """
    if n_tokens is None:
        return 0.0
    if n_tokens <= 3:
        return 1.0
    from scipy.special import ndtri

    alpha = (1.0 - confidence) / max(n_entries, 1)
    z = float(-ndtri(alpha / 2.0))
    return math.tanh(z / math.sqrt(n_tokens - 3))


def correlation_interval(r: Any, t: float) -> tuple[np.ndarray, np.ndarray]:
    """The Fisher-z interval ``[(r-t)/(1-rt), (r+t)/(1+rt)]`` of a correlation (``t`` from
    :func:`error_halfwidth`); exact at ``r = ±1``.

    Example:
      >>> lo, hi = correlation_interval(np.array([0.0, 1.0]), 0.5)
      >>> lo.tolist(), hi.tolist()
      ([-0.5, 1.0], [0.5, 1.0])
    """
    r = np.clip(np.asarray(r, np.float64), -1.0, 1.0)
    dlo, dhi = 1.0 - r * t, 1.0 + r * t  # 0 only for r = ±1 with t = 1 (no information)
    lo = np.where(dlo > 0, (r - t) / np.where(dlo > 0, dlo, 1.0), -1.0)
    hi = np.where(dhi > 0, (r + t) / np.where(dhi > 0, dhi, 1.0), 1.0)
    return np.clip(lo, -1.0, 1.0), np.clip(hi, -1.0, 1.0)


def sign_confidence(r: np.ndarray, n_tokens: int | None) -> np.ndarray:
    """``Φ(atanh|r| · sqrt(n-3))``: how sure the sign of a correlation ``r`` is, in ``[0.5, 1]``
    (1 where ``n_tokens`` is unknown and ``r ≠ 0``; 0.5 for ``n ≤ 3``).

    Example:
      >>> sign_confidence(np.array([0.0, 0.5]), None).tolist()
      [0.5, 1.0]
    """
    from scipy.special import ndtr

    a = np.abs(np.asarray(r, np.float64))
    if n_tokens is None:
        return np.where(a > 0, 1.0, 0.5).astype(np.float32)
    if n_tokens <= 3:
        return np.full(a.shape, 0.5, np.float32)
    z = np.arctanh(np.minimum(a, 1.0 - 1e-7)) * math.sqrt(n_tokens - 3)
    return ndtr(z).astype(np.float32)


def competitors(score: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Best score in row ``perm[j]`` and column ``j`` other than the matched entry, per ``j``."""
    d = perm.shape[0]
    cols = np.arange(d)
    s = np.array(score, dtype=np.float32, copy=True)
    s[perm, cols] = -np.inf
    if d == 1:
        return np.full(1, -np.inf, np.float32)
    return np.maximum(s.max(axis=0), s.max(axis=1)[perm])


class Certificate(NamedTuple):
    """What :func:`certify` finds, per coordinate ``j`` of B (arrays ``(d,)``)."""

    matched_score: np.ndarray  # float64, score[perm[j], j]
    margin: np.ndarray  # float32, matched score minus the best competitor in its row and column
    uncertified: np.ndarray  # bool, the interval of the match does not clear every competitor's
    error_bound: float  # t, the half-width of the interval of a zero correlation


def certify(score: np.ndarray, perm: np.ndarray, *, n_tokens: int | None, n_entries: int, confidence: float,
            absolute: bool) -> Certificate:
    """Certifies the assignment ``perm`` of ``score`` (``(d, d)``; ``absolute``: a score of ``|C|``).

    A coordinate is certified when the lower end of its matched score's interval exceeds the upper
    end of every competitor's in its row and column (union bound over ``n_entries`` at level
    ``confidence``). A ``1×1`` absolute score is certified when it clears the interval of zero.

    Example:
      >>> c = certify(np.array([[0.9, 0.1], [0.0, 0.8]]), np.array([0, 1]), n_tokens=400, n_entries=4,
      ...             confidence=0.99, absolute=True)
      >>> c.uncertified.tolist(), [round(float(m), 2) for m in c.margin]
      ([False, False], [0.8, 0.7])
    """
    d = perm.shape[0]
    matched_score = score[perm, np.arange(d)].astype(np.float64)
    comp = competitors(score, perm).astype(np.float64)
    t = error_halfwidth(n_tokens, n_entries, confidence)
    lo, _ = correlation_interval(matched_score, t)
    _, hi = correlation_interval(comp, t)
    if absolute:
        lo = np.maximum(lo, 0.0)
    uncertified = ~(lo > hi)
    if d == 1:
        uncertified = absolute & (np.abs(matched_score) <= t)
    return Certificate(matched_score, (matched_score - comp).astype(np.float32), uncertified, t)
