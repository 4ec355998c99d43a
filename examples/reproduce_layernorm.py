"""Reproduce one experiment of the report: the LayerNorm control on the real all-MiniLM-L6-v2.

Runs the same code as ``gaugejax reproduce layernorm`` and writes REPORT.md, results.json and the
plots to --out (default ``results_layernorm``).

Usage:
  python examples/reproduce_layernorm.py [--quick] [--out DIR] [--seed N]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/ is part of the checkout, not of the pip package
from experiments import run_experiments  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="reduced sizes")
    p.add_argument("--out", default="results_layernorm")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    (result,) = run_experiments(["layernorm"], out=a.out, quick=a.quick, seed=a.seed,
                                command=f"python examples/reproduce_layernorm.py --out {a.out}" + (" --quick" if a.quick else ""))
    print(result.skipped or "\n".join(f"{k}: {v}" for k, v in result.claims.items()))
    print(f"{a.out}/REPORT.md")
