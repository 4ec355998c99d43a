"""Coordinate-preserving merges: bring every model into one chart, then combine parameters.

Averaging the weights of two checkpoints is only meaningful when their residual coordinates
correspond. With the gauge ``G`` from A to B recovered (:func:`gaugejax.match`, ``gaugejax
align``), B is moved into A's chart by ``G.inverse()`` (exact: indexing and negation) and then

* :func:`merge`: linear interpolation ``(1 - alpha) · A + alpha · B``;
* :func:`task_arithmetic`: ``base + Σ λ_i (θ_i − base)`` over several fine-tunes of one base.

``group="S_d"`` uses only the permutation part of each gauge (what permutation-only alignment
would do): on RMSNorm models every coordinate whose sign flipped is averaged with its negation,
which breaks the merge. Kept for comparison.

Example:
  >>> import gaugejax as gj
  >>> from gaugejax.merge import merge
  >>> a = gj.random_model("llama", seed=0)
  >>> g = gj.SignedPermutation.random(1, a.d)
  >>> b = gj.apply_gauge(a, g)                       # the same model, stored in another chart
  >>> m = merge(a, b, g, alpha=0.5)                  # B_d: gives A back
  >>> import jax
  >>> all(bool((x == y).all()) for x, y in zip(jax.tree.leaves(m.params), jax.tree.leaves(a.params)))
  True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gaugejax.errors import GaugeError, NonFiniteError
from gaugejax.gauge import SignedPermutation
from gaugejax.group import Group
from gaugejax.models import Model, apply_gauge

__all__ = ["into_chart", "interpolate", "merge", "task_arithmetic", "merge_checkpoints", "MergeReport"]


def into_chart(model: Model, gauge: SignedPermutation | None, *, group: Group | str = "B_d") -> Model:
    """Moves ``model`` (B) into the chart of the reference A, given the gauge ``A → B``.

    ``None`` means the charts already agree. The gauge is first projected onto ``group``
    (:meth:`gaugejax.group.Group.project`): with ``"S_d"`` only its permutation part is undone.
    """
    if gauge is None:
        return model
    return apply_gauge(model, Group(group).project(gauge).inverse())


def _check_compatible(models: Sequence[Model]) -> None:
    first = models[0]
    for m in models[1:]:
        if m.config != first.config:
            raise GaugeError(f"cannot merge models of different configs ({first.config} vs {m.config})")
        sa = jax.tree.map(lambda x: (tuple(x.shape)), first.params)
        sb = jax.tree.map(lambda x: (tuple(x.shape)), m.params)
        if jax.tree.structure(first.params) != jax.tree.structure(m.params) or sa != sb:
            raise GaugeError("cannot merge models whose parameters differ in structure or shape")


def _combine(base: Model, terms: Sequence[tuple[float, Model]], *, base_weight: float) -> Model:
    """``base_weight · base + Σ w_i · m_i``, computed in float32 (float64 if given), cast back."""

    def comb(x, *ys):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            return x
        dt = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
        acc = jnp.asarray(base_weight, dt) * x.astype(dt)
        for (w, _), y in zip(terms, ys):
            acc = acc + jnp.asarray(w, dt) * y.astype(dt)
        return acc.astype(x.dtype)

    return Model(base.config, jax.tree.map(comb, base.params, *[m.params for _, m in terms]))


def interpolate(a: Model, b: Model, alpha: float = 0.5) -> Model:
    """``(1 - alpha) · a + alpha · b`` for two models already in one chart.

    ``alpha = 0`` returns ``a``'s values and ``alpha = 1`` ``b``'s exactly.
    """
    _check_compatible([a, b])
    if alpha == 0.0:
        return a
    if alpha == 1.0:
        return b
    return _combine(a, [(float(alpha), b)], base_weight=1.0 - float(alpha))


def merge(a: Model, b: Model, gauge: SignedPermutation | None = None, *, alpha: float = 0.5,
          group: Group | str = "B_d") -> Model:
    """Coordinate-preserving merge: B into A's chart by ``gauge`` (A→B), then interpolate.

    Args:
      a: the reference model; the result is in its chart.
      b: the other model.
      gauge: A→B (``None``: the charts already agree).
      alpha: weight of B.
      group: ``"B_d"`` or ``"S_d"`` (permutation part only; wrong for RMSNorm, for comparison).

    Raises:
      GaugeError: different configs, a gauge of the wrong ``d``, or (LayerNorm) non-global signs.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise GaugeError(f"alpha must lie in [0, 1], got {alpha}")
    return interpolate(a, into_chart(b, gauge, group=group), alpha)


