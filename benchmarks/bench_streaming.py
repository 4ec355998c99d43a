"""``gaugejax align`` streamed block by block vs in memory, on a >= 1 GB bfloat16 Llama pair.

Usage: python benchmarks/bench_streaming.py [--gb 1.3] [--tokens 512] [--max-memory 400MB] [--workdir DIR]

Writes a random Llama-shaped bfloat16 checkpoint of about ``--gb`` GB (d = 2048, d_ff = 5632,
vocab 32000) and a gauged copy (``gaugejax apply``), then aligns the pair twice, each time as its
own process under ``/usr/bin/time`` (peak RSS): in memory (``--max-memory`` far above the pair)
and streamed (``--max-memory`` below one model, so both checkpoints are read block by block).
Both runs use exactly ``--tokens`` tokens (``--min-tokens = --max-tokens``) and must recover the
hidden gauge. Writes benchmarks/results/streaming.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import publish, scratch  # noqa: E402
from bench_apply import make_checkpoint, timed  # noqa: E402


def _device() -> str:
    import jax

    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', '?')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.3, help="size of each checkpoint in GB (default 1.3)")
    ap.add_argument("--tokens", type=int, default=512, help="tokens aligned (default 512)")
    ap.add_argument("--max-memory", default="400MB", help="budget of the streamed run (default 400MB)")
    ap.add_argument("--workdir", default="/tmp/gaugejax_bench_streaming", help="scratch directory")
    args = ap.parse_args()
    with scratch(args.workdir) as work:
        publish("streaming", _measure(work, args.gb, args.tokens, args.max_memory))


def _measure(work: Path, gb: float, tokens: int, max_memory: str) -> list[str]:
    """Makes the pair in ``work``, aligns it in memory and streamed; the result lines."""
    import gaugejax as gj

    a, b = work / "a", work / "b"
    size = make_checkpoint(a, gb)
    cfg = json.loads((a / "config.json").read_text())
    truth = gj.SignedPermutation.random(1, cfg["hidden_size"])
    truth.save(work / "truth.npz")
    timed([sys.executable, "-m", "gaugejax", "apply", str(a), "--gauge", str(work / "truth.npz"), "-o", str(b)])
    common = ["--min-tokens", str(tokens), "--max-tokens", str(tokens), "--seq-len", "128",
              "--batch-rows", "2"]
    runs = {}
    for name, extra in (("in memory", ["--max-memory", "1TB"]), ("streamed", ["--max-memory", max_memory])):
        out = work / f"g_{name.replace(' ', '_')}.npz"
        wall, rss = timed([sys.executable, "-m", "gaugejax", "align", str(a), str(b), "-o", str(out), *common, *extra])
        ok = gj.SignedPermutation.load(out) == truth
        runs[name] = (wall, rss, ok)
    n_layers = cfg["num_hidden_layers"]
    block = (4 * 2048 * 2048 + 3 * 2048 * 5632) * 2
    (wi, ri, oki), (ws, rs, oks) = runs["in memory"], runs["streamed"]
    return [
        f"`gaugejax align` on a pair of random Llamas, {size / 1e9:.2f} GB of bfloat16 weights each "
        f"(d = 2048, {n_layers} layers, one block = {block / 1e6:.0f} MB), {tokens} tokens, float32 compute, "
        f"JAX device {_device()} on {platform.machine()} with {os.cpu_count()} CPU cores; each run is its own process.",
        "",
        "| run | budget | wall s (load + compile + align) | tokens/s | peak RSS MB | gauge recovered |",
        "|---|---|---|---|---|---|",
        f"| in memory | 1TB | {wi:.1f} | {tokens / wi:.1f} | {ri:.0f} | {oki} |",
        f"| streamed | {max_memory} | {ws:.1f} | {tokens / ws:.1f} | {rs:.0f} | {oks} |",
        "",
        f"Pair on disk: {2 * size / 1e6:.0f} MB. Streamed / in-memory: peak RSS {rs / ri:.2f}x, "
        f"throughput {wi / ws:.2f}x.",
    ]


if __name__ == "__main__":
    main()
