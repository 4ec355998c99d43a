"""Assignment solvers side by side: gaugejax ``auto`` vs scipy, lap.lapjv and optax's Hungarian.

Matrix families (float32, maximised):

* ``random``: i.i.d. U(0, 1).
* ``near``: the sign-marginalized score ``|C|`` of a near-gauge correlation matrix: gauge entries
  ``U(0.3, 1)`` plus ``N(0, 0.05²)`` noise everywhere (what ``match`` sees for related checkpoints).
* ``hard``: the raw signed score ``C`` of the same with half the signs negative (what the ``signed``
  matcher sees): the row argmax conflicts almost everywhere, so no shortcut applies.

Baseline "argmax pass": ``np.argmax(S, axis=1)`` over the same matrix. optax's Hungarian is
``O(d³)`` in a JAX ``while_loop``; it is measured up to ``--optax-max-d`` and extrapolated with the
exponent fitted on the measured sizes (marked "extrapolated"). scipy / lapjv runs predicted (from
the smaller sizes) to exceed ``--timeout`` seconds are skipped and marked.

Usage: python benchmarks/bench_assignment.py [--quick] [--d 1024 2048 4096 8192] [--timeout 120]
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import load_note, markdown_table, write_result  # noqa: E402
from gaugejax import assignment  # noqa: E402


def make(kind: str, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.random((d, d), dtype=np.float32)
    s = rng.standard_normal((d, d), dtype=np.float32)
    s *= 0.05
    perm = rng.permutation(d)
    vals = rng.uniform(0.3, 1.0, d).astype(np.float32)
    if kind == "hard":
        vals *= np.where(rng.random(d) < 0.5, -1, 1).astype(np.float32)
    s[perm, np.arange(d)] += vals
    if kind == "near":
        np.abs(s, out=s)
    return s


def _time(fn, repeat):
    best, out = math.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _predict(history: dict[int, float], d: int) -> float:
    """Time at ``d`` from the two largest measured sizes (power law), else cubic from one."""
    ds = sorted(history)
    if not ds:
        return 0.0
    if len(ds) == 1:
        return history[ds[0]] * (d / ds[0]) ** 3
    a, b = ds[-2], ds[-1]
    k = math.log(max(history[b], 1e-9) / max(history[a], 1e-9)) / math.log(b / a)
    k = min(max(k, 2.0), 3.5)
    return history[b] * (d / b) ** k


@functools.lru_cache(maxsize=None)
def _optax_fn():
    import jax
    import optax

    return jax.jit(lambda c: optax.assignment.hungarian_algorithm(c))


def _optax_solve(s: np.ndarray, sj) -> float:
    """Runs optax's Hungarian on the device copy ``sj`` of ``s`` (compiled beforehand); its objective."""
    import jax

    i, j = jax.block_until_ready(_optax_fn()(-sj))
    return float(s[np.asarray(i), np.asarray(j)].astype(np.float64).sum())


def run(ds, kinds, timeout, repeat):
    import jax

    rows = []
    solvers = ("scipy", "lapjv", "optax")
    history = {(k, m): {} for k in kinds for m in solvers}
    for d in ds:
        for kind in kinds:
            s = make(kind, d, seed=d)
            t_arg, _ = _time(lambda: np.argmax(s, axis=1), repeat)
            t_auto, a_auto = _time(lambda: assignment.solve(s), repeat)
            res = {}
            for m in solvers:
                pred = _predict(history[(kind, m)], d)
                if pred > timeout:
                    res[m] = (pred, None, f"{m} extrapolated ({pred:.0f} s predicted > {timeout:.0f} s timeout)")
                    continue
                reps = 1 if pred > 5 else repeat
                if m == "optax":
                    sj = jax.device_put(s)
                    jax.block_until_ready(_optax_fn()(-sj))  # compile outside the timing
                    t, obj = _time(lambda: _optax_solve(s, sj), reps)
                    del sj
                else:
                    t, a = _time(lambda: assignment.solve(s, method=m), reps)
                    obj = a.objective
                history[(kind, m)][d] = t
                res[m] = (t, obj, "")
            exact = [res[m][1] for m in ("scipy", "lapjv") if res[m][1] is not None]
            same = all(abs(a_auto.objective - o) <= 1e-9 * max(1.0, abs(o)) for o in exact) if exact else "n/a"
            fastest = min([res[m][0] for m in ("scipy", "lapjv") if res[m][1] is not None] or [math.nan])
            rows.append([
                d, kind, a_auto.solver, t_arg, t_auto, t_auto / t_arg,
                res["scipy"][0], res["lapjv"][0], res["optax"][0],
                res["scipy"][0] / t_auto, fastest / t_auto, same,
                "; ".join(r[2] for r in res.values() if r[2]),
            ])
            del s
    cols = ["d", "matrix", "auto path", "argmax pass (s)", "auto (s)", "auto / argmax", "scipy (s)",
            "lapjv (s)", "optax (s)", "scipy / auto", "min(scipy, lapjv) / auto", "same optimum", "notes"]
    return markdown_table(cols, rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="d ∈ {1024, 2048}, 1 repeat")
    p.add_argument("--d", type=int, nargs="+", default=None)
    p.add_argument("--kinds", nargs="+", default=["near", "random", "hard"])
    p.add_argument("--timeout", type=float, default=120.0, help="skip scipy/lapjv runs predicted slower (s)")
    p.add_argument("--repeat", type=int, default=None)
    args = p.parse_args(argv)
    ds = args.d or ([1024, 2048] if args.quick else [1024, 2048, 4096, 8192])
    repeat = args.repeat or (1 if args.quick else 3)
    table = run(ds, args.kinds, args.timeout, repeat)
    body = (f"Best of {repeat} runs (a single run where a solver is predicted to take > 5 s); {load_note()}. "
            "`auto` = `gaugejax.assignment.solve` (row-argmax certificate, small conflict blocks, else "
            f"`{assignment.fastest_exact_solver()}`). Ratios > 1 in the `/ auto` columns mean auto is faster. "
            "'same optimum': auto's objective equals every exact solver that ran to 1e-9 relative.\n\n"
            "optax: compiled once per shape outside the timing (float32, on CPU). Solvers predicted (power law "
            "fitted on the two largest measured sizes, exponent clipped to [2, 3.5]) to exceed the timeout are "
            "not run; their cell holds the prediction and the notes say so.\n\n" + table)
    print(body)
    path = write_result("assignment", "Assignment solvers", body)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
