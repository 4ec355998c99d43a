"""Scoring candidate specs on probe gauges, and the convention that breaks ties between them.

A candidate spec is one :class:`~gaugejax.spec.Axes` per leaf. Its *deviations* are those of
``fn`` under each probe gauge (:func:`~gaugejax.testing.probing.probes`); it is *valid* when every
one is within tolerance, and its *energy* (the sum, each capped) guides greedy searches: fixing one
wrong rule removes that rule's share of the deviation.

The convention (the library's, see ``docs/conventions.md``): where two placements of a sign are
both symmetries (after an RMSNorm a sign can sit in the gain or in the matrices that read the
normalised stream), gains and Adam's ``nu`` (leaves whose values are all ``>= 0``) are permuted
only, and everything else (readers, writers, embeddings, biases) takes the sign.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gaugejax.gauge import SignedPermutation
from gaugejax.spec import RESIDUAL, RESIDUAL_PERM, Axes, AxisAction
from gaugejax.testing.flat import Harness, is_float_array, is_residual

CAP = 10.0
"""Cap on one probe's deviation in an energy, so one NaN does not hide every other difference."""


class Scorer:
    """Deviations of candidate specs on a fixed list of probes, with moved leaves memoised.

    Args:
      h: the harness (``fn`` compiled, reference output).
      probes: ``[(label, gauge), ...]``.
      tol: the largest relative deviation that counts as unchanged.
      cache: moved leaves to share with another scorer of the same harness.
    """

    def __init__(self, h: Harness, probes: Sequence[tuple[str, SignedPermutation]], tol: float,
                 cache: dict | None = None):
        self.h, self.probes, self.tol = h, list(probes), tol
        self.cache: dict = {} if cache is None else cache

    def deviations(self, axes: Sequence[Axes], *, stop_early: bool = False) -> list[float]:
        """One deviation per probe (``stop_early``: stop after the first one above tolerance)."""
        out = []
        for _, g in self.probes:
            out.append(self.h.gauge_deviation(axes, g, self.cache))
            if stop_early and out[-1] > self.tol:
                break
        return out

    def valid(self, axes: Sequence[Axes]) -> bool:
        return all(dev <= self.tol for dev in self.deviations(axes, stop_early=True))

    def energy(self, axes: Sequence[Axes]) -> float:
        """Sum over probes of ``min(deviation, CAP)``; 0 for a valid spec (up to rounding)."""
        return float(sum(min(dev, CAP) for dev in self.deviations(axes)))

    def first_failure(self, axes: Sequence[Axes]) -> tuple[str, float] | None:
        """``(label, deviation)`` of the first probe that fails, or ``None``."""
        for (label, _), dev in zip(self.probes, self.deviations(axes, stop_early=True)):
            if dev > self.tol:
                return label, dev
        return None


def nonnegative(x: Any) -> bool:
    """All values ``>= 0`` and some ``> 0``: a norm gain or a second moment (permuted, never signed)."""
    if not is_float_array(x) or not np.size(x):
        return False
    a = np.asarray(x, np.float64)
    return bool(a.min() >= 0 and a.max() > 0)


def residual_action(signed: bool) -> AxisAction:
    return RESIDUAL if signed else RESIDUAL_PERM


def disagreements(axes: Sequence[Axes], leaves: Sequence[Any], signs: bool) -> int:
    """How many residual axes break the convention (a signed gain, an unsigned reader, ...)."""
    if not signs:
        return 0
    n = 0
    for a, x in zip(axes, leaves):
        pref = not nonnegative(x)
        n += sum(1 for act in a.actions if is_residual(act) and act.signed != pref)
    return n


def describe_axes(a: Axes) -> str:
    """A rule in words: ``"permute and sign axis 1"``, ``"permute axis 0 only, do not sign"``, ``"untouched"``."""
    parts = [f"permute and sign axis {ax}" if act.signed else f"permute axis {ax} only, do not sign"
             for ax, act in enumerate(a.actions) if is_residual(act)]
    return "; ".join(parts) if parts else "untouched"


def describe_change(old: Axes, new: Axes) -> str:
    """What to change, in words: ``"permute only, do not sign"``, ``"permute and sign"``, ..."""
    def res(a: Axes) -> dict[int, bool]:
        return {ax: act.signed for ax, act in enumerate(a.actions) if is_residual(act)}

    o, n = res(old), res(new)
    if o and n and o.keys() == n.keys():
        if not any(n.values()):
            return "permute only, do not sign"
        if all(n.values()) and not any(o.values()):
            return "permute and sign"
        return describe_axes(new)
    if not n:
        return "leave it untouched: no gauge acts on it"
    if not o:
        return f"{describe_axes(new)} (it was left untouched)"
    return f"{describe_axes(new)} (not: {describe_axes(old)})"
