"""Parameter tables: every parameter of a family declared once; shapes, specs and I/O derived.

A family module lists its parameters as :class:`Param` rows (``params(config) -> list[Param]``).
Each row says the parameter's name, shape, gauge :class:`Role`, Hugging Face key, GGUF name and
the axis a model-parallel mesh may split. Everything else is derived here, once, for every family:
the shape pytree, the gauge spec, the list of HF tensors (with fused and transposed layouts), the
GGUF names, the sharding axes and random initial values. The rows most families share (token
embedding, q/k/v/o attention, gated MLP) are built by :func:`embed_rows`, :func:`attention_rows`,
:func:`attention_bias_rows`, :func:`gqa_attention_rows`, :func:`gated_mlp_rows` and
:func:`gated_mlp_bias_rows`.

Per-layer parameters have ``{i}`` in their HF key; they are stacked on a leading layer axis under
``params["layers"]`` (the shapes declared here never include that axis). Stacked parameters
(mixture-of-experts MLPs, StableLM's per-head norms) also have ``{e}`` in their HF key: their
declared shape starts with the stack (expert) axis, which the gauge never acts on (the role
applies to the axes after it), and each entry of the stack is a separate HF tensor.

Example:
  >>> t = [Param("embed", (10, 4), Role.READ, "wte.weight"),
  ...      Param("norm", (4,), Role.GAIN, "h.{i}.ln.weight")]
  >>> param_shapes(t)
  {'embed': (10, 4), 'layers': {'norm': (4,)}}
  >>> param_axes(t)["layers"]["norm"]
  Axes(residual:perm)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gaugejax.spec import RESIDUAL, RESIDUAL_PERM, Axes


class Role(enum.Enum):
    """How the residual gauge ``(perm, signs)`` acts on a parameter (conventions in docs/conventions.md).

    * ``READ``: a matrix reading the stream ``(out, d)``, or rows written into it (embeddings
      ``(n, d)``): ``W[:, perm] * signs``.
    * ``WRITE``: a matrix writing the stream ``(d, in)``: ``W[perm, :] * signs[:, None]``.
    * ``VECTOR``: a ``(d,)`` vector added to the stream (bias of a writing matrix, LayerNorm
      bias): ``b[perm] * signs``.
    * ``GAIN``: a norm gain ``(d,)`` (also the ``scale`` of a ``(1 + scale)`` gain): ``g[perm]``,
      never signed.
    * ``NONE``: untouched (biases of reading matrices, heads-only tensors).
    """

    READ = "read"
    WRITE = "write"
    VECTOR = "vector"
    GAIN = "gain"
    NONE = "none"

    def axes(self, ndim: int) -> Axes:
        """The :class:`~gaugejax.spec.Axes` of a parameter of this role with ``ndim`` axes."""
        if self is Role.READ:
            return Axes(*(None,) * (ndim - 1), RESIDUAL)
        if self is Role.WRITE:
            return Axes(RESIDUAL, *(None,) * (ndim - 1))
        if self is Role.VECTOR:
            return Axes(RESIDUAL)
        if self is Role.GAIN:
            return Axes(RESIDUAL_PERM)
        return Axes(*(None,) * ndim)


READ, WRITE, VECTOR, GAIN, NONE = Role.READ, Role.WRITE, Role.VECTOR, Role.GAIN, Role.NONE


@dataclass(frozen=True)
class Param:
    """One parameter of a family, declared once.

    Attributes:
      name: key in ``params`` (in ``params["layers"]`` when per-layer).
      shape: shape in PyTorch ``nn.Linear`` layout ``(out, in)``, without the layer axis.
      role: how the gauge acts on it.
      hf: Hugging Face safetensors key; ``{i}`` stands for the layer index and marks the parameter
        as per-layer; ``{e}`` stands for the expert index and marks a stack of experts (``shape[0]``
        experts, one HF tensor each). Several params naming the same key are *fused* in that
        tensor: concatenated along ``fuse_axis`` (of our layout) in declaration order (e.g. Phi-3
        ``qkv_proj``).
      transpose: HF stores the tensor transposed, ``(in, out)`` (GPT-2 ``Conv1D``).
      shard: the axis of ``shape`` a ``model`` mesh axis may split (heads, MLP width or vocab);
        ``None`` replicates.
      gguf: llama.cpp tensor name (``{i}`` = layer), or ``None`` when GGUF has no such tensor.
      fuse_axis: concatenation axis for fused HF tensors.
    """

    name: str
    shape: tuple[int, ...]
    role: Role
    hf: str
    transpose: bool = False
    shard: int | None = None
    gguf: str | None = None
    fuse_axis: int = 0

    @property
    def per_layer(self) -> bool:
        """True when the parameter exists once per block (its HF key has ``{i}``)."""
        return "{i}" in self.hf

    @property
    def per_expert(self) -> bool:
        """True for a stack of experts (its HF key has ``{e}``): ``shape[0]`` is the expert axis."""
        return "{e}" in self.hf

    @property
    def axes(self) -> Axes:
        """Gauge axes in our layout, without the layer axis (an expert axis is never gauged)."""
        if self.per_expert:
            return self.role.axes(len(self.shape) - 1).prepend(1)
        return self.role.axes(len(self.shape))


class HFTensor(NamedTuple):
    """Where one Hugging Face tensor lives in our params.

    Attributes:
      name: the safetensors key, e.g. ``model.layers.3.self_attn.q_proj.weight``.
      key: the key in ``params`` (``params["layers"][key]`` when ``layer`` is not None); for a
        fused tensor, its first part.
      layer: the layer index, or None for global tensors.
      transpose: the HF tensor is stored ``(in, out)`` (GPT-2 ``Conv1D``).
      parts: for a fused tensor, every ``(key, size along fuse_axis)`` in order; else empty.
      fuse_axis: the concatenation axis of a fused tensor, in our layout.
      expert: for one expert of a stack of experts, its index (``params["layers"][key][layer, expert]``).
    """

    name: str
    key: str
    layer: int | None
    transpose: bool = False
    parts: tuple[tuple[str, int], ...] = ()
    fuse_axis: int = 0
    expert: int | None = None


def _nest(table: Iterable[Param], value) -> dict[str, Any]:
    """``{name: value(p)}`` for global params and ``{"layers": {...}}`` for per-layer ones, in table order."""
    out: dict[str, Any] = {}
    for p in table:
        if p.per_layer:
            out.setdefault("layers", {})[p.name] = value(p)
        else:
            out[p.name] = value(p)
    return out


def param_shapes(table: Iterable[Param]) -> dict[str, Any]:
    """Shape of every parameter (per-layer ones under ``"layers"``, without the layer axis)."""
    return _nest(table, lambda p: tuple(p.shape))


def param_axes(table: Iterable[Param]) -> dict[str, Any]:
    """The gauge spec, per-layer entries without the leading layer axis."""
    return _nest(table, lambda p: p.axes)


def shard_axes(table: Iterable[Param]) -> dict[str, Any]:
    """The axis a ``model`` mesh axis may split, per parameter, counted in the stored arrays
    (per-layer arrays have the layer axis first); ``None`` replicates."""
    return _nest(table, lambda p: None if p.shard is None else p.shard + p.per_layer)


def hf_tensors(table: Iterable[Param], n_layers: int) -> list[HFTensor]:
    """Every safetensors key of the HF checkpoint and where it lives in ``params``.

    Order: the table's order, with all per-layer tensors layer by layer (layer 0's, then layer
    1's, ...) where the first per-layer parameter stands; a stack of experts expert by expert.
    """
    groups: dict[str, list[Param]] = {}
    for p in table:
        groups.setdefault(p.hf, []).append(p)

    def entry(ps: list[Param], i: int | None, e: int | None = None) -> HFTensor:
        parts = tuple((p.name, p.shape[p.fuse_axis]) for p in ps) if len(ps) > 1 else ()
        return HFTensor(ps[0].hf.format(i=i, e=e), ps[0].name, i, ps[0].transpose, parts, ps[0].fuse_axis, e)

    def entries(ps: list[Param], i: int) -> list[HFTensor]:
        return [entry(ps, i, e) for e in range(ps[0].shape[0])] if ps[0].per_expert else [entry(ps, i)]

    out: list[HFTensor] = []
    layered = [ps for ps in groups.values() if ps[0].per_layer]
    for ps in groups.values():
        if not ps[0].per_layer:
            out.append(entry(ps, None))
        elif ps is layered[0]:
            out += [t for i in range(n_layers) for q in layered for t in entries(q, i)]
    return out


def hf_axes(table: Iterable[Param]) -> dict[str, Axes]:
    """HF key template → gauge axes in the stored layout (reversed for transposed tensors; one
    expert's tensor for a stack of experts)."""
    out: dict[str, Axes] = {}
    for p in table:
        a = Axes(*p.axes.actions[1:]) if p.per_expert else p.axes
        a = a.reversed() if p.transpose else a
        if out.setdefault(p.hf, a) != a:  # a bug in a family's own table (see check_table), not bad input
            raise ValueError(f"fused tensor {p.hf!r} mixes gauge roles")
    return out


def gguf_names(table: Iterable[Param], n_layers: int) -> dict[str, str]:
    """HF tensor name → llama.cpp GGUF tensor name, for every parameter GGUF stores."""
    out = {}
    for p in table:
        if p.gguf is None:
            continue
        for i in (range(n_layers) if p.per_layer else [None]):
            out[p.hf.format(i=i)] = p.gguf.format(i=i)
    return out


def _kind(p: Param, gain_offset: float) -> tuple[str, float, float]:
    """``(distribution, shift, scale)`` of a parameter's initial values."""
    if p.role is Role.GAIN or p.name.endswith("norm"):
        return "uniform", 0.5 - gain_offset, 1.0
    if len(p.shape) == 1:
        return "normal", 0.0, 0.1
    return "normal", 0.0, float(p.shape[-1]) ** -0.5


def init_params(table: Iterable[Param], n_layers: int, key: jax.Array, dtype=jnp.float32, *,
                gain_offset: float = 0.0) -> dict[str, Any]:
    """Random parameters for a table.

    Gains are ``U(0.5, 1.5) - gain_offset`` so that no two coincide (with tied gains the symmetry
    group is larger than ``B_d`` and equivariance tests would say nothing about the rule); so are
    the gains of norms the gauge does not act on (named ``...norm``: per-head q/k norms); other
    vectors (biases) are ``0.1·N(0, 1)``; matrices are ``N(0, 1/fan_in)``. One stream per parameter,
    global params first, then the per-layer ones, in table order: NumPy's generator seeded by the
    key's data and the parameter's index (nothing to compile), or ``jax.random`` when the key is
    traced (inside ``jit`` or ``eval_shape``).
    """
    table = list(table)
    ordered = [p for p in table if not p.per_layer] + [p for p in table if p.per_layer]
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    traced = isinstance(data, jax.core.Tracer)
    keys = jax.random.split(key, len(ordered)) if traced else None
    seed = [] if traced else [int(v) for v in np.asarray(data).ravel()]

    def make(i: int, p: Param) -> jax.Array:
        shape = (n_layers, *p.shape) if p.per_layer else tuple(p.shape)
        kind, shift, scale = _kind(p, gain_offset)
        if traced:
            draw = jax.random.uniform if kind == "uniform" else jax.random.normal
            return (draw(keys[i], shape, jnp.float32) * scale + shift).astype(dtype)
        rng = np.random.default_rng([*seed, i])
        x = rng.random(shape, np.float32) if kind == "uniform" else rng.standard_normal(shape, np.float32)
        return jnp.asarray(x * np.float32(scale) + np.float32(shift), dtype)

    made = {p.name: make(i, p) for i, p in enumerate(ordered)}
    return _nest(table, lambda p: made[p.name])


def check_table(table: Iterable[Param]) -> None:
    """Raises ``ValueError`` on a malformed table (duplicate names, bad roles, bad fusions).

    Tables are gaugejax's own code (each family module's), never user input: a malformed one is a
    programming error, so these stay plain ``ValueError`` assertions (no ``GaugeJaxError``, whose
    one-line CLI message would hide the bug); tests/test_models.py checks every family's table.
    """
    table, seen = list(table), set()
    for p in table:
        if p.name in seen or p.name == "layers":
            raise ValueError(f"parameter name {p.name!r} repeated or reserved")
        seen.add(p.name)
        if p.role in (Role.VECTOR, Role.GAIN) and len(p.shape) - p.per_expert != 1:
            raise ValueError(f"{p.name}: a {p.role.value} parameter must be 1-D, got shape {p.shape}")
        if p.shard is not None and not 0 <= p.shard < len(p.shape):
            raise ValueError(f"{p.name}: shard axis {p.shard} out of range for shape {p.shape}")
        if p.per_expert and (not p.per_layer or p.gguf is not None or len(p.shape) < 2
                             or sum(q.hf == p.hf for q in table) > 1):
            raise ValueError(f"{p.name}: a stack of experts must be per-layer, at least 2-D, unfused and without "
                             "a GGUF name")
    hf_axes(table)


# ----------------------------------------------------------------------------------------------
# row builders for the projections most families share

_GGUF = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
         "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}
"""llama.cpp's name of each projection (``{gguf}{name}.weight`` / ``.bias`` in a block)."""


def _row(name: str, shape: tuple[int, ...], role: Role, hf: str, gguf: str | None, part: str) -> Param:
    """One projection's weight or bias row: reading ones (and their biases) shard their output
    axis, writing matrices their input axis; a writing bias lies on the stream (not sharded)."""
    shard = (0 if role is not VECTOR else None) if len(shape) == 1 else (1 if role is WRITE else 0)
    gguf_name = gguf and f"{gguf}{_GGUF[name.split('_')[0]]}.{part}"
    return Param(name, shape, role, f"{hf}.{part}", shard=shard, gguf=gguf_name)


def attention_rows(pre: str, d: int, q: int, kv: int, *, out: str = "o_proj", gguf: str | None = None) -> list[Param]:
    """``q``/``k``/``v`` (READ) and ``o`` (WRITE) stored as ``{pre}q_proj.weight`` ... ``{pre}{out}.weight``.

    Args:
      pre: the HF key prefix of the attention module (``"model.layers.{i}.self_attn."``).
      d, q, kv: the stream width, the query width (heads · head_dim), the key/value width.
      out: the HF name of the output projection.
      gguf: the llama.cpp block prefix (``"blk.{i}."``), or ``None`` when GGUF has no such tensors.

    Example:
      >>> [(p.name, p.shape, p.shard) for p in attention_rows("a.", 8, 8, 4)][1:]
      [('k', (4, 8), 0), ('v', (4, 8), 0), ('o', (8, 8), 1)]
    """
    keys, shapes = ("q_proj", "k_proj", "v_proj", out), ((q, d), (kv, d), (kv, d), (d, q))
    return [_row(n, s, WRITE if n == "o" else READ, pre + k, gguf, "weight")
            for n, k, s in zip("qkvo", keys, shapes)]


def attention_bias_rows(pre: str, d: int, q: int, kv: int, *, qkv: bool = True, o: bool = True,
                        out: str = "o_proj", gguf: str | None = None) -> list[Param]:
    """The biases of :func:`attention_rows` (same arguments): ``q``/``k``/``v`` (NONE: off the
    stream) when ``qkv``, then ``o`` (VECTOR: written into the stream) when ``o``."""
    keys, sizes = ("q_proj", "k_proj", "v_proj", out), (q, kv, kv, d)
    return [_row(n + "_bias", (s,), VECTOR if n == "o" else NONE, pre + k, gguf, "bias")
            for n, k, s in zip("qkvo", keys, sizes) if (o if n == "o" else qkv)]


def gated_mlp_rows(pre: str, d: int, f: int, *, gguf: str | None = None) -> list[Param]:
    """``gate``/``up`` (READ) and ``down`` (WRITE) stored as ``{pre}gate_proj.weight`` ...
    (``gguf`` as in :func:`attention_rows`)."""
    return [_row(n, s, WRITE if n == "down" else READ, f"{pre}{n}_proj", gguf, "weight")
            for n, s in zip(("gate", "up", "down"), ((f, d), (f, d), (d, f)))]


def gated_mlp_bias_rows(pre: str, d: int, f: int, *, gguf: str | None = None) -> list[Param]:
    """The biases of :func:`gated_mlp_rows`: ``gate``/``up`` (NONE: the MLP's hidden space), ``down``
    (VECTOR: written into the stream)."""
    return [_row(n + "_bias", (s,), VECTOR if n == "down" else NONE, f"{pre}{n}_proj", gguf, "bias")
            for n, s in zip(("gate", "up", "down"), (f, f, d))]


def gqa_attention_rows(c: Any, pre: str, *, qkv_bias: bool = False, o_bias: bool = False) -> list[Param]:
    """:func:`attention_rows` then :func:`attention_bias_rows` of a config with ``n_heads``,
    ``n_kv_heads`` and ``head_dim`` (query width ``n_heads · head_dim``, key/value width
    ``n_kv_heads · head_dim``)."""
    d, q, kv = c.d_model, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    return attention_rows(pre, d, q, kv) + attention_bias_rows(pre, d, q, kv, qkv=qkv_bias, o=o_bias)


def embed_rows(c: Any, hf: str, pos_hf: str | None = None, *, gguf: str | None = None) -> list[Param]:
    """The token embedding ``(vocab, d)`` (READ: rows written into the stream; it must come first
    in a table, a tied head reads the stream like it) and, with ``pos_hf``, the learned positions
    ``pos_embed`` ``(max_positions, d)``."""
    rows = [Param("embed", (c.vocab_size, c.d_model), READ, hf, shard=0, gguf=gguf)]
    return rows + ([Param("pos_embed", (c.max_positions, c.d_model), READ, pos_hf)] if pos_hf else [])
