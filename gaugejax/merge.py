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
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gaugejax.errors import GaugeError
from gaugejax.gauge import SignedPermutation
from gaugejax.models import Model, apply_gauge
from gaugejax.transport import group_gauge

__all__ = ["into_chart", "interpolate", "merge", "task_arithmetic", "merge_checkpoints"]


def into_chart(model: Model, gauge: SignedPermutation | None, *, group: str = "B_d") -> Model:
    """Moves ``model`` (B) into the chart of the reference A, given the gauge ``A → B``.

    ``None`` means the charts already agree. With ``group="S_d"`` only the permutation part of the
    gauge is undone.
    """
    if gauge is None:
        return model
    return apply_gauge(model, group_gauge(gauge, group).inverse())


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
          group: str = "B_d") -> Model:
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
                    gauges: Sequence[SignedPermutation | None] | None = None, *, group: str = "B_d") -> Model:
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


def merge_checkpoints(a: str | os.PathLike, b: str | os.PathLike, out: str | os.PathLike,
                      gauge: SignedPermutation | None, *, alpha: float = 0.5, group: str = "B_d") -> Path:
    """Loads two checkpoints, merges them (:func:`merge`) and writes a Hugging Face directory.

    The output keeps A's dtype and config; the write is atomic.
    """
    from gaugejax.io import load_model, save_model

    ma, mb = load_model(a), load_model(b)
    merged = merge(ma, mb, gauge, alpha=alpha, group=group)
    return save_model(merged, out)
