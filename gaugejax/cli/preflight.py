"""Checks a command makes before it reads any weight: configs, gauge width, tokens, tokenizer.

A refusal must come in well under a second, not after loading two models: everything here reads
``config.json`` and the safetensors headers of a Hugging Face directory, or the metadata of a
``.gguf`` file (its header: sizes, vocabulary, tokenizer), never tensor data. ``align`` and
``verify`` call :func:`pair_configs`, then check the gauge (``verify``) and build their probe
tokens (tokenizer availability, ids against the vocabulary) before they load anything.

Example:
  >>> import tempfile, gaugejax as gj
  >>> d = tempfile.mkdtemp()
  >>> _ = gj.save_model(gj.random_model("llama", seed=0), d + "/m")
  >>> checkpoint_config(d + "/m").d_model
  64
"""

from __future__ import annotations

import os
from pathlib import Path

from gaugejax.errors import CheckpointError
from gaugejax.models.base import ModelConfig

__all__ = ["checkpoint_config", "pair_configs"]


def checkpoint_config(path: str | os.PathLike) -> ModelConfig:
    """The :class:`ModelConfig` of a checkpoint, without reading a weight.

    Args:
      path: a Hugging Face directory (``config.json`` and safetensors headers are read, and the
        tensor list checked complete) or a ``.gguf`` file (its metadata).

    Raises:
      CheckpointError: what :func:`gaugejax.io.load_model` would refuse before reading tensor data
        (missing path, pickle, bare safetensors file, unknown format, unsupported architecture,
        incomplete tensor list).
    """
    p = Path(path)
    if p.is_dir():
        from gaugejax.io import HFCheckpoint

        ckpt = HFCheckpoint(p)
        ckpt.check_complete()
        return ckpt.config
    if p.suffix == ".gguf" and p.exists():
        from gaugejax.io.containment import regular_file
        from gaugejax.io.gguf import open_gguf

        regular_file(p)  # a FIFO would block the reader
        return open_gguf(p).config  # header, metadata and tensor shapes; no tensor data
    from gaugejax.io import load_model

    load_model(p)  # every other kind is refused by the loader before it reads anything
    raise CheckpointError(f"{p}: unknown checkpoint format (expected a Hugging Face directory or a .gguf file)")


def pair_configs(src: str | os.PathLike, dst: str | os.PathLike) -> tuple[ModelConfig, ModelConfig]:
    """The configs of two checkpoints that must share a gauge (same family, width, depth, vocabulary).

    Raises:
      CheckpointError: either config is refused (:func:`checkpoint_config`), or they differ.
    """
    from gaugejax.align import check_pair

    a, b = checkpoint_config(src), checkpoint_config(dst)
    check_pair(a, b)
    return a, b
