"""``gaugejax compose G1 G2 ... -o G``: the gauge of G1 then G2 then ... (A→B, B→C, ... gives A→last).

Compose gauges: if G1 maps A→B and G2 maps B→C, the result maps A→C (perm = G1.perm[G2.perm], signs
= G2.signs * G1.signs[G2.perm]; see docs/conventions.md). A coordinate is flagged ambiguous in the
result when it is ambiguous in any step along its chain.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gaugejax.cli._args import about, add_output_args, check_gauge_path, command


def register(sub) -> argparse.ArgumentParser:
    p = command(sub, "compose", run, help="compose gauge files (G1 then G2 ...)",
                description=about(__doc__))
    p.add_argument("gauges", nargs="+", metavar="G", help="gauge files (.npz), in order of application")
    add_output_args(p, "gauge file to write (.npz)")
    return p


def run(args) -> int:
    from gaugejax.cli.common import check_outputs, console, is_gauge_file, output

    out = Path(args.output)
    check_gauge_path(out)
    check_outputs(args, [output(out, recognise=is_gauge_file)], inputs=args.gauges)
    from gaugejax.trajectory import compose_files

    g, meta = compose_files(args.gauges)
    g.save(out, **meta)
    amb = int(meta["ambiguous"].sum()) if "ambiguous" in meta else None
    console().print(f"wrote {out}: {len(args.gauges)} gauges composed, d={g.d}, "
                    f"{int((g.signs < 0).sum())} negative signs"
                    + ("" if amb is None else f", {amb} ambiguous coordinates"))
    return 0
