"""Experiment 2: cross-run coordinate recovery along fine-tuning trajectories.

A small RMSNorm model is pre-trained from scratch on real text, then fine-tuned twice (run A on
more prose, run B on source code; different data order) with checkpoints every few steps, each stored in its own
hidden random chart (:mod:`gaugejax.reproduce.scratch`). Both runs start from one base in one
training chart, so the true cross-run gauge ``A_k → B_k`` between stored checkpoints is
``H_Ak⁻¹ · H_Bk`` (the hidden charts). At several step counts ``k`` we recover it three ways
(:mod:`gaugejax.trajectory`, sign-marginalized matching pooled over every layer):

* **composed**: local gauges between adjacent saved checkpoints, composed down run A to the base
  and up run B;
* **via base**: two direct matches ``A_k → base → B_k``;
* **endpoint**: one direct match ``A_k → B_k``.

Every hop is computed once and reused for all ``k``; all matches use the same probe tokens.
"""

from __future__ import annotations

import numpy as np

from gaugejax.reproduce import scratch
from gaugejax.reproduce.common import Context, Result, SeedRow, Table, figure, pct
from gaugejax.reproduce.data import byte_tokens, windows

NAME = "trajectories"
TITLE = "Cross-run coordinate recovery along fine-tuning trajectories"
METHODS = ("composed", "via_base", "endpoint")


def probe_tokens(ctx: Context, rows: int, seq: int) -> np.ndarray:
    return windows(byte_tokens("probe"), rows, seq, ctx.rng(f"{NAME}/probe"))


def _reverse(hop):
    """The hop matched the other way round (sign-marginalized matching is symmetric: ``C`` transposed)."""
    from gaugejax.trajectory import Hop

    inv = hop.gauge.inverse()
    return Hop(hop.dst, hop.src, inv, hop.n_tokens, hop.mean_abs_corr, hop.min_margin, hop.n_ambiguous,
               hop.ambiguous[inv.perm])


