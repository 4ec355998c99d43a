"""Checkpoint I/O: Hugging Face safetensors directories (read/write) and GGUF files (read).

Example:
  >>> import gaugejax as gj
  >>> m = gj.load_model("path/to/hf_dir")            # doctest: +SKIP
  >>> gj.save_model(gj.apply_gauge(m, g), "out_dir")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from gaugejax.errors import CheckpointError
from gaugejax.gauge import SignedPermutation
from gaugejax.io.hf import PICKLE_SUFFIXES, HFCheckpoint, load_hf, refuse_pickle, rewrite_hf, save_hf
from gaugejax.models import check_gauge_for
from gaugejax.models.base import Model
from gaugejax.spec import apply_axes

__all__ = ["load_model", "save_model", "load_tokenizer", "apply_gauge_to_checkpoint", "checkpoint_fingerprint",
           "HFCheckpoint"]


def _kind(path: Path) -> str:
    if path.is_dir():
        return "hf"
    if path.suffix == ".gguf":
        return "gguf"
    if path.suffix in PICKLE_SUFFIXES:
        return "pickle"
    if path.suffix == ".safetensors":
        return "bare"
    return "unknown"


def load_model(path: str | os.PathLike, dtype=None, *, mesh=None) -> Model:
    """Loads a checkpoint: a Hugging Face directory or a ``.gguf`` file.

    Args:
      path: directory with ``config.json`` and ``*.safetensors`` (sharded or not), or a ``.gguf``.
      dtype: cast the weights to this dtype (default: keep the stored one; GGUF dequantizes to
        float32).
      mesh: a :class:`jax.sharding.Mesh` with a ``data`` and/or ``model`` axis, of either axis type
        (e.g. ``jax.make_mesh((2, 4), ("data", "model"))``), or ``"data=N,model=M"``: every parameter
        is placed with the family's model-parallel sharding on that mesh's devices, every axis made
        ``Auto`` (:func:`gaugejax.sharding.make_mesh`), and each process reads only the slices its
        devices hold (:func:`gaugejax.sharding.load_sharded`; a GGUF file is loaded, then placed).

    Raises:
      CheckpointError: missing files or tensors, pickle checkpoints, unknown architectures.
      GaugeJaxError: a mesh with axes other than ``data`` / ``model``.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p} does not exist")
    kind = _kind(p)
    if mesh is not None and kind in ("hf", "gguf"):
        from gaugejax import sharding

        mesh = sharding.make_mesh(mesh)
        if kind == "hf":
            return sharding.load_sharded(p, mesh, dtype=dtype)
        return sharding.shard_model(load_model(p, dtype), mesh)
    if kind == "hf":
        return load_hf(p, dtype)
    if kind == "gguf":
        from gaugejax.io.containment import regular_file
        from gaugejax.io.gguf import load_gguf

        regular_file(p)  # a FIFO would block the reader

        return load_gguf(p, dtype)
    if kind == "pickle":
        refuse_pickle(p)
    if kind == "bare":
        raise CheckpointError(f"{p} is a bare safetensors file; pass the directory holding it and its config.json")
    raise CheckpointError(f"{p}: unknown checkpoint format (expected a Hugging Face directory or a .gguf file)")


def save_model(model: Model, directory: str | os.PathLike, *, dtype=None, **kwargs) -> Path:
    """Writes a Hugging Face directory (``config.json`` + safetensors) that ``transformers`` loads.

    The write is atomic and streams tensor by tensor; see :func:`gaugejax.io.hf.save_hf`.
    """
    return save_hf(model, directory, dtype=dtype, **kwargs)


def load_tokenizer(path: str | os.PathLike) -> Callable[[str], np.ndarray] | None:
    """A ``text -> token ids`` function for a checkpoint, or ``None`` if it ships no tokenizer.

    Uses the ``tokenizers`` package (``tokenizer.json`` in an HF directory; the vocabulary and
    merges stored in a GGUF file). Returns ``None`` when that package is not installed.
    """
    p = Path(path)
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return None
    if p.is_dir():
        tj = p / "tokenizer.json"
        if not (tj.exists() or tj.is_symlink()):
            return None
        from tokenizers import Tokenizer

        from gaugejax.io.containment import input_file

        input_file(tj, p)
        try:
            tok = Tokenizer.from_file(str(tj))
        except Exception as e:  # the tokenizers library raises a plain Exception for any malformed file
            raise CheckpointError(f"{tj} is not a tokenizer the `tokenizers` library reads ({str(e)[:120]}); repair or "
                                  "delete it, or pass --tokens") from None
        tok.no_padding()  # some tokenizer.json files pad/truncate every input to a fixed length
        tok.no_truncation()
        return lambda text: np.asarray(tok.encode(text).ids, np.int32)
    if p.suffix == ".gguf":
        from gaugejax.io.gguf import gguf_tokenizer

        return gguf_tokenizer(p)
    return None


def apply_gauge_to_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, gauge: SignedPermutation, *,
                              on_tensor: Callable[[str], None] | None = None) -> Path:
    """Streams a Hugging Face checkpoint into the gauge's chart (``gaugejax apply``).

    Memory is on the order of the largest tensor; dtypes, shards and tokenizer files are kept.
    Every stored tensor is moved by its rule (docs/conventions.md §3); the rewrite is exact (indexing and negation).

    Raises:
      CheckpointError: not an HF directory, or incomplete.
      GaugeError: wrong ``d``, or non-global signs on a LayerNorm model.
    """
    p = Path(src)
    if _kind(p) == "gguf":
        raise CheckpointError(f"{p}: applying a gauge writes Hugging Face directories; convert the GGUF first with "
                              "`gaugejax.save_model(gaugejax.load_model(path), dir)`")
    if _kind(p) == "pickle":
        refuse_pickle(p)
    if not p.is_dir():
        raise CheckpointError(f"{p} is not a Hugging Face checkpoint directory")
    ckpt = HFCheckpoint(p)
    ckpt.check_complete()
    check_gauge_for(ckpt.config, gauge)
    axes = ckpt.tensor_axes()

    def transform(name: str, arr: np.ndarray) -> np.ndarray:
        if name not in axes:
            raise CheckpointError(f"no gauge rule for tensor {name!r}")
        return apply_axes(np.asarray(arr), axes[name], gauge)

    return rewrite_hf(ckpt, dst, transform, on_tensor=on_tensor)


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """A short content hash of a checkpoint's files (config and the first MiB of each weight file)."""
    p = Path(path)
    h = hashlib.sha256()
    from gaugejax.io.containment import input_file

    files = sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
    for q in files:
        if q.suffix in (".json", ".safetensors", ".gguf"):
            if p.is_dir():
                input_file(q, p)  # no reads outside the checkpoint folder
            h.update(q.name.encode())
            h.update(str(q.stat().st_size).encode())
            with open(q, "rb") as f:
                h.update(f.read(1 << 20))
    return h.hexdigest()[:16]