def task_arithmetic(base: Model, models: Sequence[Model], lambdas: float | Sequence[float] = 1.0,
                    gauges: Sequence[SignedPermutation | None] | None = None, *, group: Group | str = "B_d") -> Model:
    """``base + Σ λ_i (θ_i − base)`` with every fine-tune first moved into the base's chart.

    Args:
      base: the shared base model (the result is in its chart).
      models: fine-tuned models (each possibly stored in its own chart).
      lambdas: one scale per model, or one for all.
      gauges: ``gauges[i]`` maps base → ``models[i]`` (``None`` entries: same chart).
      group: ``"B_d"`` or ``"S_d"``.
    """
    models = list(models)
    if not models:
        raise GaugeError("task arithmetic needs at least one fine-tuned model")
    lam = [float(lambdas)] * len(models) if np.ndim(lambdas) == 0 else [float(x) for x in lambdas]
    if len(lam) != len(models):
        raise GaugeError(f"{len(lam)} lambdas for {len(models)} models")
    gauges = [None] * len(models) if gauges is None else list(gauges)
    if len(gauges) != len(models):
        raise GaugeError(f"{len(gauges)} gauges for {len(models)} models")
    moved = [into_chart(m, g, group=group) for m, g in zip(models, gauges)]
    _check_compatible([base, *moved])
    return _combine(base, list(zip(lam, moved)), base_weight=1.0 - sum(lam))


def _dtype(model: Model) -> str:
    return str(jax.tree.leaves(model.params)[0].dtype)


@dataclass(frozen=True)
class MergeReport:
    """What :func:`merge_checkpoints` wrote.

    Attributes:
      output: the Hugging Face directory written (in the chart of the first checkpoint).
      mode: ``"interpolation"`` or ``"task_arithmetic"``.
      weights: ``(alpha,)`` for an interpolation, the ``λ_i`` for task arithmetic.
      group: the group the gauges were used in.
    """

    output: Path
    mode: str
    weights: tuple[float, ...]
    group: Group

    def describe(self) -> str:
        """One line, e.g. ``"interpolation, alpha = 0.5, group B_d"``."""
        if self.mode == "interpolation":
            what = f"interpolation, alpha = {self.weights[0]:g}"
        else:
            what = f"task arithmetic, λ = {', '.join(f'{x:g}' for x in self.weights)}"
        return f"{what}, group {self.group}"


def _weights(mode: str, n_other: int, alpha: float, lambdas: float | Sequence[float] | None) -> tuple[float, ...]:
    """``(alpha,)`` for an interpolation of two models, one ``λ_i`` per fine-tune for task arithmetic."""
    if mode == "interpolation":
        if n_other != 1:
            raise GaugeError("interpolation merges exactly two checkpoints (use task arithmetic for more)")
        if lambdas is not None:
            raise GaugeError("lambdas go with task arithmetic; an interpolation takes alpha")
        if not 0.0 <= float(alpha) <= 1.0:
            raise GaugeError(f"alpha must lie in [0, 1], got {alpha}")
        return (float(alpha),)
    if mode != "task_arithmetic":
        raise GaugeError(f"unknown merge mode {mode!r}: use 'interpolation' or 'task_arithmetic'")
    lam = [1.0 / n_other] if lambdas is None else [float(x) for x in np.atleast_1d(lambdas)]
    if len(lam) not in (1, n_other):
        raise GaugeError(f"{len(lam)} lambdas for {n_other} fine-tunes (give one, or one per fine-tune)")
    if not all(abs(x) <= float(np.finfo(np.float32).max) for x in lam):  # NaN fails too; merges run in float32
        raise GaugeError("lambdas must be finite float32 numbers (|λ| ≤ 3.4e38)")
    return tuple(lam * n_other if len(lam) == 1 else lam)


