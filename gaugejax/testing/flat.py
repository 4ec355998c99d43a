"""A model under test: its parameters as named leaves, moved leaf by leaf, and ``fn`` compiled once.

Internal machinery shared by :mod:`gaugejax.testing`'s assertions, diagnosis and inference. Any
pytree works (dicts, Flax linen variables, Flax NNX ``State``, Equinox modules, optax states): a
leaf is named by its keys joined with ``/`` (``blocks/0/norm/scale``), and only floating-point
array leaves can carry a gauge. ``fn(params, inputs)`` is jit-compiled once; every evaluation
reuses the compiled function (moving a leaf never changes a shape).

Example:
  >>> import numpy as np
  >>> h = Harness(lambda p, x: x @ p["w"], {"w": np.eye(3, 2, dtype=np.float32)}, np.ones((1, 3), np.float32))
  >>> h.flat.paths, h.flat.candidates(0, 3)
  (['w'], [0])
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from gaugejax.errors import GaugeError
from gaugejax.gauge import SignedPermutation
from gaugejax.spec import RESIDUAL, RESIDUAL_PERM, Axes, AxisAction


def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def path_name(path: Sequence[Any]) -> str:
    """``blocks/0/norm/scale`` from a JAX key path (a trailing NNX ``.value`` is dropped)."""
    names = [_key_name(k) for k in path]
    if len(names) > 1 and names[-1] == "value" and type(path[-1]).__name__ == "GetAttrKey":
        names = names[:-1]
    return "/".join(names)


def is_float_array(x: Any) -> bool:
    """A numpy or JAX array of a floating dtype (the only leaves a gauge can move)."""
    dtype = getattr(x, "dtype", None)
    return hasattr(x, "shape") and dtype is not None and np.issubdtype(np.dtype(dtype), np.floating)


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


class Flat:
    """A pytree flattened to named leaves.

    Attributes:
      treedef: the structure; ``unflatten`` rebuilds the pytree (and a spec of the same structure).
      leaves: the leaves in flattening order.
      paths: each leaf's keys joined by ``/``.
    """

    def __init__(self, tree: Any):
        with_path, self.treedef = jax.tree_util.tree_flatten_with_path(tree)
        self.leaves = [x for _, x in with_path]
        self.paths = [path_name(p) for p, _ in with_path]

    def __len__(self) -> int:
        return len(self.leaves)

    def unflatten(self, leaves: Sequence[Any]) -> Any:
        return jax.tree.unflatten(self.treedef, list(leaves))

    def shape(self, i: int) -> tuple[int, ...]:
        return tuple(getattr(self.leaves[i], "shape", ()))

    def candidates(self, i: int, d: int) -> list[int]:
        """Axes of size ``d`` of leaf ``i`` (none unless it is a floating-point array)."""
        if not is_float_array(self.leaves[i]):
            return []
        return [ax for ax, n in enumerate(self.shape(i)) if n == d]

    def axes_of(self, spec: Any) -> list[Axes]:
        """The spec's :class:`Axes`, one per leaf, checked against the parameters' structure."""
        axes, treedef = jax.tree.flatten(spec, is_leaf=lambda a: isinstance(a, Axes))
        if treedef != self.treedef:
            raise GaugeError("spec and params have different structures: build the spec with "
                             "jax.tree.map over params (Axes() for untouched leaves)")
        for path, a, x in zip(self.paths, axes, self.leaves):
            if not isinstance(a, Axes):
                raise GaugeError(f"spec entry {path!r} is {a!r}, not an Axes")
            if a.acts and len(a.actions) != len(getattr(x, "shape", ())):
                raise GaugeError(f"spec {a} of {path!r} has {len(a.actions)} axes but the leaf has shape "
                                 f"{tuple(getattr(x, 'shape', ()))}")
        return axes

    def spec(self, axes: Sequence[Axes]) -> Any:
        """A spec pytree (the parameters' structure) from one :class:`Axes` per leaf."""
        return self.unflatten(axes)

    def width(self, axes: Sequence[Axes]) -> int:
        """The residual width ``d`` a spec acts on (every residual axis must agree)."""
        sizes = {self.shape(i)[ax] for i, a in enumerate(axes) for ax, act in enumerate(a.actions)
                 if is_residual(act)}
        if not sizes:
            raise GaugeError("the spec moves no parameter: give at least one leaf a residual axis")
        if len(sizes) > 1:
            raise GaugeError(f"the spec's residual axes have different sizes {sorted(sizes)}; they must all be d")
        return sizes.pop()


def is_residual(act: AxisAction | None) -> bool:
    """Whether an axis action is the residual gauge's (signed or not)."""
    return act in (RESIDUAL, RESIDUAL_PERM)


def move_leaf(x: Any, axes: Axes, gauge: SignedPermutation) -> Any:
    """One leaf moved by the residual gauge (actions of other groups are left alone)."""
    for ax, act in enumerate(axes.actions):
        if is_residual(act):
            x = gauge.apply(x, axis=ax, signed=act.signed)
    return x


class _Static:
    """The hashable, non-array part of ``(params, inputs)``: a static argument of the compiled call."""

    def __init__(self, treedef, leaves, in_def, in_leaves):
        self.parts = (treedef, leaves, in_def, in_leaves)
        try:
            self._hash = hash(self.parts)
        except TypeError:  # an unhashable static leaf: never share the compiled function
            self._hash = id(self)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Static) or self._hash != other._hash:
            return False
        try:
            return bool(self.parts == other.parts)
        except Exception:  # e.g. an array-valued comparison
            return self is other


