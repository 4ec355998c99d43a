"""Layer streaming: run models block by block over a whole token set, one block's weights in memory.

A *block source* yields a checkpoint's global parameters (embeddings, final norm) and the
parameters of block ``i`` on demand: :class:`CheckpointBlocks` reads them from the memory-mapped
safetensors files of a Hugging Face directory (and casts them to the compute dtype as they go to
the device), :class:`ModelBlocks` slices an in-memory :class:`~gaugejax.models.Model`.

:func:`streamed_residuals` pushes the residual stream of every token row through block ``i``,
frees the block and goes on; the streams live on the host between blocks (``(rows, seq, d)`` in
the compute dtype), so peak memory is one block of weights plus the token set's streams.
:func:`align_streamed` runs two sources in lockstep and accumulates the correlation statistics of
:mod:`gaugejax.stats` at the selected layers; its result equals :func:`gaugejax.align.align` on
the same tokens up to float rounding.

Example:
  >>> import gaugejax as gj
  >>> m = gj.random_model("llama", seed=0)
  >>> g = gj.SignedPermutation.random(1, m.config.d_model)
  >>> tokens = np.random.default_rng(0).integers(0, 256, (8, 64))
  >>> r = align_streamed(ModelBlocks(m), ModelBlocks(gj.apply_gauge(m, g)), tokens, layers=(1, 2))
  >>> r.gauge == g
  True
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gaugejax import stats
from gaugejax.errors import GaugeError
from gaugejax.match_result import MatchResult, warn_uncertain
from gaugejax.matching import match_stats
from gaugejax.models.base import Model, ModelConfig
from gaugejax.models.family import family_module
from gaugejax.verify import Progress, as_token_rows, check_finite

__all__ = ["ModelBlocks", "CheckpointBlocks", "block_source", "streamed_residuals", "align_streamed",
           "align_path_streamed", "DEFAULT_CHUNK_ROWS"]

DEFAULT_CHUNK_ROWS = 8
"""Token rows per device call inside one block."""

_HEAD_KEYS = ("lm_head", "lm_head_bias")


def _cast(a: Any, dtype: Any) -> jax.Array:
    """On the device in ``dtype`` when that is narrower than the storage (else as stored: the widening
    happens inside the compiled block, so a bf16 block never has a float32 copy on the host)."""
    a = a if isinstance(a, jax.Array) else np.asarray(a)
    if dtype is not None and jnp.issubdtype(a.dtype, jnp.floating) and jnp.dtype(dtype).itemsize < a.dtype.itemsize:
        return jnp.asarray(a, dtype)
    return jnp.asarray(a)


def _device(tree: dict) -> dict:
    return {k: jnp.asarray(v) for k, v in tree.items()}


def _to(tree: Any, dt: str) -> Any:
    return jax.tree.map(lambda a: a.astype(dt) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


class ModelBlocks:
    """Blocks of an in-memory model (slices of its stacked ``params["layers"]``)."""

    def __init__(self, model: Model):
        self.model = model
        self.config: ModelConfig = model.config

    def globals(self, dtype: Any = None, *, host: bool = False) -> dict[str, Any]:
        """Non-block parameters except the output head (narrowed to ``dtype`` if that is smaller;
        ``host``: left where they are)."""
        out = {k: v for k, v in self.model.params.items() if k != "layers" and k not in _HEAD_KEYS}
        return out if host else {k: _cast(v, dtype) for k, v in out.items()}

    def block(self, i: int, dtype: Any = None) -> dict[str, jax.Array]:
        """Parameters of block ``i`` on the device (narrowed to ``dtype`` if that is smaller)."""
        return {k: _cast(v[i], dtype) for k, v in self.model.params["layers"].items()}

    def block_bytes(self) -> int:
        """Bytes of the largest block in storage."""
        return sum(int(v[0].size) * v.dtype.itemsize for v in self.model.params["layers"].values())

    def weight_bytes(self) -> int:
        """Bytes of all parameters in storage."""
        return sum(int(v.size) * v.dtype.itemsize for v in jax.tree.leaves(self.model.params))


class CheckpointBlocks:
    """Blocks of a Hugging Face directory, read tensor by tensor from its memory-mapped safetensors.

    Only the tensors of the requested block are touched; nothing is kept between calls.
    """

    def __init__(self, path: str | os.PathLike):
        from gaugejax.io.hf import HFCheckpoint

        self.checkpoint = HFCheckpoint(path)
        self.checkpoint.check_complete()
        self.config: ModelConfig = self.checkpoint.config
        self._tensors = family_module(self.config).hf_tensors(self.config)

    def _collect(self, layer: int | None, dtype: Any, skip: tuple[str, ...] = (), host: bool = False) -> dict[str, Any]:
        from gaugejax.io.hf import _split_fused

        out: dict[str, list] = {}
        for t in self._tensors:
            if t.layer != layer or t.key in skip:
                continue
            arr = self.checkpoint.tensor(t.name)
            arr = arr.T if t.transpose else arr
            for key, part in _split_fused(t, arr):
                out.setdefault(key, []).append(part)
        if host:
            return {k: v[0] if len(v) == 1 else np.stack(v) for k, v in out.items()}
        return {k: _cast(v[0] if len(v) == 1 else np.stack(v), dtype) for k, v in out.items()}

    def globals(self, dtype: Any = None, *, host: bool = False) -> dict[str, Any]:
        """Non-block parameters except the output head (narrowed to ``dtype`` if that is smaller;
        ``host``: memory maps, nothing read yet)."""
        return self._collect(None, dtype, skip=_HEAD_KEYS, host=host)

    def block(self, i: int, dtype: Any = None) -> dict[str, jax.Array]:
        """Parameters of block ``i`` read from disk (narrowed to ``dtype`` if that is smaller)."""
        return self._collect(int(i), dtype)

    def _bytes(self, which) -> int:
        n = 0
        for t in self._tensors:
            if which(t):
                info = self.checkpoint.files[t.name].info(self.checkpoint.aliases[t.name])
                n += int(np.prod(info.shape)) * np.dtype(info.dtype).itemsize
        return n

    def block_bytes(self) -> int:
        """Bytes of block 0 on disk."""
        return self._bytes(lambda t: t.layer == 0)

    def weight_bytes(self) -> int:
        """Bytes of all parameters on disk."""
        return self._bytes(lambda t: True)


def block_source(model_or_path: Any) -> ModelBlocks | CheckpointBlocks:
    """A block source for a :class:`Model`, a Hugging Face directory, or a ``.gguf`` file (loaded whole)."""
    if isinstance(model_or_path, (ModelBlocks, CheckpointBlocks)):
        return model_or_path
    if isinstance(model_or_path, Model):
        return ModelBlocks(model_or_path)
    if os.path.isdir(model_or_path):
        return CheckpointBlocks(model_or_path)
    from gaugejax.io import load_model

    return ModelBlocks(load_model(model_or_path))


@partial(jax.jit, static_argnums=(0, 1))
def _embed(config: ModelConfig, dt: str, params: dict, tokens: jax.Array) -> jax.Array:
    return family_module(config).module.embed(config, _to(params, dt), tokens).astype(dt)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _block(config: ModelConfig, dt: str, t: int, params: dict, x: jax.Array, layer: jax.Array) -> jax.Array:
    mod = family_module(config).module
    return mod.block(config, _to(params, dt), x, {**mod.context(config, t), "layer": layer}).astype(dt)


@partial(jax.jit, static_argnums=(0, 1))
def _final(config: ModelConfig, dt: str, params: dict, x: jax.Array) -> jax.Array:
    return family_module(config).module.final_norm(config, _to(params, dt), x).astype(dt)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def _embedding_rows(glob: dict, tokens: np.ndarray, chunk_rows: int) -> tuple[dict, jax.Array]:
    """The globals with only the embedding rows ``tokens`` use (padded to a fixed count, so one
    compiled program serves every chunk) and the tokens renumbered into them: the full table never
    goes to the device."""
    ids, inv = np.unique(tokens, return_inverse=True)
    rows = np.zeros(chunk_rows * tokens.shape[1], ids.dtype)
    rows[:len(ids)] = ids
    table = np.asarray(glob["embed"][rows])  # fancy indexing of a memory map reads only these rows
    params = {k: jnp.asarray(v) for k, v in glob.items() if k != "embed"}
    params["embed"] = jnp.asarray(table)
    return params, jnp.asarray(inv.reshape(tokens.shape), jnp.int32)


def streamed_residuals(source: Any, tokens: Any, *, layers: Sequence[int] | None = None,
                       compute_dtype: Any = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                       final_norm: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """Yields ``(index, stream)`` at each selected residual index, running one block at a time.

    Args:
      source: a block source, :class:`Model`, or checkpoint path (:func:`block_source`).
      tokens: ``(rows, seq)`` integer ids.
      layers: residual indices to yield (0 = embeddings, i = after block i); default all.
      compute_dtype: dtype of weights and stream (default float32; ``bfloat16`` halves both).
      chunk_rows: rows per device call.
      final_norm: the entry at ``n_layers`` is after the final norm.

    Yields:
      ``(i, h)`` in increasing ``i``, ``h`` a host array ``(rows, seq, d)`` in the compute dtype.
    """
    src = block_source(source)
    c = src.config
    tok = as_token_rows(tokens)
    want = set(range(c.n_layers + 1) if layers is None else (int(i) for i in layers))
    dt = jnp.dtype(compute_dtype or jnp.float32).name
    glob = src.globals(None, host=True)
    h = np.concatenate([np.asarray(_embed(c, dt, *_embedding_rows(glob, tok[s], chunk_rows)))
                        for s in _chunks(len(tok), chunk_rows)])
    glob = {k: v for k, v in glob.items() if k != "embed"}
    if 0 in want:
        yield 0, h
    top = max(want)
    for i in range(min(top, c.n_layers)):
        p = src.block(i, dt)
        layer = jnp.asarray(i, jnp.int32)
        h = np.concatenate([np.asarray(_block(c, dt, tok.shape[1], p, jnp.asarray(h[s]), layer))
                            for s in _chunks(len(tok), chunk_rows)])  # a new array: yielded ones stay valid
        del p
        if i + 1 in want:
            if i + 1 == c.n_layers and final_norm:
                yield i + 1, np.concatenate([np.asarray(_final(c, dt, _device(glob), jnp.asarray(h[s])))
                                             for s in _chunks(len(tok), chunk_rows)])
            else:
                yield i + 1, h


def _stack_stats(parts: list[stats.CorrStats]) -> stats.CorrStats:
    return stats.CorrStats(parts[0].count, *(jnp.stack(f) for f in list(zip(*parts))[1:]))


def align_streamed(source_a: Any, source_b: Any, tokens: Any, *, layers: Sequence[int],
                   method: str = "sign_marginalized", compute_dtype: Any = None,
                   chunk_rows: int = DEFAULT_CHUNK_ROWS, confidence: float = 0.99,
                   progress: Progress | None = None, names: tuple[str, str] = ("model A", "model B"),
                   warn: bool = True, **match_kwargs: Any) -> MatchResult:
    """The gauge A→B from all of ``tokens``, both models run block by block in lockstep.

    Args:
      source_a, source_b: block sources (or models, or checkpoint paths) of the same shape.
      tokens: ``(rows, seq)`` integer ids; every token is used (no early stop).
      layers: residual indices whose statistics are pooled.
      method, confidence, names, warn, **match_kwargs: as :func:`gaugejax.align.align`.
      compute_dtype: weights and streams in this dtype; statistics accumulate in float32.
      chunk_rows: rows per device call.
      progress: ``progress(blocks done, n_layers)`` after each block.

    Raises:
      NonFiniteError: a stream is NaN or infinite at a selected layer.
      GaugeError: bad ``layers``.
    """
    a, b = block_source(source_a), block_source(source_b)
    from gaugejax.align import check_pair

    check_pair(a.config, b.config)
    layers = tuple(int(i) for i in layers)
    n = a.config.n_layers
    if not layers or any(not 0 <= i <= n for i in layers):
        raise GaugeError(f"layers must lie in 0..{n} (0 = embeddings), got {list(layers)}")
    match_kwargs.setdefault("norm", a.config.norm)
    kw = dict(layers=sorted(set(layers)), compute_dtype=compute_dtype, chunk_rows=chunk_rows)
    per_layer: dict[int, stats.CorrStats] = {}
    for (i, ha), (_, hb) in zip(streamed_residuals(a, tokens, **kw), streamed_residuals(b, tokens, **kw)):
        d = ha.shape[-1]
        xa, xb = ha.reshape(-1, d), hb.reshape(-1, d)
        for what, x in zip(names, (xa, xb)):
            check_finite(np.asarray(x[None], np.float32), labels=[i], what=what)
        s = stats.init(d)
        rows = chunk_rows * ha.shape[1]
        for sl in _chunks(len(xa), rows):
            s = stats.update_inplace(s, jnp.asarray(xa[sl]), jnp.asarray(xb[sl]))
        per_layer[i] = s
        if progress is not None:
            progress(i, n)
    state = _stack_stats([per_layer[i] for i in layers])
    result = match_stats(state, method, layer_labels=layers, confidence=confidence, warn=False, **match_kwargs)
    if warn:
        warn_uncertain(result, stacklevel=2)
    return result


def _layer_streams(src: Any, tok: np.ndarray, layers: Sequence[int], compute_dtype: Any, chunk_rows: int,
                   what: str) -> dict[int, np.ndarray]:
    out = {}
    for i, h in streamed_residuals(src, tok, layers=layers, compute_dtype=compute_dtype, chunk_rows=chunk_rows):
        x = h.reshape(-1, h.shape[-1])
        check_finite(np.asarray(x[None], np.float32), labels=[i], what=what)
        out[i] = x
    return out


def _match_streams(sa: dict, sb: dict, layers: Sequence[int], rows: int, method: str, **kwargs: Any) -> MatchResult:
    parts = []
    for i in layers:
        st = stats.init(sa[i].shape[-1])
        for sl in _chunks(len(sa[i]), rows):
            st = stats.update_inplace(st, jnp.asarray(sa[i][sl]), jnp.asarray(sb[i][sl]))
        parts.append(st)
    return match_stats(_stack_stats(parts), method, layer_labels=list(layers), warn=False, **kwargs)


def align_path_streamed(checkpoints: Sequence[Any], tokens: Any, *, layers: Sequence[int] | None = None,
                        method: str = "sign_marginalized", endpoint: bool = False, compute_dtype: Any = None,
                        chunk_rows: int = DEFAULT_CHUNK_ROWS, progress: Progress | None = None,
                        **match_kwargs: Any) -> Any:
    """:func:`gaugejax.trajectory.align_path` block by block, each checkpoint's forward run once.

    Consecutive hops share a checkpoint: its streams at the selected layers are kept on the host
    (``layers × tokens × d``) for the next hop instead of being recomputed.

    Returns:
      A :class:`gaugejax.trajectory.PathAlignment`.
    """
    from gaugejax.align import check_pair, default_layers
    from gaugejax.trajectory import Hop, PathAlignment, _label, compose_hops

    ckpts = list(checkpoints)
    if len(ckpts) < 2:
        raise GaugeError("a path needs at least two checkpoints")
    srcs = [block_source(x) for x in ckpts]
    for other in srcs[1:]:
        check_pair(srcs[0].config, other.config)
    c = srcs[0].config
    layers = tuple(default_layers(c.n_layers) if layers is None else (int(i) for i in layers))
    if not layers or any(not 0 <= i <= c.n_layers for i in layers):
        raise GaugeError(f"layers must lie in 0..{c.n_layers} (0 = embeddings), got {list(layers)}")
    match_kwargs.setdefault("norm", c.norm)
    tok = as_token_rows(tokens)
    rows = chunk_rows * tok.shape[1]
    total = len(ckpts) - 1 + int(endpoint)
    run = lambda k: _layer_streams(srcs[k], tok, layers, compute_dtype, chunk_rows, _label(ckpts[k], k))  # noqa: E731
    prev = first = run(0)
    hops = []
    for k in range(1, len(ckpts)):
        cur = run(k)
        r = _match_streams(prev, cur, layers, rows, method, **match_kwargs)
        hops.append(Hop.from_match(_label(ckpts[k - 1], k - 1), _label(ckpts[k], k), r))
        if progress is not None:
            progress(k, total)
        prev = cur
    gauge, confident = compose_hops(hops)
    direct = None
    if endpoint:
        direct = _match_streams(first, prev, layers, rows, method, **match_kwargs)
        if progress is not None:
            progress(total, total)
    return PathAlignment(gauge, hops, confident, direct)
