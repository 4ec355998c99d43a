"""Statistics throughput vs the best plain GEMM (numpy and JAX), and gj.match vs a naive pipeline.

The work of one cross-correlation update is one ``Xcᵀ Yc`` GEMM; the floor is the faster of a plain
numpy (BLAS) ``Xᵀ Y`` and a jitted JAX ``Xᵀ Y`` over the same n × d float32 inputs. ``stats.update``
is measured with both backends: the host engine (``gaugejax.hoststats``: pilot shift, cache-sized
chunks, in-place OpenBLAS GEMM on one worker thread per core; the CPU default) and the jitted JAX
update. Second table: ``gj.match`` (sign-marginalized) against numpy standardise + ``Xᵀ Y`` +
``scipy.optimize.linear_sum_assignment`` on the same near-gauge pair.

Usage: python benchmarks/bench_stats.py [--quick] [--n 16384] [--d 1024 2048 4096]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from _common import best_of_interleaved, load_note, markdown_table, report  # noqa: E402
from gaugejax import hoststats, stats  # noqa: E402


def _stats_fn(xs, ys, d, backend):
    def f():
        stats.set_gemm_backend(backend)
        try:
            s = stats.init(d, backend=backend)
            for xb, yb in zip(xs, ys):
                s = stats.update(s, xb, yb)
            return jax.block_until_ready(s)
        finally:
            stats.set_gemm_backend("auto")
    return f


def run(n: int, ds: list[int], batch_sizes: list[int], repeat: int) -> str:
    gemm = jax.jit(lambda x, y: x.T @ y)
    rows = []
    for d in ds:
        rng = np.random.default_rng(d)
        x = (rng.standard_normal((n, d), dtype=np.float32) + 3.0)
        y = (rng.standard_normal((n, d), dtype=np.float32) - 1.0)
        xj, yj = jax.device_put(x), jax.device_put(y)
        flops = 2.0 * n * d * d
        fns = {"jax": lambda: gemm(xj, yj).block_until_ready(), "numpy": lambda: x.T @ y}
        for b in batch_sizes:
            if b > n:
                continue
            xs = [x[i:i + b] for i in range(0, n, b)]
            ys = [y[i:i + b] for i in range(0, n, b)]
            fns[("numpy", b)] = _stats_fn(xs, ys, d, "numpy")
            fns[("jax", b)] = _stats_fn(xs, ys, d, "jax")
        t = best_of_interleaved(fns, repeat, warmup=1).best
        floor = min(t["jax"], t["numpy"])
        rows.append([d, "plain GEMM Xᵀ Y, JAX (jit), one call", n, t["jax"], flops / t["jax"] / 1e9, floor / t["jax"]])
        rows.append([d, "plain GEMM Xᵀ Y, numpy (BLAS), one call", n, t["numpy"], flops / t["numpy"] / 1e9,
                     floor / t["numpy"]])
        for b in batch_sizes:
            if ("numpy", b) not in t:
                continue
            for k, label in (("numpy", "stats.update, host engine (the CPU default)"), ("jax", "stats.update, JAX GEMM")):
                v = t[(k, b)]
                rows.append([d, f"{label}, batches of {b}", n, v, flops / v / 1e9, floor / v])
        del fns
    cols = ["d", "what", "tokens", "time (s)", "GFLOP/s", "throughput / best plain GEMM"]
    return markdown_table(cols, rows)


def match_vs_naive(n: int, d: int, repeat: int) -> str:
    import warnings

    from scipy.optimize import linear_sum_assignment

    import gaugejax as gj

    rng = np.random.default_rng(0)
    g = gj.SignedPermutation.random(0, d)
    x = rng.standard_normal((n, d), dtype=np.float32) * rng.uniform(0.5, 3, d).astype(np.float32) + 2.0
    y = (0.9 * g.apply(x) + 0.5 * rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)

    def naive():
        xs = (x - x.mean(0)) / x.std(0)
        ys = (y - y.mean(0)) / y.std(0)
        c = xs.T @ ys / n
        r, cc = linear_sum_assignment(np.abs(c), maximize=True)
        return cc

    def ours():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return gj.match(x, y, warn=False)

    t = best_of_interleaved({"naive": naive, "match": ours}, repeat, warmup=1).best
    ok = ours().gauge == g
    rows = [["numpy standardise + Xᵀ Y + scipy linear_sum_assignment(|C|)", t["naive"], 1.0],
            [f"gj.match (sign-marginalized, diagnostics; GEMM backend {stats.gemm_backend()})", t["match"],
             t["match"] / t["naive"]]]
    return (f"n = {n}, d = {d}, near-gauge pair (Y = 0.9·G(X) + noise; gj.match recovers the gauge: {ok}).\n\n"
            + markdown_table(["pipeline", "time (s)", "time / naive"], rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="d ∈ {1024, 2048}, 2 repeats")
    p.add_argument("--n", type=int, default=16384)
    p.add_argument("--d", type=int, nargs="+", default=None)
    p.add_argument("--repeat", type=int, default=None)
    args = p.parse_args(argv)
    ds = args.d or ([1024, 2048] if args.quick else [1024, 2048, 4096])
    repeat = args.repeat or (2 if args.quick else 5)
    table = run(args.n, ds, [4096, args.n], repeat=repeat)
    mt = match_vs_naive(8192, 2048, repeat=repeat)
    body = ("Streaming statistics (`gaugejax.stats.update`, pure, float32) over n tokens vs the best plain "
            "GEMM of the same shape (numpy/OpenBLAS `Xᵀ Y` or jitted JAX `Xᵀ Y`, one call over all n tokens). "
            f"Host engine: {hoststats.workers()} worker threads, chunks of {hoststats.CHUNK_ROWS} tokens. "
            "2·n·d² flops. Best of "
            f"{repeat} interleaved rounds (shuffled order, a pause before each call); {load_note()}; the machine is "
            "shared with other jobs (absolute figures inflated, ratios measured in the same rounds). numpy run "
            "without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE when the caller unsets them. No GPU figures: none was "
            "available.\n\n" + table + "\n\n## gj.match vs the naive pipeline\n\n" + mt)
    return report("stats", "Statistics throughput vs the GEMM floor", body)


if __name__ == "__main__":
    sys.exit(main())