def run(ctx: Context) -> Result:
    from gaugejax.trajectory import Hop, align_pair, compose_hops

    res = Result(NAME, TITLE, seed=ctx.seed)
    base = scratch.base_run(ctx)
    s = base.sizes
    run_a = scratch.finetune(ctx, "A", "finetune_a")
    run_b = scratch.finetune(ctx, "B", "code")
    n_tok = ctx.size(2048, 4096)
    tokens = probe_tokens(ctx, n_tok // s.seq, s.seq)
    layers = tuple(range(1, s.n_layers + 1))
    kw = dict(layers=layers, min_tokens=n_tok, max_tokens=n_tok, batch_rows=8)

    def pair(a, b, la, lb):
        return Hop.from_match(la, lb, align_pair(a, b, tokens, **kw))

    n_ck = len(run_a.stored)
    with ctx.task("trajectories: local hops", 2 * n_ck) as t:
        hops = {}
        for name, r in (("A", run_a), ("B", run_b)):
            prev, label = base.model, "base"
            hs = []
            for i, m in enumerate(r.stored):
                hs.append(pair(prev, m, label, f"{name}{r.steps[i]}"))
                prev, label = m, f"{name}{r.steps[i]}"
                t.advance()
            hops[name] = hs

    composed_all = {}
    for i in range(n_ck):
        composed_all[i], _ = compose_hops([_reverse(h) for h in reversed(hops["A"][:i + 1])] + hops["B"][:i + 1])
    ctx.cache["trajectories/gauges"] = composed_all

    targets = ctx.size(None, (50, 100, 250, 500, 1000, 1500, 2000, 3000))
    if targets is None:
        eval_idx = sorted({int(i) for i in np.unique(np.geomspace(1, n_ck, 5).round().astype(int) - 1)})
    else:
        eval_idx = [i for i, st in enumerate(run_a.steps) if st in targets]
    rows, curves = [], {m: [] for m in METHODS}
    corr = []
    with ctx.task("trajectories: cross-run gauges", len(eval_idx)) as t:
        for i in eval_idx:
            truth = run_a.hidden[i].inverse().then(run_b.hidden[i])
            # A_k → ... → A_1 → base: the inverse of every forward hop, in reverse order.
            composed = composed_all[i]
            to_base = align_pair(run_a.stored[i], base.model, tokens, **kw).gauge
            from_base = align_pair(base.model, run_b.stored[i], tokens, **kw).gauge
            end = align_pair(run_a.stored[i], run_b.stored[i], tokens, **kw)
            got = {"composed": composed, "via_base": to_base.then(from_base), "endpoint": end.gauge}
            acc = {m: got[m].agreement(truth) for m in METHODS}
            for m in METHODS:
                curves[m].append(acc[m]["signed"])
            corr.append(float(np.abs(end.matched_corr).mean()))
            rows.append([run_a.steps[i], *[acc[m]["signed"] for m in METHODS], *[acc[m]["perm"] for m in METHODS],
                         corr[-1], float(np.mean([h.mean_abs_corr for h in hops["A"][:i + 1] + hops["B"][:i + 1]]))])
            t.advance()
    steps = [run_a.steps[i] for i in eval_idx]
    res.tables.append(Table(
        "Recovery of the cross-run gauge A_k → B_k (fraction of coordinates) vs fine-tuning steps k",
        ["steps k", "composed (perm+sign)", "via base (perm+sign)", "endpoint (perm+sign)", "composed (perm)",
         "via base (perm)", "endpoint (perm)", "endpoint mean |corr|", "hop mean |corr|"], rows,
        note=f"sign-marginalized matching pooled over layers {list(layers)}, {n_tok} probe bytes (split `probe`) for "
             f"every match; hops every {s.every} steps."))
    loss_rows = [["base (end of pre-training)", float(np.mean(base.losses[-20:]))],
                 ["run A (last 20 steps)", float(np.mean(run_a.losses[-20:]))],
                 ["run B (last 20 steps)", float(np.mean(run_b.losses[-20:]))]]
    res.tables.append(Table("Training losses (nats per byte)", ["run", "loss"], loss_rows))

    def draw(ax):
        styles = {"composed": ("o-", "C2", "composed local gauges"), "via_base": ("s--", "C1", "via base only"),
                  "endpoint": ("^-", "C3", "endpoint matching")}
        for m in METHODS:
            st, c, lab = styles[m]
            ax.plot(steps, curves[m], st, color=c, label=lab, ms=4)
        ax.plot(steps, corr, ":", color="0.5", label="endpoint mean |matched corr|")
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("fine-tuning steps k (both runs)")
        ax.set_ylabel("cross-run coordinates recovered (perm + sign)")
        ax.legend(fontsize=8, loc="lower left")
        ax.set_title(f"From-scratch RMSNorm model, d={s.d_model}")

    res.figures.append((figure(ctx, "trajectories.png", draw), "Recovery of the cross-run gauge vs fine-tuning "
                        "steps: composed local gauges vs endpoint matching vs routing through the base."))
    last = {m: curves[m][-1] for m in METHODS}
    at = steps.index(1500) if 1500 in steps else None
    res.claims.update(steps=steps[-1], composed=last["composed"], via_base=last["via_base"], endpoint=last["endpoint"],
                      composed_min=min(curves["composed"]), endpoint_first=curves["endpoint"][0],
                      endpoint_corr_last=corr[-1])
    res.setting = (
        f"{s.describe()}. Run A fine-tunes on split `finetune_a` (docstrings not seen in pre-training), run B on "
        f"`code` (standard-library source without docstrings), different data order; {len(run_a.stored)} checkpoints per run, each stored in a uniformly random signed "
        f"permutation chart. Seeds: model init, data order and charts from fold_in(key({ctx.seed}), crc32(·)).")
    res.notes.append(
        f"What it took: residual charts are sticky. The effect needs a small model trained from scratch, fine-tunes "
        f"at a high learning rate ({s.ft_lr:g} after warm-up, with gradient clipping) for thousands of steps, and "
        f"the two runs on different kinds of text (prose vs source code). Adjacent checkpoints {s.every} steps apart "
        f"stay easy to match (hop mean |corr| in the table), so the composed gauge stays exact while the endpoints "
        f"decorrelate (endpoint mean |corr| falls to {corr[-1]:.2f}).")
    res.notes.append(
        "SmolLM2-135M with short fine-tunes is not run: one AdamW step of the 135M model costs several seconds on 2 CPU "
        "cores, and SPEC §8 records that short fine-tunes of this pre-trained model leave its charts almost unchanged "
        "(all three methods recover nearly every coordinate), i.e. there is no trajectory effect to show at that scale.")
    res.headline.append(SeedRow(
        f"cross-run coordinate recovery after {steps[-1]} fine-tuning steps: composed vs endpoint (vs via base)",
        "91.1 % vs 60.3 % at 1500 steps (via base: lower than composed)",
        (f"at 1500 steps: {pct(curves['composed'][at])} vs {pct(curves['endpoint'][at])} (via base "
         f"{pct(curves['via_base'][at])}); at {steps[-1]}: " if at is not None and at != len(steps) - 1 else "")
        + f"{pct(last['composed'])} vs {pct(last['endpoint'])} (via base {pct(last['via_base'])})",
        f"from-scratch d = {s.d_model}, {s.n_layers} layers, lr {s.ft_lr:g}, {steps[-1]} steps"))
    return res
