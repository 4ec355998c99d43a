"""Shared helpers of the benchmarks: timing and markdown tables."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).parent / "results"


def timeit(fn: Callable[[], object], *, repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` in seconds over ``repeat`` runs (``fn`` must block until its result
    is ready). The minimum is the least noisy estimate on a shared machine."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


PAUSE_S = 0.1
"""Pause before every timed call: XLA's CPU thread pool keeps spinning briefly after a JAX call and
would otherwise slow whatever runs next (measured: up to 2× on a following numpy/scipy call)."""


def interleaved(fns: dict[str, Callable[[], object]], *, repeat: int = 3, warmup: int = 1,
                seed: int = 0) -> dict[str, float]:
    """Best time of each function over interleaved rounds in a shuffled order per round (background
    load and thread-pool wind-down hit every contender alike), with a pause before each call."""
    import random

    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {k: float("inf") for k in fns}
    order = list(fns)
    rng = random.Random(seed)
    for _ in range(repeat):
        rng.shuffle(order)
        for k in order:
            time.sleep(PAUSE_S)
            t = time.perf_counter()
            fns[k]()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def load_note() -> str:
    """The 1-minute load average (the machine is shared; say so next to the numbers)."""
    try:
        return f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return ""


def machine() -> str:
    import jax
    import numpy as np

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
            f"numpy {np.__version__}, jax {jax.__version__} ({jax.default_backend()})")


def markdown_table(columns: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            if v != v:
                return "—"
            return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e3 else f"{v:.3f}".rstrip("0").rstrip(".")
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write_result(name: str, title: str, body: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    stamp = time.strftime("%Y-%m-%d %H:%M")
    path.write_text(f"# {title}\n\nMachine: {machine()}. Run {stamp}.\n\n{body}\n")
    return path
