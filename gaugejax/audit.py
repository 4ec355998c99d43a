"""Gauge-sweep audits of index-level claims.

An *index-level claim* is a function from a model and data to residual coordinates with signs:
"coordinate 17 is the top direction of a linear probe for feature F (positively)", "coordinate 3
is the most correlated with F", "coordinate 5 carries the massive activation". Such a claim is
only meaningful relative to a chart. The audit applies ``K`` random gauges ``g_k`` of a group to
the model (functionally identical copies), recomputes the claim in every chart and reports how
often

* the **raw** claim reproduces (same indices; same indices and signs), and
* the **gauge-relative** claim reproduces: the reference claim transported through the known
  gauge (:func:`gaugejax.transport.transport_neurons`), by ``B_d`` (signs included) and by
  ``S_d`` (the permutation part only, as permutation-only alignment would).

Expected outcome on an RMSNorm model: raw claims reproduce at chance level (``≈ k/d`` for a
top-``k`` set), the ``B_d``-relative claim always, the ``S_d``-relative claim in index but not in
sign (each sign is right with probability 1/2).

Example:
  >>> import gaugejax as gj
  >>> from gaugejax.audit import audit, correlation_claim, feature_labels
  >>> m = gj.random_model("llama", seed=0)
  >>> tokens = np.random.default_rng(0).integers(0, 256, (8, 32))
  >>> claim = correlation_claim(layer=1, labels=feature_labels(tokens, "half", m.config.vocab_size))
  >>> r = audit(m, claim, tokens, k=4, seed=0)
  >>> r.rate("B_d", "bd_relative_signed")
  1.0
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import jax
import numpy as np

from gaugejax.errors import GaugeError
from gaugejax.gauge import SignedPermutation
from gaugejax.group import Group
from gaugejax.models import Model, apply_gauge, residual_stream
from gaugejax.transport import transport_neurons
from gaugejax.verify import Progress, check_finite

__all__ = [
    "Claim", "ClaimResult", "AuditResult", "audit", "probe_claim", "correlation_claim",
    "mean_activation_claim", "feature_labels", "plot_audit", "AUDIT_COLUMNS",
]

AUDIT_COLUMNS = ("raw", "raw_signed", "sd_relative", "sd_relative_signed", "bd_relative", "bd_relative_signed")
"""Reproduction rates an audit reports for each group (fractions of the ``K`` charts)."""


@dataclass(frozen=True)
class ClaimResult:
    """What a claim says in one chart: residual coordinates and their signs (``+1`` if unsigned)."""

    indices: np.ndarray
    signs: np.ndarray

    def as_set(self, signed: bool) -> frozenset:
        if signed:
            return frozenset(zip(self.indices.tolist(), self.signs.tolist()))
        return frozenset(self.indices.tolist())


@dataclass(frozen=True)
class Claim:
    """An index-level claim.

    Attributes:
      name: short description (used in tables).
      fn: ``fn(model, tokens) -> (indices, signs)`` in the model's chart.
      signed: whether the claim's signs mean something (an unsigned claim reports ``+1``).
    """

    name: str
    fn: Callable[[Model, np.ndarray], tuple[Any, Any]]
    signed: bool = True

    def __call__(self, model: Model, tokens: np.ndarray) -> ClaimResult:
        idx, sg = self.fn(model, tokens)
        idx = np.asarray(idx, np.int64).ravel()
        sg = np.ones_like(idx, dtype=np.int8) if sg is None or not self.signed else np.asarray(np.sign(sg), np.int8).ravel()
        if sg.shape != idx.shape:
            raise GaugeError(f"claim {self.name!r} returned {idx.size} indices but {sg.size} signs")
        return ClaimResult(idx, sg)


# --------------------------------------------------------------------------- features and claims
def feature_labels(tokens: Any, feature: str = "half", vocab_size: int | None = None) -> np.ndarray:
    """A binary token feature ``(B, T)`` float32 for probes and correlations.

    Args:
      tokens: ``(B, T)`` ids.
      feature: ``"half"`` (id < vocab/2), ``"parity"`` (even id), ``"token:ID"`` (the token is ID),
        ``"next:ID"`` (the next token is ID; 0 at the last position).
      vocab_size: needed for ``"half"``.

    Example:
      >>> feature_labels(np.array([[0, 3, 4]]), "parity").tolist()
      [[1.0, 0.0, 1.0]]
    """
    t = np.asarray(tokens)
    if feature == "half":
        if vocab_size is None:
            raise GaugeError("feature 'half' needs vocab_size")
        return (t < vocab_size // 2).astype(np.float32)
    if feature == "parity":
        return (t % 2 == 0).astype(np.float32)
    kind, _, value = feature.partition(":")
    if kind in ("token", "next") and value.isdigit():
        hit = (t == int(value)).astype(np.float32)
        if kind == "token":
            return hit
        out = np.zeros_like(hit)
        out[..., :-1] = hit[..., 1:]
        return out
    raise GaugeError(f"unknown feature {feature!r}: use half, parity, token:ID or next:ID")


def _acts(model: Model, tokens: np.ndarray, layer: int) -> np.ndarray:
    n = model.config.n_layers
    if not 0 <= layer <= n:
        raise GaugeError(f"layer {layer} is outside [0, {n}]")
    stream = residual_stream(model, tokens)
    check_finite(stream[:layer + 1])  # a NaN claim would "reproduce" at random
    x = np.asarray(stream[layer], np.float64)
    return x.reshape(-1, x.shape[-1])


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    # Largest |score| first; ties broken by the lower index (stable), which is itself chart-dependent.
    order = np.argsort(-np.abs(scores), kind="stable")[:k]
    return order, np.sign(scores[order])


def correlation_claim(layer: int, labels: Any, k: int = 1) -> Claim:
    """"The ``k`` coordinates most correlated with a feature (with the correlation's sign)"."""
    y = np.asarray(labels, np.float64).ravel()

    def fn(model, tokens):
        x = _acts(model, tokens, layer)
        if x.shape[0] != y.shape[0]:
            raise GaugeError(f"{y.shape[0]} labels for {x.shape[0]} token positions")
        xc = x - x.mean(0)
        yc = y - y.mean()
        corr = xc.T @ yc / (np.sqrt((xc**2).sum(0) * (yc**2).sum()) + 1e-30)
        return _top(corr, k)

    return Claim(f"top-{k} correlated coordinate(s), layer {layer}", fn)


def probe_claim(layer: int, labels: Any, k: int = 1, ridge: float = 1e-3) -> Claim:
    """"The ``k`` largest weights of a ridge-regression linear probe for a feature (with sign)".

    The probe is fit on standardized activations (closed form ``(XᵀX + λI)⁻¹ Xᵀy``), so its
    weights are comparable across coordinates.
    """
    y = np.asarray(labels, np.float64).ravel()

    def fn(model, tokens):
        x = _acts(model, tokens, layer)
        if x.shape[0] != y.shape[0]:
            raise GaugeError(f"{y.shape[0]} labels for {x.shape[0]} token positions")
        x = (x - x.mean(0)) / (x.std(0) + 1e-12)
        yc = y - y.mean()
        w = np.linalg.solve(x.T @ x / len(x) + ridge * np.eye(x.shape[1]), x.T @ yc / len(x))
        return _top(w, k)

    return Claim(f"top-{k} linear-probe coordinate(s), layer {layer}", fn)


def mean_activation_claim(layer: int, k: int = 1) -> Claim:
    """"The ``k`` coordinates with the largest mean activation (massive activations), with sign"."""

    def fn(model, tokens):
        return _top(_acts(model, tokens, layer).mean(0), k)

    return Claim(f"top-{k} mean-activation coordinate(s), layer {layer}", fn)


# --------------------------------------------------------------------------- the sweep
@dataclass
class AuditResult:
    """Outcome of :func:`audit`.

    Attributes:
      claim: the claim's name.
      reference: the claim in the original chart.
      k: number of random charts per group.
      rates: group (a :class:`~gaugejax.group.Group`, equal to its name) → column (:data:`AUDIT_COLUMNS`) → fraction of charts where it reproduced.
      per_chart: group → list of per-chart dicts (the gauge's negative count and each column's
        outcome as a bool).
    """

    claim: str
    reference: ClaimResult
    k: int
    rates: dict[str, dict[str, float]] = field(default_factory=dict)
    per_chart: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def rate(self, group: str, column: str) -> float:
        """One reproduction rate."""
        return self.rates[group][column]

    def rows(self) -> list[list[Any]]:
        """Table rows ``[group, K, *rates]`` in :data:`AUDIT_COLUMNS` order."""
        return [[g, self.k, *[r[c] for c in AUDIT_COLUMNS]] for g, r in self.rates.items()]

    def summary(self) -> dict[str, Any]:
        """Plain-Python summary (JSON-serialisable)."""
        return {"claim": self.claim, "k": self.k, "reference_indices": self.reference.indices.tolist(),
                "reference_signs": self.reference.signs.tolist(), "rates": self.rates}


def audit(model: Model, claim: Claim, tokens: Any, *, k: int = 16, groups: Sequence[Group | str] | None = None,
          seed: int = 0, progress: Progress | None = None) -> AuditResult:
    """Sweeps ``k`` random gauges per group and measures how the claim reproduces.

    Args:
      model: the model the claim is made about.
      claim: a :class:`Claim`.
      tokens: ``(B, T)`` ids the claim is computed on.
      k: charts per group.
      groups: groups to sweep, each a subgroup of the model's (:class:`~gaugejax.group.Group` or a
        name); default the model's group and ``S_d``: ``(B_d, S_d)`` for RMSNorm,
        ``(S_d x ±1, S_d)`` for LayerNorm.
      seed: gauges are drawn from ``fold_in(key(seed), n)`` (group-specific streams).
      progress: ``progress(charts done, charts total)`` after each chart (``k`` per group).

    Returns:
      :class:`AuditResult`.

    Raises:
      GaugeError: ``k < 1``, an unknown group, or one that is not a symmetry of the model (``B_d``
        charts of a LayerNorm model are other models).
      NonFiniteError: the model's activations are NaN or infinite up to the claim's layer.
    """
    if k < 1:
        raise GaugeError("k must be at least 1")
    own = Group.of(model.config)
    groups = (own, Group.S_D) if groups is None else tuple(Group(g) for g in groups)
    for g in groups:
        if not g.subgroup_of(own):
            norm = {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm"}.get(model.config.norm, model.config.norm)
            raise GaugeError(f"a {norm} model only admits {own}; {g} charts are not the same model "
                             f"(sweep {own} or a subgroup)")
    tokens = np.asarray(tokens)
    ref = claim(model, tokens)
    result = AuditResult(claim.name, ref, k)
    key = jax.random.key(seed)
    scores = ref.signs.astype(np.float64)
    for gi, group in enumerate(groups):
        rows = []
        for n in range(k):
            g = group.random(jax.random.fold_in(jax.random.fold_in(key, gi), n), model.d)
            got = claim(apply_gauge(model, g), tokens)
            bd = ClaimResult(*_transported(ref.indices, g, scores))
            sd = ClaimResult(*_transported(ref.indices, Group.S_D.project(g), scores))
            row = {
                "negative_signs": int((g.signs < 0).sum()),
                "raw": got.as_set(False) == ref.as_set(False),
                "raw_signed": got.as_set(True) == ref.as_set(True),
                "sd_relative": got.as_set(False) == sd.as_set(False),
                "sd_relative_signed": got.as_set(True) == sd.as_set(True),
                "bd_relative": got.as_set(False) == bd.as_set(False),
                "bd_relative_signed": got.as_set(True) == bd.as_set(True),
            }
            rows.append(row)
            if progress is not None:
                progress(gi * k + n + 1, len(groups) * k)
        result.per_chart[group] = rows
        result.rates[group] = {c: float(np.mean([r[c] for r in rows])) for c in AUDIT_COLUMNS}
    return result


def _transported(indices: np.ndarray, gauge: SignedPermutation, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx, sg = transport_neurons(indices, gauge, scores=scores)
    return idx, sg.astype(np.int8)


def plot_audit(results: AuditResult | Sequence[AuditResult], path: str | os.PathLike) -> None:
    """Bar chart of reproduction rates (PNG, drawn on a matplotlib Agg canvas), written atomically.

    One panel per claim; bars per group for the raw, ``S_d``-relative and ``B_d``-relative claim
    (index and sign).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from gaugejax.atomic import atomic_path

    results = [results] if isinstance(results, AuditResult) else list(results)
    labels = ["raw", "raw ±", "S_d-rel", "S_d-rel ±", "B_d-rel", "B_d-rel ±"]
    fig = Figure(figsize=(5.5 * len(results), 3.6))  # no pyplot: the caller's backend and figures are untouched
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(results), squeeze=False)
    for ax, res in zip(axes[0], results):
        groups = list(res.rates)
        width = 0.8 / max(len(groups), 1)
        x = np.arange(len(AUDIT_COLUMNS))
        for gi, grp in enumerate(groups):
            vals = [res.rates[grp][c] for c in AUDIT_COLUMNS]
            ax.bar(x + (gi - (len(groups) - 1) / 2) * width, vals, width, label=f"sweep over {grp}")
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"reproduced (of K={res.k} charts)")
        ax.set_title(res.claim, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
