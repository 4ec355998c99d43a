"""Fuzz harness fixtures: the seed files, the worker process, the profile, the closing report.

Profiles (:data:`runner.EXPLORE`): CI runs a bounded, derandomized subset (a fixed seed);
``GAUGEJAX_FUZZ=explore`` draws fresh random cases, ten times as many. The per-reader table
(:func:`runner.report`) is printed at the end of the session and, when ``GAUGEJAX_FUZZ_REPORT``
names a file, written there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import runner  # noqa: E402
import seeds  # noqa: E402


@pytest.fixture(scope="session")
def fuzz_seeds(tmp_path_factory) -> Path:
    return seeds.build(tmp_path_factory.mktemp("fuzz_seeds"))


@pytest.fixture(scope="session")
def fuzz_worker(fuzz_seeds, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("fuzz_worker")
    warmup = [{"target": t, "path": str(fuzz_seeds / s.entry), "out": str(scratch / f"{name}_{t}")}
              for name, s in seeds.SEEDS.items() for t in s.targets]
    for case in warmup:
        Path(case["out"]).mkdir()
    worker = runner.Worker(warmup, scratch)
    yield worker
    worker.stop()


def pytest_terminal_summary(terminalreporter):
    if not runner.TALLY:
        return
    text = runner.report()
    terminalreporter.write_sep("=", "fuzz harness: cases per reader")
    terminalreporter.write_line(text)
    if os.environ.get("GAUGEJAX_FUZZ_REPORT"):
        Path(os.environ["GAUGEJAX_FUZZ_REPORT"]).write_text(text + "\n")
