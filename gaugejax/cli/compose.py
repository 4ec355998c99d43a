"""``gaugejax compose G1 G2 ... -o G``: the gauge of G1 then G2 then ... (A→B, B→C, ... gives A→last)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from gaugejax.errors import GaugeError


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compose", help="compose gauge files (G1 then G2 ...)",
                       description="Compose gauges: if G1 maps A→B and G2 maps B→C, the result maps A→C "
                       "(SPEC §3: perm = G1.perm[G2.perm], signs = G2.signs * G1.signs[G2.perm]). A coordinate is "
                       "flagged ambiguous in the result when it is ambiguous in any step along its chain.")
    p.add_argument("gauges", nargs="+", metavar="G", help="gauge files (.npz), in order of application")
    p.add_argument("-o", "--output", required=True, help="gauge file to write (.npz)")
    p.set_defaults(func=run)
    return p


def compose_files(paths: list[str]) -> tuple["object", dict[str, np.ndarray]]:
    """The composed gauge and its metadata (chain-propagated ``ambiguous`` flags when every input has them)."""
    from gaugejax.gauge import SignedPermutation, load_gauge_metadata

    if not paths:
        raise GaugeError("compose needs at least one gauge file")
    total = None
    amb = None
    have_amb = True
    for p in paths:
        g = SignedPermutation.load(p)
        meta = load_gauge_metadata(p)
        a = meta.get("ambiguous")
        if a is None or a.shape != (g.d,):
            have_amb = False
        if total is None:
            total, amb = g, (a.astype(bool) if have_amb else None)
            continue
        if g.d != total.d:
            raise GaugeError(f"cannot compose: {p} has d={g.d} but the gauges before it have d={total.d}")
        total = total.then(g)
        if have_amb:
            amb = a.astype(bool) | amb[g.perm]  # coordinate j of the new chart came from g.perm[j]
    meta = {"composed_from": np.asarray([str(Path(p).name) for p in paths]), "method": np.asarray("composed")}
    if have_amb and amb is not None:
        meta["ambiguous"] = amb
    return total, meta


def run(args) -> int:
    from gaugejax.cli.common import console

    out = Path(args.output)
    if out.suffix != ".npz":
        raise GaugeError(f"gauge files end in .npz, got {str(out)!r}")
    g, meta = compose_files(args.gauges)
    g.save(out, **meta)
    amb = int(meta["ambiguous"].sum()) if "ambiguous" in meta else None
    console().print(f"wrote {out}: {len(args.gauges)} gauges composed, d={g.d}, "
                    f"{int((g.signs < 0).sum())} negative signs"
                    + ("" if amb is None else f", {amb} ambiguous coordinates"))
    return 0
