"""``gaugejax transport --gauge G --kind KIND IN -o OUT``: move a coordinate-indexed object.

Transport a coordinate-indexed object from the chart of model A to the chart of model B, given the
gauge A→B, by its rule (docs/conventions.md §3). The output keeps the input's format and is written
atomically.
"""

from __future__ import annotations

import argparse

from gaugejax.cli._args import about, add_gauge_arg, add_group_arg, add_output_args, command

KIND_HELP = {
    "steering": "steering vectors (.npy (d,) or (L, d), .npz, .safetensors, GGUF control vector)",
    "probe": "linear-probe weights (..., d) (a tensor named *bias is left untouched)",
    "sae": "sparse autoencoder: .safetensors/.npz with W_enc (d,k), b_enc, W_dec (k,d), b_dec, or a SAELens dir",
    "neurons": "top-k neuron set / attribution list (.json or .csv/.tsv with index[, score] fields)",
    "checkpoint": "a Hugging Face checkpoint directory (same as `gaugejax apply`)",
}


def register(sub) -> argparse.ArgumentParser:
    kinds = "; ".join(f"{k}: {v}" for k, v in KIND_HELP.items())
    p = command(sub, "transport", run,
                help="move a steering vector / SAE / neuron list / checkpoint into a new chart",
                description=f"{about(__doc__)} Kinds: {kinds}.")
    p.add_argument("input", metavar="IN", help="the object file (or directory)")
    add_gauge_arg(p)
    p.add_argument("--kind", required=True, choices=list(KIND_HELP), help="object kind")
    add_group_arg(p)
    p.add_argument("--inverse", action="store_true", help="transport B→A with the inverse gauge")
    add_output_args(p, "output path (same format as IN)")
    return p


def run(args) -> int:
    from gaugejax.cli.common import check_outputs, console, output
    from gaugejax.gauge import SignedPermutation
    from gaugejax.transport import output_recogniser, transport_file

    directory, recognise = output_recogniser(args.kind, args.input, args.output)
    check_outputs(args, [output(args.output, directory=directory, recognise=recognise)],
                  inputs=[args.input, args.gauge])
    gauge = SignedPermutation.load(args.gauge)
    if args.inverse:
        gauge = gauge.inverse()
    r = transport_file(args.kind, args.input, args.output, gauge, group=args.group, overwrite=args.overwrite)
    c = console()
    c.print(f"wrote {r.output} ({r.kind}, {r.format}, {r.items} item(s), group {r.group}, "
            f"{r.flipped} sign flip(s))")
    for note in r.notes:
        c.print(f"note: {note}")
    if args.group == "S_d" and (gauge.signs < 0).any():
        c.print("note: S_d transport dropped the gauge's signs; for an RMSNorm model this is the wrong rule "
                "(kept for comparison)")
    return 0
