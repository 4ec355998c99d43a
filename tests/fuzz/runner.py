"""The parent side of the fuzz harness: a worker process fed one case at a time, and the tallies.

:class:`Worker` starts ``worker.py``, sends a case, waits at most :data:`HANG_SECONDS` for the
answer and kills and restarts the worker when it hangs or dies. :func:`check` turns an answer into
the harness's verdict: success, or one :class:`~gaugejax.errors.GaugeJaxError` line; never another
exception, a hang, or a peak above :func:`budget` (a small multiple of the bytes the case's files
really hold). :data:`TALLY` counts outcomes per reader for the closing report.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

EXPLORE = os.environ.get("GAUGEJAX_FUZZ") == "explore"
"""The exploring profile: random (not derandomized) cases, ten times as many as CI's."""
SCALE = float(os.environ.get("GAUGEJAX_FUZZ_SCALE", "10" if EXPLORE else "1"))
"""Cases per seed relative to CI's (``GAUGEJAX_FUZZ_SCALE=0.1`` for a quick look)."""
HANG_SECONDS = 30.0
"""A case still running after this is a hang (the harness's files are at most a few MiB; on an idle
machine every case ends in well under a second)."""
BUDGET_FACTOR = 8
BUDGET_SLACK = 96 * 2**20
"""Peak growth allowed: ``BUDGET_FACTOR`` x the bytes present + ``BUDGET_SLACK`` (interpreter
bookkeeping, a model's parameters copied once into JAX arrays, dequantized GGUF weights)."""
WORKER = Path(__file__).with_name("worker.py")
ROOT = WORKER.parents[2]

TALLY: dict[str, Counter] = defaultdict(Counter)
"""reader → Counter of ``run``, ``refused``, ``accepted``, ``traceback``, ``over_budget``, ``hang``."""
WORST: dict[str, dict] = defaultdict(lambda: {"seconds": 0.0, "peak": 0, "ratio": 0.0})
"""reader → the slowest case's seconds, the largest peak growth and peak / bytes present."""


def bytes_present(path: str | os.PathLike) -> int:
    """Bytes a file or folder really holds on disk (a sparse file counts its allocated blocks)."""
    p = Path(path)
    files = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file() and not q.is_symlink()]
    return sum(min(q.stat().st_size, q.stat().st_blocks * 512) for q in files)


def budget(present: int) -> int:
    """Largest peak growth a case may cause."""
    return BUDGET_FACTOR * present + BUDGET_SLACK


class Worker:
    """A ``worker.py`` process; restarted after a hang or a crash."""

    def __init__(self, warmup: list[dict], scratch: Path):
        self.warmup_file = scratch / "warmup.json"
        self.warmup_file.write_text(json.dumps(warmup))
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
        self.proc = subprocess.Popen([sys.executable, str(WORKER), str(self.warmup_file)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        ready = self._answer(600.0)
        if not ready or not ready.get("ready"):
            raise RuntimeError("the fuzz worker did not start")

    def _answer(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            line = self.proc.stdout.readline()
            if not line:
                return None  # the worker died
            if line.startswith(b"@@"):
                return json.loads(line[2:])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def run(self, target: str, path: str, out: str) -> dict:
        """The worker's answer, or ``{"outcome": "hang" | "died"}``."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        start = time.monotonic()
        self.proc.stdin.write((json.dumps({"target": target, "path": path, "out": out}) + "\n").encode())
        self.proc.stdin.flush()
        answer = self._answer(HANG_SECONDS)
        if answer is None:
            hung = self.proc.poll() is None
            self.stop()
            self.restarts += 1
            return {"outcome": "hang" if hung else "died", "message": "", "peak": 0,
                    "seconds": time.monotonic() - start}
        return answer


def check(reader: str, answer: dict, present: int, *, tally: bool = True) -> str | None:
    """Tallies an answer (unless ``tally`` is false); returns why it breaks the harness's rule, or ``None``."""
    t, w = (TALLY[reader], WORST[reader]) if tally else (Counter(), {"seconds": 0.0, "peak": 0, "ratio": 0.0})
    t["run"] += 1
    w["seconds"] = max(w["seconds"], answer["seconds"])
    w["peak"] = max(w["peak"], answer["peak"])
    w["ratio"] = max(w["ratio"], answer["peak"] / max(present, 1))
    outcome = answer["outcome"]
    if outcome in ("accepted", "refused"):
        t[outcome] += 1
        if answer["peak"] > budget(present):
            t["over_budget"] += 1
            return f"peak growth {answer['peak']} bytes over the budget {budget(present)} ({present} bytes present)"
        return None
    t["traceback" if outcome in ("traceback", "died") else "hang"] += 1
    return f"{outcome}: {answer['message']}"


def report() -> str:
    """The per-reader table of the closing note."""
    head = (f"{'reader':<24}{'run':>6}{'refused':>9}{'accepted':>9}{'tracebacks':>11}{'over budget':>12}"
            f"{'hangs':>6}{'max s':>8}{'max MiB':>8}")
    rows = [head]
    for reader in sorted(TALLY):
        t, w = TALLY[reader], WORST[reader]
        rows.append(f"{reader:<24}{t['run']:>6}{t['refused']:>9}{t['accepted']:>9}{t['traceback']:>11}"
                    f"{t['over_budget']:>12}{t['hang']:>6}{w['seconds']:>8.2f}{w['peak'] / 2**20:>8.1f}")
    total = sum(t["run"] for t in TALLY.values())
    return "\n".join(rows + [f"{total} cases"])
