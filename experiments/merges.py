"""Experiment 5: merging two fine-tuned models that live in different charts.

Runs A and B of :mod:`experiments.scratch` (same base, different text) are stored in hidden
random charts. We recover the gauge A→B (composed along the saved trajectories, as in the trajectory
experiment) and merge with :func:`gaugejax.merge.merge` (B moved into A's chart, then
``(1 − α)·A + α·B``):

* **B_d-aligned**: the recovered signed gauge;
* **S_d-aligned**: its permutation part only (what permutation-only alignment would use);
* **unaligned**: the stored parameters averaged as they are.

Reference rows: the merge in the common training chart (what a perfect alignment gives) and the
two endpoints. Metric: next-byte loss on held-out text, and along the whole interpolation path.
"""

from __future__ import annotations

import numpy as np

from experiments import scratch
from experiments.common import Context, Result, SeedRow, Table, figure
from experiments.data import byte_tokens, windows

NAME = "merges"
TITLE = "Merging fine-tuned models stored in different charts"


def recovered_gauge(ctx: Context, index: int):
    """The composed A_k → B_k gauge at checkpoint ``index`` (reusing the trajectory experiment's if cached)."""
    cached = ctx.cache.get("trajectories/gauges", {}).get(index)
    if cached is not None:
        return cached
    from gaugejax.trajectory import cross_run

    from experiments.trajectories import probe

    base, run_a, run_b = scratch.runs_ab(ctx)
    tokens, kw = probe(ctx, base.sizes)
    with ctx.task("merges: composing local gauges", 2 * (index + 1) + 3) as t:
        r = cross_run(run_a.stored[:index + 1], run_b.stored[:index + 1], base.model, tokens, **kw,
                      progress=lambda *a: t.advance())
    return r.gauge


def run(ctx: Context) -> Result:
    from gaugejax.merge import interpolate, merge

    res = Result(NAME, TITLE, seed=ctx.seed)
    base, run_a, run_b = scratch.runs_ab(ctx)
    s = base.sizes
    held = windows(byte_tokens("heldout"), ctx.size(32, 64), s.seq, ctx.rng(f"{NAME}/heldout"))
    idx = {"early": max(0, len(run_a.stored) // 10 - 1), "last": len(run_a.stored) - 1}
    alphas = np.linspace(0, 1, ctx.size(5, 11))
    rows, paths, claims = [], {}, {}
    loss = lambda m: scratch.heldout_loss(m, held)  # noqa: E731
    for label, i in idx.items():
        a, b = run_a.stored[i], run_b.stored[i]
        truth = run_a.hidden[i].inverse().then(run_b.hidden[i])
        g = recovered_gauge(ctx, i)
        acc = g.agreement(truth)["signed"]
        merged = {
            "B_d-aligned": merge(a, b, g, group="B_d"),
            "S_d-aligned": merge(a, b, g, group="S_d"),
            "unaligned": merge(a, b, None),
            "training chart (oracle)": interpolate(run_a.checkpoints[i], run_b.checkpoints[i]),
        }
        la, lb = loss(a), loss(b)
        lm = {k: loss(m) for k, m in merged.items()}
        rows.append([run_a.steps[i], acc, la, lb, *[lm[k] for k in merged]])
        claims[label] = {"a": la, "b": lb, **lm}
        if label == "last":
            with ctx.task("merges: interpolation paths", 3 * len(alphas)) as t:
                for name, gg, grp in (("B_d-aligned", g, "B_d"), ("S_d-aligned", g, "S_d"), ("unaligned", None, "B_d")):
                    vals = []
                    for al in alphas:
                        vals.append(loss(merge(a, b, gg, alpha=float(al), group=grp)))
                        t.advance()
                    paths[name] = vals
    res.tables.append(Table(
        "Held-out loss (nats per byte) of α = 0.5 merges of runs A and B",
        ["fine-tuning steps", "recovered gauge accuracy", "A", "B", "B_d-aligned", "S_d-aligned", "unaligned",
         "training chart (oracle)"], rows,
        note=f"held-out split, {held.shape[0]}×{held.shape[1]} bytes; the gauge is composed along both trajectories "
             "(sign-marginalized hops)."))

    def draw(ax):
        cols = {"B_d-aligned": "C2", "S_d-aligned": "C0", "unaligned": "C3"}
        for name, vals in paths.items():
            ax.plot(alphas, vals, "o-", ms=3, color=cols[name], label=name)
        ax.set_xlabel("α  (0 = run A, 1 = run B)")
        ax.set_ylabel("held-out loss (nats/byte)")
        ax.legend(fontsize=8)
        ax.set_title(f"Interpolating A and B after {run_a.steps[idx['last']]} steps")

    res.figures.append((figure(ctx, "merges.png", draw), "Held-out loss along the interpolation path between the two "
                        "fine-tuned models, by alignment."))
    last = claims["last"]
    res.claims.update(**{f"{k}_{m.split(' ')[0].replace('-', '_')}": v for k, c in claims.items() for m, v in c.items()})
    if last["S_d-aligned"] > last["unaligned"]:
        res.notes.append(
            f"S_d alignment is worse than no alignment at all ({last['S_d-aligned']:.3f} vs {last['unaligned']:.3f} "
            "nats/byte): it pairs every coordinate with its true partner, so the ~half whose sign flipped are averaged "
            "with their own negation and cancel, while unaligned averaging mixes unrelated coordinates.")
    return res.conclude(
        f"{s.describe()}. Merges of the stored (hidden-chart) checkpoints of runs A and B after "
        f"{run_a.steps[idx['early']]} and {run_a.steps[idx['last']]} steps with gaugejax.merge.merge.",
        SeedRow(
            "coordinate-preserving merges: B_d vs S_d vs unaligned",
            "behave like the transport results (B_d works, S_d breaks)",
            f"held-out loss of the α = 0.5 merge after {run_a.steps[idx['last']]} steps: "
            f"B_d {last['B_d-aligned']:.3f} "
            f"(training-chart merge {last['training chart (oracle)']:.3f}), S_d {last['S_d-aligned']:.3f}, unaligned "
            f"{last['unaligned']:.3f} (endpoints {last['a']:.3f} / {last['b']:.3f})",
            f"from-scratch d = {s.d_model}, held-out docstrings"))
