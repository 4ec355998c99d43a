"""Gauge specs: which group acts on which axis of every parameter, and whether the sign acts.

A spec is a pytree with the structure of the parameters whose leaves are :class:`Axes`: one entry
per array axis, ``None`` where no gauge acts, or an :class:`AxisAction` saying that the residual
gauge acts there and whether its signs act (RMSNorm gains and Adam's ``nu``: permutation only).
The inverse action is never written: it is the action of ``gauge.inverse()``. The rules for every
kind of parameter are in ``docs/conventions.md``.

Example:
  >>> import numpy as np, gaugejax as gj
  >>> from gaugejax.spec import Axes, RESIDUAL
  >>> params = {"w_in": np.arange(6.0).reshape(2, 3)}        # (out=2, in=d=3)
  >>> spec = {"w_in": Axes(None, RESIDUAL)}
  >>> g = gj.SignedPermutation([2, 0, 1], [1, -1, 1])
  >>> apply_spec(params, spec, g)["w_in"]
  array([[ 2., -0.,  1.],
         [ 5., -3.,  4.]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

from gaugejax.errors import GaugeError, InputTypeError
from gaugejax.gauge import SignedPermutation


@dataclass(frozen=True)
class AxisAction:
    """The action on one axis: ``space`` names the space whose gauge acts there (``"residual"``, the
    only one a transformer's parameters carry); ``signed`` says whether signs act.

    A space is not a gauge *group* (:class:`gaugejax.group.Group`, ``B_d`` / ``S_d x ±1`` /
    ``S_d``): the space says *which* gauge acts on an axis, the group *which gauges* are symmetries.
    ``.group`` is the former name of ``space``, kept as a read-only alias.
    """

    space: str = "residual"
    signed: bool = True

    @property
    def group(self) -> str:
        """Former name of :attr:`space`."""
        return self.space

    def __repr__(self) -> str:
        return f"{self.space}{'' if self.signed else ':perm'}"


RESIDUAL = AxisAction("residual", True)
"""Residual axis, signed: embeddings, reading and writing matrices, LayerNorm bias, vectors."""
RESIDUAL_PERM = AxisAction("residual", False)
"""Residual axis, permutation only: RMSNorm / LayerNorm gains."""


class Axes:
    """Per-axis actions of one parameter (a pytree *leaf*, not a container).

    Example:
      >>> Axes(None, RESIDUAL)
      Axes(None, residual)
    """

    __slots__ = ("actions",)

    def __init__(self, *actions: AxisAction | None):
        for a in actions:
            if a is not None and not isinstance(a, AxisAction):
                raise InputTypeError(f"Axes takes AxisAction or None, got {a!r}; use RESIDUAL, RESIDUAL_PERM or None")
        self.actions = tuple(actions)

    def __repr__(self) -> str:
        return f"Axes({', '.join(repr(a) for a in self.actions)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Axes) and self.actions == other.actions

    def __hash__(self) -> int:
        return hash(self.actions)

    @property
    def acts(self) -> bool:
        """True when some gauge acts on this parameter."""
        return any(a is not None for a in self.actions)

    def prepend(self, n: int = 1) -> "Axes":
        """The same actions behind ``n`` leading ungauged axes (e.g. a stacked layer axis)."""
        return Axes(*((None,) * n + self.actions))

    def reversed(self) -> "Axes":
        """The actions of the transposed parameter (e.g. a ``Conv1D`` ``(in, out)`` layout)."""
        return Axes(*reversed(self.actions))


def apply_axes(x: Any, axes: Axes, gauge: SignedPermutation, *, signed: bool = True) -> Any:
    """Moves one array by its :class:`Axes`.

    Args:
      x: numpy or JAX array.
      axes: per-axis actions; must have ``x.ndim`` entries (or none: untouched).
      gauge: the residual gauge A→B.
      signed: ``False`` drops every sign (Adam's ``nu``).
    """
    if not axes.acts:
        return x
    if len(axes.actions) != x.ndim:
        raise GaugeError(f"spec {axes} has {len(axes.actions)} axes but the array has shape {tuple(x.shape)}")
    for axis, action in enumerate(axes.actions):
        if action is None:
            continue
        if action.space != "residual":
            raise GaugeError(f"no gauge for space {action.space!r}: only the residual gauge acts on parameters")
        x = gauge.apply(x, axis=axis, signed=signed and action.signed)
    return x


def apply_spec(params: Any, spec: Any, gauge: SignedPermutation, *, signed: bool = True) -> Any:
    """Moves a whole parameter pytree into the gauge's target chart.

    Works on any pytree (e.g. Flax params) given a spec of the same structure.

    Args:
      params: pytree of arrays.
      spec: pytree of :class:`Axes` with the structure of ``params``.
      gauge: the residual gauge A→B.
      signed: ``False`` applies permutations only (Adam's ``nu``).

    Returns:
      A pytree of the same structure; untouched leaves are returned as they are.
    """
    try:
        return jax.tree.map(lambda axes, x: apply_axes(x, axes, gauge, signed=signed), spec, params,
                            is_leaf=lambda a: isinstance(a, Axes))
    except ValueError as e:
        if "structure" in str(e) or "Custom node" in str(e) or "Dict key mismatch" in str(e):
            raise GaugeError(f"spec and params have different structures: {e}".splitlines()[0]) from None
        raise