def merge_checkpoints(checkpoints: Sequence[str | os.PathLike], out: str | os.PathLike,
                      gauges: Sequence[SignedPermutation | str | os.PathLike | None] | None = None, *,
                      alpha: float = 0.5, lambdas: float | Sequence[float] | None = None,
                      mode: str = "interpolation", group: Group | str = "B_d",
                      overwrite: bool = False) -> MergeReport:
    """Loads checkpoints, merges them in the first one's chart and writes a Hugging Face directory.

    Args:
      checkpoints: ``A B`` (``mode="interpolation"``, :func:`merge`) or ``BASE FT_1 ... FT_n``
        (``mode="task_arithmetic"``, :func:`task_arithmetic`).
      out: output directory (new or empty; a previous gaugejax output with ``overwrite``).
      gauges: one per checkpoint after the first, the gauge first → that checkpoint, as a
        :class:`~gaugejax.gauge.SignedPermutation`, a gauge file, or ``None`` (same chart);
        default all ``None``.
      alpha: interpolation weight of B.
      lambdas: task-arithmetic scales, one or one per fine-tune (default ``1/n`` each).
      mode: ``"interpolation"`` (``(1 - alpha) · A + alpha · B``) or ``"task_arithmetic"``
        (``base + Σ λ_i (θ_i − base)``).
      group: ``"B_d"`` or ``"S_d"`` (permutation part only, for comparison).
      overwrite: may replace a previous gaugejax output at ``out``.

    Returns:
      :class:`MergeReport`. The output keeps the first checkpoint's dtype and config; the write is
      atomic.

    Raises:
      GaugeError: wrong numbers of checkpoints, gauges or lambdas; ``out`` is an input; incompatible
        models or gauges.
      CheckpointError: a checkpoint's tensor disagrees in shape with its config.json (named).
      NonFiniteError: a checkpoint's tensor holds NaN or ±Inf, or the merge overflows (named); nothing
        is written.
    """
    from gaugejax.io import load_model, save_model
    from gaugejax.verify import check_finite_weights, nonfinite_weight

    paths = [Path(p) for p in checkpoints]
    n_other = len(paths) - 1
    if n_other < 1:
        raise GaugeError("a merge needs at least two checkpoints")
    weights = _weights(mode, n_other, alpha, lambdas)
    if any(Path(out).resolve() == p.resolve() for p in paths):
        raise GaugeError("the output must differ from every input checkpoint")
    gauges = [None] * n_other if gauges is None else list(gauges)
    if len(gauges) != n_other:
        raise GaugeError(f"{len(gauges)} gauge(s) for {n_other} checkpoint(s) after the first")
    grp = Group(group)
    gauges = [g if g is None or isinstance(g, SignedPermutation) else SignedPermutation.load(g) for g in gauges]
    models = [load_model(p) for p in paths]  # shapes checked against the config's parameter table
    for p, m in zip(paths, models):
        check_finite_weights(m, p)
    if mode == "task_arithmetic":
        merged = task_arithmetic(models[0], models[1:], weights, gauges, group=grp)
    else:
        merged = merge(models[0], models[1], gauges[0], alpha=weights[0], group=grp)
    overflow = nonfinite_weight(merged)
    if overflow is not None:
        raise NonFiniteError(f"the merge overflows {overflow} in its dtype ({_dtype(merged)}); use smaller lambdas")
    save_model(merged, out, overwrite=overwrite)
    return MergeReport(Path(out), mode, weights, grp)

