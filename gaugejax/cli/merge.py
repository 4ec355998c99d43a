"""``gaugejax merge A B --gauge G --alpha 0.5 -o OUT``: coordinate-preserving merges."""

from __future__ import annotations

import argparse

from gaugejax.errors import GaugeJaxError


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("merge", help="merge checkpoints after bringing them into one chart",
                       description="Coordinate-preserving merge: every model after the first is moved into the first "
                       "model's chart with its gauge (first → that model), then parameters are interpolated "
                       "((1-alpha)·A + alpha·B) or, with --task-arithmetic, combined as base + Σ λ_i (θ_i − base). "
                       "Writes a Hugging Face directory atomically.")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="A B (interpolation) or BASE FT_1 ... FT_n (--task-arithmetic)")
    p.add_argument("--gauge", nargs="+", metavar="G",
                   help="gauge file(s) first model → each other model, in order; 'none' for a model already in the "
                   "first one's chart (default: all 'none')")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of B in the interpolation (default 0.5)")
    p.add_argument("--task-arithmetic", action="store_true", help="base + Σ λ_i (θ_i − base)")
    p.add_argument("--lambdas", type=float, nargs="+", metavar="λ",
                   help="task-arithmetic scales (one, or one per fine-tune; default 1/n each)")
    p.add_argument("--group", default="B_d", choices=["B_d", "S_d"],
                   help="B_d: signed gauges (correct for RMSNorm); S_d: permutation part only (comparison)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from pathlib import Path

    from gaugejax.cli.common import console
    from gaugejax.gauge import SignedPermutation
    from gaugejax.io import load_model, save_model
    from gaugejax.merge import merge, task_arithmetic

    paths = [Path(m) for m in args.models]
    out = Path(args.output)
    if any(out.resolve() == p.resolve() for p in paths):
        raise GaugeJaxError("output must differ from every input")
    n_other = len(paths) - 1
    if n_other < 1:
        raise GaugeJaxError("merge needs at least two models")
    if not args.task_arithmetic and n_other != 1:
        raise GaugeJaxError("interpolation merges exactly two models (use --task-arithmetic for more)")
    specs = args.gauge or ["none"] * n_other
    if len(specs) != n_other:
        raise GaugeJaxError(f"{len(specs)} gauge(s) for {n_other} model(s) after the first")
    gauges = [None if s.lower() == "none" else SignedPermutation.load(s) for s in specs]
    models = [load_model(p) for p in paths]
    if args.task_arithmetic:
        lambdas = args.lambdas or [1.0 / n_other]
        if len(lambdas) not in (1, n_other):
            raise GaugeJaxError(f"{len(lambdas)} lambdas for {n_other} fine-tunes")
        lam = lambdas * n_other if len(lambdas) == 1 else lambdas
        merged = task_arithmetic(models[0], models[1:], lam, gauges, group=args.group)
        what = f"task arithmetic, λ = {', '.join(f'{x:g}' for x in lam)}"
    else:
        if args.lambdas:
            raise GaugeJaxError("--lambdas goes with --task-arithmetic")
        merged = merge(models[0], models[1], gauges[0], alpha=args.alpha, group=args.group)
        what = f"interpolation, alpha = {args.alpha:g}"
    save_model(merged, out)
    console().print(f"wrote {out} ({what}, group {args.group}, in the chart of {paths[0]})")
    return 0
