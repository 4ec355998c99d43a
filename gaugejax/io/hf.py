"""Hugging Face checkpoint directories: ``config.json`` + single or sharded ``*.safetensors``.

Reading is lazy (memory maps); writing is atomic (temporary directory, then rename) and streams
one tensor at a time. Pickle checkpoints (``*.bin``, ``*.pt``) are refused: loading them runs
arbitrary code.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import numpy as np

from gaugejax.atomic import atomic_path
from gaugejax.errors import CheckpointError
from gaugejax.io.bounds import MAX_CONFIG_BYTES, MAX_INDEX_BYTES, checked_config, read_capped
from gaugejax.io.containment import copy_input_file, input_file
from gaugejax.io.safetensors_stream import SafetensorsFile, TensorInfo, write_safetensors
from gaugejax.models import family_module
from gaugejax.models.base import Model, ModelConfig
from gaugejax.models.table import HFTensor
from gaugejax.spec import Axes

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_BUFFERS = ("rotary_emb.inv_freq", "attn.bias", "attn.masked_bias", "attention.bias", "attention.masked_bias",
            "position_ids")
_INDEX = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 2 * 1024**3


def refuse_pickle(path: str | os.PathLike) -> None:
    """Raises :class:`CheckpointError` explaining why pickle checkpoints are not read."""
    raise CheckpointError(
        f"{os.fspath(path)} is a pickle checkpoint; loading pickles can run arbitrary code, so gaugejax refuses "
        "them. Convert it to safetensors first (e.g. `model.save_pretrained(dir, safe_serialization=True)`)")


class HFCheckpoint:
    """A Hugging Face checkpoint directory opened lazily.

    Attributes:
      directory: the path.
      hf_config: ``config.json`` as a dict.
      config: the parsed :class:`~gaugejax.models.base.ModelConfig`.
      files: name of each tensor → the :class:`SafetensorsFile` holding it.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CheckpointError(f"{self.directory} is not a directory")
        cfg_path = self.directory / "config.json"
        weights = sorted(p.name for p in self.directory.glob("*.safetensors"))
        pickles = sorted(p.name for p in self.directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if not weights:
            if pickles:
                refuse_pickle(self.directory / pickles[0])
            raise CheckpointError(f"{self.directory} has no *.safetensors weights")
        if not (cfg_path.exists() or cfg_path.is_symlink()):
            raise CheckpointError(f"{self.directory} has no config.json")
        for f in ("config.json", *weights):
            input_file(self.directory / f, self.directory)
        self.hf_config = read_config(cfg_path)
        index = self.directory / _INDEX
        if index.exists() or index.is_symlink():
            weight_map = read_weight_map(input_file(index, self.directory))
            shards = {f: SafetensorsFile(self.directory / f) for f in sorted(set(weight_map.values()))}
            self.files = {name: shards[f] for name, f in weight_map.items()}
        else:
            self.files = {}
            for f in weights:
                sf = SafetensorsFile(self.directory / f)
                self.files.update({k: sf for k in sf.keys()})
        # sizes in config.json are checked against the stored tensors before anything is built from them
        shapes = [sf.info(k).shape for sf in self.shard_files for k in sf.keys()]
        self.config: ModelConfig = checked_config(self.hf_config, shapes, str(cfg_path))
        self._normalise_names()

    def _normalise_names(self) -> None:
        # GPT-2 checkpoints are saved both with and without the "transformer." prefix.
        if self.config.family == "gpt2" and "wte.weight" in self.files:
            self.files = {(k if k.startswith("lm_head") else f"transformer.{k}"): v for k, v in self.files.items()}
        self.aliases = {}
        for name, sf in self.files.items():
            self.aliases[name] = name if name in sf else _strip_prefix(name, sf)

    def canonical_names(self, sf: SafetensorsFile) -> dict[str, str]:
        """Stored key in ``sf`` → canonical tensor name (they differ for unprefixed GPT-2 files)."""
        return {self.aliases[n]: n for n, f in self.files.items() if f is sf}

    @property
    def shard_files(self) -> list[SafetensorsFile]:
        seen: dict[str, SafetensorsFile] = {}
        for sf in self.files.values():
            seen.setdefault(sf.path, sf)
        return list(seen.values())

    def tensor(self, name: str) -> np.ndarray:
        """The stored tensor (a read-only memory map)."""
        if name not in self.files:
            raise CheckpointError(f"{self.directory}: missing tensor {name!r}")
        return self.files[name][self.aliases[name]]

    def tensor_axes(self) -> dict[str, Axes]:
        """Gauge axes of every stored tensor, in its stored layout."""
        return hf_tensor_axes(self.config, self.files)

    def check_complete(self) -> None:
        """Raises unless every tensor the architecture needs is present and nothing unknown is."""
        wanted = {t.name for t in family_module(self.config).hf_tensors(self.config)}
        missing = sorted(wanted - set(self.files))
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise CheckpointError(f"{self.directory}: missing tensors {', '.join(missing[:3])}{more}")
        extra = [n for n in self.files if n not in wanted and not _ignorable(n, self.config)]
        if extra:
            raise CheckpointError(f"{self.directory}: unexpected tensors {', '.join(sorted(extra)[:3])} "
                                  f"(an architecture variant gaugejax does not support?)")
        for name, want in hf_tensor_shapes(self.config).items():
            got = self.files[name].info(self.aliases[name]).shape
            if tuple(got) != want:
                raise CheckpointError(f"{self.directory}: tensor {name} has shape {tuple(got)} but config.json implies "
                                      f"{want}; the weights and config.json disagree: re-export the checkpoint")


def read_weight_map(index: Path) -> dict[str, str]:
    """``weight_map`` of a ``model.safetensors.index.json``: tensor name → shard file in the same folder.

    Raises:
      CheckpointError: unreadable or non-JSON index, no ``weight_map`` object, or shards that are not
        ``*.safetensors`` files beside the index.
    """
    raw = read_capped(index, MAX_INDEX_BYTES, "repair or delete it")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"{index} is not valid JSON; repair or delete it (it maps tensors to shard files)") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index} has no weight_map object (tensor name → shard file)")
    for name, f in weight_map.items():
        if not isinstance(f, str) or not f.endswith(".safetensors") or Path(f).name != f:
            raise CheckpointError(f"{index}: tensor {name!r} maps to {f!r}, not a *.safetensors file beside the index")
        if not (index.parent / f).is_file():
            raise CheckpointError(f"{index}: shard {f} (holding {name!r}) is missing")
    return weight_map


