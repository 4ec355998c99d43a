"""``gaugejax merge A B --gauge G --alpha 0.5 -o OUT``: coordinate-preserving merges.

Coordinate-preserving merge: every model after the first is moved into the first model's chart with
its gauge (first → that model), then parameters are interpolated ((1-alpha)·A + alpha·B) or, with
--task-arithmetic, combined as base + Σ λ_i (θ_i − base). Writes a Hugging Face directory
atomically.
"""

from __future__ import annotations

import argparse

from gaugejax.cli._args import about, add_group_arg, add_output_args, command
from gaugejax.errors import GaugeJaxError


def register(sub) -> argparse.ArgumentParser:
    p = command(sub, "merge", run, help="merge checkpoints after bringing them into one chart",
                description=about(__doc__))
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="A B (interpolation) or BASE FT_1 ... FT_n (--task-arithmetic)")
    p.add_argument("--gauge", nargs="+", metavar="G",
                   help="gauge file(s) first model → each other model, in order; 'none' for a model already in the "
                   "first one's chart (default: all 'none')")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of B in the interpolation (default 0.5)")
    p.add_argument("--task-arithmetic", action="store_true", help="base + Σ λ_i (θ_i − base)")
    p.add_argument("--lambdas", type=float, nargs="+", metavar="λ",
                   help="task-arithmetic scales (one, or one per fine-tune; default 1/n each)")
    add_group_arg(p, "signed gauges", "permutation part only")
    add_output_args(p, "output directory (new or empty; see --overwrite)")
    return p


def run(args) -> int:
    from pathlib import Path

    from gaugejax.cli.common import console
    from gaugejax.merge import merge_checkpoints

    paths = [Path(m) for m in args.models]
    out = Path(args.output)
    if any(out.resolve() == p.resolve() for p in paths):
        raise GaugeJaxError("output must differ from every input")
    n_other = len(paths) - 1
    specs = args.gauge or ["none"] * n_other
    if len(specs) != n_other:
        raise GaugeJaxError(f"{len(specs)} gauge(s) for {n_other} model(s) after the first")
    import math

    if not math.isfinite(args.alpha) or not all(math.isfinite(x) for x in args.lambdas or ()):
        raise GaugeJaxError("--alpha and --lambdas must be finite numbers")
    for p in paths:
        if not p.exists():
            raise GaugeJaxError(f"{p} does not exist")
    from gaugejax.cli.common import check_outputs, output

    check_outputs(args, [output(out, directory=True)],
                  inputs=[*paths, *(s for s in specs if s.lower() != "none")])
    r = merge_checkpoints(paths, out, [None if s.lower() == "none" else s for s in specs], alpha=args.alpha,
                          lambdas=args.lambdas, mode="task_arithmetic" if args.task_arithmetic else "interpolation",
                          group=args.group, overwrite=getattr(args, "overwrite", False))
    console().print(f"wrote {out} ({r.describe()}, in the chart of {paths[0]})")
    return 0
