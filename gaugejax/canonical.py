"""A reference-free canonical gauge: fix the chart of a model from its own weights.

Matching needs a second model; a *canonical chart* needs none. Every model is moved to the chart
where

* coordinates are **ordered** by a per-coordinate statistic that the gauge permutes but does not
  sign (an RMSNorm gain, the RMS of an embedding column, ...), lexicographically over several
  statistics to break exact ties; and
* each coordinate's **sign** is fixed by an odd statistic that the gauge negates (the column sum
  of the embedding, a sum of cubes, the mean activation, ...): the canonical sign makes it
  positive. LayerNorm models only admit one global sign, fixed by the sum of the odd statistic.

Then two functionally identical copies stored in different charts land in the *same* canonical
chart (exactly, for weight statistics: they are computed from the same numbers in the same order,
only indexed and negated), and transport between them needs no matching. The chart is only
well defined where the statistics have no ties / zeros, and it is only as stable under
fine-tuning as the gaps between sorted statistics are wide compared with the drift: see
:class:`CanonicalGauge` diagnostics, :func:`regauge_stability` and :func:`drift_stability`.

Example:
  >>> import gaugejax as gj
  >>> from gaugejax.canonical import canonical_gauge
  >>> m = gj.random_model("llama", seed=0)
  >>> g = gj.SignedPermutation.random(5, m.d)
  >>> ca, cb = canonical_gauge(m), canonical_gauge(gj.apply_gauge(m, g))
  >>> ca.gauge == g.then(cb.gauge)       # A → B → canonical equals A → canonical
  True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from gaugejax.errors import GaugeError, NonFiniteError
from gaugejax.gauge import SignedPermutation
from gaugejax.group import Group
from gaugejax.models import Model, apply_gauge
from gaugejax.verify import check_finite

__all__ = [
    "ORDER_STATISTICS", "SIGN_STATISTICS", "CanonicalGauge", "coordinate_statistics", "canonical_gauge",
    "canonicalize", "chart_agreement", "regauge_stability", "drift_stability",
]

ORDER_STATISTICS = ("final_norm", "embed_rms", "lm_head_rms", "norm_mean", "attn_norm.L", "mlp_norm.L", "act_rms")
"""Sign-invariant, permutation-covariant statistics (``.L``: a layer index, e.g. ``attn_norm.0``;
``act_*`` need tokens)."""
SIGN_STATISTICS = ("embed_sum", "embed_cube", "lm_head_sum", "lm_head_cube", "act_mean", "act_cube")
"""Odd (sign-covariant) statistics that fix the signs."""

DEFAULT_ORDER = ("embed_rms", "final_norm")
"""The default ordering. Not the final-norm gain first: bf16-trained gains are heavily tied
(SmolLM2-135M's 576 final-norm gains take 90 values), so with gains first the order is left to the
tie-breaker and any drift that unties them scrambles it (measured on SmolLM2 under 1e-5 relative
parameter noise: 16 % of coordinates keep their canonical position with gains first, 100 % with
``embed_rms`` first, 99 % at 1e-3). On a tiny model trained from scratch, gains first drift less
(see ``examples/canonical_gauge.py``); pass ``order_by`` to choose. The choice must not depend on
the model, or two checkpoints could be put in charts defined by different statistics."""
DEFAULT_SIGN = "embed_sum"


def resolve_order(order_by: Sequence[str] | str = DEFAULT_ORDER) -> tuple[str, ...]:
    """Ordering statistics from a tuple or a comma-separated string."""
    if isinstance(order_by, str):
        return tuple(x.strip() for x in order_by.split(",") if x.strip())
    return tuple(order_by)


def _np(x: Any) -> np.ndarray:
    return np.asarray(x, np.float64)


def coordinate_statistics(model: Model, names: Sequence[str], tokens: Any = None, *, layer: int | None = None) -> dict[str, np.ndarray]:
    """Per-coordinate statistics ``(d,)`` by name (see :data:`ORDER_STATISTICS`, :data:`SIGN_STATISTICS`).

    Args:
      model: the model.
      names: statistics to compute.
      tokens: ``(B, T)`` ids for activation statistics.
      layer: residual-stream index for activation statistics (default: the middle layer).

    Raises:
      GaugeError: unknown names, a missing tensor (e.g. ``lm_head`` of a tied model), or
        activation statistics without tokens.
      NonFiniteError: a statistic is NaN or infinite (non-finite weights or activations; the
        message names the statistic or the layer).
    """
    p = model.params
    out: dict[str, np.ndarray] = {}
    acts = None
    for name in names:
        if name in out:
            continue
        base, _, idx = name.partition(".")
        if name in ("final_norm", "norm_mean") and "final_norm" not in p:
            raise GaugeError(f"statistic {name!r}: this model has no final norm (a post-LN encoder such as BERT ends "
                             "in its last block's LayerNorm); order by embed_rms,mlp_norm.-1 instead")
        if name == "final_norm":
            out[name] = _np(p["final_norm"])
        elif name == "norm_mean":
            gains = [_np(p["final_norm"])[None]]
            for k in ("attn_norm", "mlp_norm"):
                if k in p.get("layers", {}):
                    gains.append(_np(p["layers"][k]))
            out[name] = np.concatenate(gains, axis=0).mean(0)
        elif base in ("attn_norm", "mlp_norm") and idx.lstrip("-").isdigit():
            if base not in p.get("layers", {}):
                raise GaugeError(f"statistic {name!r}: this model has no {base}")
            stack = _np(p["layers"][base])
            li = int(idx)
            if not -stack.shape[0] <= li < stack.shape[0]:
                raise GaugeError(f"statistic {name!r}: layer {li} out of range")
            out[name] = stack[li]
        elif base in ("embed", "lm_head") and idx == "" or name in ("embed_rms", "embed_sum", "embed_cube",
                                                                       "lm_head_rms", "lm_head_sum", "lm_head_cube"):
            tensor, _, kind = name.rpartition("_")
            if tensor not in p:
                raise GaugeError(f"statistic {name!r}: this model has no {tensor} tensor (tied embeddings?)")
            w = _np(p[tensor])
            if kind == "rms":
                out[name] = np.sqrt((w**2).mean(0))
            elif kind == "sum":
                out[name] = w.sum(0)
            elif kind == "cube":
                out[name] = (w**3).sum(0)
            else:
                raise GaugeError(f"unknown statistic {name!r}")
        elif name in ("act_rms", "act_mean", "act_cube"):
            if tokens is None:
                raise GaugeError(f"statistic {name!r} needs tokens")
            if acts is None:
                from gaugejax.models import residual_stream

                li = model.config.n_layers // 2 if layer is None else int(layer)
                stream = residual_stream(model, np.asarray(tokens))
                check_finite(stream[:li + 1])
                acts = _np(stream[li]).reshape(-1, model.d)
            out[name] = {"act_rms": lambda a: np.sqrt((a**2).mean(0)), "act_mean": lambda a: a.mean(0),
                         "act_cube": lambda a: (a**3).mean(0)}[name](acts)
        else:
            raise GaugeError(f"unknown statistic {name!r} (order: {', '.join(ORDER_STATISTICS)}; "
                             f"sign: {', '.join(SIGN_STATISTICS)})")
        if not np.isfinite(out[name]).all():
            raise NonFiniteError(f"statistic {name!r} is NaN or infinite: the checkpoint's weights are not finite")
    return out


@dataclass(frozen=True)
class CanonicalGauge:
    """The gauge from a model's chart to its canonical chart, with diagnostics.

    Attributes:
      gauge: A → canonical (``h_C = h_A[..., perm] * signs``).
      order_by: the ordering statistics (primary first).
      sign_by: the sign statistic.
      order_gap: ``(d-1,)`` gaps between consecutive sorted primary statistics, relative to their
        spread (``std``): small gaps are where drift swaps coordinates.
      sign_margin: ``(d,)`` ``|odd statistic|`` of each canonical coordinate relative to its RMS over
        coordinates: small margins are where drift flips signs.
      ties: coordinates whose position depends on the input chart (all ordering statistics tied).
      zero_signs: coordinates whose odd statistic is exactly 0 (sign undetermined; set to +1).
    """

    gauge: SignedPermutation
    order_by: tuple[str, ...]
    sign_by: str
    order_gap: np.ndarray
    sign_margin: np.ndarray
    ties: int
    zero_signs: int

    @property
    def unique(self) -> bool:
        """True when the canonical chart does not depend on the input chart (no ties, no zeros)."""
        return self.ties == 0 and self.zero_signs == 0

    def summary(self) -> dict[str, Any]:
        """Plain-Python summary."""
        return {
            "d": self.gauge.d, "order_by": list(self.order_by), "sign_by": self.sign_by, "unique": self.unique,
            "ties": self.ties, "zero_signs": self.zero_signs,
            "min_order_gap": float(self.order_gap.min()) if self.order_gap.size else 0.0,
            "median_order_gap": float(np.median(self.order_gap)) if self.order_gap.size else 0.0,
            "min_sign_margin": float(self.sign_margin.min()) if self.sign_margin.size else 0.0,
            "median_sign_margin": float(np.median(self.sign_margin)) if self.sign_margin.size else 0.0,
        }

    def metadata(self) -> dict[str, np.ndarray]:
        """Diagnostics as plain arrays for the gauge file."""
        return {"canonical_order_by": np.asarray(",".join(self.order_by)), "canonical_sign_by": np.asarray(self.sign_by),
                "order_gap": self.order_gap.astype(np.float32), "sign_margin": self.sign_margin.astype(np.float32),
                "ties": np.asarray(self.ties, np.int64), "zero_signs": np.asarray(self.zero_signs, np.int64)}


def canonical_gauge(model: Model, *, order_by: Sequence[str] | str = DEFAULT_ORDER, sign_by: str = DEFAULT_SIGN,
                    tokens: Any = None, layer: int | None = None) -> CanonicalGauge:
    """The gauge from ``model``'s chart to its canonical chart.

    Args:
      model: the model; signs follow its group (:meth:`gaugejax.group.Group.of`): one per coordinate
        for ``B_d`` (RMSNorm), one global sign for ``S_d × {±1}`` (LayerNorm).
      order_by: sign-invariant statistics, primary first (lexicographic order, ascending), as a
        tuple or a comma-separated string (default :data:`DEFAULT_ORDER`).
      sign_by: an odd statistic; each canonical coordinate gets the sign that makes it positive.
      tokens, layer: for activation statistics.

    Returns:
      :class:`CanonicalGauge`.

    Example:
      >>> import gaugejax as gj
      >>> c = canonical_gauge(gj.random_model("llama", seed=1))
      >>> c.unique, c.gauge.d
      (True, 64)
    """
    order_by = resolve_order(order_by)
    if not order_by:
        raise GaugeError("order_by needs at least one statistic")
    bad = [n for n in order_by if n.split(".")[0] + (".L" if "." in n else "") not in ORDER_STATISTICS]
    if bad:
        raise GaugeError(f"{', '.join(bad)} cannot order coordinates (sign-invariant statistics: {', '.join(ORDER_STATISTICS)})")
    if sign_by not in SIGN_STATISTICS:
        raise GaugeError(f"{sign_by!r} cannot fix signs (odd statistics: {', '.join(SIGN_STATISTICS)})")
    st = coordinate_statistics(model, [*order_by, sign_by], tokens, layer=layer)
    keys = [st[n] for n in order_by]
    order = np.lexsort(tuple(reversed(keys)))  # lexsort: last key is primary
    stacked = np.stack([k[order] for k in keys], axis=1)
    same_as_next = np.all(stacked[1:] == stacked[:-1], axis=1)
    tied = np.zeros(model.d, bool)
    tied[:-1] |= same_as_next
    tied[1:] |= same_as_next
    primary = keys[0][order]
    spread = float(np.std(keys[0])) or 1.0
    gap = np.diff(primary) / spread
    odd = st[sign_by]
    if Group.of(model.config) is Group.S_D_SIGN:
        total = float(odd.sum())
        s = np.full(model.d, 1 if total >= 0 else -1, np.int8)
        zero = int(total == 0.0) * model.d
        rms = float(np.sqrt(np.mean(odd**2))) or 1.0
        margin = np.full(model.d, abs(total) / (rms * np.sqrt(model.d)))
    else:
        s = np.where(odd < 0, -1, 1).astype(np.int8)
        zero = int((odd == 0).sum())
        rms = float(np.sqrt(np.mean(odd**2))) or 1.0
        margin = np.abs(odd[order]) / rms
    gauge = SignedPermutation(order, s[order])
    return CanonicalGauge(gauge, order_by, sign_by, gap, margin, int(tied.sum()), zero)


def canonicalize(model: Model, **kwargs: Any) -> tuple[Model, CanonicalGauge]:
    """The model moved into its canonical chart, and the gauge used."""
    c = canonical_gauge(model, **kwargs)
    return apply_gauge(model, c.gauge), c


def chart_agreement(canon_a: SignedPermutation, canon_b: SignedPermutation,
                    truth: SignedPermutation | None = None) -> dict[str, float]:
    """How far two canonical charts agree, given the true gauge A → B (``None``: identity).

    The gauge between the two canonical charts is ``canon_a⁻¹ · truth · canon_b``; the charts agree
    where it is the identity.

    Returns:
      ``same_chart`` (1.0 if identical, else 0.0), ``perm`` (fraction of canonical coordinates
      holding the same original coordinate), ``signed`` (same coordinate and sign).
    """
    truth = SignedPermutation.identity(canon_a.d) if truth is None else truth
    between = canon_a.inverse().then(truth).then(canon_b)
    agree = between.agreement(SignedPermutation.identity(canon_a.d))
    return {"same_chart": float(between == SignedPermutation.identity(canon_a.d)), "perm": agree["perm"],
            "signed": agree["signed"]}


def regauge_stability(model: Model, k: int = 16, *, seed: int = 0, **kwargs: Any) -> dict[str, float]:
    """Fraction of ``k`` randomly re-gauged (functionally identical) copies that land in the same
    canonical chart as ``model``; also the mean per-coordinate agreement.

    Copies are drawn from the model's group (``B_d`` for RMSNorm, ``S_d × {±1}`` for LayerNorm).
    """
    import jax

    ref = canonical_gauge(model, **kwargs).gauge
    group = Group.of(model.config)
    same, perm, sgn = [], [], []
    for n in range(k):
        g = group.random(jax.random.fold_in(jax.random.key(seed), n), model.d)
        other = canonical_gauge(apply_gauge(model, g), **kwargs).gauge
        a = chart_agreement(ref, other, g)
        same.append(a["same_chart"])
        perm.append(a["perm"])
        sgn.append(a["signed"])
    return {"same_chart": float(np.mean(same)), "perm": float(np.mean(perm)), "signed": float(np.mean(sgn)), "k": k}


def drift_stability(base: Model, drifted: Sequence[Model], truths: Sequence[SignedPermutation | None] | None = None,
                    **kwargs: Any) -> list[dict[str, float]]:
    """Canonical-chart agreement between a model and drifted (e.g. fine-tuned) versions of it.

    Args:
      base: the reference model.
      drifted: models whose coordinates correspond to ``base``'s up to the gauges ``truths``.
      truths: ``truths[i]`` maps ``base`` → ``drifted[i]`` (default: identity, same chart).
      **kwargs: options of :func:`canonical_gauge`.

    Returns:
      One :func:`chart_agreement` dict per drifted model, plus ``sign``: the fraction of coordinates
      whose sign fix alone (the odd statistic's sign) survives the drift, whatever their order.
    """
    ref = canonical_gauge(base, **kwargs)
    sign_by = kwargs.get("sign_by", DEFAULT_SIGN)
    odd_ref = coordinate_statistics(base, [sign_by], kwargs.get("tokens"), layer=kwargs.get("layer"))[sign_by]
    truths = [None] * len(drifted) if truths is None else list(truths)
    out = []
    for m, t in zip(drifted, truths):
        t = SignedPermutation.identity(base.d) if t is None else t
        a = chart_agreement(ref.gauge, canonical_gauge(m, **kwargs).gauge, t)
        odd = coordinate_statistics(m, [sign_by], kwargs.get("tokens"), layer=kwargs.get("layer"))[sign_by]
        # sign fix alone: does each coordinate keep the sign of its odd statistic (through the truth)?
        a["sign"] = float(np.mean(np.sign(odd) == t.signs * np.sign(odd_ref[t.perm])))
        out.append(a)
    return out
