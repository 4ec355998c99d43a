"""Reproduce every experiment of the report (the same code as ``gaugejax reproduce``).

Usage:
  python examples/reproduce_all.py [--quick] [--out DIR] [--seed N]

The committed results/REPORT.md was written by ``gaugejax reproduce --out results``.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/ is part of the checkout, not of the pip package
from experiments import run_experiments  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="reduced sizes (a few minutes on 2 CPU cores)")
    p.add_argument("--out", default="results")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    results = run_experiments(None, out=a.out, quick=a.quick, seed=a.seed,
                              command=f"python examples/reproduce_all.py --out {a.out}" + (" --quick" if a.quick else ""),
                              on_result=lambda r: print(f"{r.name}: {r.skipped or f'{r.wall_s:.1f} s'}", flush=True))
    print(f"{a.out}/REPORT.md")