def read_config(path: Path) -> dict:
    """``config.json`` as parsed JSON, or a one-line :class:`CheckpointError` (not UTF-8, not JSON,
    nested too deep for the parser).

    Example:
      >>> import tempfile
      >>> p = Path(tempfile.mkdtemp()) / "config.json"
      >>> _ = p.write_bytes(b'{"model_type": "caf\\xe9"}')
      >>> read_config(p)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      gaugejax.errors.CheckpointError: ... is not UTF-8 (byte 19); re-save it as UTF-8 JSON
    """
    raw = read_capped(path, MAX_CONFIG_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not UTF-8 (byte {e.start}); re-save it as UTF-8 JSON") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{path} is nested too deeply to be a model config; repair or replace it") from None
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def _strip_prefix(name: str, sf: SafetensorsFile) -> str:
    short = name.removeprefix("transformer.")
    if short in sf:
        return short
    raise CheckpointError(f"{sf.path}: index names {name!r} but the file does not hold it")


def _ignorable(name: str, config: ModelConfig) -> bool:
    if name.endswith(_BUFFERS):
        return True
    return config.tie_embeddings and name in ("lm_head.weight", "embed_out.weight")


def hf_tensor_axes(config: ModelConfig, names: Any = None) -> dict[str, Axes]:
    """HF tensor name → gauge axes in the stored layout (``Conv1D`` tensors reversed)."""
    fam = family_module(config)
    out = fam.hf_axes(config)
    if config.tie_embeddings:  # a tied head that is stored anyway reads the stream like the embedding
        emb = out[fam.hf_tensors(config)[0].name]
        for n in ("lm_head.weight", "embed_out.weight"):
            out[n] = emb
    for n in names or ():
        if n not in out and n.endswith(_BUFFERS):
            out[n] = Axes()
    return out


