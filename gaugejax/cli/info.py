"""``gaugejax info MODEL``: architecture, sizes and gauge group of a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="describe a checkpoint and its gauge group",
                       description="Print the architecture, sizes, storage dtype and gauge group of a checkpoint "
                       "(Hugging Face directory or .gguf file).")
    p.add_argument("model", help="Hugging Face directory or .gguf file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
    return p


def describe(path: str) -> dict:
    """Summary of a checkpoint without running it."""
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
        model = load_model(p)
        cfg = model.config
        import jax

        leaves = jax.tree.leaves(model.params)
        n_params = int(sum(x.size for x in leaves))
        dtypes = ["dequantized float32 (stored quantized)"]
        files = 1
    group = "B_d (signed permutations)" if cfg.norm == "rmsnorm" else "S_d × {±1} (permutations, one global sign)"
    return {
        "path": str(p), "family": cfg.family, "model_type": cfg.model_type, "norm": cfg.norm, "gauge_group": group,
        "d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
        "n_kv_heads": getattr(cfg, "n_kv_heads", cfg.n_heads), "d_ff": cfg.d_ff, "vocab_size": cfg.vocab_size,
        "tied_embeddings": cfg.tie_embeddings, "parameters": n_params, "dtypes": dtypes, "weight_files": files,
    }


def run(args) -> int:
    info = describe(args.model)
    if args.json:
        import json

        print(json.dumps(info, indent=2))
        return 0
    from gaugejax.cli.common import table

    table(f"{info['path']}", ["field", "value"], [[k, str(v)] for k, v in info.items() if k != "path"])
    return 0
