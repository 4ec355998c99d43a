"""Experiment 6: resuming AdamW training in a new chart, with and without optimizer-state transport.

A from-scratch RMSNorm model (the pre-trained base of :mod:`experiments.scratch`) is trained
on for a while with AdamW at a constant learning rate; then its parameters are moved to a random
chart ``G`` (:func:`gaugejax.apply_gauge`) and training resumes on the same batches with the
optimizer state

* **signed**: transported by :func:`gaugejax.optim.transport_opt_state` (``mu`` signed, ``nu``
  permuted);
* **permutation-only**: ``mu`` and ``nu`` moved by the permutation only (``moment_signs=False``);
* **reset**: a fresh ``optimizer.init`` (no state transported);
* **not moved**: the old state used as it is, in the wrong chart.

The reference is the same training continued in the original chart, mapped through ``G``.
Reported: loss curves and the relative parameter distance ``‖θ − G(θ_ref)‖ / ‖G(θ_ref)‖``.
"""

from __future__ import annotations

import numpy as np

from experiments import scratch
from experiments.common import Context, Result, SeedRow, Table, figure_grid

NAME = "optimizer"
TITLE = "AdamW state transport: resumed training in a new chart"
VARIANTS = ("signed", "permutation-only", "reset", "not moved")


def _flat(params) -> np.ndarray:
    import jax

    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(params)])


def run(ctx: Context) -> Result:
    import jax.numpy as jnp

    import gaugejax as gj
    from gaugejax import train
    from gaugejax.optim import transport_opt_state

    res = Result(NAME, TITLE, seed=ctx.seed)
    base = scratch.base_run(ctx)
    s = base.sizes
    warm, resume = ctx.size((100, 100), (300, 300))
    lr = 3e-3
    opt = train.adamw(lr, weight_decay=s.weight_decay)
    data = scratch.batches(ctx, "finetune_a", warm + resume, s, f"{NAME}/data")
    step = train.make_step(base.model.config, opt)

    params, state = base.model.params, opt.init(base.model.params)
    with ctx.task("optimizer: warm-up training", warm) as t:
        for n in range(warm):
            params, state, _ = step(params, state, jnp.asarray(data[n]))
            t.advance()
    model = gj.Model(base.model.config, params)
    g = gj.SignedPermutation.random(ctx.key(NAME, 1), model.d)
    moved = gj.apply_gauge(model, g)
    spec = gj.gauge_spec(model)
    starts = {
        "signed": transport_opt_state(state, g, spec),
        "permutation-only": transport_opt_state(state, g, spec, moment_signs=False),
        "reset": opt.init(moved.params),
        "not moved": state,
    }

    def resume_from(p, st, t):
        losses, snaps = [], []
        for n in range(resume):
            p, st, loss = step(p, st, jnp.asarray(data[warm + n]))
            losses.append(float(loss))
            snaps.append(p)
            t.advance()
        return np.array(losses), snaps

    with ctx.task("optimizer: resumed runs", resume * (1 + len(VARIANTS))) as t:
        ref_losses, ref_snaps = resume_from(params, state, t)
        curves = {v: resume_from(moved.params, starts[v], t) for v in VARIANTS}
    ref_moved = [_flat(gj.apply_gauge(gj.Model(model.config, p), g).params) for p in ref_snaps]
    dist = {v: np.array([np.linalg.norm(_flat(p) - r) / np.linalg.norm(r) for p, r in zip(curves[v][1], ref_moved)])
            for v in VARIANTS}
    loss_gap = {v: np.abs(curves[v][0] - ref_losses) for v in VARIANTS}
    rows = [[v, float(dist[v][0]), float(dist[v][-1]), float(loss_gap[v].max()), float(curves[v][0][-10:].mean())]
            for v in VARIANTS]
    rows.append(["reference (original chart)", 0.0, 0.0, 0.0, float(ref_losses[-10:].mean())])
    res.tables.append(Table(
        f"Resumed training after a chart change ({resume} steps, AdamW lr {lr:g})",
        ["optimizer state", "param. distance after 1 step", f"param. distance after {resume} steps",
         "max |loss − reference loss|", "loss (last 10 steps)"], rows,
        note="parameter distance: ‖θ − G(θ_ref)‖ / ‖G(θ_ref)‖ with θ_ref the reference run mapped into the new chart."))

    def draw(axes):
        ax0, ax1 = axes
        x = np.arange(1, resume + 1)
        cols = {"signed": "C2", "permutation-only": "C0", "reset": "C1", "not moved": "C3"}
        ax0.axhline(0, color="k", lw=0.6)
        for v in VARIANTS:
            ax0.plot(x, curves[v][0] - ref_losses, color=cols[v], lw=0.9, label=v)
            ax1.plot(x, np.maximum(dist[v], 1e-12), color=cols[v], label=v)
        ax0.set_xlabel("resumed step")
        ax0.set_ylabel("training loss − reference loss (nats/byte)")
        ax0.set_title(f"reference loss {ref_losses[0]:.2f} → {ref_losses[-1]:.2f}", fontsize=9)
        ax0.legend(fontsize=8)
        ax1.set_yscale("log")
        ax1.set_xlabel("resumed step")
        ax1.set_ylabel("‖θ − G(θ_ref)‖ / ‖G(θ_ref)‖")
        ax1.set_title("distance from the reference trajectory", fontsize=9)

    res.figures.append((figure_grid(ctx, "optimizer.png", 2, draw, size=(10, 3.6)),
                        "Resumed training: losses and distance from the reference trajectory per optimizer state."))
    res.claims.update(**{f"dist_{v.replace(' ', '_').replace('-', '_')}": float(dist[v][-1]) for v in VARIANTS},
                      loss_gap_signed=float(loss_gap["signed"].max()),
                      loss_gap_perm=float(loss_gap["permutation-only"].max()))
    return res.conclude(
        f"{s.describe().split(';')[0]}. The pre-trained base is trained {warm} more steps (AdamW, constant lr {lr:g}, "
        f"split `finetune_a`), moved to a uniformly random signed-permutation chart, and resumed for {resume} steps on "
        f"identical batches. Chart key fold_in(key({ctx.seed}), crc32('{NAME}'), 1).",
        SeedRow(
            "AdamW state: signed transport vs permutation-only", "same resumed trajectory vs a different one",
            f"relative parameter distance after {resume} steps: signed {dist['signed'][-1]:.1e}, permutation-only "
            f"{dist['permutation-only'][-1]:.1e}, reset {dist['reset'][-1]:.1e}",
            f"from-scratch d = {s.d_model}, {resume} resumed steps"))
