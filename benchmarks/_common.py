"""Shared helpers of the benchmarks: interleaved timing, markdown tables and result files."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

RESULTS = Path(__file__).parent / "results"

PAUSE_S = 0.1
NO_ACCELERATOR = "No GPU/TPU figures: none was available to this run."


def rounds_note(rounds: int, order: str) -> str:
    """How :func:`best_of_interleaved` took the timings, for a result's header.

    Example:
      >>> rounds_note(2, "shuffled order")
      'Best of 2 interleaved rounds (shuffled order, a 0.1 s pause before each call)'
    """
    return f"Best of {rounds} interleaved rounds ({order}, a {PAUSE_S} s pause before each call)"
"""Pause before every timed call: XLA's CPU thread pool keeps spinning briefly after a JAX call and
would otherwise slow whatever runs next (measured: up to 2× on a following numpy/scipy call)."""


class Timings(NamedTuple):
    """Best wall time (s) of each contender, and the result of its last timed call (if kept)."""

    best: dict
    out: dict


def best_of_interleaved(fns: dict, rounds: int, *, order: str = "shuffled", seed: int = 0,
                        warmup: int = 0, results: bool = False) -> Timings:
    """Best time of each function over ``rounds`` interleaved rounds, with a pause before each call.

    Every round calls every function once, so background load and the wind-down of the previous call
    hit every contender alike; the order changes from round to round: ``"shuffled"`` (a shuffle per
    round from ``random.Random(seed)``) or ``"alternating"`` (the order of ``fns``, reversed every
    other round). ``warmup`` untimed calls of each function go first. Each function must block until
    its result is ready. With ``results`` the last result of each is kept and returned (off by
    default: large results held across rounds would change the memory the others run in).

    Examples:
      >>> t = best_of_interleaved({"a": lambda: 1, "b": lambda: 2}, 2, order="alternating", results=True)
      >>> sorted(t.best), t.out
      (['a', 'b'], {'a': 1, 'b': 2})
    """
    if order not in ("shuffled", "alternating"):
        raise ValueError(f"order must be 'shuffled' or 'alternating', not {order!r}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {k: float("inf") for k in fns}
    out = {}
    keys = list(fns)
    rng = random.Random(seed)
    for r in range(rounds):
        if order == "shuffled":
            rng.shuffle(keys)
        for k in (keys if order == "shuffled" or r % 2 == 0 else keys[::-1]):
            time.sleep(PAUSE_S)
            t = time.perf_counter()
            res = fns[k]()
            best[k] = min(best[k], time.perf_counter() - t)
            if results:
                out[k] = res
            del res
    return Timings(best, out)


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


def write_text(name: str, text: str) -> Path:
    """Writes ``text`` (plus a final newline) to ``results/NAME.md`` atomically; the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)
    return path


def write_result(name: str, title: str, body: str) -> Path:
    """Writes ``body`` under a title and a machine line to ``results/NAME.md``; the path."""
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return write_text(name, f"# {title}\n\nMachine: {machine()}. Run {stamp}.\n\n{body}")


def report(name: str, title: str, body: str) -> int:
    """Prints ``body``, writes it as ``results/NAME.md`` (:func:`write_result`) and says where; exit status 0."""
    print(body)
    print(f"\nwrote {write_result(name, title, body)}")
    return 0


def publish(name: str, lines: list[str]) -> None:
    """Prints the ``lines`` of a header-less result and writes them to ``results/NAME.md``."""
    text = "\n".join(lines)
    print(text)
    write_text(name, text)


@contextlib.contextmanager
def scratch(path: str | Path) -> Iterator[Path]:
    """A fresh, empty directory at ``path`` (whatever was there is removed), removed again on exit."""
    work = Path(path)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
