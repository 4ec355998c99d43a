"""Device meshes: parameters split over a ``model`` axis, token rows over a ``data`` axis.

Each family declares, per parameter, which axis a model-parallel mesh may split (heads, ``d_ff``,
vocabulary; :meth:`gaugejax.models.family.Family.shard_axes`). :func:`param_shardings` turns that
into :class:`jax.sharding.NamedSharding` s (replicated where the axis size does not divide),
:func:`shard_model` places an in-memory model, and :func:`load_sharded` builds every parameter
with :func:`jax.make_array_from_callback` from the memory-mapped safetensors: each process reads
only the slices its own devices hold (multi-host: call :func:`jax.distributed.initialize` first).
jit then runs the forward pass with the parameters split and the rows spread; the correlation
statistics reduce over the mesh as in :mod:`gaugejax.stats`.

Which meshes: any :class:`jax.sharding.Mesh` whose axes are named ``data`` (token rows) and/or
``model`` (parameters), in either order, each optional: a ``("data",)`` mesh is data-parallel only
(every parameter replicated), a ``("model",)`` mesh model-parallel only. Any other axis name is
refused with one line (:func:`check_axes`). The axes may be of either type: ``jax.make_mesh`` gives
``Explicit`` axes by default since JAX 0.9, a hand-made :class:`~jax.sharding.Mesh` ``Auto`` ones, or
a mix. :func:`make_mesh` normalizes any of them once, at the entry of every function that takes a
``mesh``: the same devices in the same order, the same axis names and sizes, every axis ``Auto``
(:func:`auto_mesh`). The parameters are thus split exactly as the user's mesh asks, and jit propagates
those shardings through the model code (GSPMD); with ``Explicit`` axes every gather and matmul of
every family would instead have to state its output sharding. The arrays gaugejax returns live on
that ``Auto`` mesh. A mesh the caller made current (``jax.set_mesh``) is set aside while gaugejax's
entry points run (:func:`without_current_mesh`); to call e.g. :func:`gaugejax.forward` inside such a
block, nest ``with without_current_mesh():``. (:func:`gaugejax.stats.make_sharded_update` names its
axes in a ``shard_map`` and keeps the caller's mesh and axis types as given.)

JAX versions: ``jax.sharding.AxisType`` appeared in JAX 0.5.3 (0.5.0–0.5.2 had an experimental
``AxisTypes``); before it every mesh is ``Auto`` and a mesh is used as given. A ``"data=N,model=M"``
mesh is built with ``jax.make_mesh`` (JAX 0.4.32), else ``mesh_utils.create_device_mesh``.
:func:`without_current_mesh` needs ``jax.set_mesh`` (0.7.1; before it, it does nothing). This
module imports, builds meshes and places models on JAX 0.4.30 (checked: a sharded forward pass).

Example:
  >>> parse_mesh("data=2,model=4")
  {'data': 2, 'model': 4}
  >>> make_mesh("data=1,model=1").axis_names
  ('data', 'model')
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gaugejax.errors import GaugeJaxError
from gaugejax.models.base import Model, ModelConfig
from gaugejax.models.family import family_module

__all__ = ["parse_mesh", "make_mesh", "check_axes", "auto_mesh", "without_current_mesh", "param_shardings",
           "shard_model", "shard_rows", "replicated", "load_sharded", "AXES"]

AXES = ("data", "model")
"""Mesh axis names: token rows over ``data``, parameters over ``model``."""

AxisType = getattr(jax.sharding, "AxisType", None)
"""``jax.sharding.AxisType`` (JAX >= 0.5.3), or ``None`` on older JAX, where every mesh axis is ``Auto``."""


def parse_mesh(spec: str) -> dict[str, int]:
    """``"data=N,model=M"`` (either part optional) → ``{"data": N, "model": M}``.

    Raises:
      GaugeJaxError: unknown axis names or non-positive sizes.
    """
    out: dict[str, int] = {}
    for part in str(spec).split(","):
        name, _, size = part.strip().partition("=")
        if name not in AXES or name in out or not size.strip().isdigit() or int(size) < 1:
            raise GaugeJaxError(f"--mesh must look like data=N,model=M with positive N, M; got {spec!r}")
        out[name] = int(size)
    return {"data": out.get("data", 1), "model": out.get("model", 1)}


def make_mesh(spec: str | Mapping[str, int] | Mesh) -> Mesh:
    """The mesh gaugejax runs on: ``spec`` checked, with every axis ``Auto``.

    Args:
      spec: a :class:`jax.sharding.Mesh` of any axis types (named ``data`` and/or ``model``, see
        :func:`check_axes`; returned as :func:`auto_mesh`), or ``"data=N,model=M"`` /
        ``{"data": N, "model": M}`` (either optional): a ``(data, model)`` mesh over all devices of
        all processes.

    Raises:
      GaugeJaxError: other axis names, bad sizes, or sizes that do not multiply to the number of
        devices.

    Example:
      >>> make_mesh({"model": 1}).shape["data"]
      1
    """
    if isinstance(spec, Mesh):
        return auto_mesh(check_axes(spec))
    if isinstance(spec, Mapping):
        spec = ",".join(f"{k}={v}" for k, v in spec.items())
    if not isinstance(spec, str):
        raise GaugeJaxError("mesh must be a jax.sharding.Mesh or 'data=N,model=M'; "
                            f"got a value of type {type(spec).__name__}")
    sizes = parse_mesh(spec)
    n = jax.device_count()
    if sizes["data"] * sizes["model"] != n:
        raise GaugeJaxError(f"--mesh data={sizes['data']},model={sizes['model']} needs "
                            f"{sizes['data'] * sizes['model']} devices, but {n} are visible")
    shape = (sizes["data"], sizes["model"])
    if not hasattr(jax, "make_mesh"):  # JAX < 0.4.32
        from jax.experimental import mesh_utils

        return Mesh(mesh_utils.create_device_mesh(shape), AXES)
    auto = {} if AxisType is None else {"axis_types": (AxisType.Auto,) * len(AXES)}
    return jax.make_mesh(shape, AXES, **auto)


def check_axes(mesh: Mesh) -> Mesh:
    """``mesh`` itself when its axes are named ``data`` and/or ``model`` (each optional, any order).

    Raises:
      GaugeJaxError: another axis name (one line naming the axes it needs).

    Example:
      >>> check_axes(Mesh(jax.devices()[:1], ("batch",)))  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      gaugejax.errors.GaugeJaxError: mesh axes ('batch',) are not usable: gaugejax needs axes named 'data' ...
    """
    names = tuple(mesh.axis_names)
    if not names or any(n not in AXES for n in names):
        raise GaugeJaxError(f"mesh axes {names} are not usable: gaugejax needs axes named 'data' (token rows) "
                            "and/or 'model' (parameters), e.g. jax.make_mesh((2, 4), ('data', 'model'))")
    return mesh


def auto_mesh(mesh: Mesh) -> Mesh:
    """``mesh`` with every axis ``Auto``: the same devices, axis names and sizes (any names).

    Example:
      >>> m = Mesh(jax.devices()[:1], ("x",), axis_types=(AxisType.Explicit,))
      >>> auto_mesh(m).axis_types == (AxisType.Auto,), auto_mesh(m).devices.tolist() == m.devices.tolist()
      (True, True)
    """
    if AxisType is None or all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


@contextlib.contextmanager
def without_current_mesh() -> Iterator[None]:
    """``with without_current_mesh():`` sets aside a mesh the caller made current with ``jax.set_mesh``.

    gaugejax's arrays carry their own shardings on the ``Auto`` mesh of :func:`make_mesh` (or live
    on one device), and JAX refuses to trace them under a different current mesh, e.g. the caller's
    ``Explicit`` one; inside this block there is none, as in a plain script. The caller's mesh is
    restored on exit. Before ``jax.set_mesh`` (JAX 0.7.1) this does nothing.

    Example:
      >>> with jax.set_mesh(Mesh(jax.devices()[:1], ("data",))):
      ...     with without_current_mesh():
      ...         print(jax.sharding.get_abstract_mesh().empty)
      True
    """
    setter = getattr(jax, "set_mesh", None)
    if setter is None:
        yield
        return
    with setter(None):  # jax.set_mesh switches when constructed: construct it here, on entry
        yield


def _spec(axis: int | None, shape: tuple[int, ...], mesh: Mesh) -> P:
    m = mesh.shape.get("model", 1)
    if axis is None or m == 1 or axis >= len(shape) or shape[axis] % m:
        return P()
    return P(*([None] * axis + ["model"]))


def param_shardings(config: ModelConfig, shapes: Any, mesh: Mesh) -> Any:
    """A :class:`NamedSharding` per parameter (``shapes``: the params, or anything with ``.shape``).

    The family's declared axis is split over ``model`` when its size divides; everything else is
    replicated. ``mesh``: anything :func:`make_mesh` takes.
    """
    mesh = make_mesh(mesh)
    axes = family_module(config).shard_axes(config)

    def one(ax, a):
        return NamedSharding(mesh, _spec(ax, tuple(a.shape), mesh))

    return jax.tree.map(one, axes, shapes, is_leaf=lambda x: x is None)


def shard_model(model: Model, mesh: Mesh) -> Model:
    """``model`` with every parameter placed by :func:`param_shardings` (on :func:`make_mesh` ``(mesh)``)."""
    sh = param_shardings(model.config, model.params, mesh)
    return Model(model.config, jax.tree.map(jax.device_put, model.params, sh))


def shard_rows(tokens: Any, mesh: Mesh) -> jax.Array:
    """Token rows split over ``data`` (replicated when the row count does not divide or ``mesh`` has no
    ``data`` axis), on :func:`make_mesh` ``(mesh)``."""
    mesh = make_mesh(mesh)
    t = np.asarray(tokens)
    d = mesh.shape.get("data", 1)
    spec = P("data") if t.ndim >= 1 and t.shape[0] % d == 0 else P()
    sh = NamedSharding(mesh, spec)
    return jax.make_array_from_callback(t.shape, sh, lambda idx: t[idx])


def replicated(mesh: Mesh) -> Callable[[jax.Array], jax.Array]:
    """``f(x)``: ``x`` copied whole to every device of ``mesh`` (readable by every process)."""
    return jax.jit(lambda x: x, out_shardings=NamedSharding(make_mesh(mesh), P()))


def _slice_reader(ckpt: Any, config: ModelConfig) -> Callable[[str, int | None, tuple], np.ndarray]:
    """``read(key, layer, index)``: the block ``index`` (in our layout) of parameter ``key`` of
    ``layer``, reading only those elements of the stored tensor (a memory map)."""
    by_key: dict[tuple[str, int | None], list] = {}
    for t in family_module(config).hf_tensors(config):
        for k, size in (t.parts or ((t.key, None),)):
            by_key.setdefault((k, t.layer), []).append(t)

    def read(key: str, layer: int | None, index: tuple) -> np.ndarray:
        out = []
        for t in by_key[(key, layer)]:
            offset = 0
            for k, size in t.parts:
                if k == key:
                    break
                offset += size
            idx = list(index) + [slice(None)] * 4
            if t.parts:
                s = idx[t.fuse_axis]
                lo, hi, _ = s.indices(dict(t.parts)[key])
                idx[t.fuse_axis] = slice(offset + lo, offset + hi)
            stored = ckpt.tensor(t.name)
            idx = idx[:stored.ndim]
            if t.transpose:
                out.append(np.asarray(stored[tuple(idx[::-1])]).T)
            else:
                out.append(np.asarray(stored[tuple(idx)]))
        return out[0]

    return read


def load_sharded(path: str | os.PathLike, mesh: Mesh, *, dtype: Any = None,
                 reader: Callable | None = None) -> Model:
    """A Hugging Face directory loaded straight onto ``mesh``, each process reading only its slices.

    Args:
      path: the checkpoint directory.
      mesh: a mesh of any axis types, or a spec (normalized by :func:`make_mesh`).
      dtype: cast the weights (default: keep the stored dtype).
      reader: for tests: wraps the slice reader (``reader(read) -> read``), e.g. to record reads.
    """
    from gaugejax.io.hf import HFCheckpoint

    mesh = make_mesh(mesh)
    ckpt = HFCheckpoint(path)
    ckpt.check_complete()
    c = ckpt.config
    read = _slice_reader(ckpt, c)
    read = reader(read) if reader is not None else read
    shapes = family_module(c).param_shapes(c)
    stored = {t.name: ckpt.files[t.name].info(ckpt.aliases[t.name]).dtype for t in family_module(c).hf_tensors(c)}
    store_dt = jnp.dtype(dtype) if dtype is not None else jnp.dtype(next(iter(stored.values())))
    axes = family_module(c).shard_axes(c)
    if any(t.expert is not None for t in family_module(c).hf_tensors(c)):
        raise GaugeJaxError(f"{path}: sharded loading of mixture-of-experts checkpoints is not supported yet; "
                            "load it without --mesh")

    def build(key: str, shape: tuple, layered: bool) -> jax.Array:
        full = ((c.n_layers,) if layered else ()) + tuple(shape)
        ax = axes["layers"][key] if layered else axes[key]
        sh = NamedSharding(mesh, _spec(ax, full, mesh))

        def cb(index):
            if not layered:
                return read(key, None, tuple(index)).astype(store_dt)
            lo, hi, _ = index[0].indices(c.n_layers)
            return np.stack([read(key, i, tuple(index[1:])) for i in range(lo, hi)]).astype(store_dt)

        return jax.make_array_from_callback(full, sh, cb)

    params: dict[str, Any] = {k: build(k, s, False) for k, s in shapes.items() if k != "layers"}
    params["layers"] = {k: build(k, s, True) for k, s in shapes["layers"].items()}
    return Model(c, params)
