"""Forward throughput: gaugejax's jit forward vs transformers' torch CPU forward, same weights.

Usage: python benchmarks/bench_forward.py [--quick] [--family llama|gemma2|qwen3]

Both run the same config (random weights written once with ``save_pretrained`` and loaded by
both), float32, batch × seq tokens, after a warm-up call; timed calls alternate between the two
in a shuffled order per round and the best of the rounds counts (the machine may be shared).
``llama``: SmolLM2-135M's shape. ``gemma2`` / ``qwen3``: the layer shapes of Gemma-2-2B /
Qwen3-0.6B (heads, head size, MLP width, soft-caps, q/k norms) with fewer layers and, for Gemma 2,
a smaller vocabulary, so that both copies fit in memory (stated in the output).
Prints tokens/s for each and the ratio; writes benchmarks/results/forward[_FAMILY][_quick].md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


FAMILIES = {
    # name: (transformers config class, model class, full kwargs, quick overrides, what the full shape is)
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               dict(vocab_size=32768, hidden_size=2304, intermediate_size=9216, num_hidden_layers=4,
                    num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
                    sliding_window=4096, final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
               dict(vocab_size=4096, hidden_size=576, intermediate_size=2304, num_hidden_layers=2, head_dim=64,
                    query_pre_attn_scalar=64),
               "Gemma-2-2B layer shapes, 4 of its 26 layers, vocabulary 32768 of 256000"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM",
              dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=8,
                   num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
              dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=64),
              "Qwen3-0.6B layer shapes and vocabulary, 8 of its 28 layers"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller model and fewer repeats")
    ap.add_argument("--family", choices=["llama", *FAMILIES], default="llama", help="architecture (default llama)")
    args = ap.parse_args()
    import jax
    import torch
    import transformers

    import gaugejax as gj
    from _common import best_of_interleaved, load_note

    note = load_note()
    shape_note = ""
    if args.family != "llama":
        cfg_cls, model_cls, cfg, quick, shape_note = FAMILIES[args.family]
        cfg = {**cfg, **quick} if args.quick else cfg
        shape_note = "toy shape" if args.quick else shape_note
        shapes = [(1, 128), (4, 256)]  # 2-3x SmolLM2's work per token: 8 × 512 would take minutes per call
        torch.manual_seed(0)
        hf = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**cfg, max_position_embeddings=2048))
        hf = hf.eval()
    elif args.quick:
        cfg = dict(vocab_size=4096, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                   num_attention_heads=8, num_key_value_heads=4)
        shapes = [(1, 128), (4, 256)]
    else:  # SmolLM2-135M shape
        cfg = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                   num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
        shapes = [(1, 128), (4, 256), (8, 512)]
    if args.family == "llama":
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

        r = 3 if args.quick or args.family != "llama" else 5
        best = best_of_interleaved({"ours": ours, "theirs": theirs}, r, warmup=1).best
        t_ours, t_hf = best["ours"], best["theirs"]
        rows.append((b, t, b * t / t_ours, b * t / t_hf, t_hf / t_ours))
    lines = [
        f"Forward throughput ({args.family}), float32 CPU ({os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, transformers attention {hf.config._attn_implementation}), "
        f"d={cfg['hidden_size']} L={cfg['num_hidden_layers']} vocab={cfg['vocab_size']}"
        + (f" ({shape_note})" if shape_note else ""),
        f"Best of {r} interleaved rounds after a warm-up; {note}.",
        "",
        "| batch × seq | gaugejax tok/s | transformers tok/s | ratio (ours / theirs) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {b} × {t} | {a:,.0f} | {h:,.0f} | {r:.2f} |" for b, t, a, h, r in rows]
    text = "\n".join(lines)
    print(text)
    name = "forward" + ("" if args.family == "llama" else f"_{args.family}") + ("_quick" if args.quick else "")
    out = Path(__file__).parent / "results" / f"{name}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
