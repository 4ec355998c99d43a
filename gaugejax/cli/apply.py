"""``gaugejax apply SRC --gauge G -o OUT``: move a checkpoint into a new chart.

Rewrite a Hugging Face checkpoint in the chart of GAUGE (rules: docs/conventions.md §3), streaming
tensor by tensor; the output loads in transformers and computes the same function. A .gguf source
is dequantized tensor by tensor into a float32 Hugging Face directory with its tokenizer
(tokenizer.json, tokenizer_config.json). Atomic: nothing is written on failure.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gaugejax.cli._args import about, add_output_args, check_gauge_path, command
from gaugejax.errors import GaugeJaxError


def register(sub) -> argparse.ArgumentParser:
    p = command(sub, "apply", run, help="move a checkpoint into the chart of a gauge",
                description=about(__doc__))
    p.add_argument("src", help="Hugging Face directory (or .gguf, written out as a Hugging Face directory)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--gauge", help="gauge file (.npz) from SRC's chart to the new one")
    src.add_argument("--random-gauge", type=int, metavar="SEED",
                     help="draw a random gauge of the model's group (B_d for RMSNorm, S_d × {±1} for LayerNorm)")
    p.add_argument("--save-gauge", metavar="G.npz", help="with --random-gauge: where to write the gauge drawn")
    add_output_args(p, "output directory (new or empty; see --overwrite)")
    return p


def run(args) -> int:
    from gaugejax.atomic import atomic_paths
    from gaugejax.cli.common import check_outputs, console, is_gauge_file, output, progress
    from gaugejax.gauge import SignedPermutation
    from gaugejax.io import HFCheckpoint, apply_gauge_to_checkpoint, load_model

    src = Path(args.src)
    out = Path(args.output)
    if out.resolve() == src.resolve():
        raise GaugeJaxError("output must differ from the source (the source is read while the output is written)")
    if args.save_gauge and args.random_gauge is None:
        raise GaugeJaxError("--save-gauge goes with --random-gauge")
    if args.save_gauge:
        check_gauge_path(args.save_gauge, "--save-gauge")
    if args.random_gauge is not None and args.random_gauge < 0:
        raise GaugeJaxError(f"--random-gauge SEED must be non-negative, got {args.random_gauge}")
    # every output is checked before any work; the gauge drawn and the checkpoint are renamed into place together
    outs = check_outputs(args, [output(args.save_gauge, recognise=is_gauge_file) if args.save_gauge else None,
                                output(out, directory=True)], inputs=[src, args.gauge])
    is_gguf = src.suffix == ".gguf"
    if is_gguf:  # header, config and tensor shapes checked before any weight is read; streamed below
        from gaugejax.io.containment import regular_file
        from gaugejax.io.gguf import open_gguf

        regular_file(src)  # a FIFO would block the reader
        gguf_file = open_gguf(src)
        config = gguf_file.config
    else:
        if not src.is_dir():
            load_model(src)  # raises the reason: missing, pickle, unknown format
        config = HFCheckpoint(src).config
    if args.gauge:
        gauge = SignedPermutation.load(args.gauge)
    else:
        from gaugejax.group import Group

        gauge = Group.of(config).random(args.random_gauge, config.d_model)
    if is_gguf:
        from gaugejax.models import check_gauge_for

        check_gauge_for(config, gauge)
    with atomic_paths(outs, inputs=[src, args.gauge]) as tmps:
        if args.save_gauge:
            gauge.save(tmps[0], source=str(src))
        if is_gguf:
            from gaugejax.io.gguf_apply import apply_gauge_to_gguf

            with progress("applying gauge", len(gguf_file.names)) as advance:
                apply_gauge_to_gguf(gguf_file, tmps[-1], gauge, on_tokenizer_error=_warn_no_tokenizer,
                                    on_tensor=lambda _: advance())
        else:
            n = sum(len(sf.keys()) for sf in HFCheckpoint(src).shard_files)
            with progress("applying gauge", n) as advance:
                apply_gauge_to_checkpoint(src, tmps[-1], gauge, on_tensor=lambda _: advance())
    console().print(f"wrote {out} (gauge d={gauge.d}, {int((gauge.signs < 0).sum())} negative signs)")
    return 0


def _warn_no_tokenizer(error: GaugeJaxError) -> None:
    """A GGUF tokenizer that cannot be built is a warning: the weights are written without tokenizer files."""
    from gaugejax.cli.common import console

    console(stderr=True).print(f"warning: writing no tokenizer files: {error}", markup=False, highlight=False)
