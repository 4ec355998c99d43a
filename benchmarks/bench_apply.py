"""``gaugejax apply`` on a >= 1 GB checkpoint vs a plain file copy: wall time and peak memory.

Usage: python benchmarks/bench_apply.py [--gb 1.1] [--workdir DIR]

Writes a random Llama-shaped bfloat16 checkpoint of about ``--gb`` GB (sharded at 512 MB), then
times ``cp -r`` and ``gaugejax apply --random-gauge`` on it, each as its own process under
``/usr/bin/time`` (peak RSS). Writes benchmarks/results/apply.md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import publish, scratch  # noqa: E402


COPY_THROUGH_USERSPACE = """
import os, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst)
for name in sorted(os.listdir(src)):
    with open(os.path.join(src, name), "rb") as i, open(os.path.join(dst, name), "wb") as o:
        while chunk := i.read(16 << 20):
            o.write(chunk)
"""


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of a command run as a child process."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{r.stderr}")
    rss = int(re.search(r"MAXRSS (\d+)", r.stderr).group(1)) / 1024
    return wall, rss


def make_checkpoint(path: Path, gb: float) -> int:
    import jax.numpy as jnp

    import gaugejax as gj

    d, f, vocab = 2048, 5632, 32000
    per_layer = 4 * d * d + 3 * d * f
    layers = max(1, int((gb * 1e9 / 2 - 2 * vocab * d) / per_layer + 0.999))
    cfg = gj.LlamaConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=16, n_kv_heads=16, head_dim=128,
                         d_ff=f)
    model = gj.random_model(cfg, seed=0, dtype=jnp.bfloat16)
    gj.save_model(model, path, max_shard_bytes=512 * 1024**2)
    return sum(p.stat().st_size for p in path.iterdir())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.1, help="checkpoint size in GB (default 1.1)")
    ap.add_argument("--workdir", default=str(Path(__file__).parent / "_work"), help="scratch directory")
    args = ap.parse_args()
    with scratch(args.workdir) as work:
        publish("apply", _measure(work, args.gb))


def _measure(work: Path, gb: float) -> list[str]:
    """Times the copies and ``gaugejax apply`` on a fresh checkpoint in ``work``; the result lines."""
    src = work / "src"
    size = make_checkpoint(src, gb)
    t_cp, m_cp = timed(["cp", "-r", str(src), str(work / "copy")])
    t_ap, m_ap = timed([sys.executable, "-m", "gaugejax", "apply", str(src), "--random-gauge", "1",
                        "-o", str(work / "gauged")])
    t_cp2, m_cp2 = timed(["cp", "-r", str(src), str(work / "copy2")])  # page cache now warm for both
    # cp may use copy_file_range/reflinks (no bytes through user space); this floor reads and writes every byte.
    t_rw, m_rw = timed([sys.executable, "-c", COPY_THROUGH_USERSPACE, str(src), str(work / "copy3")])
    return [
        f"`gaugejax apply` on a {size / 1e9:.2f} GB bfloat16 checkpoint (sharded at 512 MB)",
        "",
        "| operation | wall s | peak RSS MB | ratio to copy |",
        "|---|---|---|---|",
        f"| cp -r (first) | {t_cp:.2f} | {m_cp:.0f} | |",
        f"| cp -r (warm) | {t_cp2:.2f} | {m_cp2:.0f} | 1.00 |",
        f"| read+write every byte (Python, 16 MB buffer) | {t_rw:.2f} | {m_rw:.0f} | {t_rw / t_cp2:.2f} |",
        f"| gaugejax apply | {t_ap:.2f} | {m_ap:.0f} | {t_ap / t_cp2:.2f} |",
        "",
        f"gaugejax apply / byte-copy floor: {t_ap / t_rw:.2f}x time. Peak RSS includes the Python+JAX runtime "
        "and file pages mapped while a tensor is read; the largest tensor here is "
        f"{32000 * 2048 * 2 / 1e6:.0f} MB.",
    ]


if __name__ == "__main__":
    main()
