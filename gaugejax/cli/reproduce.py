"""``gaugejax reproduce [EXPERIMENT ...] --out results/``: rerun the seed's figures and write a report."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys


def register(sub) -> argparse.ArgumentParser:
    from gaugejax.reproduce import EXPERIMENTS

    p = sub.add_parser(
        "reproduce", help="rerun the seed's experiments and write REPORT.md with tables and plots",
        description="Run the reproduction experiments (all by default) and write REPORT.md, results.json and PNG "
        "plots to --out. Experiments: " + ", ".join(EXPERIMENTS) + ". Each is seeded and timed; --quick runs "
        "reduced sizes (a few minutes on 2 CPU cores).")
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT", help="experiments to run (default: all)")
    p.add_argument("--out", "-o", default="results", help="output folder (default: results)")
    p.add_argument("--quick", action="store_true", help="reduced sizes (the CI run)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.set_defaults(func=run)
    return p


@contextlib.contextmanager
def _progress(description: str, total: int | None):
    from gaugejax.cli.common import progress

    with progress(description, total) as advance:
        class _Task:
            def advance(self, n: int = 1) -> None:
                advance(n)

        yield _Task()


def run(args: argparse.Namespace) -> int:
    from gaugejax.cli.common import console
    from gaugejax.errors import GaugeJaxError
    from gaugejax.reproduce import EXPERIMENTS, run_experiments

    unknown = [e for e in args.experiments if e not in EXPERIMENTS]
    if unknown:
        raise GaugeJaxError(f"unknown experiment {unknown[0]!r}; choose from {', '.join(EXPERIMENTS)}")
    if args.seed < 0:
        raise GaugeJaxError("--seed must be non-negative")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise GaugeJaxError(f"--out {args.out} exists and is not a folder")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    con = console(stderr=True)

    def on_result(r):
        if r.skipped:
            con.print(f"[yellow]skipped[/yellow] {r.name}: {r.skipped}")
        else:
            con.print(f"[green]done[/green] {r.name} in {r.wall_s:.1f} s")

    command = "gaugejax " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else ""
    if not command:
        parts = ["gaugejax reproduce", *args.experiments, "--out", args.out]
        command = " ".join(parts + (["--quick"] if args.quick else []) + ([f"--seed {args.seed}"] if args.seed else []))
    results = run_experiments(args.experiments or None, out=args.out, quick=args.quick, seed=args.seed,
                              progress=_progress, on_result=on_result, command=command)
    print(os.path.join(args.out, "REPORT.md"))
    return 0 if results else 2
