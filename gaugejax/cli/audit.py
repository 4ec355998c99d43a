"""``gaugejax audit MODEL``: does an index-level claim reproduce across charts?

Apply K random gauges (of B_d and S_d, or S_d × {±1} and S_d for LayerNorm) to MODEL, recompute an
index-level claim in every chart, and report how often the raw-index claim reproduces versus the
claim transported through the known gauge (B_d- and S_d-relative).
"""

from __future__ import annotations

import argparse

from gaugejax.cli._args import about, add_checkpoint_args, check_layer, command
from gaugejax.errors import GaugeJaxError

CLAIMS = ("corr", "probe", "mean")


def register(sub) -> argparse.ArgumentParser:
    p = command(sub, "audit", run, help="gauge-sweep audit of an index-level claim",
                description=about(__doc__))
    add_checkpoint_args(p, "model")
    p.add_argument("--claim", choices=CLAIMS, default="corr",
                   help="corr: coordinates most correlated with the feature; probe: largest linear-probe weights; "
                   "mean: largest mean activation (default corr)")
    p.add_argument("--feature", default="half", help="half, parity, token:ID or next:ID (default half)")
    p.add_argument("--layer", type=int, help="residual-stream index (default: middle)")
    p.add_argument("--top-k", type=int, default=1, help="coordinates in the claim (default 1)")
    p.add_argument("-k", "--charts", type=int, default=16, help="random charts per group (default 16)")
    from gaugejax.group import Group

    p.add_argument("--groups", nargs="+", type=Group, choices=list(Group), metavar="GROUP",
                   help="groups to sweep: B_d, 'S_d x ±1' (also 'S_d x +-1'), S_d (default B_d S_d for RMSNorm, "
                   "'S_d x ±1' S_d for LayerNorm)")
    p.add_argument("--plot", metavar="PNG", help="write a bar chart of the rates")
    p.add_argument("--json", metavar="FILE", help="write the rates as JSON")
    from gaugejax.cli.common import add_overwrite_arg

    add_overwrite_arg(p)
    from gaugejax.cli.common import add_token_args

    add_token_args(p, default_tokens=2048)
    return p


def run(args) -> int:
    import json

    from gaugejax.atomic import atomic_path
    from gaugejax.audit import (AUDIT_COLUMNS, audit, correlation_claim, feature_labels, mean_activation_claim,
                                plot_audit, probe_claim)
    from gaugejax.cli.common import console, progress, table, tokens_from_args
    from gaugejax.io import load_model

    from gaugejax.atomic import looks_like
    from gaugejax.cli.common import check_outputs, is_json_object, output

    if args.charts < 1 or args.top_k < 1:
        raise GaugeJaxError("-k and --top-k must be at least 1")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise GaugeJaxError(f"--plot writes a PNG image: name it *.png, got {args.plot!r}")
    check_outputs(args, [output(args.plot, recognise=looks_like) if args.plot else None,
                         output(args.json, recognise=is_json_object) if args.json else None],
                  inputs=[args.model, args.tokens, args.text])
    model = load_model(args.model)
    d = model.config.d_model
    if args.top_k > d:
        raise GaugeJaxError(f"--top-k {args.top_k} exceeds the residual width d={d}")
    check_layer(args.layer, model.config.n_layers)
    tokens = tokens_from_args(args, model.config.vocab_size, args.model)
    layer = model.config.n_layers // 2 if args.layer is None else args.layer
    if args.claim == "mean":
        claim = mean_activation_claim(layer, args.top_k)
    else:
        labels = feature_labels(tokens, args.feature, model.config.vocab_size)
        if labels.std() == 0:
            raise GaugeJaxError(f"feature {args.feature!r} is constant on these tokens; choose another")
        make = correlation_claim if args.claim == "corr" else probe_claim
        claim = make(layer, labels, args.top_k)
    n_groups = len(args.groups) if args.groups else 2
    with progress("auditing", args.charts * n_groups) as advance:
        r = audit(model, claim, tokens, k=args.charts, groups=args.groups, seed=args.seed,
                  progress=lambda done, total: advance())
    cols = ["group", "K", "raw idx", "raw idx±", "S_d-rel idx", "S_d-rel idx±", "B_d-rel idx", "B_d-rel idx±"]
    table(f"{r.claim}: reference {list(zip(r.reference.indices.tolist(), r.reference.signs.tolist()))}, "
          f"{tokens.size} tokens", cols, r.rows())
    if args.plot:
        plot_audit(r, args.plot)
    if args.json:
        with atomic_path(args.json, overwrite=args.overwrite, recognise=is_json_object) as tmp:
            tmp.write_text(json.dumps({**r.summary(), "columns": list(AUDIT_COLUMNS)}, indent=2))
    for g, rates in r.rates.items():
        console().print(f"{g} sweep: raw claim (index and sign) reproduced in {rates['raw_signed']:.0%} of charts, "
                        f"S_d-relative in {rates['sd_relative_signed']:.0%}, B_d-relative in {rates['bd_relative_signed']:.0%}")
    return 0
