"""Experiment 1: the signed-matching ceiling on synthetic decorrelated models.

With decorrelated coordinates and a true gauge with ``m`` negative signs among ``d``, at
high signal-to-noise raw signed-correlation matching recovers exactly the ``d - m`` positive
coordinates when ``m ≥ 2`` (permutation accuracy = positive-sign fraction); the ``permutation``
matcher finds the permutation but no sign; sign-marginalized matching recovers everything. At
``m = 1`` the truth ties with the ``d − 1`` transpositions of the negative coordinate (theory,
part ii); sampling noise picks one of them, so the accuracy is usually ``(d − 2)/d``.

Synthetic pair (:func:`simulate`): ``X`` has ``d`` independent standard-normal
coordinates, ``Y = ρ G(X) + √(1-ρ²) Z`` with independent noise ``Z``. For each number of negative signs we draw several gauges with exactly
``m`` negatives and run the three matchers of :func:`gaugejax.match`.
"""

from __future__ import annotations

import numpy as np

from experiments.common import Context, Result, SeedRow, Table, figure, pct

NAME = "ceiling"
TITLE = "Signed-matching ceiling on synthetic decorrelated models"
METHODS = ("signed", "permutation", "sign_marginalized")


def simulate(seed: int, d: int, n: int, m: int, rho: float):
    """One synthetic pair: ``(X, Y, truth)`` with exactly ``m`` negative signs in the true gauge.

    The permutation is ``SignedPermutation.random(seed, d)``'s; the ``m`` negative coordinates, ``X``
    and the noise come from ``numpy.random.default_rng([seed, d, n, m])`` (the same model and draws
    as ``theory.ceiling.synthetic``).
    """
    import gaugejax as gj

    base = gj.SignedPermutation.random(seed, d)
    rng = np.random.default_rng([seed, d, n, m])
    signs = np.ones(d, np.int8)
    signs[rng.permutation(d)[:m]] = -1
    truth = gj.SignedPermutation(base.perm, signs)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (rho * truth.apply(x) + np.sqrt(1 - rho**2) * rng.standard_normal((n, d))).astype(np.float32)
    return x, y, truth


def run(ctx: Context) -> Result:
    import gaugejax as gj

    res = Result(NAME, TITLE, seed=ctx.seed)
    d, n, reps = ctx.size((64, 2048, 3), (256, 8192, 8))
    rho = 0.9
    ms = sorted({0, 1, 2, *[round(f * d) for f in np.linspace(0, 1, 9)]})
    acc = {meth: np.zeros((len(ms), reps, 2)) for meth in METHODS}
    with ctx.task("ceiling: synthetic pairs", len(ms) * reps) as t:
        for i, m in enumerate(ms):
            for r in range(reps):
                x, y, truth = simulate(ctx.int_seed(NAME, m, r), d, n, m, rho)
                for meth in METHODS:
                    a = gj.match(x, y, method=meth, warn=False).gauge.agreement(truth)
                    acc[meth][i, r] = a["perm"], a["signed"]
                t.advance()
    pos = np.array([1 - m / d for m in ms])
    mean = {meth: acc[meth].mean(axis=1) for meth in METHODS}
    rows = []
    for i, m in enumerate(ms):
        rows.append([m, pos[i], *[mean[meth][i, 0] for meth in METHODS], *[mean[meth][i, 1] for meth in METHODS]])
    res.tables.append(Table(
        f"Accuracy vs positive-sign fraction (d = {d}, n = {n} tokens, ρ = {rho}, mean of {reps} gauges per row)",
        ["m negative", "positive fraction", "signed: perm acc", "permutation: perm acc", "sign-marg.: perm acc",
         "signed: perm+sign acc", "permutation: perm+sign acc", "sign-marg.: perm+sign acc"], rows))

    def draw(ax):
        ax.plot([0, 1], [0, 1], color="0.8", lw=1, ls="--", label="ceiling = positive fraction")
        styles = {"signed": ("o-", "C3"), "permutation": ("s-", "C0"), "sign_marginalized": ("^-", "C2")}
        for meth in METHODS:
            st, c = styles[meth]
            ax.plot(pos, mean[meth][:, 0], st, color=c, ms=4, label=f"{meth}: permutation accuracy")
        ax.plot(pos, mean["permutation"][:, 1], "s:", color="C0", ms=3, alpha=0.7, label="permutation: with signs")
        ax.set_xlabel("positive-sign fraction of the true gauge")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.03, 1.03)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"Synthetic decorrelated pair, d={d}")

    res.figures.append((figure(ctx, "ceiling.png", draw), "Permutation accuracy of the three matchers vs the "
                        "positive-sign fraction; the raw signed matcher sits on the diagonal (for m ≥ 2)."))
    ge2 = [i for i, m in enumerate(ms) if m >= 2]
    ceiling_gap = float(max(abs(mean["signed"][i, 0] - pos[i]) for i in ge2))
    res.claims.update(
        signed_ceiling_max_gap=ceiling_gap,
        signed_at_m1=float(mean["signed"][ms.index(1), 0]),
        sign_marginalized_min=float(mean["sign_marginalized"][:, 1].min()),
        permutation_perm_min=float(mean["permutation"][:, 0].min()),
        permutation_signed_at_half=float(mean["permutation"][ms.index(round(d / 2)), 1]),
    )
    return res.conclude(
        f"d = {d}, {n} tokens, correlation ρ = {rho} between matched coordinates, {len(ms)} values of m, "
        f"{reps} random gauges each; simulator `theory.ceiling.synthetic` with seeds derived from ({ctx.seed}, "
        f"crc32('{NAME}'), m, rep).",
        SeedRow(
            "raw signed matching: permutation accuracy = positive-sign fraction (m ≥ 2); "
            "sign-marginalized removes it",
            "proved (ceiling theorem)",
            f"signed within {ceiling_gap:.3f} of the ceiling for every m ≥ 2 (at m = 1: "
            f"{pct(res.claims['signed_at_m1'])}, a population tie broken by noise); sign-marginalized ≥ "
            f"{pct(res.claims['sign_marginalized_min'])}",
            f"synthetic, d = {d}, ρ = {rho}"))
