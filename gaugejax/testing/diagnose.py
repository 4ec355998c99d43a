"""Diagnosing a wrong spec: which leaf's rule breaks invariance, and which rule restores it.

:func:`diagnose_spec` keeps every rule but one fixed and tries that leaf's alternatives (each axis
of size ``d``: untouched, permuted, permuted and signed) on probe gauges of the group. A single
change that restores invariance is the finding; when several would (a sign can sit in an RMSNorm
gain or in the matrices that read it), the library's convention chooses (gains and Adam's ``nu``
permute only; readers, writers, embeddings and biases take the sign). When no single change is
enough, the change that lowers the deviation most is kept and the search goes on, one leaf at a
time, so several wrong rules are named in turn.

Example:
  >>> import numpy as np, gaugejax as gj
  >>> m = gj.random_model("gpt2", seed=0)
  >>> fn = lambda p, t: gj.forward(gj.Model(m.config, p), t)
  >>> spec = gj.gauge_spec(m)
  >>> spec["layers"]["o_bias"] = gj.Axes(None, None)                 # forgot a bias
  >>> [str(f) for f in diagnose_spec(fn, m.params, spec, np.arange(8)[None], group="S_d x ±1")]
  ['layers/o_bias: permute and sign axis 1 (it was left untouched)']
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gaugejax.spec import Axes, AxisAction
from gaugejax.testing.assertions import default_rtol
from gaugejax.testing.flat import Harness, is_residual
from gaugejax.testing.probing import as_group, probes, signs_act
from gaugejax.testing.search import Scorer, describe_change, disagreements, residual_action

__all__ = ["Finding", "diagnose_spec"]


@dataclass(frozen=True)
class Finding:
    """One wrong rule and the rule that fixes it.

    Attributes:
      path: the leaf's keys joined by ``/`` (``blocks/0/norm/scale``).
      current: the rule in the spec given.
      suggested: the :class:`~gaugejax.spec.Axes` that restores invariance.
      deviation: the largest relative deviation on the probes before this change.
      deviation_after: the same after it (and every earlier finding) is applied.
      restores: whether invariance holds on every probe once this and the earlier findings are applied.
      message: ``"path: what to change"``.
    """

    path: str
    current: Axes
    suggested: Axes
    deviation: float
    deviation_after: float
    restores: bool
    message: str

    def __str__(self) -> str:
        return self.message


def _effective(a: Axes, signs: bool) -> tuple:
    return tuple((is_residual(x), x.signed and signs) if x is not None else None for x in a.actions)


def _options(h: Harness, i: int, current: Axes, d: int, signs: bool) -> list[Axes]:
    """Every other rule of leaf ``i`` over its axes of size ``d`` (other groups' axes kept)."""
    shape = h.flat.shape(i)
    acts = list(current.actions) if current.acts else [None] * len(shape)
    free = sorted(set(h.flat.candidates(i, d)) | {ax for ax, a in enumerate(acts) if is_residual(a)})
    free = [ax for ax in free if acts[ax] is None or is_residual(acts[ax])]
    states: list[AxisAction | None] = [None, residual_action(False)] + ([residual_action(True)] if signs else [])
    if len(free) <= 3:
        combos = itertools.product(states, repeat=len(free))
    else:  # many axes of size d: change one at a time
        combos = ([s if k == j else acts[ax] for k, ax in enumerate(free)] for j in range(len(free)) for s in states)
    out, seen = [], {_effective(current, signs)}
    for combo in combos:
        new = list(acts)
        for ax, s in zip(free, combo):
            new[ax] = s
        a = Axes(*new)
        if _effective(a, signs) not in seen:
            seen.add(_effective(a, signs))
            out.append(a)
    return out


def diagnose_spec(fn: Callable[[Any, Any], Any], params: Any, spec: Any, inputs: Any, *, group: Any,
                  out_axes: Any = None, rtol: float | None = None, seed: int = 0, jit: bool = True) -> list[Finding]:
    """Names the leaves whose rule breaks invariance and the rule that restores it.

    Args:
      fn: ``fn(params, inputs)`` → array, invariant (or equivariant along ``out_axes``).
      params: the parameters (any pytree; use generic values, see :func:`~gaugejax.testing.generic`).
      spec: the spec to diagnose (pytree of :class:`~gaugejax.spec.Axes`, structure of ``params``).
      inputs: the inputs of ``fn``.
      group: a :class:`~gaugejax.group.Group` or its name (``"B_d"``, ``"S_d x ±1"``, ``"S_d"``).
      out_axes: ``None`` for an invariant output, else the output's :class:`~gaugejax.spec.Axes`.
      rtol: tolerance (default ``1000 · eps`` of the output dtype).
      seed: chooses the probe gauges.
      jit: compile ``fn`` (default).

    Returns:
      ``[]`` when the spec passes every probe; else the :class:`Finding` s in the order found. The
      last one has ``restores=True`` unless no sequence of one-leaf changes restored invariance.
    """
    grp = as_group(group)
    h = Harness(fn, params, inputs, out_axes=out_axes, jit=jit)
    tol = default_rtol(h) if rtol is None else float(rtol)
    cur = h.flat.axes_of(spec)
    d = h.flat.width(cur)
    signs = signs_act(grp)
    sc = Scorer(h, probes(grp, d, seed=seed), tol)
    if sc.valid(cur):
        return []
    findings: list[Finding] = []
    before = max(sc.deviations(cur))
    energy = sc.energy(cur)
    for _ in range(len(h.flat)):
        trials = []
        for i in range(len(h.flat)):
            for opt in _options(h, i, cur[i], d, signs):
                trial = list(cur)
                trial[i] = opt
                trials.append((i, opt, trial))
        fixes = [(disagreements(t, h.flat.leaves, signs), int(np.prod(h.flat.shape(i))), i, opt, t)
                 for i, opt, t in trials if sc.valid(t)]
        if fixes:
            _, _, i, opt, t = min(fixes, key=lambda f: f[:3])
            findings.append(_finding(h, i, cur[i], opt, before, max(sc.deviations(t)), True))
            return findings
        ranked = sorted(((sc.energy(t), i, opt, t) for i, opt, t in trials), key=lambda r: r[:2])
        if not ranked or ranked[0][0] >= energy * (1 - 1e-9):
            break
        energy, i, opt, t = ranked[0]
        after = max(sc.deviations(t))
        findings.append(_finding(h, i, cur[i], opt, before, after, False))
        cur, before = t, after
    return findings


def _finding(h: Harness, i: int, old: Axes, new: Axes, before: float, after: float, restores: bool) -> Finding:
    path = h.flat.paths[i]
    msg = f"{path}: {describe_change(old, new)}"
    if not restores:
        msg += f" (lowers the deviation from {before:.2g} to {after:.2g}; other rules are wrong too)"
    return Finding(path, old, new, before, after, restores, msg)
