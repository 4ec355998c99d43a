"""``gaugejax reproduce [EXPERIMENT ...] --out results/``: rerun the paper's experiments and write a report.

Run the reproduction experiments of the repository's experiments/ package (all by default; they need
a checkout of the repository, not only the installed package) and write REPORT.md, results.json and
PNG plots to --out. Each experiment is seeded and timed; --quick runs reduced sizes (a few minutes
on 2 CPU cores). An unknown EXPERIMENT name lists the known ones.

The experiments are not part of the installed package: they live in the repository's top-level
``experiments/`` package and need a checkout. This command finds it (already importable, in the
current folder, or beside an editable install of ``gaugejax``) and imports it only when run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import sys
from pathlib import Path

from gaugejax.cli._args import about, command

NOT_INSTALLED = ("the experiments are a repository feature, not part of the pip package: clone the gaugejax "
                 "repository and run `gaugejax reproduce` from its root")


def register(sub) -> argparse.ArgumentParser:
    p = command(
        sub, "reproduce", run, help="rerun the paper's experiments (needs a repository checkout) and write REPORT.md",
        description=about(__doc__))
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT", help="experiments to run (default: all)")
    p.add_argument("--out", "-o", default="results", help="output folder (default: results)")
    p.add_argument("--quick", action="store_true", help="reduced sizes (the CI run)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    from gaugejax.cli.common import add_overwrite_arg

    add_overwrite_arg(p)
    return p


def _checkout_candidates() -> list[Path]:
    import gaugejax

    return [Path.cwd(), Path(gaugejax.__file__).resolve().parents[1]]


def load_experiments():
    """The repository's ``experiments`` package, or a :class:`GaugeJaxError` saying how to get it."""
    from gaugejax.errors import GaugeJaxError

    try:
        return importlib.import_module("experiments")
    except ModuleNotFoundError as e:
        if e.name != "experiments":
            raise
    for root in _checkout_candidates():
        if (root / "experiments" / "__init__.py").is_file() and (root / "gaugejax").is_dir():
            sys.path.insert(0, str(root))
            return importlib.import_module("experiments")
    raise GaugeJaxError(NOT_INSTALLED)


def is_report_folder(path) -> bool:
    """A report folder written before outputs carried a manifest: REPORT.md, results.json and PNGs only."""
    p = Path(path)
    names = [q.name for q in p.iterdir()]
    if "REPORT.md" not in names or any(not (p / n).is_file() or not (n in ("REPORT.md", "results.json")
                                                                      or n.endswith(".png")) for n in names):
        return False
    with open(p / "REPORT.md", "rb") as f:
        return f.read(10) == b"# gaugejax"


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

    exp = load_experiments()
    unknown = [e for e in args.experiments if e not in exp.EXPERIMENTS]
    if unknown:
        raise GaugeJaxError(f"unknown experiment {unknown[0]!r}; choose from {', '.join(exp.EXPERIMENTS)}")
    if args.seed < 0:
        raise GaugeJaxError("--seed must be non-negative")
    from gaugejax.atomic import atomic_path
    from gaugejax.cli.common import check_outputs, output

    # checked before the (long) run; the report is built in a temporary folder and renamed into place
    check_outputs(args, [output(args.out, directory=True, recognise=is_report_folder)])
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
    with atomic_path(args.out, directory=True, overwrite=args.overwrite, recognise=is_report_folder) as tmp:
        results = exp.run_experiments(args.experiments or None, out=tmp, quick=args.quick, seed=args.seed,
                                      progress=_progress, on_result=on_result, command=command)
    print(os.path.join(args.out, "REPORT.md"))
    return 0 if results else 2
