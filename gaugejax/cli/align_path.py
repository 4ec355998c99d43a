"""``gaugejax align-path CKPT_1 ... CKPT_k -o G``: compose local gauges along saved checkpoints.

Match every adjacent pair of checkpoints and compose the local gauges into the gauge CKPT_1 →
CKPT_k. Cross-run mode (--via-base BASE --other-run B_1 ... B_n): the positional checkpoints are run
A in training order (A_1 nearest the base); the gauge written maps A's last checkpoint to B's last,
composed down run A, through BASE and up run B; the direct endpoint match and the route through the
base alone are reported for comparison.
"""

from __future__ import annotations

import argparse

from gaugejax.cli._args import about, add_output_args, check_gauge_path, command
from gaugejax.errors import GaugeJaxError


def register(sub) -> argparse.ArgumentParser:
    p = command(sub, "align-path", run,
                help="compose gauges along a sequence of checkpoints (fine-tuning trajectory)",
                description=about(__doc__))
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoints in path (training) order")
    add_output_args(p, "gauge file to write (.npz)")
    p.add_argument("--via-base", metavar="BASE", help="cross-run mode: the shared base checkpoint")
    p.add_argument("--other-run", nargs="+", metavar="CKPT", help="cross-run mode: run B in training order")
    p.add_argument("--endpoint", action="store_true", help="also match CKPT_1 → CKPT_k directly and compare")
    p.add_argument("--method", default="sign_marginalized", choices=["sign_marginalized", "signed", "permutation"])
    p.add_argument("--layers", type=int, nargs="+", help="residual-stream indices to pool (default: 6 spread out)")
    p.add_argument("--max-tokens", type=int, default=16384, help="per-hop token budget (default 16384)")
    p.add_argument("--stream", action="store_true",
                   help="run block by block from the safetensors files, each checkpoint's forward once (consecutive "
                   "hops share it); uses the first --max-tokens tokens")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="compute dtype of the matmuls (default float32); norms, softmax and statistics stay float32")
    from gaugejax.cli.common import add_token_args

    add_token_args(p, default_tokens=16384)
    return p


def run(args) -> int:
    import numpy as np

    from gaugejax.cli.common import console, progress, table, tokens_from_args
    from gaugejax.io import HFCheckpoint, load_model
    from gaugejax.trajectory import cross_run, align_path

    from pathlib import Path

    from gaugejax.cli.common import check_outputs, is_gauge_file, output

    if bool(args.via_base) != bool(args.other_run):
        raise GaugeJaxError("--via-base and --other-run go together (cross-run mode)")
    ckpts = list(args.checkpoints)
    if not args.via_base and len(ckpts) < 2:
        raise GaugeJaxError("a path needs at least two checkpoints")
    if args.max_tokens <= 0:
        raise GaugeJaxError(f"--max-tokens must be positive, got {args.max_tokens}")
    check_gauge_path(args.output)
    for p in [*ckpts, *(args.other_run or []), args.via_base]:
        if p is not None and not Path(p).exists():
            raise GaugeJaxError(f"{p} does not exist")
    check_outputs(args, [output(args.output, recognise=is_gauge_file)],
                  inputs=[*ckpts, *(args.other_run or []), args.via_base, args.tokens, args.text])
    first = ckpts[0]
    if args.stream and args.via_base:
        raise GaugeJaxError("--stream works on one path; drop --via-base or --stream")

    config = HFCheckpoint(first).config if Path(first).is_dir() else load_model(first).config
    tokens = tokens_from_args(args, config.vocab_size, first)
    kw = dict(layers=args.layers, method=args.method, max_tokens=args.max_tokens, compute_dtype=args.dtype)
    if args.via_base:  # the path's hops, the direct matches to and from the base, the endpoint match
        n_a, n_b = len(ckpts), len(args.other_run)
        n_matches = n_a + n_b + int(n_a > 1) + int(n_b > 1) + 1
    else:
        n_matches = len(ckpts) - 1 + int(args.endpoint)
    cols = ["hop", "tokens", "mean |corr|", "min margin", "ambiguous"]
    out = console()
    with progress("aligning hops", n_matches) as advance:
        if args.via_base:
            r = cross_run(ckpts, args.other_run, args.via_base, tokens, progress=lambda done, total: advance(), **kw)
            path = r.composed
        elif args.stream:
            from gaugejax.streaming import align_path_streamed

            rows = tokens if tokens.ndim == 2 else tokens[None]
            rows = rows[:max(1, -(-args.max_tokens // rows.shape[1]))]
            path = align_path_streamed(ckpts, rows, endpoint=args.endpoint, layers=args.layers, method=args.method,
                                       compute_dtype=args.dtype, progress=lambda done, total: advance())
        else:
            path = align_path(ckpts, tokens, endpoint=args.endpoint, progress=lambda done, total: advance(), **kw)
    table("local gauges", cols, [h.row() for h in path.hops])
    meta = {
        "hop_mean_abs_corr": np.array([h.mean_abs_corr for h in path.hops], np.float32),
        "hop_n_ambiguous": np.array([h.n_ambiguous for h in path.hops], np.int64),
        "confident": path.confident, "method": np.asarray(args.method),
        "checkpoints": np.asarray([h.src for h in path.hops] + [path.hops[-1].dst]),
    }
    out.print(f"composed gauge: {path.confident_fraction:.1%} of coordinates certified on every hop")
    if args.via_base:
        via = r.via_base.agreement(path.gauge)
        end = r.endpoint.gauge.agreement(path.gauge)
        table("agreement with the composed gauge", ["strategy", "perm", "signed"],
              [["via base only", via["perm"], via["signed"]], ["endpoint", end["perm"], end["signed"]]])
        meta.update(via_base_agreement=np.float64(via["signed"]), endpoint_agreement=np.float64(end["signed"]))
    elif args.endpoint:
        end = path.endpoint_agreement()
        out.print(f"direct endpoint match agrees with the composed gauge on {end['signed']:.1%} of coordinates")
        meta["endpoint_agreement"] = np.float64(end["signed"])
    path.gauge.save(args.output, **meta)
    out.print(f"wrote {args.output}")
    return 0
