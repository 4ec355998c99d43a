"""Invariance and equivariance assertions, driven by Hypothesis and shrunk to a minimal gauge.

:func:`assert_invariant` checks that ``fn(params, inputs)`` does not change when the parameters
move by a spec under any element of a gauge group; :func:`assert_equivariant` that the output moves
by the gauge along ``out_axes``. Hypothesis draws the elements (:func:`~gaugejax.testing.gauges`)
and, on a failure, shrinks to a minimal one (a single transposition, a single sign flip, or the
global flip), which the ``AssertionError`` names with the measured deviation.

Deviation: ``max |fn(moved) − expected| / max |fn(params)|`` (``inf`` if a value is not finite).
Default tolerance ``1000 · eps`` of the output dtype (``1.2e-4`` in float32): float32 forward
passes through a few layers round at the 1e-6 level, a wrong rule moves the output by O(1).

Before Hypothesis runs, a fixed list of probes (transpositions, sign flips, uniformly random
elements; :func:`~gaugejax.testing.probes`) is checked too. Inside another Hypothesis test (where a
nested ``@given`` is an error) only the probes run, smallest first, so the first failure reported
is still small.

Example:
  >>> import numpy as np, jax.numpy as jnp
  >>> from gaugejax.spec import Axes, RESIDUAL, RESIDUAL_PERM
  >>> rng = np.random.default_rng(0)
  >>> params = {"embed": rng.normal(size=(10, 6)).astype(np.float32),   # token → residual (d = 6)
  ...           "gain": rng.uniform(0.5, 1.5, 6).astype(np.float32),
  ...           "head": rng.normal(size=(3, 6)).astype(np.float32)}     # residual → 3 logits
  >>> def fn(p, tokens):
  ...     h = p["embed"][tokens]
  ...     return (p["gain"] * h / jnp.sqrt((h ** 2).mean(-1, keepdims=True))) @ p["head"].T
  >>> spec = {"embed": Axes(None, RESIDUAL), "gain": Axes(RESIDUAL_PERM), "head": Axes(None, RESIDUAL)}
  >>> assert_invariant(fn, params, spec, group="B_d", inputs=np.arange(10))
  >>> wrong = dict(spec, gain=Axes(RESIDUAL))                          # a signed gain
  >>> assert_invariant(fn, params, wrong, group="B_d", inputs=np.arange(10))
  Traceback (most recent call last):
  AssertionError: fn's output does not stay the same under B_d: with the gauge 'flip the sign of coordinate 0' ...
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis.control import currently_in_test_context

from gaugejax.errors import GaugeError
from gaugejax.gauge import SignedPermutation
from gaugejax.spec import Axes
from gaugejax.testing.flat import Harness
from gaugejax.testing.probing import as_group, describe, probes
from gaugejax.testing.strategies import small_gauges

__all__ = ["assert_invariant", "assert_equivariant", "deviation", "default_rtol"]


def default_rtol(h: Harness) -> float:
    """``1000 · eps`` of the output dtype (float32: 1.2e-4), at most 1e-2."""
    eps = max((float(np.finfo(dt).eps) if np.issubdtype(dt, np.floating) else 1.2e-7 for dt in h.dtypes), default=1.2e-7)
    return min(1000 * eps, 1e-2)


def deviation(fn: Callable[[Any, Any], Any], params: Any, spec: Any, gauge: SignedPermutation, *, inputs: Any,
              out_axes: Any = None) -> float:
    """How far ``fn`` moves when the parameters move by ``spec`` under one ``gauge``.

    Args:
      fn: ``fn(params, inputs)`` → array (or pytree of arrays).
      params, spec: a parameter pytree and its spec (:class:`~gaugejax.spec.Axes` per leaf).
      gauge: a :class:`~gaugejax.gauge.SignedPermutation` acting on the ``"residual"`` axes.
      inputs: the inputs of ``fn``.
      out_axes: ``None`` (the output should not move) or the output's :class:`Axes`.

    Returns:
      ``max |fn(moved) − expected| / max |fn(params)|``; ``inf`` if ``fn`` returns NaN or ±Inf.
    """
    h = Harness(fn, params, inputs, out_axes=out_axes)
    return h.gauge_deviation(h.flat.axes_of(spec), gauge)


def _message(kind: str, grp: Any, g: SignedPermutation, dev: float, rtol: float, shrunk: bool) -> str:
    how = ("a minimal counterexample, shrunk by Hypothesis" if shrunk
           else "the first failing probe, smallest first")
    what = "does not stay the same" if kind == "invariant" else "does not move by the gauge along out_axes"
    return (f"fn's output {what} under {grp}: with the gauge '{describe(g)}' ({how}; d={g.d}) the parameters "
            f"moved by the spec change the output by {dev:.3g} relative to its scale (rtol {rtol:.2g}). "
            "gaugejax.testing.diagnose_spec(fn, params, spec, inputs, group=...) names the leaf whose rule is wrong")


def _check(kind: str, fn, params, spec, *, group, inputs, rtol, out_axes, max_examples) -> None:
    grp = as_group(group)
    h = Harness(fn, params, inputs, out_axes=out_axes)
    axes = h.flat.axes_of(spec)
    d = h.flat.width(axes)
    tol = default_rtol(h) if rtol is None else float(rtol)

    def fails(g: SignedPermutation) -> float | None:
        dev = h.gauge_deviation(axes, g)
        return None if dev <= tol else dev

    # Probes first (transpositions, sign flips, uniformly random elements): cheap, and the only
    # check inside another Hypothesis test, where a nested @given is an error.
    failing = next(((g, dev) for _, g in (probes(grp, d) if d > 1 else []) for dev in [fails(g)] if dev is not None),
                   None)
    if currently_in_test_context():
        if failing is not None:
            raise AssertionError(_message(kind, grp, *failing, tol, shrunk=False))
        return

    @settings(database=None, deadline=None, verbosity=Verbosity.quiet, report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck),
              **({} if max_examples is None else {"max_examples": int(max_examples)}))
    @given(small_gauges(grp, d))
    def check(g: SignedPermutation) -> None:
        dev = fails(g)
        if dev is not None:
            raise AssertionError(_message(kind, grp, g, dev, tol, shrunk=True))

    try:
        check()
    except AssertionError as e:
        raise AssertionError(str(e)) from None
    if failing is not None:  # Hypothesis's small gauges all passed, a probe did not
        raise AssertionError(_message(kind, grp, *failing, tol, shrunk=False))


def assert_invariant(fn: Callable[[Any, Any], Any], params: Any, spec: Any, *, group: Any, inputs: Any,
                     rtol: float | None = None, max_examples: int | None = None) -> None:
    """Asserts ``fn(g·params, inputs) == fn(params, inputs)`` for every element ``g`` of ``group``.

    Args:
      fn: ``fn(params, inputs)`` → array (or pytree of arrays); jit-compiled once.
      params: the parameters (dicts, Flax variables or NNX state, Equinox modules, optax states).
      spec: the spec, a pytree of :class:`~gaugejax.spec.Axes` with the structure of ``params``.
      group: a :class:`~gaugejax.group.Group` or its name: ``"B_d"``, ``"S_d x ±1"``, ``"S_d"``.
      inputs: the inputs of ``fn`` (fixed).
      rtol: tolerance on the relative deviation; default ``1000 · eps`` of the output dtype.
      max_examples: Hypothesis examples; default the loaded settings profile's.

    Raises:
      AssertionError: naming a minimal gauge that changes the output and the measured deviation.
      GaugeError: ``spec`` does not match ``params``, or ``fn`` is not finite / deterministic.
    """
    _check("invariant", fn, params, spec, group=group, inputs=inputs, rtol=rtol, out_axes=None,
           max_examples=max_examples)


def assert_equivariant(fn: Callable[[Any, Any], Any], params: Any, spec: Any, *, out_axes: Any, group: Any,
                       inputs: Any, rtol: float | None = None, max_examples: int | None = None) -> None:
    """Asserts ``fn(g·params, inputs) == g·fn(params, inputs)`` (the output moves by the gauge).

    Args:
      out_axes: the output's :class:`~gaugejax.spec.Axes` (e.g. ``Axes(None, None, RESIDUAL)`` for
        a ``(batch, seq, d)`` residual stream), or a pytree of them for a pytree output.
      Others as :func:`assert_invariant`.

    Raises:
      AssertionError: naming a minimal gauge under which the output does not follow, and the deviation.
    """
    if out_axes is None or not any(isinstance(a, Axes) and a.acts for a in _leaves(out_axes)):
        raise GaugeError("out_axes must give the output a residual axis; use assert_invariant for invariant outputs")
    _check("equivariant", fn, params, spec, group=group, inputs=inputs, rtol=rtol, out_axes=out_axes,
           max_examples=max_examples)


def _leaves(tree: Any) -> list[Any]:
    return jax.tree.leaves(tree, is_leaf=lambda a: isinstance(a, Axes))
