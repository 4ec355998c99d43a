"""``gaugejax canon MODEL -o G``: the gauge to a reference-free canonical chart.

Canonical gauge fix without a reference model: order coordinates by sign-invariant statistics
(lexicographically) and fix each sign by an odd statistic (LayerNorm models: one global sign). Two
functionally identical copies in different charts get the same canonical chart; drift (fine-tuning)
moves it where statistics are close.
"""

from __future__ import annotations

import argparse

from gaugejax.cli._args import about, add_checkpoint_args, add_output_args, check_gauge_path, check_layer, command


def register(sub) -> argparse.ArgumentParser:
    from gaugejax.canonical import DEFAULT_ORDER, DEFAULT_SIGN, ORDER_STATISTICS, SIGN_STATISTICS

    p = command(sub, "canon", run, help="write the gauge from a model's chart to its canonical chart",
                description=about(__doc__))
    add_checkpoint_args(p, "model")
    add_output_args(p, "gauge file to write (.npz): MODEL → canonical chart")
    p.add_argument("--order-by", default=",".join(DEFAULT_ORDER),
                   help=f"comma-separated ordering statistics, primary first (default {','.join(DEFAULT_ORDER)}; "
                   f"choices {', '.join(ORDER_STATISTICS)}; use the same choice for every checkpoint)")
    p.add_argument("--sign-by", default=DEFAULT_SIGN, choices=list(SIGN_STATISTICS),
                   help=f"odd statistic fixing the signs (default {DEFAULT_SIGN})")
    p.add_argument("--layer", type=int, help="residual-stream index for act_* statistics (default middle)")
    p.add_argument("--stability", type=int, default=0, metavar="K",
                   help="also check K randomly re-gauged copies land in the same canonical chart")
    from gaugejax.cli.common import add_token_args

    add_token_args(p, default_tokens=1024)
    return p


def run(args) -> int:
    from gaugejax.canonical import canonical_gauge, regauge_stability
    from gaugejax.cli.common import check_outputs, console, is_gauge_file, output, table, tokens_from_args
    from gaugejax.errors import GaugeJaxError
    from gaugejax.io import load_model

    check_gauge_path(args.output)
    if args.stability < 0:
        raise GaugeJaxError(f"--stability K must be 0 or more, got {args.stability}")
    check_outputs(args, [output(args.output, recognise=is_gauge_file)], inputs=[args.model, args.tokens, args.text])
    model = load_model(args.model)
    from gaugejax.canonical import resolve_order

    check_layer(args.layer, model.config.n_layers)
    order_by = resolve_order(args.order_by)
    needs_tokens = any(s.startswith("act_") for s in (*order_by, args.sign_by))
    tokens = tokens_from_args(args, model.config.vocab_size, args.model) if needs_tokens else None
    kw = dict(order_by=order_by, sign_by=args.sign_by, tokens=tokens, layer=args.layer)
    c = canonical_gauge(model, **kw)
    s = c.summary()
    rows = [["ordering", ", ".join(order_by)], ["signs", args.sign_by], ["unique", s["unique"]],
            ["ties / zero signs", f"{s['ties']} / {s['zero_signs']}"],
            ["min / median order gap (÷ std)", f"{s['min_order_gap']:.3g} / {s['median_order_gap']:.3g}"],
            ["min / median sign margin (÷ rms)", f"{s['min_sign_margin']:.3g} / {s['median_sign_margin']:.3g}"],
            ["negative signs", int((c.gauge.signs < 0).sum())]]
    extra = {}
    if args.stability > 0:
        st = regauge_stability(model, args.stability, seed=args.seed, **kw)
        rows.append([f"re-gauged copies in the same chart (K={args.stability})", st["same_chart"]])
        extra["regauge_same_chart"] = st["same_chart"]
    table(f"canonical gauge of {args.model}", ["", "value"], rows)
    c.gauge.save(args.output, source=str(args.model), **c.metadata(), **extra)
    out = console()
    if not c.unique:
        out.print("warning: the canonical chart is not unique (tied statistics or zero odd statistics); "
                  "copies in other charts may land elsewhere")
    out.print(f"wrote {args.output} (MODEL → canonical chart)")
    return 0
