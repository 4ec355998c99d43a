"""``gaugejax verify SRC DST --gauge G``: check that DST is SRC in the chart of G."""

from __future__ import annotations

import argparse

import numpy as np


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("verify", help="check that DST is SRC moved by a gauge",
                       description="Run SRC and DST on the same tokens and report max |Δlogit| and, per layer, "
                       "max |h_DST − G(h_SRC)|, both relative to the scale of SRC. Exit 0 iff all are within --tol.")
    p.add_argument("src", help="checkpoint A (Hugging Face directory or .gguf)")
    p.add_argument("dst", help="checkpoint B")
    p.add_argument("--gauge", required=True, help="gauge file A→B (.npz)")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="relative tolerance (default 1e-4: float32 forward passes, SPEC §8)")
    from gaugejax.cli.common import add_token_args

    add_token_args(p, default_tokens=256)
    p.set_defaults(func=run)
    return p


def verify(model_a, model_b, gauge, tokens, batch: int = 8) -> dict:
    """Relative max deviations: logits and each layer of the residual stream."""
    import gaugejax as gj
    from gaugejax.errors import CheckpointError
    from gaugejax.models import check_gauge_for

    ca, cb = model_a.config, model_b.config
    if (ca.family, ca.d_model, ca.n_layers, ca.vocab_size) != (cb.family, cb.d_model, cb.n_layers, cb.vocab_size):
        raise CheckpointError(f"the checkpoints differ in architecture: {ca.family} d={ca.d_model} L={ca.n_layers} "
                              f"vs {cb.family} d={cb.d_model} L={cb.n_layers}")
    check_gauge_for(ca, gauge)
    dl, scale_l = 0.0, 0.0
    dh = np.zeros(ca.n_layers + 1)
    scale_h = np.zeros(ca.n_layers + 1)
    for i in range(0, tokens.shape[0], batch):
        t = tokens[i:i + batch]
        la, lb = np.asarray(gj.forward(model_a, t)), np.asarray(gj.forward(model_b, t))
        dl, scale_l = max(dl, float(np.abs(la - lb).max())), max(scale_l, float(np.abs(la).max()))
        ha = np.asarray(gj.residual_stream(model_a, t, final_norm=False))
        hb = np.asarray(gj.residual_stream(model_b, t, final_norm=False))
        dh = np.maximum(dh, np.abs(hb - gauge.apply(ha)).max(axis=(1, 2, 3)))
        scale_h = np.maximum(scale_h, np.abs(ha).max(axis=(1, 2, 3)))
    return {"logits": dl / max(scale_l, 1e-30), "layers": (dh / np.maximum(scale_h, 1e-30)).tolist()}


def run(args) -> int:
    from gaugejax.cli.common import console, table, tokens_from_args
    from gaugejax.gauge import SignedPermutation
    from gaugejax.io import load_model

    gauge = SignedPermutation.load(args.gauge)
    a, b = load_model(args.src), load_model(args.dst)
    tokens = tokens_from_args(args, a.config.vocab_size, args.src)
    r = verify(a, b, gauge, tokens)
    rows = [["logits", r["logits"], "ok" if r["logits"] <= args.tol else "FAIL"]]
    rows += [[f"h[{i}]", v, "ok" if v <= args.tol else "FAIL"] for i, v in enumerate(r["layers"])]
    table(f"max relative deviation over {tokens.size} tokens (tol {args.tol:g})", ["", "max |Δ| / scale", ""], rows)
    ok = max([r["logits"], *r["layers"]]) <= args.tol
    console().print("verified: DST is SRC in the gauge's chart" if ok else "NOT verified: deviations exceed --tol")
    return 0 if ok else 1
