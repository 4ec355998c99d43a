"""Rewriting a Hugging Face checkpoint folder tensor by tensor (``gaugejax apply``).

:func:`rewrite_hf` streams every stored tensor through a transform into a new folder (shards,
dtypes and the index kept) and copies the folder's other files by the containment rule of
:mod:`gaugejax.io.containment` (:func:`copy_extra_files`). The write is atomic: on any failure,
or a signal, nothing is left (:mod:`gaugejax.atomic`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from gaugejax.atomic import atomic_path
from gaugejax.io.containment import copy_input_file
from gaugejax.io.hf import PICKLE_SUFFIXES, HFCheckpoint
from gaugejax.io.safetensors_stream import write_safetensors

__all__ = ["copy_extra_files", "rewrite_hf"]


def copy_extra_files(src: Path, dst: Path) -> list[str]:
    """Copies the files of checkpoint folder ``src`` other than weights (config, tokenizer,
    generation config, ...) into ``dst``; returns their names.

    Skipped: ``*.safetensors``, pickle weights, hidden files and sub-folders. Every other entry
    is copied by the containment rule (:func:`gaugejax.io.containment.copy_input_file`): a link out
    of the folder (other than a Hugging Face cache blob), a FIFO or a device is refused, and modes
    are never widened.
    """
    names = []
    for p in sorted(src.iterdir()):
        skip = p.suffix == ".safetensors" or p.suffix in PICKLE_SUFFIXES or p.name.startswith(".")
        if not skip and not p.is_dir():
            copy_input_file(p, dst / p.name, src)
            names.append(p.name)
    return names


def rewrite_hf(ckpt: HFCheckpoint, directory: str | os.PathLike,
               transform: Callable[[str, np.ndarray], np.ndarray], *, on_tensor: Callable[[str], None] | None = None,
               config_update: dict | None = None, overwrite: bool = True) -> Path:
    """Streams every tensor of ``ckpt`` through ``transform(name, array)`` into a new directory.

    Shard layout, dtypes, the index and all non-weight files (tokenizer, generation config) are
    kept (:func:`copy_extra_files`); pickle weight files are not copied. Every tensor is checked
    finite before it is written. Memory: about one tensor at a time. ``directory``
    follows the rules of :func:`save_hf` and may not be, or contain, the source.

    Raises:
      NonFiniteError: a tensor holds NaN or ±Inf (named; nothing is written).
      UnsafeInputError: a file to copy links outside the folder or is not a regular file.
    """
    from gaugejax.io.finite import check_finite_tensor

    src = ckpt.directory
    with atomic_path(directory, directory=True, overwrite=overwrite, inputs=[src]) as tmp:
        copy_extra_files(src, tmp)
        if config_update:
            cfg = dict(ckpt.hf_config, **config_update)
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        for sf in ckpt.shard_files:
            items = []
            canonical = ckpt.canonical_names(sf)
            for name in sf.keys():
                info = sf.info(name)

                def produce(name=name, info=info):
                    out = np.asarray(transform(canonical.get(name, name), sf[name]))
                    check_finite_tensor(out, name, src)  # the copy in memory: no second read of the file
                    if on_tensor:
                        on_tensor(name)
                    return out.astype(info.dtype, copy=False)

                items.append((info, produce))
            write_safetensors(tmp / Path(sf.path).name, items, sf.metadata or {"format": "pt"})
    return Path(directory)