def params_from_tensors(config: ModelConfig, get: Callable[[HFTensor], np.ndarray], dtype=None) -> dict[str, Any]:
    """Builds the stacked params pytree from HF tensors fetched one at a time by ``get``: each
    per-layer tensor goes into its slot of a preallocated stack when read (peak: the model plus one
    tensor). Arrays reach JAX by ``jax.device_put``: one copy, and a memory map's file pages are let
    go once it is done (``jnp.asarray`` held two more copies of a large array for a while on CPU)."""
    tensors = family_module(config).hf_tensors(config)
    counts = Counter(k for t in tensors if t.layer is not None for k in ([k for k, _ in t.parts] or [t.key]))
    glob: dict[str, Any] = {}
    stacks: dict[str, np.ndarray] = {}
    filled: Counter = Counter()
    for t in tensors:
        arr = np.asarray(get(t))
        if t.transpose:
            arr = arr.T
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        for key, part in _split_fused(t, arr):
            if t.layer is None:
                glob[key] = jax.device_put(part)
                continue
            stacks[key] = _fill(stacks.get(key), counts[key], filled[key], part, t.name)
            filled[key] += 1
    # a stack of experts (layer by layer, expert by expert) gets an expert axis after the layer axis
    n = config.n_layers
    glob["layers"] = {k: jax.device_put(v if len(v) == n else v.reshape(n, -1, *v.shape[1:])) for k, v in stacks.items()}
    _check_shapes(config, glob)
    return glob


def _fill(stack: np.ndarray | None, count: int, i: int, part: np.ndarray, name: str) -> np.ndarray:
    """``stack`` (``count`` slots, allocated at the first part) with slot ``i`` set to ``part``;
    a part of a wider dtype widens the whole stack (as ``np.stack`` would)."""
    if stack is None:
        stack = np.empty((count, *part.shape), part.dtype)
    if part.shape != stack.shape[1:]:
        raise CheckpointError(f"tensor {name!r} has shape {part.shape}, other layers {stack.shape[1:]}")
    if np.result_type(stack, part) != stack.dtype:
        stack = stack.astype(np.result_type(stack, part))
    stack[i] = part
    return stack


