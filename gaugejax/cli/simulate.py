"""``gaugejax simulate --out DIR``: ceiling Monte Carlo sweeps on device, with JSON and plots.

Monte Carlo of the three matchers on synthetic residual-stream pairs under a hidden gauge, computed
on the JAX device with vmap over trials. Writes simulate.json and PNG plots into --out: fraction.png
(accuracy vs positive-sign fraction, with the ceiling line), tau.png (accuracy vs τ = ρ·sqrt(n),
with the theory's approximation band) and correlation.png (accuracy vs the strength of correlated
coordinates). Accuracy = fraction of coordinates whose source (and sign) is right.

Three sweeps of :func:`gaugejax.simulate.ceiling` (each point: ``--trials`` trials, one compile per
``d`` and structure): accuracy against the positive-sign fraction (with the ceiling line), against
``τ = ρ·sqrt(n)`` (with the finite-SNR approximation band of ``theory/ceiling.py`` when the theory
package is importable) and against the strength of correlated coordinates.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from gaugejax.cli._args import about, command

SWEEPS = ("fraction", "tau", "correlation")
_COLOR = {"signed": "tab:red", "permutation": "tab:blue", "sign_marginalized": "tab:green"}
_LABEL = {"signed": "raw signed", "permutation": "permutation |C|", "sign_marginalized": "sign-marginalized"}


def _style(method: str, ls: str) -> dict:
    """Line style of a source-accuracy curve. The permutation objective on ``|C|`` finds the same sources as
    sign-marginalized matching, so its curve lies on the green one: crosses only, drawn on top."""
    if method == "permutation":
        return {"marker": "x", "ms": 5, "ls": "none", "zorder": 3}
    return {"marker": "o", "ms": 3, "ls": ls}


def register(sub) -> argparse.ArgumentParser:
    p = command(
        sub, "simulate", run, help="synthetic ceiling sweeps on device (accuracy vs sign fraction, SNR, correlation)",
        description=about(__doc__))
    p.add_argument("--out", "-o", required=True, help="output folder (new or empty; see --overwrite)")
    p.add_argument("--sweeps", nargs="+", choices=SWEEPS, default=list(SWEEPS), help="which sweeps (default all)")
    p.add_argument("--d", type=int, nargs="+", default=[64, 256], help="widths (default 64 256)")
    p.add_argument("--n", type=int, default=2048, help="tokens per trial (default 2048)")
    p.add_argument("--rho", type=float, default=0.9, help="matched correlation for the fraction sweep (default 0.9)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="positive-sign fractions (default 0 .25 .5 .75 1)")
    p.add_argument("--taus", type=float, nargs="+", default=[1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0],
                   help="SNR values τ = ρ·sqrt(n) (default 1.5 … 6)")
    p.add_argument("--fraction", type=float, default=0.5,
                   help="positive-sign fraction of the tau and correlation sweeps (default 0.5)")
    p.add_argument("--structures", nargs="+", default=["ar1", "block", "factors", "student_t"],
                   help="structures of the correlation sweep: ar1 block factors outliers student_t "
                   "(default ar1 block factors student_t)")
    p.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.3, 0.6, 0.8, 0.9],
                   help="strengths (φ, block correlation, factor share) of the correlation sweep; student_t uses "
                   "dof 30/(1+10 s), outliers std 1+49 s (default 0 .3 .6 .8 .9)")
    p.add_argument("--tau-corr", type=float, default=4.0,
                   help="SNR τ of the correlation sweep (default 4: moderate, where structure shows)")
    p.add_argument("--trials", type=int, default=32, help="trials per point (default 32)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--quick", action="store_true", help="d = 32, 8 trials, fewer points (a smoke run)")
    from gaugejax.cli.common import add_overwrite_arg

    add_overwrite_arg(p)
    return p


def structure_for(kind: str, s: float) -> str | None:
    """The structure spec of strength ``s`` in [0, 1) for the correlation sweep (None at s = 0)."""
    if s == 0 or kind == "none":
        return None
    if kind == "student_t":
        return f"student_t:{30.0 / (1.0 + 10.0 * s):.6g}"
    if kind == "outliers":
        return f"outliers:{1.0 + 49.0 * s:.6g}"
    return f"{kind}:{s:.6g}"


def _point(key, **kw) -> dict:
    import jax
    import numpy as np

    from gaugejax.simulate import ceiling

    out = jax.device_get(ceiling(key, **kw))
    return {m: {k: {"mean": float(np.mean(v)), "sd": float(np.std(v)), "min": float(np.min(v))}
                for k, v in r.items()} for m, r in out.items()}


def _validate(args) -> None:
    from gaugejax.errors import GaugeJaxError
    from gaugejax.simulate import STRUCTURES

    if args.trials < 1 or args.n < 8 or any(d < 2 for d in args.d):
        raise GaugeJaxError("need --trials >= 1, --n >= 8 and every --d >= 2")
    if args.n > 1 << 24 or any(d > 4096 for d in args.d) or args.trials > 1 << 16:
        raise GaugeJaxError("need --n <= 16777216, every --d <= 4096 and --trials <= 65536 (each trial's "
                            "n × d activations are held on the device)")
    if not 0 < args.rho <= 1 or any(not 0 <= f <= 1 for f in [*args.fractions, args.fraction]):
        raise GaugeJaxError("need 0 < --rho <= 1 and fractions in [0, 1]")
    if any(t <= 0 or t > math.sqrt(args.n) for t in [*args.taus, args.tau_corr]):
        raise GaugeJaxError(f"every τ must lie in (0, sqrt(n)] = (0, {math.sqrt(args.n):.3g}] (ρ = τ/sqrt(n) <= 1)")
    bad = [k for k in args.structures if k not in STRUCTURES or k == "none"]
    if bad:
        raise GaugeJaxError(f"unknown structure {bad[0]!r}; use some of {', '.join(STRUCTURES[1:])}")
    if any(not 0 <= s < 1 for s in args.strengths):
        raise GaugeJaxError("every --strengths value must lie in [0, 1)")


def sweep(args, advance) -> dict:
    """Runs the requested sweeps; returns the JSON-able results."""
    import jax

    key = jax.random.key(args.seed)
    res: dict = {"config": {k: getattr(args, k) for k in ("d", "n", "rho", "fractions", "taus", "fraction",
                                                          "structures", "strengths", "tau_corr", "trials", "seed")},
                 "backend": jax.default_backend()}
    k = 0

    def nxt():
        nonlocal k
        k += 1
        return jax.random.fold_in(key, k)

    if "fraction" in args.sweeps:
        res["fraction"] = []
        for d in args.d:
            for f in args.fractions:
                res["fraction"].append({"d": d, "positive_fraction": f, "m": int(round((1 - f) * d)),
                                        **_point(nxt(), d=d, n=args.n, rho=args.rho, positive_fraction=f,
                                                 trials=args.trials)})
                advance()
    if "tau" in args.sweeps:
        res["tau"] = []
        band = _band_fn()
        for d in args.d:
            for tau in args.taus:
                rho = tau / math.sqrt(args.n)
                row = {"d": d, "tau": tau, "rho": rho, **_point(nxt(), d=d, n=args.n, rho=rho,
                                                                positive_fraction=args.fraction, trials=args.trials)}
                if band:
                    row["approx"] = {m: band(m, tau, d, args.fraction, rho) for m in _COLOR}
                res["tau"].append(row)
                advance()
    if "correlation" in args.sweeps:
        res["correlation"] = []
        rho = args.tau_corr / math.sqrt(args.n)
        for d in args.d:
            for kind in args.structures:
                for s in args.strengths:
                    spec = structure_for(kind, s)
                    res["correlation"].append({"d": d, "structure": kind, "strength": s, "spec": spec or "none",
                                               "rho": rho, **_point(nxt(), d=d, n=args.n, rho=rho,
                                                                    positive_fraction=args.fraction,
                                                                    trials=args.trials, correlation=spec)})
                    advance()
    return res


def _band_fn():
    try:
        from theory.ceiling import approx_accuracy
    except ImportError:  # the theory package needs sympy (pip install 'gaugejax[theory]')
        return None
    return lambda m, tau, d, f, rho: {k: v for k, v in approx_accuracy(m, tau, d, f, rho).items() if k in ("lo", "hi")}


def _plots(res: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    files = []

    def panels(rows, by):
        keys = sorted({r[by] for r in rows}, key=lambda v: (isinstance(v, str), v))
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), dpi=110, sharey=True, squeeze=False)
        return fig, dict(zip(keys, axes[0]))

    def curve(ax, rows, x, method, key="perm", ls="-"):
        pts = sorted((r[x], r[method][key]["mean"], r[method][key]["sd"]) for r in rows if method in r)
        if pts:
            xs, ys, sd = map(np.array, zip(*pts))
            style = _style(method, ls) if key == "perm" else {"marker": "o", "ms": 3, "ls": ls}
            ax.errorbar(xs, ys, yerr=sd, color=_COLOR[method], lw=1.2, capsize=2, **style,
                        label=f"{_LABEL[method]} ({'source' if key == 'perm' else 'source + sign'})")

    def sweep(name, by, ylabel, draw):
        """One figure ``name.png`` of the sweep's rows, a panel per value of ``by``, drawn by ``draw(value, ax)``."""
        if not res.get(name):
            return
        fig, axes = panels(res[name], by)
        for value, ax in axes.items():
            draw(value, ax)
        first = next(iter(axes.values()))
        first.set_ylabel(ylabel)
        first.legend(fontsize=6)
        files.append(_save(fig, out / f"{name}.png"))

    def fraction(d, ax):
        rows = [r for r in res["fraction"] if r["d"] == d]
        ax.plot([0, 1], [0, 1], color="0.6", lw=5, alpha=0.35, label="ceiling = positive fraction")
        for m in _COLOR:
            curve(ax, rows, "positive_fraction", m)
        curve(ax, rows, "positive_fraction", "permutation", "signed", ls=":")
        ax.set_title(f"d = {d}, ρ = {res['config']['rho']}, n = {res['config']['n']}", fontsize=9)
        ax.set_xlabel("positive-sign fraction")

    def tau(d, ax):
        rows = sorted((r for r in res["tau"] if r["d"] == d), key=lambda r: r["tau"])
        for m in ("signed", "sign_marginalized"):
            if rows and "approx" in rows[0]:
                t = [r["tau"] for r in rows]
                ax.fill_between(t, [r["approx"][m]["lo"] for r in rows], [r["approx"][m]["hi"] for r in rows],
                                color=_COLOR[m], alpha=0.15, label=f"{_LABEL[m]}: approximation band")
        for m in _COLOR:
            curve(ax, rows, "tau", m)
        ax.set_title(f"d = {d}, positive fraction {res['config']['fraction']}", fontsize=9)
        ax.set_xlabel("τ = ρ·sqrt(n)")

    def correlation(kind, ax):
        rows_all = res["correlation"]
        for d, ls in zip(sorted({r["d"] for r in rows_all}), ("-", "--", ":", "-.")):
            rows = [r for r in rows_all if r["structure"] == kind and r["d"] == d]
            for m in _COLOR:
                pts = sorted((r["strength"], r[m]["perm"]["mean"]) for r in rows)
                ax.plot(*zip(*pts), color=_COLOR[m], **_style(m, ls), label=f"{_LABEL[m]}, d = {d}")
        ax.set_title({"ar1": "AR(1): strength = φ", "block": "blocks: within-block correlation",
                      "factors": "shared factors: variance share", "student_t": "Student-t: dof = 30/(1+10 s)",
                      "outliers": "outliers: std = 1 + 49 s"}.get(kind, kind), fontsize=9)
        ax.set_xlabel("strength s")

    sweep("fraction", "d", "accuracy (mean ± sd over trials)", fraction)
    sweep("tau", "d", "source accuracy", tau)
    sweep("correlation", "structure",
          f"source accuracy (τ = {res['config']['tau_corr']}, fraction {res['config']['fraction']})", correlation)
    return files


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def run(args) -> int:
    from gaugejax.atomic import atomic_path
    from gaugejax.cli.common import check_outputs, console, output, progress, table

    if args.quick:
        args.d, args.trials = [32], min(args.trials, 8)
        args.fractions, args.taus, args.strengths = [0.0, 0.5, 1.0], [2.0, 4.0, 6.0], [0.0, 0.5, 0.9]
    _validate(args)
    check_outputs(args, [output(args.out, directory=True)])
    nd = len(args.d)
    total = nd * (len(args.fractions) * ("fraction" in args.sweeps) + len(args.taus) * ("tau" in args.sweeps)
                  + len(args.structures) * len(args.strengths) * ("correlation" in args.sweeps))
    t0 = time.perf_counter()
    with progress("simulating", total) as advance:
        res = sweep(args, advance)
    res["seconds"] = round(time.perf_counter() - t0, 2)
    with atomic_path(args.out, directory=True, overwrite=args.overwrite) as tmp:
        (tmp / "simulate.json").write_text(json.dumps(res, indent=1))
        files = _plots(res, tmp)
    rows = []
    for name in ("fraction", "tau", "correlation"):
        for r in res.get(name, []):
            x = {"fraction": "positive_fraction", "tau": "tau", "correlation": "strength"}[name]
            label = f"{name} {r.get('structure', '')} {x}={r[x]:g}".replace("  ", " ")
            rows.append([label, r["d"]] + [r[m]["perm"]["mean"] for m in _COLOR] + [r["sign_marginalized"]["signed"]["mean"]])
    table(f"Source accuracy, mean of {args.trials} trials ({res['backend']})",
          ["point", "d", "raw signed", "permutation", "sign-marg.", "sign-marg. +sign"], rows)
    console().print(f"wrote {args.out}/simulate.json and {', '.join(files)} in {res['seconds']:.1f} s")
    return 0
