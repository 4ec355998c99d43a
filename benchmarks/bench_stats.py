"""Statistics throughput vs the plain GEMM floor (same shapes, same run).

The work of one cross-correlation update is one ``Xcᵀ Yc`` GEMM; the floor is a plain jitted JAX
``Xᵀ Y`` (and numpy's BLAS ``Xᵀ Y``) over the same n × d float32 inputs. Reported: time, GFLOP/s
(2·n·d² flops) and the ratio of statistics throughput to the JAX floor.

Usage: python benchmarks/bench_stats.py [--quick] [--n 16384] [--d 1024 2048 4096]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from _common import interleaved, load_note, markdown_table, write_result  # noqa: E402
from gaugejax import stats  # noqa: E402


def run(n: int, ds: list[int], batch_sizes: list[int], repeat: int) -> str:
    gemm = jax.jit(lambda x, y: x.T @ y)
    gemm_acc = jax.jit(lambda c, x, y: c + x.T @ y, donate_argnums=0)
    rows = []
    for d in ds:
        rng = np.random.default_rng(d)
        x = (rng.normal(size=(n, d)) + 3.0).astype(np.float32)
        y = (rng.normal(size=(n, d)) - 1.0).astype(np.float32)
        xj, yj = jax.device_put(x), jax.device_put(y)
        flops = 2.0 * n * d * d
        fns = {"jax": lambda: gemm(xj, yj).block_until_ready(), "numpy": lambda: x.T @ y}
        for b in batch_sizes:
            if b > n:
                continue
            xs = [jax.device_put(x[i:i + b]) for i in range(0, n, b)]
            ys = [jax.device_put(y[i:i + b]) for i in range(0, n, b)]

            def acc(xs=xs, ys=ys):
                s = stats.init(d)
                for xb, yb in zip(xs, ys):
                    s = stats.update(s, xb, yb)
                return jax.block_until_ready(s)

            def plain(xs=xs, ys=ys):
                c = jnp.zeros((d, d), jnp.float32)
                for xb, yb in zip(xs, ys):
                    c = gemm_acc(c, xb, yb)
                return c.block_until_ready()

            fns[("plain", b)] = plain
            fns[("stats", b)] = acc
        t = interleaved(fns, repeat=repeat)
        plain_best = min(v for k, v in t.items() if k == "jax" or k == "numpy" or k[0] == "plain")
        rows.append([d, "plain GEMM Xᵀ Y, JAX, one call", n, t["jax"], flops / t["jax"] / 1e9, "", plain_best / t["jax"]])
        rows.append([d, "plain GEMM Xᵀ Y, numpy, one call", n, t["numpy"], flops / t["numpy"] / 1e9, "",
                     plain_best / t["numpy"]])
        for b in batch_sizes:
            if ("stats", b) not in t:
                continue
            tp, ts = t[("plain", b)], t[("stats", b)]
            rows.append([d, f"plain GEMMs C += Xbᵀ Yb, JAX, batches of {b}", n, tp, flops / tp / 1e9, "", plain_best / tp])
            rows.append([d, f"stats.update, batches of {b}", n, ts, flops / ts / 1e9, tp / ts, plain_best / ts])
        del fns
    cols = ["d", "what", "tokens", "time (s)", "GFLOP/s", "stats / same-shape plain GEMMs",
            "throughput / best plain GEMM"]
    return markdown_table(cols, rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="d ∈ {1024, 2048}, 2 repeats")
    p.add_argument("--n", type=int, default=16384)
    p.add_argument("--d", type=int, nargs="+", default=None)
    args = p.parse_args(argv)
    ds = args.d or ([1024, 2048] if args.quick else [1024, 2048, 4096])
    table = run(args.n, ds, [2048, 4096, args.n], repeat=2 if args.quick else 5)
    body = ("Streaming statistics (`gaugejax.stats.update`, jitted, donated state, float32) over n tokens vs "
            "plain GEMMs of the same shapes: one `Xᵀ Y` over all n tokens (JAX and numpy/OpenBLAS) and the same "
            "per-batch `C += Xbᵀ Yb` the statistics do (JAX, jitted, donated) — the floor the statistics can reach. "
            "2·n·d² flops. Best of interleaved rounds (shuffled order, a pause before each call); "
            f"{load_note()}.\n\n" + table)
    print(body)
    path = write_result("stats", "Statistics throughput vs the GEMM floor", body)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