def _split_fused(t: HFTensor, arr: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """``[(params key, array)]``: one entry, or the parts of a fused tensor (our layout)."""
    if not t.parts:
        return [(t.key, arr)]
    sizes = [n for _, n in t.parts]
    if arr.ndim <= t.fuse_axis or arr.shape[t.fuse_axis] != sum(sizes):
        raise CheckpointError(f"fused tensor {t.name!r} has shape {arr.shape}, expected {sum(sizes)} along axis "
                              f"{t.fuse_axis} for {', '.join(k for k, _ in t.parts)}")
    pieces = np.split(arr, np.cumsum(sizes)[:-1], axis=t.fuse_axis)
    return [(k, piece) for (k, _), piece in zip(t.parts, pieces)]


def _check_shapes(config: ModelConfig, params: dict[str, Any]) -> None:
    shapes = family_module(config).param_shapes(config)
    missing = [k for k in shapes if k not in params] + [f"layers/{k}" for k in shapes.get("layers", {})
                                                       if k not in params.get("layers", {})]
    if missing:
        raise CheckpointError(f"params lack {', '.join(missing[:3])} (config implies them)")
    for k, s in shapes.items():
        if k == "layers":
            for lk, ls in s.items():
                got = tuple(params["layers"][lk].shape)
                if got != (config.n_layers, *ls):
                    raise CheckpointError(f"layer tensor {lk!r} has shape {got[1:]}, config implies {ls}")
        elif tuple(params[k].shape) != tuple(s):
            raise CheckpointError(f"tensor {k!r} has shape {tuple(params[k].shape)}, config implies {tuple(s)}")


def load_hf(directory: str | os.PathLike, dtype=None) -> Model:
    """Loads a Hugging Face directory into a :class:`Model` (storage dtype kept unless ``dtype``)."""
    ckpt = HFCheckpoint(directory)
    ckpt.check_complete()
    params = params_from_tensors(ckpt.config, lambda t: ckpt.tensor(t.name), dtype)
    return Model(ckpt.config, params)


def _stored_shape(t: HFTensor, parts: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Shape of HF tensor ``t`` as stored, from the shapes of its parts in our layout (no layer or
    expert axis): fused parts concatenated along ``t.fuse_axis``, ``Conv1D`` tensors reversed."""
    shape = list(parts[0])
    if len(parts) > 1:
        shape[t.fuse_axis] = sum(s[t.fuse_axis] for s in parts)
    return tuple(shape[::-1] if t.transpose else shape)


def hf_tensor_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name → the shape the parameter table gives it, in the stored layout.

    Example:
      >>> import gaugejax as gj
      >>> c = gj.tiny_config("gpt2", d_model=16, n_layers=1, n_heads=2, d_ff=32, vocab_size=64)
      >>> hf_tensor_shapes(c)["transformer.h.0.attn.c_attn.weight"]  # Conv1D: (in, out), q|k|v fused
      (16, 48)
    """
    fam = family_module(config)
    shapes = fam.param_shapes(config)
    out = {}
    for t in fam.hf_tensors(config):
        parts = [tuple(shapes["layers"][k] if t.layer is not None else shapes[k]) for k in [k for k, _ in t.parts] or [t.key]]
        out[t.name] = _stored_shape(t, [s[1:] for s in parts] if t.expert is not None else parts)
    return out


def _param_tensors(model: Model, dtype=None) -> Iterator[tuple[TensorInfo, Callable[[], np.ndarray]]]:
    c = model.config
    for t in family_module(c).hf_tensors(c):
        keys = [k for k, _ in t.parts] or [t.key]
        srcs = [model.params["layers"][k] if t.layer is not None else model.params[k] for k in keys]

        at = t.layer if t.expert is None else (t.layer, t.expert)  # one expert of a stack of experts

        def produce(srcs=srcs, t=t, at=at):
            parts = [np.asarray(s[at] if t.layer is not None else s) for s in srcs]
            a = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=t.fuse_axis)
            a = a.T if t.transpose else a
            return a if dtype is None else a.astype(dtype)

        shape = _stored_shape(t, [tuple(s.shape[(t.layer is not None) + (t.expert is not None):]) for s in srcs])
        yield TensorInfo(t.name, np.dtype(dtype or srcs[0].dtype), shape), produce


def _shards(items: list, max_bytes: int) -> list[list]:
    shards, cur, size = [], [], 0
    for info, produce in items:
        n = info.dtype.itemsize * int(np.prod(info.shape))
        if cur and size + n > max_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((info, produce))
        size += n
    return shards + [cur]


def _write_shards(tmp: Path, items: list, max_bytes: int, metadata: dict[str, str]) -> None:
    shards = _shards(items, max_bytes)
    if len(shards) == 1:
        write_safetensors(tmp / "model.safetensors", shards[0], metadata)
        return
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(tmp / fname, shard, metadata)
        for info, _ in shard:
            weight_map[info.name] = fname
            total += info.dtype.itemsize * int(np.prod(info.shape))
    (tmp / _INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def save_hf(model: Model, directory: str | os.PathLike, *, dtype=None, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
            extra_files: dict[str, str | os.PathLike] | None = None, overwrite: bool = True) -> Path:
    """Writes ``model`` as a Hugging Face directory that ``transformers`` loads.

    Args:
      model: the model.
      directory: output directory: new or empty, or (``overwrite=True``) a previous gaugejax output,
        which is replaced atomically; anything else is refused (:mod:`gaugejax.atomic`).
      dtype: storage dtype (default: the params' own).
      max_shard_bytes: split into ``model-0000k-of-0000n.safetensors`` shards plus an index past this.
      extra_files: other files to copy in (e.g. tokenizer files), name → source path.
      overwrite: may replace a previous gaugejax output (never anything else).
    """
    _check_shapes(model.config, model.params)  # refuse before writing anything
    leaves = [x for x in _leaves(model.params)]
    store = np.dtype(dtype) if dtype is not None else np.dtype(leaves[0].dtype)
    with atomic_path(directory, directory=True, overwrite=overwrite, inputs=list((extra_files or {}).values())) as tmp:
        write_weights(tmp, model.config, list(_param_tensors(model, dtype)), store, max_shard_bytes)
        for name, src in (extra_files or {}).items():
            copy_input_file(src, tmp / name, None)
    return Path(directory)


def write_weights(folder: Path, config: ModelConfig, items: list, store: np.dtype,
                  max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
    """Writes ``config.json`` and the weights ``items`` (``(TensorInfo, produce)`` pairs, each
    produced when written) into ``folder``, sharded past ``max_shard_bytes`` as :func:`save_hf` does."""
    cfg = family_module(config).config_to_hf(config)
    cfg["torch_dtype"] = {np.dtype("float32"): "float32", np.dtype("float16"): "float16",
                          np.dtype("float64"): "float64"}.get(store, "bfloat16")
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    _write_shards(folder, items, max_shard_bytes, {"format": "pt"})


def _leaves(params):
    import jax

    return jax.tree.leaves(params)


# The streaming rewrite (``gaugejax apply``) lives in its own module; importable from here as before.
from gaugejax.io.hf_rewrite import copy_extra_files, rewrite_hf  # noqa: E402,F401