def _merge(treedef: Any, fixed: dict[int, Any], arrays: Sequence[Any]) -> Any:
    it = iter(arrays)
    return jax.tree.unflatten(treedef, [fixed[i] if i in fixed else next(it) for i in range(treedef.num_leaves)])


def _run(fn: Callable[[Any, Any], Any], static: _Static, arrays: list, in_arrays: list) -> Any:
    treedef, fixed, in_def, in_fixed = static.parts
    return fn(_merge(treedef, dict(fixed), arrays), _merge(in_def, dict(in_fixed), in_arrays))


_run_jit = jax.jit(_run, static_argnums=(0, 1))


def _hashable(x: Any) -> bool:
    try:
        hash(x)
        return True
    except TypeError:
        return False


class Harness:
    """``fn(params, inputs)`` compiled once, with its output at the unmoved parameters.

    Args:
      fn: ``fn(params, inputs)`` returning an array (or a pytree of arrays).
      params: the parameters (any pytree).
      inputs: the inputs (any pytree); fixed for every evaluation.
      out_axes: ``None`` when the output is invariant; else the :class:`Axes` (or a pytree of them
        matching the output) by which the output moves with the gauge.
      jit: compile ``fn`` (default); ``False`` for functions that cannot be traced.

    Raises:
      GaugeError: ``fn`` returns non-finite values, or is not deterministic.

    Attributes:
      flat: the parameters as named leaves.
      ref: the reference output leaves (float64); ``dtypes``: their dtypes as ``fn`` returned them.
      scale: ``max |ref|``, the scale deviations are relative to.
      calls: how many times ``fn`` ran.
    """

    def __init__(self, fn: Callable[[Any, Any], Any], params: Any, inputs: Any, *, out_axes: Any = None,
                 jit: bool = True):
        self.flat = Flat(params)
        self.out_axes = out_axes
        self._host: dict[int, np.ndarray] = {}
        self.calls = 0
        self._dyn = [i for i, x in enumerate(self.flat.leaves) if _is_array(x)]
        in_leaves, in_def = jax.tree.flatten(inputs)
        in_dyn = [i for i, x in enumerate(in_leaves) if _is_array(x)]
        static = _Static(self.flat.treedef, tuple((i, x) for i, x in enumerate(self.flat.leaves) if not _is_array(x)),
                         in_def, tuple((i, x) for i, x in enumerate(in_leaves) if not _is_array(x)))
        self._inputs = [in_leaves[i] for i in in_dyn]
        if jit and _hashable(fn):  # one compiled function per (fn, structure): later harnesses reuse it
            run = lambda arrays, ins: _run_jit(fn, static, arrays, ins)  # noqa: E731
        elif jit:
            run = jax.jit(lambda arrays, ins: _run(fn, static, arrays, ins))
        else:
            run = lambda arrays, ins: _run(fn, static, arrays, ins)  # noqa: E731
        self._call = lambda leaves: run([leaves[i] for i in self._dyn], self._inputs)
        raw = jax.tree.leaves(self._call(list(self.flat.leaves)))
        self.dtypes = [np.dtype(getattr(o, "dtype", np.float64)) for o in raw]
        self.ref = [np.asarray(o, np.float64) for o in raw]
        if not all(np.isfinite(r).all() for r in self.ref):
            raise GaugeError("fn returns NaN or infinite values at the given parameters; test a finite model")
        self.scale = max((float(np.abs(r).max()) for r in self.ref if r.size), default=0.0) or 1.0
        self._out_axes = None if out_axes is None else jax.tree.leaves(out_axes, is_leaf=lambda a: isinstance(a, Axes))
        if self._out_axes is not None and len(self._out_axes) != len(self.ref):
            raise GaugeError(f"out_axes has {len(self._out_axes)} entries but fn returns {len(self.ref)} arrays")
        again = self.deviation(self.flat.leaves, None)
        if again > 1e-7:
            raise GaugeError(f"fn is not deterministic: two calls at the same parameters differ by {again:.2g}")

    def outputs(self, leaves: Sequence[Any]) -> list[np.ndarray]:
        """``fn``'s output leaves at the given parameter leaves, as float64 numpy arrays."""
        self.calls += 1
        return [np.asarray(o, np.float64) for o in jax.tree.leaves(self._call(list(leaves)))]

    def target(self, gauge: SignedPermutation | None) -> list[np.ndarray]:
        """The expected output after moving by ``gauge``: the reference, moved by ``out_axes``."""
        if gauge is None or self._out_axes is None:
            return self.ref
        return [move_leaf(r, a, gauge) for r, a in zip(self.ref, self._out_axes)]

    def deviation(self, leaves: Sequence[Any], gauge: SignedPermutation | None) -> float:
        """``max |fn(leaves) − target|`` relative to ``max |reference output|`` (``inf`` if non-finite)."""
        worst = 0.0
        for out, tgt in zip(self.outputs(leaves), self.target(gauge)):
            if out.shape != tgt.shape:
                raise GaugeError(f"fn's output shape changed from {tgt.shape} to {out.shape} when the parameters moved")
            if not np.isfinite(out).all():
                return float("inf")
            if out.size:
                worst = max(worst, float(np.abs(out - tgt).max()))
        return worst / self.scale

    def host(self, i: int) -> np.ndarray:
        """Leaf ``i`` as a numpy array (moved on the host: exact, and nothing to compile)."""
        if i not in self._host:
            self._host[i] = np.asarray(self.flat.leaves[i])
        return self._host[i]

    def moved(self, axes: Sequence[Axes], gauge: SignedPermutation, cache: dict | None = None) -> list[Any]:
        """Every leaf moved by its :class:`Axes` (``cache`` memoises ``(leaf, axes, gauge)``)."""
        out = list(self.flat.leaves)
        for i, a in enumerate(axes):
            if not a.acts:
                continue
            if cache is None:
                out[i] = move_leaf(self.host(i), a, gauge)
                continue
            key = (i, a, gauge)
            if key not in cache:
                cache[key] = move_leaf(self.host(i), a, gauge)
            out[i] = cache[key]
        return out

    def gauge_deviation(self, axes: Sequence[Axes], gauge: SignedPermutation, cache: dict | None = None) -> float:
        """The deviation after moving the parameters by ``axes`` under ``gauge``."""
        return self.deviation(self.moved(axes, gauge, cache), gauge)
