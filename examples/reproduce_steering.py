"""Reproduce one experiment of the report: sentiment and refusal steering on SmolLM2-135M transported under B_d and S_d.

Runs the same code as ``gaugejax reproduce steering`` and writes REPORT.md, results.json and the
plots to --out (default ``results_steering``).

Usage:
  python examples/reproduce_steering.py [--quick] [--out DIR] [--seed N]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/ is part of the checkout, not of the pip package
from experiments import run_experiments  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="reduced sizes")
    p.add_argument("--out", default="results_steering")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    (result,) = run_experiments(["steering"], out=a.out, quick=a.quick, seed=a.seed,
                                command=f"python examples/reproduce_steering.py --out {a.out}" + (" --quick" if a.quick else ""))
    print(result.skipped or "\n".join(f"{k}: {v}" for k, v in result.claims.items()))
    print(f"{a.out}/REPORT.md")
