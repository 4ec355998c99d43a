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

Diagnostics, per coordinate ``j`` of B (:class:`~gaugejax.match_result.MatchResult`): the matched
correlation, the ``margin`` of its score over the best competitor in its row and its column, a
``sign_confidence``, and ``ambiguous`` when the match is not certified (:mod:`gaugejax.certificate`:
Fisher-z intervals with a union bound over all ``L·d²`` entries).

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

from typing import Any, Sequence

import numpy as np

from gaugejax import assignment, stats
from gaugejax.certificate import certify, correlation_interval, error_halfwidth, sign_confidence
from gaugejax.errors import GaugeError, InputError
from gaugejax.gauge import SignedPermutation
from gaugejax.group import Group
from gaugejax.match_result import AmbiguousMatchWarning, MatchResult, warn_uncertain

__all__ = [
    "METHODS", "GROUPS", "MatchResult", "AmbiguousMatchWarning", "match", "match_correlation",
    "match_stats", "correlation_interval", "error_halfwidth",
]

METHODS = ("sign_marginalized", "signed", "permutation")
"""Matching methods (docs/conventions.md §4)."""

GROUPS = tuple(Group)
"""Gauge groups a result can live in (:class:`~gaugejax.group.Group`; members equal their names)."""


# --------------------------------------------------------------------------- public API
def _solve(score: np.ndarray, solver: str) -> tuple[np.ndarray, str]:
    """The assignment maximising ``Σ_j score[perm[j], j]``, as ``perm`` (B's j ← A's perm[j])."""
    a = assignment.solve(score, method=solver)
    perm = np.empty(score.shape[0], np.int64)
    perm[a.cols] = a.rows
    return perm, a.solver


def _resolve_group(method: str, group: Group | str | None, norm: str | None) -> Group:
    if method not in METHODS:
        raise InputError(f"unknown matching method {method!r}; use one of {', '.join(METHODS)}")
    if norm not in (None, "rmsnorm", "layernorm"):
        raise InputError(f"norm must be 'rmsnorm', 'layernorm' or None, got {norm!r}; pass one of those")
    group = None if group is None else Group(group)
    if method != "sign_marginalized":
        if group not in (None, Group.S_D):
            raise InputError(f"method {method!r} returns permutations (S_d); group={group!r} needs "
                             "method='sign_marginalized'")
        return Group.S_D
    model_group = Group.B_D if norm is None else Group.of(norm)
    if group is None:
        return model_group
    if not group.subgroup_of(model_group):
        raise GaugeError(f"a LayerNorm model only admits {model_group} (one global sign); refusing a {group} "
                         f"match. Use group={model_group.value!r} (the default for norm={norm!r})")
    if group is Group.S_D:
        raise InputError("group='S_d' is a permutation-only match; use method='permutation' instead")
    return group


def _layer_indices(layers: Sequence[int], n_layers: int) -> list[int]:
    """``layers`` as a list of ints, each in ``[-n_layers, n_layers)``; an :class:`InputError` otherwise."""
    idx = [int(i) for i in layers]
    if not idx or any(not -n_layers <= i < n_layers for i in idx):
        raise InputError(f"layers {idx} out of range for {n_layers} layers; pick indices in 0..{n_layers - 1}")
    return idx


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
        raise InputError(f"corr has shape {c.shape}; pass a (d, d) or (layers, d, d) correlation matrix")
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

    cert = certify(score, perm, n_tokens=n_tokens, n_entries=n_layers * d * d, confidence=confidence,
                   absolute=kind == "abs")
    result = MatchResult(
        gauge=SignedPermutation(perm, signs),
        method=method,
        group=grp,
        matched_corr=matched.astype(np.float32),
        margin=cert.margin,
        sign_confidence=sign_confidence(matched, n_tokens),
        ambiguous=cert.uncertified | sign_conflict,
        sign_conflict=sign_conflict,
        n_tokens=None if n_tokens is None else int(n_tokens),
        objective=float(cert.matched_score.sum()),
        layers=None if layers is None else tuple(int(x) for x in layers),
        solver=solver_used,
        confidence=float(confidence),
        error_bound=float(cert.error_bound),
        notes=tuple(notes),
    )
    for arr in (result.matched_corr, result.margin, result.sign_confidence, result.ambiguous, result.sign_conflict):
        arr.setflags(write=False)
    if warn:
        warn_uncertain(result, stacklevel=3)
    return result


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
            raise InputError("layers= needs statistics with a leading layer axis; drop layers= for (d, d) statistics")
        corr = corr[_layer_indices(layers, corr.shape[0])]
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
        raise InputError(f"X and Y have shapes {x.shape} and {y.shape}; pass both as (n, d) or both as (layers, n, d)")
    if x.shape[:-1] != y.shape[:-1]:
        raise InputError(f"X and Y have shapes {x.shape} and {y.shape}; pass activations of the same layers and tokens")
    if x.shape[-1] != y.shape[-1]:
        raise GaugeError(f"cannot match residual streams of different widths ({x.shape[-1]} vs {y.shape[-1]})")
    if x.ndim == 3 and layers is not None:
        idx = _layer_indices(layers, x.shape[0])
        x, y = x[idx], y[idx]
    st = stats.update(stats.init(x.shape[-1], n_layers=None if x.ndim == 2 else x.shape[0]), x, y)
    return match_stats(st, method, layer_labels=layers, **kwargs)
