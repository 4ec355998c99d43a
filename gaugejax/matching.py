"""Recovering a gauge from activations (docs/conventions.md §4).

Given residual activations ``X`` (model A) and ``Y`` (model B) on the same tokens, let
``C[i, j] = corr(X[:, i], Y[:, j])``. The gauge A→B ``(perm, signs)`` pairs B's coordinate ``j``
with A's coordinate ``perm[j]``; the entries of interest are ``C[perm[j], j]``. Methods:

* ``"signed"``: the assignment maximising ``Σ C[perm[j], j]``; signs all +1 (raw activation
  matching, as in Git Re-Basin). Recovers only the positive-sign coordinates of a ``B_d`` gauge.
* ``"permutation"``: the assignment of ``|C|``; signs all +1 (``S_d`` alignment).
* ``"sign_marginalized"``: the assignment of ``|C|``, then ``signs[j] = sign(C[perm[j], j])``
  (``B_d`` alignment, the full RMSNorm gauge group).

With several layers (``C: (L, d, d)``) one gauge is shared by all of them, so the evidence is
pooled: the methods above are applied to the layer mean ``C̄ = mean_l C_l`` (for
``sign_marginalized`` this maximises ``Σ_j |Σ_l C_l[perm[j], j]|``, the best shared sign per
coordinate).

LayerNorm models only admit ``S_d × {±1}`` (one global sign). With ``norm="layernorm"`` (or
``group="S_d x ±1"``) the sign-marginalized match is projected onto that group: the permutation is
re-solved for the majority sign ``s`` of the matched correlations (assignment of ``s·C̄``) and every
coordinate whose ``B_d`` sign disagreed is flagged (``sign_conflict``); asking for ``group="B_d"``
on a LayerNorm model is refused.

Diagnostics, per coordinate ``j`` of B: the matched correlation, the ``margin`` of its score over
the best competitor in its row and its column, a ``sign_confidence``, and ``ambiguous`` when the
match is not certified. Certification uses Fisher-z confidence intervals with a union bound over
all ``L·d²`` entries at level ``confidence``: with ``t = tanh(z*/sqrt(n-3))`` an entry ``r`` lies in
``[(r-t)/(1-rt), (r+t)/(1+rt)]``; a coordinate is certified when the lower end of its matched score
exceeds the upper end of every competitor in its row and column (then the population optimum
assigns it the same way: each population row maximum sits on the matched entry). The interval
functions are concave/convex in ``r``, so the interval around the layer mean contains the mean of
the per-layer intervals (Jensen): pooling layers stays conservative. Tokens are treated as
independent samples, which is optimistic for tokens of the same text; the token budget in
:mod:`gaugejax.align` therefore also requires a minimum count.

Example:
  >>> import numpy as np, gaugejax as gj
  >>> rng = np.random.default_rng(0)
  >>> X = rng.normal(size=(400, 16)).astype(np.float32)
  >>> g = gj.SignedPermutation.random(3, 16)
  >>> r = match(X, g.apply(X))
  >>> r.gauge == g, bool(r.ambiguous.any())
  (True, False)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from gaugejax import assignment, stats
from gaugejax.errors import GaugeError
from gaugejax.gauge import SignedPermutation
from gaugejax.group import Group

__all__ = [
    "METHODS", "GROUPS", "MatchResult", "AmbiguousMatchWarning", "match", "match_correlation",
    "match_stats", "correlation_interval", "error_halfwidth",
]

METHODS = ("sign_marginalized", "signed", "permutation")
"""Matching methods (docs/conventions.md §4)."""

GROUPS = tuple(Group)
"""Gauge groups a result can live in (:class:`~gaugejax.group.Group`; members equal their names)."""


class AmbiguousMatchWarning(UserWarning):
    """Some coordinates of a recovered gauge are not certified (see ``MatchResult.ambiguous``)."""


@dataclass(frozen=True, eq=False)
class MatchResult:
    """A recovered gauge A→B with per-coordinate diagnostics (arrays indexed by B's coordinate j).

    Attributes:
      gauge: the recovered :class:`~gaugejax.gauge.SignedPermutation` A→B.
      method: the matching method (:data:`METHODS`).
      group: the group the gauge lives in (:data:`GROUPS`).
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
          >>> X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
          >>> s = match(X, -X).summary()
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


# --------------------------------------------------------------------------- certificate helpers
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


def _sign_confidence(r: np.ndarray, n_tokens: int | None) -> np.ndarray:
    from scipy.special import ndtr

    a = np.abs(np.asarray(r, np.float64))
    if n_tokens is None:
        return np.where(a > 0, 1.0, 0.5).astype(np.float32)
    if n_tokens <= 3:
        return np.full(a.shape, 0.5, np.float32)
    z = np.arctanh(np.minimum(a, 1.0 - 1e-7)) * math.sqrt(n_tokens - 3)
    return ndtr(z).astype(np.float32)


def _competitors(score: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Best score in row ``perm[j]`` and column ``j`` other than the matched entry, per ``j``."""
    d = perm.shape[0]
    cols = np.arange(d)
    s = np.array(score, dtype=np.float32, copy=True)
    s[perm, cols] = -np.inf
    if d == 1:
        return np.full(1, -np.inf, np.float32)
    return np.maximum(s.max(axis=0), s.max(axis=1)[perm])


# --------------------------------------------------------------------------- public API
def _solve(score: np.ndarray, solver: str) -> tuple[np.ndarray, str]:
    """The assignment maximising ``Σ_j score[perm[j], j]``, as ``perm`` (B's j ← A's perm[j])."""
    a = assignment.solve(score, method=solver)
    perm = np.empty(score.shape[0], np.int64)
    perm[a.cols] = a.rows
    return perm, a.solver


def _resolve_group(method: str, group: Group | str | None, norm: str | None) -> Group:
    if method not in METHODS:
        raise ValueError(f"unknown matching method {method!r}; use one of {', '.join(METHODS)}")
    if norm not in (None, "rmsnorm", "layernorm"):
        raise ValueError(f"norm must be 'rmsnorm', 'layernorm' or None, got {norm!r}")
    group = None if group is None else Group(group)
    if method != "sign_marginalized":
        if group not in (None, Group.S_D):
            raise ValueError(f"method {method!r} returns permutations (S_d); group={group!r} needs "
                             "method='sign_marginalized'")
        return Group.S_D
    model_group = Group.B_D if norm is None else Group.of(norm)
    if group is None:
        return model_group
    if not group.subgroup_of(model_group):
        raise GaugeError(f"a LayerNorm model only admits {model_group} (one global sign); refusing a {group} "
                         f"match. Use group={model_group.value!r} (the default for norm={norm!r})")
    if group is Group.S_D:
        raise ValueError("for a permutation-only match use method='permutation'")
    return group


def match_correlation(
    corr: Any,
    method: str = "sign_marginalized",
    *,
    n_tokens: int | None = None,
    group: str | None = None,
    norm: str | None = None,
    confidence: float = 0.99,
    solver: str = "auto",
    layers: Sequence[int] | None = None,
    warn: bool = True,
    device: bool = False,
) -> MatchResult:
    """Matches from a correlation matrix (or a stack of them, one per layer).

    Args:
      corr: ``(d, d)`` or ``(L, d, d)`` correlations ``C[l, i, j] = corr(X_l[:, i], Y_l[:, j])``.
      method: one of :data:`METHODS`.
      n_tokens: tokens behind ``corr``; enables the statistical certificate.
      group: ``None`` (from ``method`` and ``norm``), ``"B_d"`` or ``"S_d x ±1"``
        (a :class:`~gaugejax.group.Group` or any spelling it accepts).
      norm: ``"rmsnorm"``, ``"layernorm"`` or ``None``; ``"layernorm"`` restricts to one global sign.
      confidence: level of the certificate (union bound over all entries).
      solver: assignment method (:data:`gaugejax.assignment.METHODS`).
      device: solve the assignment on the default JAX device (:mod:`gaugejax.assignment_device`;
        same optimum as the host solvers); shorthand for ``solver="device"``.
      layers: labels of the layers in ``corr`` (stored in the result only).
      warn: emit :class:`AmbiguousMatchWarning` when some coordinates are not certified.

    Returns:
      :class:`MatchResult`.

    Raises:
      GaugeError: ``corr`` is not square (different widths), or ``B_d`` asked on a LayerNorm model.

    Example:
      >>> C = np.array([[0.1, -0.9], [0.8, 0.0]])
      >>> r = match_correlation(C)
      >>> r.gauge.perm.tolist(), r.gauge.signs.tolist()
      ([1, 0], [1, -1])
      >>> match_correlation(C, "signed", warn=False).gauge.perm.tolist()
      [0, 1]
    """
    grp = _resolve_group(method, group, norm)
    if device:
        solver = "device"
    c = np.asarray(corr, np.float32)
    if c.ndim == 2:
        c = c[None]
    if c.ndim != 3:
        raise ValueError(f"corr must be (d, d) or (layers, d, d), got shape {c.shape}")
    n_layers, d_a, d_b = c.shape
    if d_a != d_b:
        raise GaugeError(f"cannot match residual streams of different widths ({d_a} vs {d_b})")
    finite = np.isfinite(c).all(axis=(1, 2))
    if not finite.all():
        bad = int(np.argmin(finite))
        where = f"layer {layers[bad]}" if layers is not None and len(layers) == n_layers else f"entry {bad}"
        raise GaugeError(f"the correlations at {where} are NaN or infinite: the activations are not finite "
                         "(a broken checkpoint or an overflow; check both models with `gaugejax verify`)")
    d = d_a
    cbar = c[0] if n_layers == 1 else c.mean(axis=0)
    cols = np.arange(d)
    notes: list[str] = []
    sign_conflict = np.zeros(d, bool)

    if method == "signed":
        score, kind = cbar, "signed"
    else:
        score, kind = np.abs(cbar), "abs"
    perm, solver_used = _solve(score, solver)
    matched = cbar[perm, cols]
    bd_signs = np.where(matched < 0, -1, 1).astype(np.int8)
    signs = bd_signs if grp is Group.B_D else np.ones(d, np.int8)
    if grp is Group.S_D_SIGN:
        s = Group.majority_sign(bd_signs, weights=np.abs(matched))
        sign_conflict = bd_signs != s
        score, kind = s * cbar, "signed"
        if sign_conflict.any():
            notes.append(f"B_d match has non-global signs: {int(sign_conflict.sum())} of {d} coordinates "
                         f"disagree with the global sign {s:+d}; re-solved within S_d × {{±1}}")
            perm, solver_used = _solve(score, solver)
            matched = cbar[perm, cols]
        signs = np.full(d, s, np.int8)

    matched_score = score[perm, cols].astype(np.float64)
    comp = _competitors(score, perm).astype(np.float64)
    margin = (matched_score - comp).astype(np.float32)
    t = error_halfwidth(n_tokens, n_layers * d * d, confidence)
    lo, _ = correlation_interval(matched_score, t)
    _, hi = correlation_interval(comp, t)
    if kind == "abs":
        lo = np.maximum(lo, 0.0)
    ambiguous = ~(lo > hi) | sign_conflict
    if d == 1:
        ambiguous = sign_conflict | ((kind == "abs") & (np.abs(matched_score) <= t))
    result = MatchResult(
        gauge=SignedPermutation(perm, signs),
        method=method,
        group=grp,
        matched_corr=matched.astype(np.float32),
        margin=margin,
        sign_confidence=_sign_confidence(matched, n_tokens),
        ambiguous=ambiguous,
        sign_conflict=sign_conflict,
        n_tokens=None if n_tokens is None else int(n_tokens),
        objective=float(matched_score.sum()),
        layers=None if layers is None else tuple(int(x) for x in layers),
        solver=solver_used,
        confidence=float(confidence),
        error_bound=float(t),
        notes=tuple(notes),
    )
    for arr in (result.matched_corr, result.margin, result.sign_confidence, result.ambiguous, result.sign_conflict):
        arr.setflags(write=False)
    if warn:
        _warn(result, stacklevel=3)
    return result


def _warn(result: MatchResult, stacklevel: int = 2) -> None:
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


def match_stats(
    state: stats.CorrStats | stats.Correlation,
    method: str = "sign_marginalized",
    *,
    layers: Sequence[int] | None = None,
    layer_labels: Sequence[int] | None = None,
    **kwargs: Any,
) -> MatchResult:
    """Matches from accumulated statistics (:mod:`gaugejax.stats`).

    Args:
      state: a :class:`~gaugejax.stats.CorrStats` or a finalized :class:`~gaugejax.stats.Correlation`.
      method: one of :data:`METHODS`.
      layers: indices into the leading layer axis to pool (default: all).
      layer_labels: what to record as ``result.layers`` (default: ``layers``).
      **kwargs: passed to :func:`match_correlation` (``group``, ``norm``, ``confidence``, ...).

    Example:
      >>> X = np.random.default_rng(1).normal(size=(3, 200, 6)).astype(np.float32)
      >>> s = stats.update(stats.init(6, n_layers=3), X, X[..., ::-1])
      >>> match_stats(s, layers=[0, 2]).gauge.perm.tolist()
      [5, 4, 3, 2, 1, 0]
    """
    c = stats.finalize(state) if isinstance(state, stats.CorrStats) else state
    corr = np.asarray(c.corr)
    if layers is not None:
        if corr.ndim != 3:
            raise ValueError("layers= needs statistics with a leading layer axis")
        idx = [int(i) for i in layers]
        if any(not -corr.shape[0] <= i < corr.shape[0] for i in idx):
            raise ValueError(f"layers {idx} out of range for {corr.shape[0]} layers")
        corr = corr[idx]
    labels = layer_labels if layer_labels is not None else layers
    kwargs.setdefault("n_tokens", int(np.asarray(c.n)))
    kwargs.setdefault("warn", True)
    return match_correlation(corr, method, layers=labels, **kwargs)


def match(X: Any, Y: Any, method: str = "sign_marginalized", *, layers: Sequence[int] | None = None,
          **kwargs: Any) -> MatchResult:
    """Recovers the gauge A→B from activations of both models on the same tokens (docs/conventions.md §4).

    Args:
      X: ``(n, d)`` or ``(L, n, d)`` activations of A.
      Y: activations of B, same shape.
      method: ``"sign_marginalized"`` (``B_d``, default), ``"signed"`` or ``"permutation"``.
      layers: with ``(L, n, d)`` inputs, the layer indices to pool (default all).
      **kwargs: ``group``, ``norm``, ``confidence``, ``solver``, ``warn``, ``device`` (see
        :func:`match_correlation`).

    Returns:
      :class:`MatchResult`; ``.gauge`` maps A→B: ``Y ≈ gauge.apply(X)``.

    Example:
      >>> X = np.random.default_rng(0).normal(size=(500, 10)).astype(np.float32)
      >>> g = SignedPermutation.random(1, 10, negative_fraction=0.5)
      >>> match(X, g.apply(X)).gauge == g
      True
      >>> match(X, g.apply(X), "signed", warn=False).gauge.agreement(g)["perm"]
      0.5
    """
    x = np.asarray(X)
    y = np.asarray(Y)
    if x.ndim not in (2, 3) or y.ndim != x.ndim:
        raise ValueError(f"X and Y must both be (n, d) or (layers, n, d), got {x.shape} and {y.shape}")
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"X and Y must share layers and tokens, got {x.shape} and {y.shape}")
    if x.shape[-1] != y.shape[-1]:
        raise GaugeError(f"cannot match residual streams of different widths ({x.shape[-1]} vs {y.shape[-1]})")
    if x.ndim == 3 and layers is not None:
        x = x[list(layers)]
        y = y[list(layers)]
    st = stats.update(stats.init(x.shape[-1], n_layers=None if x.ndim == 2 else x.shape[0]), x, y)
    return match_stats(st, method, layer_labels=layers, **kwargs)
