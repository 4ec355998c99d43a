"""Reproduction experiments (``gaugejax reproduce``): eight seeded experiments and a report.

A repository feature, not part of the installed ``gaugejax`` package: it runs from a checkout
(``gaugejax reproduce`` finds it there) and uses only the library's public API (see README.md).
Each experiment is a module with ``NAME``, ``TITLE`` and ``run(ctx) -> Result``:

==============  ==========================================================================
``ceiling``      signed-matching ceiling on synthetic decorrelated models (three matchers)
``trajectories`` cross-run coordinate recovery: composed local gauges vs endpoint vs via base
``sae``          SAE on SmolLM2-135M transported under B_d and S_d (NMSE, explained variance)
``steering``     sentiment / refusal steering on SmolLM2 transported under B_d and S_d
``merges``       merging two fine-tuned models living in different charts
``optimizer``    resumed AdamW training with signed / permutation-only / no state transport
``audits``       gauge sweep of an index-level claim on SmolLM2
``layernorm``    LayerNorm control on the real all-MiniLM-L6-v2
==============  ==========================================================================

Example:
  >>> from experiments import run_experiments
  >>> results = run_experiments(["ceiling"], out="results", quick=True)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from experiments.common import Context, Result, SeedRow, Table

EXPERIMENTS = ("ceiling", "trajectories", "sae", "steering", "merges", "optimizer", "audits", "layernorm")
"""Experiment names in report order."""

__all__ = ["EXPERIMENTS", "Context", "Result", "SeedRow", "Table", "run_experiment", "run_experiments",
           "experiment_module"]


def experiment_module(name: str):
    """The module implementing experiment ``name``."""
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"experiments.{name}")


def run_experiment(name: str, ctx: Context) -> Result:
    """Runs one experiment and records its wall time.

    A missing optional input (a model package not installed) gives a result with ``skipped`` set;
    any other error propagates.
    """
    mod = experiment_module(name)
    start = time.perf_counter()
    try:
        res = mod.run(ctx)
    except FileNotFoundError as e:
        res = Result(name, mod.TITLE, seed=ctx.seed, skipped=str(e))
    res.wall_s = time.perf_counter() - start
    return res


def run_experiments(names: Sequence[str] | None = None, *, out: str | Path = "results", quick: bool = False,
                    seed: int = 0, progress: Callable | None = None,
                    on_result: Callable[[Result], Any] | None = None, command: str = "") -> list[Result]:
    """Runs experiments in report order and writes ``REPORT.md``, ``results.json`` and the PNGs to ``out``.

    Args:
      names: experiments to run (default all), any order; they run in :data:`EXPERIMENTS` order.
      out: output folder.
      quick: reduced sizes (the CI run).
      seed: base seed.
      progress: ``progress(description, total)`` context-manager factory (see :class:`Context`).
      on_result: called with each result as it finishes.
      command: the command line, quoted in the report.
    """
    from experiments.report import write_report

    names = list(EXPERIMENTS if not names else names)
    for n in names:
        experiment_module(n)  # fail fast on unknown names
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, quick=quick, seed=seed, **({"progress": progress} if progress else {}))
    results = []
    start = time.perf_counter()
    for name in [n for n in EXPERIMENTS if n in names]:
        res = run_experiment(name, ctx)
        results.append(res)
        if on_result:
            on_result(res)
    write_report(results, out, quick=quick, seed=seed, total_s=time.perf_counter() - start, command=command)
    return results
