"""Norm charts, decided exhaustively over ``B_d`` for small ``d``.

A *chart* is a normalisation layer with its parameter family. For a signed permutation ``Q`` (the
residual gauge, ``(Qx)[j] = signs[j] * x[perm[j]]``) we ask whether some parameters ``θ'`` in the
same family make the layer equivariant::

    norm(Q x; θ') = Q · norm(x; θ)        for all x, with θ, x and eps > 0 symbolic.

Every chart has the form ``norm(x; θ) = g ⊙ (C x) / sqrt(σ(x) + eps) + b`` with ``C`` the identity
(RMSNorm) or the centring matrix ``I - 11ᵀ/d`` (LayerNorm) and ``σ(x) = |C x|² / d``. The decision
is structural, not a search:

1. *Necessary, constant term.* At ``x = 0`` both sides are biases: ``b' = Q b``.
2. *Necessary, first order.* ``d/dt norm(t x)`` at ``t = 0`` is ``g ⊙ (C x) / sqrt(eps)`` (proved by
   :func:`first_order_lemma` with sympy for every chart and ``d``), so
   ``diag(g') C Q = Q diag(g) C``: linear equations in the unknown parameters, solved by
   ``sympy.linsolve``. No solution: not equivariant.
3. *Denominators.* With the first-order identity holding and ``g ⊙ Cx ≢ 0``, the remaining
   condition is ``σ(Q x) ≡ σ(x)``, i.e. ``Qᵀ C Q = C`` as quadratic forms.
4. *Sufficiency.* The solved ``θ'`` is substituted into the full layer and the residual
   ``norm(Qx; θ') - Q norm(x; θ)``, multiplied by the common denominator, is expanded to ``0``.

Charts: RMSNorm with a generic gain, RMSNorm with tied (all equal) gains, LayerNorm with gain and
bias, LayerNorm without affine parameters. The families are closed: a tied gain must stay tied,
a chart without a gain keeps ``g = 1``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import sympy as sp

from gaugejax.gauge import SignedPermutation


@dataclass(frozen=True)
class Chart:
    """A normalisation layer family.

    Attributes:
      name: identifier used in tables and JSON.
      centered: LayerNorm (subtract the mean) if True, RMSNorm otherwise.
      gain: ``"generic"`` (d free gains), ``"tied"`` (one shared gain) or ``"none"`` (g = 1).
      bias: whether the layer has an additive bias.
      label: human-readable name.
    """

    name: str
    centered: bool
    gain: str
    bias: bool
    label: str


CHARTS: tuple[Chart, ...] = (
    Chart("rmsnorm_generic", False, "generic", False, "RMSNorm, generic gain"),
    Chart("rmsnorm_tied", False, "tied", False, "RMSNorm, tied gains"),
    Chart("layernorm_affine", True, "generic", True, "LayerNorm, gain + bias"),
    Chart("layernorm_plain", True, "none", False, "LayerNorm, no affine"),
)
CHART_BY_NAME = {c.name: c for c in CHARTS}


@dataclass
class Decision:
    """Outcome of :func:`decide` for one chart and one gauge.

    Attributes:
      equivariant: whether parameters ``θ'`` exist.
      stage: where the decision was made: ``"linear"`` (no θ' solves the constant and first-order
        equations), ``"denominator"`` (σ(Qx) ≢ σ(x)), or ``"verified"`` (full residual is 0).
      params: the unique solution ``{"g": [...], "b": [...]}`` as sympy expressions (when found).
    """

    equivariant: bool
    stage: str
    params: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- group enumeration
def hyperoctahedral(d: int):
    """Yields every element of ``B_d`` as a :class:`SignedPermutation` (``2^d · d!`` of them)."""
    for perm in itertools.permutations(range(d)):
        for signs in itertools.product((1, -1), repeat=d):
            yield SignedPermutation(np.array(perm), np.array(signs))


def gauge_matrix(gauge: SignedPermutation) -> sp.Matrix:
    """The matrix ``Q`` with ``Q x = x[perm] * signs`` (row ``j`` has ``signs[j]`` at ``perm[j]``)."""
    d = gauge.d
    q = sp.zeros(d, d)
    for j in range(d):
        q[j, int(gauge.perm[j])] = int(gauge.signs[j])
    return q


# --------------------------------------------------------------------------- symbols and layers
@lru_cache(maxsize=None)
def _symbols(d: int):
    x = sp.Matrix(sp.symbols(f"x0:{d}", real=True))
    g = sp.Matrix(sp.symbols(f"g0:{d}", real=True, nonzero=True))
    b = sp.Matrix(sp.symbols(f"b0:{d}", real=True))
    gp = sp.Matrix(sp.symbols(f"gp0:{d}", real=True))
    bp = sp.Matrix(sp.symbols(f"bp0:{d}", real=True))
    gamma, gamma_p = sp.symbols("gamma gamma_p", real=True)
    eps = sp.Symbol("epsilon", positive=True)
    t = sp.Symbol("t", real=True)
    return x, g, b, gp, bp, gamma, gamma_p, eps, t


def centering(d: int, centered: bool) -> sp.Matrix:
    """``I - 11ᵀ/d`` for LayerNorm, ``I`` for RMSNorm."""
    eye = sp.eye(d)
    return eye - sp.ones(d, d) / d if centered else eye


def chart_params(chart: Chart, d: int, primed: bool):
    """Gain and bias vectors of a chart, as symbols (``primed``: the unknowns ``θ'``).

    Returns:
      ``(g, b, unknowns)`` with ``unknowns`` the list of free symbols of ``θ'`` (empty if not
      ``primed``).
    """
    _, g, b, gp, bp, gamma, gamma_p, _, _ = _symbols(d)
    unknowns: list[sp.Symbol] = []
    if chart.gain == "generic":
        gain = gp if primed else g
        unknowns += list(gp) if primed else []
    elif chart.gain == "tied":
        gain = sp.ones(d, 1) * (gamma_p if primed else gamma)
        unknowns += [gamma_p] if primed else []
    else:
        gain = sp.ones(d, 1)
    if chart.bias:
        bias = bp if primed else b
        unknowns += list(bp) if primed else []
    else:
        bias = sp.zeros(d, 1)
    return gain, bias, unknowns


def norm_expr(chart: Chart, x: sp.Matrix, gain: sp.Matrix, bias: sp.Matrix, eps) -> sp.Matrix:
    """The layer ``g ⊙ Cx / sqrt(σ(x) + eps) + b`` as a sympy column (σ expanded, so equal
    denominators are identical sympy objects)."""
    d = x.shape[0]
    cx = centering(d, chart.centered) * x
    sigma = sp.expand((cx.T * cx)[0, 0] / d)
    den = sp.sqrt(sigma + eps)
    return sp.Matrix([gain[i] * cx[i] / den + bias[i] for i in range(d)])


# --------------------------------------------------------------------------- structural lemmas
def first_order_lemma(chart: Chart, d: int) -> bool:
    """Proves ``norm(0) = b`` and ``d/dt norm(t x)|_{t=0} = g ⊙ Cx / sqrt(eps)`` symbolically.

    These two facts turn equivariance into the linear equations used by :func:`decide`.
    """
    x, *_, eps, t = _symbols(d)
    gain, bias, _ = chart_params(chart, d, primed=False)
    y = norm_expr(chart, t * x, gain, bias, eps)
    cx = centering(d, chart.centered) * x
    ok = True
    for i in range(d):
        ok &= sp.simplify(y[i].subs(t, 0) - bias[i]) == 0
        slope = sp.diff(y[i], t).subs(t, 0)
        ok &= sp.simplify(slope - gain[i] * cx[i] / sp.sqrt(eps)) == 0
    return bool(ok)


def decide(chart: Chart, gauge: SignedPermutation, verify: bool = True) -> Decision:
    """Decides whether ``gauge`` is a symmetry of ``chart`` (see the module docstring).

    Args:
      chart: the layer family.
      gauge: an element of ``B_d``.
      verify: also substitute the solution into the full layer and expand the residual to 0.

    Returns:
      A :class:`Decision`.
    """
    d = gauge.d
    x, *_, eps, _ = _symbols(d)
    q = gauge_matrix(gauge)
    cm = centering(d, chart.centered)
    g, b, _ = chart_params(chart, d, primed=False)
    gp, bp, unknowns = chart_params(chart, d, primed=True)
    # constant term (x = 0) and first-order term: linear in θ'
    eqs = list(bp - q * b)
    eqs += list(sp.diag(*gp) * cm * q - q * sp.diag(*g) * cm)
    eqs = [e for e in (sp.expand(e) for e in eqs) if e != 0]
    if unknowns:
        sol = sp.linsolve(eqs, unknowns) if eqs else sp.FiniteSet(tuple(unknowns))
        if sol == sp.S.EmptySet:
            return Decision(False, "linear")
        (values,) = tuple(sol)
        subs = dict(zip(unknowns, values))
    else:
        if eqs:
            return Decision(False, "linear")
        subs = {}
    gp_s = gp.subs(subs)
    bp_s = bp.subs(subs)
    params = {"g": list(gp_s), "b": list(bp_s)}
    # denominators: σ(Qx) ≡ σ(x)  <=>  Qᵀ C Q = C  (C symmetric idempotent)
    if (q.T * cm * q - cm).applyfunc(sp.expand) != sp.zeros(d, d):
        return Decision(False, "denominator", params)
    if verify:
        lhs = norm_expr(chart, q * x, gp_s, bp_s, eps)
        rhs = q * norm_expr(chart, x, g, b, eps)
        cx = cm * x
        den = sp.sqrt(sp.expand((cx.T * cx)[0, 0] / d) + eps)
        residual = ((lhs - rhs) * den).applyfunc(sp.expand)
        if residual != sp.zeros(d, 1):
            return Decision(False, "residual", params)
    return Decision(True, "verified", params)


def spec_rule_params(chart: Chart, gauge: SignedPermutation) -> dict:
    """The documented parameter rules (docs/conventions.md §3), as sympy vectors, for comparison with :func:`decide`.

    RMSNorm gain ``g[perm]`` (never signed); LayerNorm ``g[perm]``, ``b[perm] * signs``.
    """
    d = gauge.d
    g, b, _ = chart_params(chart, d, primed=False)
    perm, signs = gauge.perm, gauge.signs
    return {
        "g": [g[int(perm[j])] for j in range(d)],
        "b": [b[int(perm[j])] * int(signs[j]) for j in range(d)],
    }


#: Parameter rules that can be tried against a chart with :func:`rule_holds`.
RULES = ("spec", "signed_gain", "unsigned_bias")


def rule_params(chart: Chart, gauge: SignedPermutation, rule: str = "spec") -> dict:
    """Parameters ``θ'`` produced by a named rule.

    ``"spec"``: the documented rule (:func:`spec_rule_params`). ``"signed_gain"`` (wrong): the gain is moved
    like a vector of the stream, ``g[perm] * signs``. ``"unsigned_bias"`` (wrong): the bias only
    permuted, ``b[perm]``.
    """
    want = spec_rule_params(chart, gauge)
    d = gauge.d
    g, b, _ = chart_params(chart, d, primed=False)
    perm, signs = gauge.perm, gauge.signs
    if rule == "signed_gain":
        want["g"] = [g[int(perm[j])] * int(signs[j]) for j in range(d)]
    elif rule == "unsigned_bias":
        want["b"] = [b[int(perm[j])] for j in range(d)]
    elif rule != "spec":
        raise ValueError(f"unknown rule {rule!r}; use one of {RULES}")
    return want


def rule_holds(chart: Chart, gauge: SignedPermutation, rule: str = "spec") -> bool:
    """Whether ``norm(Qx; θ') = Q norm(x; θ)`` holds identically for the rule's ``θ'``.

    The residual is multiplied by both denominators and expanded: zero iff the identity holds
    (``eps`` and ``x`` symbolic).
    """
    d = gauge.d
    x, *_, eps, _ = _symbols(d)
    q = gauge_matrix(gauge)
    g, b, _ = chart_params(chart, d, primed=False)
    params = rule_params(chart, gauge, rule)
    lhs = norm_expr(chart, q * x, sp.Matrix(params["g"]), sp.Matrix(params["b"]), eps)
    rhs = q * norm_expr(chart, x, g, b, eps)
    cm = centering(d, chart.centered)
    dens = [sp.sqrt(sp.expand(((cm * v).T * (cm * v))[0, 0] / d) + eps) for v in (x, q * x)]
    residual = ((lhs - rhs) * dens[0] * dens[1]).applyfunc(sp.expand)
    return residual == sp.zeros(d, 1)


@dataclass
class ChartCensus:
    """Exhaustive result for one chart and one ``d``.

    Attributes:
      chart: chart name.
      d: dimension.
      count: number of equivariant elements of ``B_d``.
      group_size: ``2^d · d!``.
      all_global_sign: every equivariant element has all signs equal.
      rules_match_spec: every solved ``θ'`` equals the documented rule.
      stages: how many elements were decided at each stage.
    """

    chart: str
    d: int
    count: int
    group_size: int
    all_global_sign: bool
    rules_match_spec: bool
    stages: dict


def census(chart: Chart, d: int, verify: bool = True) -> ChartCensus:
    """Decides every element of ``B_d`` for ``chart``."""
    count, all_global, rules_ok, stages = 0, True, True, {}
    for gauge in hyperoctahedral(d):
        dec = decide(chart, gauge, verify=verify)
        stages[dec.stage] = stages.get(dec.stage, 0) + 1
        if dec.equivariant:
            count += 1
            all_global &= gauge.is_global_sign
            want = spec_rule_params(chart, gauge)
            for key in ("g", "b"):
                got = dec.params[key]
                rules_ok &= all(sp.expand(a - w) == 0 for a, w in zip(got, want[key]))
    return ChartCensus(chart.name, d, count, 2**d * math.factorial(d), bool(all_global),
                       bool(rules_ok), stages)


EXPECTED_COUNTS = {
    "rmsnorm_generic": lambda d: 2**d * math.factorial(d),
    "rmsnorm_tied": lambda d: 2**d * math.factorial(d),
    "layernorm_affine": lambda d: 2 * math.factorial(d),
    "layernorm_plain": lambda d: 2 * math.factorial(d),
}
