"""Experiment 2: cross-run coordinate recovery along fine-tuning trajectories.

A small RMSNorm model is pre-trained from scratch on real text, then fine-tuned twice (run A on
more prose, run B on source code; different data order) with checkpoints every few steps, each stored in its own
hidden random chart (:mod:`experiments.scratch`). Both runs start from one base in one
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

from experiments import scratch
from experiments.common import Context, Result, SeedRow, Table, figure, pct
from experiments.data import byte_tokens, windows

NAME = "trajectories"
TITLE = "Cross-run coordinate recovery along fine-tuning trajectories"
METHODS = ("composed", "via_base", "endpoint")


def probe_tokens(ctx: Context, rows: int, seq: int) -> np.ndarray:
    return windows(byte_tokens("probe"), rows, seq, ctx.rng(f"{NAME}/probe"))


def probe(ctx: Context, s: scratch.ScratchSizes) -> tuple[np.ndarray, dict]:
    """The probe tokens and matching arguments of every from-scratch cross-run match (here and in the merges).

    A fixed number of probe bytes (split ``probe``), every layer pooled, no early stop.
    """
    n_tok = ctx.size(2048, 4096)
    kw = dict(layers=tuple(range(1, s.n_layers + 1)), min_tokens=n_tok, max_tokens=n_tok, batch_rows=8)
    return probe_tokens(ctx, n_tok // s.seq, s.seq), kw


def _reverse(hop):
    """The hop matched the other way round (sign-marginalized matching is symmetric: ``C`` transposed)."""
    from gaugejax.trajectory import Hop

    inv = hop.gauge.inverse()
    return Hop(hop.dst, hop.src, inv, hop.n_tokens, hop.mean_abs_corr, hop.min_margin, hop.n_ambiguous,
               hop.ambiguous[inv.perm])


def local_hops(ctx: Context, base_model, runs: dict, tokens, kw: dict, what: str) -> dict:
    """Adjacent matches base → X_1 → X_2 → ... for each run ``X`` (stored checkpoints)."""
    from gaugejax.trajectory import Hop, align_pair

    hops = {}
    with ctx.task(f"{what}: local hops", sum(len(r.stored) for r in runs.values())) as t:
        for name, r in runs.items():
            prev, label, hs = base_model, "base", []
            for i, m in enumerate(r.stored):
                hs.append(Hop.from_match(label, f"{name}{r.steps[i]}", align_pair(prev, m, tokens, **kw)))
                prev, label = m, f"{name}{r.steps[i]}"
                t.advance()
            hops[name] = hs
    return hops


def composed_gauge(hops: dict, i: int):
    """A_i → ... → A_1 → base → B_1 → ... → B_i from the forward hops of runs ``A`` and ``B``."""
    from gaugejax.trajectory import compose_hops

    return compose_hops([_reverse(h) for h in reversed(hops["A"][:i + 1])] + hops["B"][:i + 1])[0]


def cross_run_recovery(base_model, run_a, run_b, hops: dict, i: int, tokens, kw: dict) -> dict:
    """Agreement of the three strategies with the true cross-run gauge at checkpoint ``i``, and endpoint |corr|."""
    from gaugejax.trajectory import align_pair

    truth = run_a.hidden[i].inverse().then(run_b.hidden[i])
    to_base = align_pair(run_a.stored[i], base_model, tokens, **kw).gauge
    from_base = align_pair(base_model, run_b.stored[i], tokens, **kw).gauge
    end = align_pair(run_a.stored[i], run_b.stored[i], tokens, **kw)
    got = {"composed": composed_gauge(hops, i), "via_base": to_base.then(from_base), "endpoint": end.gauge}
    out = {m: got[m].agreement(truth) for m in METHODS}
    out["endpoint_corr"] = float(np.abs(end.matched_corr).mean())
    out["hop_corr"] = float(np.mean([h.mean_abs_corr for h in hops["A"][:i + 1] + hops["B"][:i + 1]]))
    return out


SMOLLM = dict(steps=40, every=10, lr=1e-3, warmup=5, batch=4, seq=64, probe_tokens=2048)
"""Short fine-tunes of the pre-trained SmolLM2-135M (full run only): sizes."""


def weak_drift_control(ctx: Context, base, tokens, kw: dict) -> dict:
    """The same from-scratch base, fine-tuned at a 3× lower learning rate on prose only (both runs), 1500 steps."""
    s = base.sizes
    steps = min(1500, s.ft_steps)
    lr = s.ft_lr / 3
    ra = scratch.finetune(ctx, "A-weak", "finetune_a", lr=lr, steps=steps)
    rb = scratch.finetune(ctx, "B-weak", "finetune_b", lr=lr, steps=steps)
    hops = local_hops(ctx, base.model, {"A": ra, "B": rb}, tokens, kw, "trajectories (weak drift)")
    out = cross_run_recovery(base.model, ra, rb, hops, len(ra.stored) - 1, tokens, kw)
    out.update(key="weak_drift", steps=ra.steps[-1],
               setting=f"from scratch, lr {lr:g}, both runs on prose (`finetune_a` / `finetune_b`)")
    return out


def smollm_short_finetunes(ctx: Context) -> dict | None:
    """Two short AdamW fine-tunes of SmolLM2-135M-Instruct (prose vs code), checkpoints in hidden charts."""
    import jax.numpy as jnp
    import optax

    import gaugejax as gj
    from gaugejax import train
    from gaugejax.align import default_layers
    from experiments.common import load_smollm
    from experiments.data import token_windows

    try:
        model, encode = load_smollm(ctx)
    except FileNotFoundError:
        return None
    c = SMOLLM
    sched = optax.join_schedules([optax.linear_schedule(0.0, c["lr"], c["warmup"]), optax.constant_schedule(c["lr"])],
                                 [c["warmup"]])
    opt = optax.chain(optax.clip_by_global_norm(1.0), train.adamw(sched, weight_decay=0.0))
    step = train.make_step(model.config, opt)
    runs = {}
    with ctx.task("trajectories: SmolLM2-135M short fine-tunes", 2 * c["steps"]) as t:
        for name, split in (("A", "finetune_a"), ("B", "code")):
            data = token_windows(ctx, encode, c["steps"] * c["batch"], c["seq"], split=split,
                                 seed_name=f"{NAME}/smollm/{name}", key="smollm").reshape(c["steps"], c["batch"], c["seq"])
            params, state = model.params, opt.init(model.params)
            saved, hidden, stored = [], [], []
            for n in range(c["steps"]):
                params, state, _ = step(params, state, jnp.asarray(data[n]))
                t.advance()
                if (n + 1) % c["every"] == 0:
                    g = gj.SignedPermutation.random(ctx.key(f"{NAME}/smollm/chart/{name}", n), model.d)
                    saved.append(n + 1)
                    hidden.append(g)
                    stored.append(gj.apply_gauge(gj.Model(model.config, params), g))
            del state
            runs[name] = scratch.FineTuneRun(saved, [], hidden, stored, np.zeros(0), split)
    tokens = token_windows(ctx, encode, c["probe_tokens"] // 128, 128, split="probe", seed_name=f"{NAME}/smollm/probe",
                           key="smollm")
    layers = default_layers(model.config.n_layers)
    kw = dict(layers=layers, min_tokens=c["probe_tokens"], max_tokens=c["probe_tokens"], batch_rows=4)
    hops = local_hops(ctx, model, runs, tokens, kw, "trajectories (SmolLM2)")
    out = cross_run_recovery(model, runs["A"], runs["B"], hops, len(runs["A"].stored) - 1, tokens, kw)
    out.update(key="smollm", steps=runs["A"].steps[-1], layers=layers,
               setting=f"SmolLM2-135M-Instruct, AdamW lr {c['lr']:g}, batches {c['batch']}×{c['seq']} tokens, "
                       f"prose vs code, a checkpoint every {c['every']} steps")
    return out


def run(ctx: Context) -> Result:
    res = Result(NAME, TITLE, seed=ctx.seed)
    base, run_a, run_b = scratch.runs_ab(ctx)
    s = base.sizes
    tokens, kw = probe(ctx, s)
    n_ck = len(run_a.stored)
    hops = local_hops(ctx, base.model, {"A": run_a, "B": run_b}, tokens, kw, "trajectories")
    ctx.cache["trajectories/gauges"] = {i: composed_gauge(hops, i) for i in range(n_ck)}

    targets = ctx.size(None, (50, 100, 250, 500, 1000, 1500, 2000, 3000))
    if targets is None:
        eval_idx = sorted({int(i) for i in np.unique(np.geomspace(1, n_ck, 5).round().astype(int) - 1)})
    else:
        eval_idx = [i for i, st in enumerate(run_a.steps) if st in targets]
    rows, curves, corr = [], {m: [] for m in METHODS}, []
    with ctx.task("trajectories: cross-run gauges", len(eval_idx)) as t:
        for i in eval_idx:
            acc = cross_run_recovery(base.model, run_a, run_b, hops, i, tokens, kw)
            for m in METHODS:
                curves[m].append(acc[m]["signed"])
            corr.append(acc["endpoint_corr"])
            rows.append([run_a.steps[i], *[acc[m]["signed"] for m in METHODS], *[acc[m]["perm"] for m in METHODS],
                         acc["endpoint_corr"], acc["hop_corr"]])
            t.advance()
    steps = [run_a.steps[i] for i in eval_idx]
    res.tables.append(Table(
        "Recovery of the cross-run gauge A_k → B_k (fraction of coordinates) vs fine-tuning steps k",
        ["steps k", "composed (perm+sign)", "via base (perm+sign)", "endpoint (perm+sign)", "composed (perm)",
         "via base (perm)", "endpoint (perm)", "endpoint mean |corr|", "hop mean |corr|"], rows,
        note=f"sign-marginalized matching pooled over layers {list(kw['layers'])}, {kw['max_tokens']} probe bytes "
             "(split `probe`) for "
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
    weak = ""
    if not ctx.quick:
        controls = [weak_drift_control(ctx, base, tokens, kw)]
        sm = smollm_short_finetunes(ctx)
        if sm is not None:
            controls.append(sm)
        res.tables.append(Table(
            "Controls: weaker drift, and the pre-trained SmolLM2-135M with short fine-tunes",
            ["setting", "steps", "composed (perm+sign)", "via base (perm+sign)", "endpoint (perm+sign)",
             "endpoint mean |corr|", "hop mean |corr|"],
            [[c["setting"], c["steps"], c["composed"]["signed"], c["via_base"]["signed"], c["endpoint"]["signed"],
              c["endpoint_corr"], c["hop_corr"]] for c in controls],
            note=f"matching as above; SmolLM2: layers {list(sm['layers']) if sm else '—'} pooled, "
                 f"{SMOLLM['probe_tokens']} probe tokens (split `probe`)."))
        for c in controls:
            res.claims[f"control_{c['key']}"] = {m: c[m]["signed"] for m in METHODS}
        w = controls[0]
        weak = (f" With a 3× lower learning rate and both runs on prose, endpoint matching still recovers "
                f"{pct(w['endpoint']['signed'])} after {w['steps']} steps (controls table)")
        if sm is not None:
            weak += (f"; on the pre-trained SmolLM2-135M, {sm['steps']} steps at lr {SMOLLM['lr']:g} leave endpoint "
                     f"matching at {pct(sm['endpoint']['signed'])}, and there composing "
                     f"{2 * len(range(SMOLLM['every'], SMOLLM['steps'] + 1, SMOLLM['every']))} hops gives "
                     f"{pct(sm['composed']['signed'])}: without strong drift, composition only adds the errors of its "
                     "hops")
        else:
            res.notes.append("SmolLM2-135M short fine-tunes: skipped (the GGUF package is not installed).")
        weak += "."
    else:
        res.notes.append("The quick run leaves out the controls (weaker drift; SmolLM2-135M short fine-tunes) that "
                         "the full run reports.")
    res.notes.append(
        f"What it took: residual charts are sticky. The effect needs a small model trained from scratch, fine-tunes "
        f"at a high learning rate ({s.ft_lr:g} after warm-up, with gradient clipping) for thousands of steps, and "
        f"the two runs on different kinds of text (prose vs source code).{weak} Adjacent checkpoints {s.every} steps "
        f"apart stay easy to match (hop mean |corr| in the table), so the composed gauge stays exact while the "
        f"endpoints decorrelate (endpoint mean |corr| falls to {corr[-1]:.2f}).")
    return res.conclude(
        f"{s.describe()}. Run A fine-tunes on split `finetune_a` (docstrings not seen in pre-training), run B on "
        f"`code` (standard-library source without docstrings), different data order; {len(run_a.stored)} "
        f"checkpoints per run, each stored in a uniformly random signed permutation chart. Seeds: model init, data "
        f"order and charts from fold_in(key({ctx.seed}), crc32(·)).",
        SeedRow(
            f"cross-run coordinate recovery after {steps[-1]} fine-tuning steps: composed vs endpoint (vs via base)",
            "91.1 % vs 60.3 % at 1500 steps (via base: lower than composed)",
            (f"at 1500 steps: {pct(curves['composed'][at])} vs {pct(curves['endpoint'][at])} (via base "
             f"{pct(curves['via_base'][at])}); at {steps[-1]}: " if at is not None and at != len(steps) - 1 else "")
            + f"{pct(last['composed'])} vs {pct(last['endpoint'])} (via base {pct(last['via_base'])})",
            f"from-scratch d = {s.d_model}, {s.n_layers} layers, lr {s.ft_lr:g}, {steps[-1]} steps"))
