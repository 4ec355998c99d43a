"""The demonstration behind ``gaugejax demo``: which chart changes are symmetries, and recovering one.

:func:`symmetry_checks` builds a small RMSNorm (Llama-style) and a LayerNorm (GPT-2-style) model
and measures how far each chart change moves the logits: a signed permutation preserves the RMSNorm
model, the same change with the gain wrongly signed does not; a permutation with a global sign
preserves the LayerNorm model, per-coordinate signs do not. :func:`recovery_checks` hides a ``B_d``
gauge and recovers it from activations with each matching method.

Example:
  >>> rows, setup = symmetry_checks(seed=0, d=32)
  >>> [r.preserved for r in rows]
  [True, False, True, False]
  >>> [r.exact for r in recovery_checks(setup)]
  [False, False, True]
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, NamedTuple

import numpy as np

from gaugejax.gauge import SignedPermutation
from gaugejax.verify import DEFAULT_TOL, output_deviation

__all__ = ["SymmetryRow", "RecoveryRow", "DemoSetup", "symmetry_checks", "recovery_checks"]


class SymmetryRow(NamedTuple):
    """One chart change: ``deviation`` is ``max |Δlogit| / max |logit|``."""

    model: str
    change: str
    deviation: float
    preserved: bool


class RecoveryRow(NamedTuple):
    """One matcher on the hidden gauge: accuracies against it, and the relative transport error
    ``‖Ĝ(h_A) − h_B‖ / ‖h_B‖`` at the last layer."""

    method: str
    perm_accuracy: float
    signed_accuracy: float
    transport_error: float
    exact: bool


class DemoSetup(NamedTuple):
    """The RMSNorm model, the ``B_d`` gauge hidden in it and the probe tokens."""

    model: Any
    gauge: SignedPermutation
    tokens: np.ndarray


def symmetry_checks(seed: int = 0, d: int = 128) -> tuple[list[SymmetryRow], DemoSetup]:
    """Four chart changes of two small models and whether each preserves the function.

    Args:
      seed: seed of models, gauge and tokens.
      d: residual width (a multiple of 16: 8 heads of an even size).

    Returns:
      The rows (RMSNorm: signed permutation, the same with a signed gain; LayerNorm: permutation ×
      global sign, per-coordinate signs) and the RMSNorm setup for :func:`recovery_checks`.
    """
    import jax

    import gaugejax as gj
    from gaugejax.spec import Axes, apply_spec

    tokens = np.random.default_rng(seed).integers(0, 256, (8, 64))
    rows = []

    def check(name, model, moved, what):
        dev = output_deviation(model, moved, tokens)
        rows.append(SymmetryRow(name, what, dev, bool(dev < DEFAULT_TOL)))

    rms = gj.random_model(gj.tiny_config("llama", d_model=d, n_heads=8, head_dim=d // 8, d_ff=2 * d), seed)
    g = SignedPermutation.random(seed + 1, d)
    check("RMSNorm", rms, gj.apply_gauge(rms, g), f"signed permutation ({int((g.signs < 0).sum())}/{d} flips)")
    signed_gain = jax.tree.map(lambda a: Axes(*(x and dataclasses.replace(x, signed=True) for x in a.actions)),
                               gj.gauge_spec(rms), is_leaf=lambda a: isinstance(a, Axes))
    check("RMSNorm", rms, gj.Model(rms.config, apply_spec(rms.params, signed_gain, g)),
          "B_d with signed gain (wrong rule)")

    ln = gj.random_model(gj.tiny_config("gpt2", d_model=d, n_heads=8, d_ff=2 * d), seed)
    check("LayerNorm", ln, gj.apply_gauge(ln, SignedPermutation(g.perm, -np.ones(d))), "permutation × global sign")
    forced = gj.Model(ln.config, apply_spec(ln.params, gj.gauge_spec(ln), g))  # bypasses the refusal on purpose
    check("LayerNorm", ln, forced, "per-coordinate signs")
    return rows, DemoSetup(rms, g, tokens)


def recovery_checks(setup: DemoSetup) -> list[RecoveryRow]:
    """Recovers the hidden gauge from activations (every layer after the embeddings) with each
    matcher: ``signed``, ``permutation``, ``sign_marginalized``."""
    import gaugejax as gj
    from gaugejax.matching import match

    model, gauge, tokens = setup
    moved = gj.apply_gauge(model, gauge)
    xa = np.asarray(gj.residual_stream(model, tokens, final_norm=False))[1:]
    xb = np.asarray(gj.residual_stream(moved, tokens, final_norm=False))[1:]
    x = xa.reshape(xa.shape[0], -1, xa.shape[-1])
    y = xb.reshape(xb.shape[0], -1, xb.shape[-1])
    rows = []
    for method in ("signed", "permutation", "sign_marginalized"):
        with warnings.catch_warnings():  # the raw matchers' ambiguity is the point being shown
            warnings.simplefilter("ignore")
            r = match(x, y, method=method)
        acc = r.gauge.agreement(gauge)
        err = float(np.linalg.norm(r.gauge.apply(xa[-1]) - xb[-1]) / np.linalg.norm(xb[-1]))
        rows.append(RecoveryRow(method, acc["perm"], acc["signed"], err, r.gauge == gauge))
    return rows
