"""Ceiling Monte Carlo throughput: ``gj.simulate.ceiling`` (on device) vs the per-trial loop.

The loop is what ``theory/ceiling.py`` did before: per trial, numpy synthetic data of the same size
(decorrelated, ``Y = ρ G(X) + sqrt(1-ρ²) Z``) and three ``gj.match`` calls (signed, permutation,
sign-marginalized). ``ceiling`` draws the same model in ``jax.random`` and solves all three
objectives on device, with the token sampler (``X, Y`` drawn, one GEMM per trial) and with the
exact Wishart sampler (no tokens), the latter also with a single stream of trials (``workers=1``).
Same d, n, ρ, positive fraction; compile time excluded (one warm-up call with the same static
arguments). Trials per second, best of interleaved rounds.

Usage: python benchmarks/bench_simulate.py [--d 256 1024] [--n 4096] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from _common import NO_ACCELERATOR, best_of_interleaved, load_note, markdown_table, report, rounds_note  # noqa: E402
import gaugejax as gj  # noqa: E402
from theory import ceiling as ce  # noqa: E402

RHO, FRACTION = 0.9, 0.5


def _loop(d, n, trials, seed):
    out = [ce.simulate(d, n, RHO, FRACTION, seed + t) for t in range(trials)]
    return np.mean([r["signed"]["perm"] for r in out])


def _device(d, n, trials, seed, sampler, workers=None):
    r = gj.simulate.ceiling(jax.random.key(seed), d=d, n=n, rho=RHO, positive_fraction=FRACTION, trials=trials,
                            sampler=sampler, workers=workers)
    return float(np.mean(jax.block_until_ready(r)["signed"]["perm"]))


def run(ds, n, rounds, loop_trials, dev_trials):
    rows = []
    streams = gj.simulate._default_workers()
    for d in ds:
        lt, dt = loop_trials[d], dev_trials[d]
        fns = {"loop": lambda d=d, lt=lt: _loop(d, n, lt, 100),
               "tokens": lambda d=d, dt=dt: _device(d, n, dt, 1, "tokens"),
               "wishart1": lambda d=d, dt=dt: _device(d, n, dt, 2, "wishart", workers=1),
               "wishart": lambda d=d, dt=dt: _device(d, n, dt, 2, "wishart")}
        count = {"loop": lt, "tokens": dt, "wishart1": dt, "wishart": dt}
        t0 = time.perf_counter()
        for k in ("tokens", "wishart1", "wishart"):
            fns[k]()  # compile
        compile_s = time.perf_counter() - t0
        best, acc = best_of_interleaved(fns, rounds, order="alternating", results=True)
        tps = {k: count[k] / best[k] for k in fns}
        for k, label in (("loop", "per-trial loop: numpy data + 3 × gj.match (host)"),
                         ("tokens", f"gj.simulate.ceiling, token sampler ({streams} streams, the default)"),
                         ("wishart1", "gj.simulate.ceiling, Wishart sampler, 1 stream (workers=1)"),
                         ("wishart", f"gj.simulate.ceiling, Wishart sampler ({streams} streams, the default)")):
            rows.append([d, n, label, count[k], best[k], tps[k], tps[k] / tps["loop"], acc[k]])
        rows[-1][-1] = f"{acc['wishart']:.3f} (compile of the device variants: {compile_s:.0f} s)"
    cols = ["d", "n", "what", "trials per call", "time (s)", "trials/s", "× loop", "raw signed accuracy (= 0.5)"]
    return markdown_table(cols, rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    loop_trials = {d: max(2, 2048 // d) for d in args.d}
    dev_trials = {d: max(8, 16384 // d) for d in args.d}
    start = load_note()
    table = run(args.d, args.n, args.rounds, loop_trials, dev_trials)
    end = load_note().replace("at start", "at the end")
    setting = (f"ρ = {RHO}, positive fraction {FRACTION}, all three objectives per trial, CPU backend "
               f"({jax.default_backend()}).")
    timing = f"{rounds_note(args.rounds, 'order reversed every other round')}; {start}, {end}."
    streams = ("The ratios compare contenders measured in the same rounds. Streams: `ceiling(workers=)`, concurrent "
               "shares of the trials in threads, one per core by default on a CPU backend; the 1-stream row is the "
               "same program on all the trials in one thread.")
    body = " ".join([setting, timing, streams, NO_ACCELERATOR]) + "\n\n" + table
    return report("simulate", "Ceiling Monte Carlo: on-device simulate vs the per-trial loop", body)


if __name__ == "__main__":
    sys.exit(main())
