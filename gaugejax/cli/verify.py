"""``gaugejax verify SRC DST --gauge G``: check that DST is SRC in the chart of G.

Run SRC and DST on the same tokens and report max |Δlogit| and, per layer, max |h_DST − G(h_SRC)|,
both relative to the scale of SRC (encoders whose output is a hidden state: max |out_DST −
G(out_SRC)|). Exit 0 iff all are within --tol; a NaN or infinite value anywhere fails (exit 1,
naming the first layer where it appears).
"""

from __future__ import annotations

import argparse

from gaugejax.cli._args import about, add_checkpoint_args, add_gauge_arg, command


def register(sub) -> argparse.ArgumentParser:
    p = command(sub, "verify", run, help="check that DST is SRC moved by a gauge",
                description=about(__doc__))
    add_checkpoint_args(p, "src", "dst")
    add_gauge_arg(p)
    p.add_argument("--tol", type=float, default=1e-4,
                   help="relative tolerance (default 1e-4: float32 forward passes)")
    p.add_argument("--stream", action="store_true",
                   help="run block by block from the safetensors files (one block of each model in memory)")
    from gaugejax.cli.common import add_token_args

    add_token_args(p, default_tokens=256)
    return p


def run(args) -> int:
    from gaugejax.cli.common import console, progress, table, tokens_from_args
    from gaugejax.cli.preflight import pair_configs
    from gaugejax.gauge import SignedPermutation
    from gaugejax.errors import GaugeJaxError
    from gaugejax.io import load_model
    from gaugejax.models import check_gauge_for
    from gaugejax.verify import verify

    if not args.tol >= 0 or args.tol == float("inf"):
        raise GaugeJaxError(f"--tol must be a finite non-negative number, got {args.tol}")
    gauge = SignedPermutation.load(args.gauge)
    # every input is checked before a weight is read: configs, gauge width and group, tokenizer, token ids
    config, _ = pair_configs(args.src, args.dst)
    check_gauge_for(config, gauge)
    tokens = tokens_from_args(args, config.vocab_size, args.src)
    if args.stream:
        from gaugejax.streaming import block_source

        a, b = block_source(args.src), block_source(args.dst)
    else:
        a, b = load_model(args.src), load_model(args.dst)
    with progress("verifying", tokens.shape[0]) as advance:
        seen = [0]

        def report(done: int, _total: int) -> None:
            advance(done - seen[0])
            seen[0] = done

        if args.stream:
            from gaugejax.streaming_verify import verify_streamed

            r = verify_streamed(a, b, gauge, tokens, tol=args.tol)
        else:
            r = verify(a, b, gauge, tokens, tol=args.tol, progress=report)
    rows = [[name, v, "ok" if ok else "FAIL"] for name, v, ok in r.rows()]
    table(f"max relative deviation over {r.n_tokens} tokens (tol {args.tol:g})", ["", "max |Δ| / scale", ""], rows)
    if r.nonfinite is not None:
        console(stderr=True).print(f"error: NaN or infinite values at {r.nonfinite} (A = {args.src}, B = {args.dst}): "
                                   "a broken checkpoint or an overflow in its dtype")
    if r.ok:
        console().print("verified: DST is SRC in the gauge's chart")
    else:
        console().print("NOT verified: " + ("deviations exceed --tol" if r.nonfinite is None else "non-finite values"))
    return 0 if r.ok else 1
