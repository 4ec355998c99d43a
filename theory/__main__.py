"""Command line: ``python -m theory [--json] [--verbose] [--only SECTION ...] [--full-mc]`` and
``python -m theory ceiling --out theory/figures [--readme theory/README.md]``.

Exit status: 0 when every proposition passes, 1 when one fails, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from theory.report import SECTIONS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m theory",
        description="Executable propositions about residual-stream gauges: norm-chart census over B_d "
                    "(d = 2..4), general-d derivations, whole blocks, AdamW covariance, and the ceiling "
                    "theorem of raw signed matching with its Monte Carlo check.")
    p.add_argument("--json", action="store_true", help="print the results as JSON (keys: norm_counts, "
                   "propositions, ceiling_mc, timings_s, passed)")
    p.add_argument("--verbose", "-v", action="store_true", help="print every checked step")
    p.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                   help=f"run only these sections ({', '.join(SECTIONS)})")
    p.add_argument("--full-mc", action="store_true",
                   help="larger Monte Carlo inside the report (default: a reduced, fast one)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    c = sub.add_parser("ceiling", help="regenerate the ceiling figures, Monte Carlo table and README section",
                       description="Full Monte Carlo of the three matchers (d in {64, 256, 1024}, positive "
                                   "fraction in {0, .25, .5, .75, 1}) and the finite-SNR sweep; writes PNGs "
                                   "and ceiling_mc.json into --out and the table into the README.")
    c.add_argument("--out", default=os.path.join("theory", "figures"), help="output folder (default theory/figures)")
    c.add_argument("--readme", default=os.path.join("theory", "README.md"),
                   help="README whose generated section is replaced (default theory/README.md)")
    c.add_argument("--no-readme", action="store_true", help="do not touch the README")
    c.add_argument("--d", type=int, nargs="+", default=[64, 256, 1024], help="dimensions (default 64 256 1024)")
    c.add_argument("--seeds", type=int, default=3, help="default 3; the Monte Carlo runs on device with "
                   "16384/d trials per cell, seeded by the first seed")
    c.add_argument("--n", type=int, default=4096, help="tokens for the high-SNR table (default 4096)")
    c.add_argument("--rho", type=float, default=0.9, help="correlation of the high-SNR table (default 0.9)")
    return p


def _print_report(res: dict, verbose: bool) -> None:
    counts = res.get("norm_counts") or {}
    if counts:
        ds = sorted({d for v in counts.values() for d in v}, key=int)
        print("Norm-chart census: elements of B_d admitting equivariant parameters")
        print(f"  {'chart':<20}" + "".join(f"{'d=' + d:>8}" for d in ds))
        from math import factorial

        print(f"  {'|B_d|':<20}" + "".join(f"{2 ** int(d) * factorial(int(d)):>8}" for d in ds))
        for chart, row in counts.items():
            print(f"  {chart:<20}" + "".join(f"{row[d]:>8}" for d in ds))
        print()
    for i, p in enumerate(res["propositions"], 1):
        mark = "PASS" if p["passed"] else "FAIL"
        print(f"[{mark}] {i}. {p['name']}  ({p['status']})")
        print(f"       {p['statement']}")
        for s in p["steps"]:
            if verbose or not s["passed"]:
                flag = "ok " if s["passed"] else "BAD"
                extra = f"  [{s['detail']}]" if s.get("detail") and (verbose or not s["passed"]) else ""
                print(f"         {flag} {s['claim']}{extra}")
    mc = res.get("ceiling_mc")
    if mc:
        print("\nCeiling Monte Carlo of this run (`python -m theory ceiling` writes the full table):")
        print(f"  {'d':>5} {'pos.frac':>8} {'signed':>8} {'perm':>8} {'perm±':>8} {'sign-marg':>10}")
        for r in mc["rows"]:
            print(f"  {r['d']:>5} {r['positive_fraction']:>8.2f} {r['signed']['perm']:>8.3f} "
                  f"{r['permutation']['perm']:>8.3f} {r['permutation']['signed']:>8.3f} "
                  f"{r['sign_marginalized']['signed']:>10.3f}")
    t = res.get("timings_s", {})
    print("\nTimings (s): " + ", ".join(f"{k} {v}" for k, v in t.items()))
    n_ok = sum(p["passed"] for p in res["propositions"])
    print(f"{n_ok} of {len(res['propositions'])} propositions pass.")


def main(argv=None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "ceiling":
        from theory import ceiling as ce

        if args.seeds < 1 or any(d < 2 for d in args.d) or not 0 < args.rho < 1 or args.n < 4:
            print("error: need --seeds >= 1, every --d >= 2, 0 < --rho < 1, --n >= 4", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        data = ce.regenerate(args.out, None if args.no_readme else args.readme, ds=tuple(args.d),
                             seeds=tuple(range(args.seeds)), n=args.n, rho=args.rho)
        print(data["markdown"])
        print(f"wrote {', '.join(data['figures'])} and {os.path.join(args.out, 'ceiling_mc.json')}"
              + ("" if args.no_readme else f"; updated {args.readme}")
              + f" ({time.perf_counter() - t0:.0f} s)")
        return 0
    from theory.report import run_all

    sections = tuple(args.only) if args.only else SECTIONS
    progress = None if args.json else (lambda name: print(f"... {name}", file=sys.stderr, flush=True))
    res = run_all(sections, quick=not args.full_mc, progress=progress)
    if args.json:
        print(json.dumps(res, indent=1, default=float))
    else:
        _print_report(res, args.verbose)
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
