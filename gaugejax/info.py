"""Describing a checkpoint without running it: architecture, sizes, storage dtype and gauge group.

Example:
  >>> import tempfile, gaugejax as gj
  >>> d = tempfile.mkdtemp()
  >>> _ = gj.save_model(gj.random_model("gpt2", seed=0), d + "/m")
  >>> info = describe(d + "/m")
  >>> info["family"], info["gauge_group"], info["d_model"]
  ('gpt2', 'S_d × {±1} (permutations, one global sign)', 64)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gaugejax.group import Group

__all__ = ["describe"]


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-serialisable summary of a checkpoint.

    A Hugging Face directory is described from its ``config.json`` and safetensors headers (no
    weights are read); a ``.gguf`` file is loaded (dequantized).

    Args:
      path: Hugging Face directory or ``.gguf`` file.

    Returns:
      ``path``, ``family``, ``model_type``, ``norm``, ``gauge_group`` (:attr:`Group.description`),
      sizes (``d_model``, ``n_layers``, ``n_heads``, ``n_kv_heads``, ``d_ff``, ``vocab_size``),
      ``tied_embeddings``, ``parameters``, ``dtypes`` and ``weight_files``.

    Raises:
      CheckpointError: a missing, incomplete or unsupported checkpoint.
    """
    from gaugejax.io import HFCheckpoint, load_model

    p = Path(path)
    if p.is_dir():
        ckpt = HFCheckpoint(p)
        ckpt.check_complete()
        cfg = ckpt.config
        infos = [sf.info(n) for sf in ckpt.shard_files for n in sf.keys()]
        n_params = int(sum(np.prod(i.shape) for i in infos))
        dtypes = sorted({str(i.dtype) for i in infos})
        files = len(ckpt.shard_files)
    else:
        import jax

        model = load_model(p)
        cfg = model.config
        n_params = int(sum(x.size for x in jax.tree.leaves(model.params)))
        dtypes = ["dequantized float32 (stored quantized)"]
        files = 1
    return {
        "path": str(p), "family": cfg.family, "model_type": cfg.model_type, "norm": cfg.norm,
        "gauge_group": Group.of(cfg).description,
        "d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
        "n_kv_heads": getattr(cfg, "n_kv_heads", cfg.n_heads), "d_ff": cfg.d_ff, "vocab_size": cfg.vocab_size,
        "tied_embeddings": cfg.tie_embeddings, "parameters": n_params, "dtypes": dtypes, "weight_files": files,
    }
