"""``gaugejax compose G1 G2 ... -o G``: the gauge of G1 then G2 then ... (A→B, B→C, ... gives A→last)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gaugejax.errors import GaugeError


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compose", help="compose gauge files (G1 then G2 ...)",
                       description="Compose gauges: if G1 maps A→B and G2 maps B→C, the result maps A→C "
                       "(perm = G1.perm[G2.perm], signs = G2.signs * G1.signs[G2.perm]; see docs/conventions.md). "
                       "A coordinate is flagged ambiguous in the result when it is ambiguous in any step along its chain.")
    p.add_argument("gauges", nargs="+", metavar="G", help="gauge files (.npz), in order of application")
    p.add_argument("-o", "--output", required=True, help="gauge file to write (.npz)")
    from gaugejax.cli.common import add_overwrite_arg

    add_overwrite_arg(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from gaugejax.cli.common import check_outputs, console, is_gauge_file, output

    out = Path(args.output)
    if out.suffix != ".npz":
        raise GaugeError(f"gauge files end in .npz, got {str(out)!r}")
    check_outputs(args, [output(out, recognise=is_gauge_file)], inputs=args.gauges)
    from gaugejax.trajectory import compose_files

    g, meta = compose_files(args.gauges)
    g.save(out, **meta)
    amb = int(meta["ambiguous"].sum()) if "ambiguous" in meta else None
    console().print(f"wrote {out}: {len(args.gauges)} gauges composed, d={g.d}, "
                    f"{int((g.signs < 0).sum())} negative signs"
                    + ("" if amb is None else f", {amb} ambiguous coordinates"))
    return 0
