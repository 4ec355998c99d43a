"""Forward throughput: gaugejax's jit forward vs transformers' torch CPU forward, same weights.

Usage: python benchmarks/bench_forward.py [--quick]

Both run the same SmolLM2-135M-shaped Llama config (random weights written once with
``save_pretrained`` and loaded by both), float32, batch × seq tokens, after a warm-up call.
Prints tokens/s for each and the ratio; writes benchmarks/results/forward.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up (jit compile / allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller model and fewer repeats")
    args = ap.parse_args()
    import jax
    import torch
    import transformers

    import gaugejax as gj

    if args.quick:
        cfg = dict(vocab_size=4096, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                   num_attention_heads=8, num_key_value_heads=4)
        shapes = [(1, 128), (4, 256)]
    else:  # SmolLM2-135M shape
        cfg = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                   num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
        shapes = [(1, 128), (4, 256), (8, 512)]
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg, max_position_embeddings=2048)).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        model = gj.load_model(d)
    rows = []
    for b, t in shapes:
        tokens = np.random.default_rng(0).integers(0, cfg["vocab_size"], (b, t))
        tt = torch.tensor(tokens)

        def ours():
            jax.block_until_ready(gj.forward(model, tokens))

        def theirs():
            with torch.no_grad():
                hf(tt)

        r = 3 if args.quick else 5
        t_ours, t_hf = best_of(ours, r), best_of(theirs, r)
        rows.append((b, t, b * t / t_ours, b * t / t_hf, t_hf / t_ours))
    lines = [
        f"Forward throughput, float32 CPU ({os.cpu_count()} cores, torch threads {torch.get_num_threads()}), "
        f"d={cfg['hidden_size']} L={cfg['num_hidden_layers']} vocab={cfg['vocab_size']}",
        "",
        "| batch × seq | gaugejax tok/s | transformers tok/s | ratio (ours / theirs) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {b} × {t} | {a:,.0f} | {h:,.0f} | {r:.2f} |" for b, t, a, h, r in rows]
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).parent / "results" / ("forward_quick.md" if args.quick else "forward.md")
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
