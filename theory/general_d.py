"""Gauge groups of norm layers for general ``d``: symbolic derivations.

Each function returns a :class:`theory.proof.Proof` whose steps are sympy assertions. Index-level
steps use ``sympy.Idx`` indices over a symbolic dimension ``d`` (so they hold for every ``d``);
a few steps are finite cross-checks and say so in their claim.

Setting (docs/conventions.md §2): a chart map ``Q`` (orthogonal, ``d × d``) keeps a norm layer in its parametric
form if ``norm(Qx; θ') = Q norm(x; θ)`` for all ``x``. For
``norm(x) = g ⊙ Cx / sqrt(|Cx|²/d + eps) + b`` (``C = I`` RMSNorm, ``C = I - 11ᵀ/d`` LayerNorm)
the constant and first-order terms in ``x`` (see :func:`theory.norm_charts.first_order_lemma`)
give ``b' = Qb`` and ``diag(g') C Q = Q diag(g) C``.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from gaugejax.gauge import SignedPermutation
from theory.norm_charts import CHART_BY_NAME, decide
from theory.proof import Proof, is_zero, resolve_ranges

KD = sp.KroneckerDelta


def _dim():
    d = sp.Symbol("d", integer=True, positive=True)
    return d


# --------------------------------------------------------------------------- (a)
def gain_commutation_is_signed_permutation() -> Proof:
    """(a) Orthogonal ``Q`` with ``diag(g') Q = Q diag(g)``, ``g_i`` pairwise distinct, is a
    signed permutation, and then ``g' = g[perm]`` (unsigned).

    This is the RMSNorm first-order condition (``C = I``), so with ``|Qx| = |x|`` for orthogonal
    ``Q`` the RMSNorm gauge group among orthogonal maps is exactly ``B_d``.
    """
    pf = Proof("(a) gain commutation => signed permutation",
               "An orthogonal Q with diag(g')Q = Q diag(g) and pairwise distinct g_i is a signed "
               "permutation (perm, signs), and g' = g[perm] (never signed). Hence RMSNorm with a "
               "generic gain has gauge group exactly B_d.")
    d = _dim()
    i, j, k, i2 = (sp.Idx(n, d) for n in ("i", "j", "k", "i2"))
    Q, g, gp, a, x = (sp.IndexedBase(n) for n in ("Q", "g", "gp", "a", "x"))
    # 1. entries of the commutator
    lhs = sp.Sum(KD(i, k) * gp[k] * Q[k, j], (k, 0, d - 1)).doit()
    rhs = sp.Sum(Q[i, k] * KD(k, j) * g[k], (k, 0, d - 1)).doit()
    entry = resolve_ranges(lhs - rhs, d)
    pf.check("[diag(g')Q - Q diag(g)]_ij = Q_ij (g'_i - g_j) for every d",
             is_zero(entry - Q[i, j] * (gp[i] - g[j])))
    # 2. two non-zero entries in one row force equal gains
    q1 = sp.Symbol("Q_ij", real=True, nonzero=True)
    q2 = sp.Symbol("Q_ij2", real=True)
    gi, g1, g2 = sp.symbols("gp_i g_j g_j2", real=True)
    sols = sp.solve([q1 * (gi - g1), q2 * (gi - g2)], [gi, q2], dict=True)
    pf.check("Q_ij != 0 forces g'_i = g_j and then Q_ij2 (g_j - g_j2) = 0, so Q_ij2 = 0 when "
             "g_j != g_j2: at most one non-zero entry per row", sols == [{gi: g1, q2: 0}],
             detail=str(sols))
    sols_tied = sp.solve([q1 * (gi - g1), q2 * (gi - g1)], [gi, q2], dict=True)
    pf.check("(contrast) with g_j = g_j2 the second entry stays free (the O(k) block of (c))",
             sols_tied == [{gi: g1}], detail=str(sols_tied))
    # 3. orthogonal => each row has unit norm, so exactly one entry a_i = ±1 at column pi(i)
    p, p2 = sp.Idx("p", d), sp.Idx("p2", d)  # p = pi(i), p2 = pi(i2)
    row_norm = resolve_ranges(sp.Sum((a[i] * KD(j, p)) ** 2, (j, 0, d - 1)).doit(), d)
    pf.check("a monomial row Q_ij = a_i δ(j, π(i)) has squared norm a_i²", is_zero(row_norm - a[i] ** 2))
    ai = sp.Symbol("a_i", real=True)
    pf.check("a_i² = 1 has exactly the solutions ±1", set(sp.solve(ai**2 - 1, ai)) == {-1, 1})
    # 4. distinct rows use distinct columns
    inner = resolve_ranges(sp.Sum(a[i] * KD(j, p) * a[i2] * KD(j, p2), (j, 0, d - 1)).doit(), d)
    pf.check("(QQᵀ)_{i,i2} = a_i a_i2 δ(π(i), π(i2))", is_zero(inner - a[i] * a[i2] * KD(p, p2)))
    a1, a2 = sp.symbols("a_1 a_2")
    pf.check("if π(i) = π(i2) for i != i2 then (QQᵀ)_{i,i2} = ±1 != 0, contradicting "
             "orthogonality; so π is a permutation",
             all((inner.subs(p2, p).subs({a[i]: s1, a[i2]: s2}) != 0)
                 for s1 in (1, -1) for s2 in (1, -1)))
    # 5. the action is the fixed convention (docs/conventions.md §1)
    act = resolve_ranges(sp.Sum(a[i] * KD(k, p) * x[k], (k, 0, d - 1)).doit(), d)
    pf.check("(Qx)_i = a_i x_{π(i)}: Q is the gauge (perm = π, signs = a); "
             "and step 2 gives g'_i = g_{π(i)} = g[perm]_i, independent of a_i",
             is_zero(act - a[i] * x[p]))
    # 6. finite cross-checks: all orthogonal solutions, nothing assumed about the form of Q
    q = sp.symbols("q00 q01 q10 q11", real=True)
    gp2 = sp.symbols("gp0 gp1", real=True)
    g2s = sp.symbols("g0 g1", real=True)
    Qm = sp.Matrix(2, 2, q)
    eqs = list(sp.diag(*gp2) * Qm - Qm * sp.diag(*g2s)) + list(Qm.T * Qm - sp.eye(2))
    eqs = [e for e in (sp.expand(e) for e in eqs) if e != 0]
    sols2 = sp.solve(eqs, list(q) + list(gp2), dict=True)
    signed_perms = all(sorted(abs(s[v]) for v in q) == [0, 0, 1, 1] for s in sols2)
    pf.check("d = 2, symbolic distinct gains, Q a general 2×2 matrix with QᵀQ = I: "
             "exactly the 8 signed permutations", len(sols2) == 8 and signed_perms)
    q9 = sp.symbols("q0:9", real=True)
    gp3 = sp.symbols("gp0:3", real=True)
    Q3 = sp.Matrix(3, 3, q9)
    g3 = sp.diag(1, 2, 5)  # a generic instance of distinct gains
    eqs3 = list(sp.diag(*gp3) * Q3 - Q3 * g3) + list(Q3.T * Q3 - sp.eye(3))
    eqs3 = [e for e in (sp.expand(e) for e in eqs3) if e != 0]
    sols3 = sp.solve(eqs3, list(q9) + list(gp3), dict=True)
    pf.check("d = 3, gains (1, 2, 5), general orthogonal Q: exactly the 48 elements of B_3",
             len(sols3) == 48 and all(sorted(abs(s[v]) for v in q9) == [0] * 6 + [1] * 3
                                      for s in sols3))
    return pf


# --------------------------------------------------------------------------- (b)
def centering_commutation_and_layernorm_group() -> Proof:
    """(b) ``Q`` commutes with mean-centring iff ``Q1 = ±1``; with (a) the LayerNorm gauge group is
    ``S_d × {±1}``.

    The LayerNorm first-order condition ``diag(g') C Q = Q diag(g) C`` (gains non-zero, pairwise
    distinct) is reduced step by step to ``diag(g') Q = Q diag(g)`` and ``Q1 = c1``.
    """
    pf = Proof("(b) centering commutation => LayerNorm group S_d x {±1}",
               "Orthogonal Q commutes with C = I - 11ᵀ/d iff Q1 = ±1. The LayerNorm condition "
               "diag(g')CQ = Q diag(g)C with non-zero, pairwise distinct gains forces Q1 = c1 "
               "(c = ±1) and diag(g')Q = Q diag(g); so Q is a permutation times one global sign: "
               "the group S_d × {±1} of order 2·d!.")
    d = _dim()
    i, j, k = (sp.Idx(n, d) for n in ("i", "j", "k"))
    Q, u = sp.IndexedBase("Q"), sp.IndexedBase("u")
    # 1. C1 = 0 and Cu = u - mean(u)1
    c_one = resolve_ranges(sp.Sum(KD(i, k) - 1 / d, (k, 0, d - 1)).doit(), d)
    pf.check("(C1)_i = 0 for every d", is_zero(c_one))
    cu = resolve_ranges(sp.Sum((KD(i, k) - 1 / d) * u[k], (k, 0, d - 1)).doit(), d)
    mean_u = sp.Sum(u[k], (k, 0, d - 1)) / d
    pf.check("(Cu)_i = u_i - mean(u): Cu = 0 iff u = mean(u)·1", is_zero(cu - (u[i] - mean_u)))
    # 2. multiply the LN condition by 1 on the right
    pf.note("right-multiplying diag(g')CQ = Q diag(g)C by 1 gives diag(g') C (Q1) = Q diag(g) C1 = 0; "
            "g' non-zero => C(Q1) = 0 => Q1 = c·1 (step 1)")
    # 3. orthogonality fixes c
    c = sp.Symbol("c", real=True)
    pf.check("|Q1|² = |1|² reads c² d = d, so c = ±1 for every d ≥ 1",
             set(sp.solve(c**2 * d - d, c)) == {-1, 1})
    pf.check("Qᵀ1 = c·1 too: Qᵀ(Q1) = 1 gives c Qᵀ1 = 1 and 1/c = c",
             all(1 / sp.Integer(cv) - cv == 0 for cv in (1, -1)))
    # 4. the commutator with C, entrywise, for every d
    QC = resolve_ranges(sp.Sum(Q[i, k] * (KD(k, j) - 1 / d), (k, 0, d - 1)).doit(), d)
    CQ = resolve_ranges(sp.Sum((KD(i, k) - 1 / d) * Q[k, j], (k, 0, d - 1)).doit(), d)
    row_i = sp.Sum(Q[i, k], (k, 0, d - 1))
    col_j = sp.Sum(Q[k, j], (k, 0, d - 1))
    pf.check("(QC - CQ)_ij = ((Qᵀ1)_j - (Q1)_i)/d", is_zero(sp.expand(QC - CQ) - (col_j - row_i) / d))
    r, s_ = sp.symbols("r s", real=True)
    pf.check("QC = CQ iff all row sums equal all column sums (= c); with |Q1| = |1| this is "
             "Q1 = ±1 (converse: (QC - CQ)1 = -C(Q1) = 0 forces Q1 ∈ span 1)",
             sp.solve([(s_ - r) / d], [s_], dict=True) == [{s_: r}])
    # 5. LayerNorm: reduce to a commutator with a rank-one defect
    pf.note("with QC = CQ the condition is (diag(g')Q - Q diag(g)) C = 0, i.e. N = v 1ᵀ for some v "
            "(each row n of N has Cn = 0, step 1)")
    uu = sp.symbols("u0:4", real=True)
    sym = sp.Matrix(4, 4, lambda a_, b_: uu[a_]) - sp.Matrix(4, 4, lambda a_, b_: uu[b_])
    sol_sym = sp.solve(list(sym), uu[1:], dict=True)
    pf.check("Qᵀdiag(g')Q = diag(g) + (Qᵀv)1ᵀ and the left side is symmetric, so u1ᵀ is symmetric: "
             "u_i = u_j for all i, j, u = α1 (solved entrywise)",
             sol_sym == [{uu[1]: uu[0], uu[2]: uu[0], uu[3]: uu[0]}])
    alpha, sg, sgp = sp.symbols("alpha Sg Sgp", real=True)
    e = sp.Symbol("e", integer=True, nonnegative=True)
    trace_eq = sp.Eq(sgp, sg + alpha * d)          # trace of both sides (Q orthogonal)
    quad_eq = sp.Eq(c**2 * sgp, sg + alpha * d**2)  # 1ᵀ(.)1, using Q1 = c1
    sol = sp.solve([trace_eq, quad_eq.subs(c, 1)], [alpha, sgp], dict=True)
    sol = [{k_: v.subs(d, 2 + e) for k_, v in s.items()} for s in sol]
    pf.check("trace: Σg' = Σg + αd; 1ᵀ(.)1: c²Σg' = Σg + αd²; so α(d² - d) = 0 and α = 0 for d ≥ 2",
             sol == [{alpha: 0, sgp: sg}], detail=str(sol))
    pf.note("α = 0 gives Qᵀdiag(g')Q = diag(g), i.e. diag(g')Q = Q diag(g): by (a) Q is a "
            "signed permutation")
    # 6. a signed permutation has Q1 = signs
    sgn, p = sp.IndexedBase("s"), sp.Idx("p", d)
    q1 = resolve_ranges(sp.Sum(sgn[i] * KD(k, p), (k, 0, d - 1)).doit(), d)
    pf.check("for a signed permutation (Q1)_i = s_i, so Q1 = c1 means all signs equal c: "
             "Q ∈ S_d × {±1}", is_zero(q1 - sgn[i]))
    # 7. sufficiency for S_d × {±1} with g' = g[perm], b' = c·b[perm]
    ok = all(decide(CHART_BY_NAME["layernorm_affine"],
                    SignedPermutation(np.array(pm), np.full(3, cc))).equivariant
             for pm in ((0, 1, 2), (2, 0, 1), (1, 0, 2)) for cc in (1, -1))
    pf.check("sufficiency (d = 3 instances): permutations with a global sign and g' = g[perm], "
             "b' = b[perm]·c keep LayerNorm exactly (full residual expanded to 0)", ok)
    # 8. finite cross-check beyond signed permutations: rotations about the 1-axis in d = 3
    cs, sn = sp.symbols("cos_t sin_t", real=True)
    n = sp.Matrix([1, 1, 1]) / sp.sqrt(3)
    K = sp.Matrix([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]])
    R = cs * sp.eye(3) + sn * K + (1 - cs) * n * n.T
    gps = sp.symbols("gp0:3", real=True)
    gs = sp.symbols("g0:3", real=True, nonzero=True)
    C3 = sp.eye(3) - sp.ones(3, 3) / 3
    cond = sp.diag(*gps) * C3 * R - R * sp.diag(*gs) * C3
    eqs = [sp.expand(x_) for x_ in cond] + [cs**2 + sn**2 - 1]
    sols = sp.solve([e_.subs({gs[0]: 1, gs[1]: 2, gs[2]: 5}) for e_ in eqs], [cs, sn, *gps], dict=True)
    angles = sorted((sp.nsimplify(s[cs]), sp.nsimplify(s[sn])) for s in sols)
    perm_like = all(sorted(sp.nsimplify(v) for v in R.subs({cs: s[cs], sn: s[sn]})) == [0] * 6 + [1] * 3
                    for s in sols)
    pf.check("d = 3, gains (1, 2, 5): of the whole circle of rotations fixing 1, exactly the "
             "identity and the two 3-cycles satisfy the LayerNorm condition",
             len(sols) == 3 and perm_like, detail=str(angles))
    return pf


# --------------------------------------------------------------------------- (c)
def tied_gains_continuous_block() -> Proof:
    """(c) With ``k`` tied gains the RMSNorm group contains a continuous ``O(k)`` block."""
    pf = Proof("(c) tied gains => continuous O(k) block",
               "If g has k equal entries γ (the rest arbitrary), every Q = R ⊕ I with R ∈ O(k) is "
               "an RMSNorm symmetry with g' = g: the group is continuous, of dimension at least "
               "k(k-1)/2. With distinct gains the same rotations are symmetries only at sin θ = 0.")
    k_, m_ = sp.symbols("k m", integer=True, positive=True)
    gamma = sp.Symbol("gamma", real=True)
    R = sp.MatrixSymbol("R", k_, k_)
    D = sp.MatrixSymbol("D", m_, m_)
    G = sp.BlockDiagMatrix(gamma * sp.Identity(k_), D)
    Qb = sp.BlockDiagMatrix(R, sp.Identity(m_))
    left, right = sp.block_collapse(G * Qb), sp.block_collapse(Qb * G)
    pf.check("for every k, m: (γ I_k ⊕ D)(R ⊕ I_m) = (R ⊕ I_m)(γ I_k ⊕ D), any k×k R "
             "(block matrices of symbolic size)", left == right, detail=str(left))
    E = sp.MatrixSymbol("E", k_, k_)
    Gd = sp.BlockDiagMatrix(E, D)
    pf.check("(contrast) with a general gain block E the products are E·R and R·E, not equal",
             sp.block_collapse(Gd * Qb) != sp.block_collapse(Qb * Gd))
    # k = 2: full layer identity along a circle
    th = sp.Symbol("theta", real=True)
    eps = sp.Symbol("epsilon", positive=True)
    x = sp.Matrix(sp.symbols("x0:3", real=True))
    g3 = sp.Symbol("g2", real=True)
    gain = sp.Matrix([gamma, gamma, g3])
    Rot = sp.Matrix([[sp.cos(th), -sp.sin(th), 0], [sp.sin(th), sp.cos(th), 0], [0, 0, 1]])

    def rms(v, gn):
        # the mean square is put in canonical form (cancel), so equal norms give one sympy object
        ms = sp.cancel(sp.expand((v.T * v)[0, 0]))
        return sp.Matrix([gn[a] * v[a] for a in range(3)]) / sp.sqrt(ms / 3 + eps)

    res = (rms(Rot * x, gain) - Rot * rms(x, gain)).applyfunc(lambda e_: sp.simplify(sp.trigsimp(e_)))
    pf.check("k = 2: RMSNorm(R(θ)x; g) = R(θ) RMSNorm(x; g) for all θ (full layer, eps symbolic)",
             res == sp.zeros(3, 1))
    pf.check("the family is not discrete: dR/dθ at θ = 0 is non-zero",
             sp.diff(Rot, th).subs(th, 0) != sp.zeros(3, 3))
    # k = 3: Cayley parametrisation of SO(3), 3 free parameters
    w = sp.symbols("w0:3", real=True)
    A = sp.Matrix([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
    Rc = ((sp.eye(3) - A) * (sp.eye(3) + A).inv()).applyfunc(sp.simplify)
    pf.check("k = 3: the Cayley map R(w) = (I - A)(I + A)⁻¹ is orthogonal for all w",
             (Rc.T * Rc - sp.eye(3)).applyfunc(sp.simplify) == sp.zeros(3, 3))
    tied = sp.Matrix([gamma] * 3)
    res3 = (rms(Rc * x, tied) - Rc * rms(x, tied)).applyfunc(sp.cancel)
    pf.check("k = 3: RMSNorm with tied gains is equivariant under every R(w)", res3 == sp.zeros(3, 1))
    jac = sp.Matrix([list(Rc.diff(wi).subs({w[0]: 0, w[1]: 0, w[2]: 0})) for wi in w])
    pf.check("k = 3: the family has dimension k(k-1)/2 = 3 (Jacobian rank at w = 0)", jac.rank() == 3)
    # contrast: distinct gains
    g_1, g_2 = sp.symbols("g_1 g_2", real=True)
    distinct = sp.Matrix([g_1, g_2, g3])
    gp = sp.Matrix(sp.symbols("gp0:3", real=True))
    cond = (sp.diag(*gp) * Rot - Rot * sp.diag(*distinct)).applyfunc(sp.expand)
    sol = sp.solve(list(cond), list(gp), dict=True)
    off = sp.factor(cond[0, 1].subs(gp[0], g_1))
    pf.check("distinct gains: the first-order condition forces g'_0 = g_1 and "
             "sin θ (g_1 - g_2) = 0, i.e. only the discrete sin θ = 0",
             sol == [] and sp.simplify(off - sp.sin(th) * (g_2 - g_1)) == 0, detail=str(off))
    return pf


# --------------------------------------------------------------------------- (d)
def rescaling_needs_zero_eps() -> Proof:
    """(d) A positive residual rescaling ``x → λx`` is an RMSNorm symmetry only when ``eps = 0``.

    Symmetry means: some gain ``g'`` and some linear ``K`` (absorbed by the matrices that read the
    norm's output) give ``RMSNorm(λx; g') = K · RMSNorm(x; g)`` for all ``x``.
    """
    pf = Proof("(d) positive rescaling needs eps = 0",
               "x → λx (λ > 0) can be absorbed by an RMSNorm (new gain, and any linear map on the "
               "norm's output) for all x iff λ = 1 or eps = 0. So with eps > 0 there is no "
               "continuous scaling gauge, and B_d is the whole residual group.")
    lam, eps, r = sp.symbols("lambda epsilon r", positive=True)
    eps0 = sp.Symbol("epsilon0", nonnegative=True)
    # along a ray x = r u (mean(u²) = 1): RMS(λru; g') = λ r g'⊙u / sqrt(λ² r² + eps) and
    # K RMS(ru; g) = r K(g⊙u) / sqrt(r² + eps): equal for all r iff f(r) is constant
    f2 = lam**2 * (r**2 + eps0) / (lam**2 * r**2 + eps0)
    df = sp.factor(sp.diff(f2, r))
    pf.note("with f(r) = λ sqrt(r² + eps)/sqrt(λ² r² + eps), the identity on a ray is "
            "g'⊙u · f(r) = K(g⊙u) for all r > 0, so f must be constant")
    pf.check("d(f²)/dr = 2 eps λ² r (1 - λ²) / (λ² r² + eps)²",
             sp.simplify(df - 2 * eps0 * lam**2 * r * (1 - lam**2) / (lam**2 * r**2 + eps0) ** 2) == 0,
             detail=str(df))
    num = sp.numer(sp.together(df))
    sols = sp.solve(num, [eps0, lam], dict=True)
    pf.check("f constant (λ > 0, r > 0) iff eps = 0 or λ = 1", sorted(map(str, sols)) ==
             sorted(map(str, [{eps0: 0}, {lam: 1}])), detail=str(sols))
    x = sp.Matrix(sp.symbols("x0:3", real=True))
    g = sp.Matrix(sp.symbols("g0:3", real=True))

    def rms(v, e_):
        return sp.Matrix([g[a] * v[a] for a in range(3)]) / sp.sqrt((v.T * v)[0, 0] / 3 + e_)

    pf.check("eps = 0: RMSNorm(λx) = RMSNorm(x) exactly (scale invariance, g' = g, K = I)",
             (rms(lam * x, 0) - rms(x, 0)).applyfunc(sp.simplify) == sp.zeros(3, 1))
    pf.check("eps > 0, λ = 2: RMSNorm(2x) != RMSNorm(x) (symbolic x, eps)",
             (rms(2 * x, eps) - rms(x, eps)).applyfunc(sp.simplify) != sp.zeros(3, 1))
    return pf


def all_general_d() -> list[Proof]:
    """The four derivations (a)-(d)."""
    return [gain_commutation_is_signed_permutation(), centering_commutation_and_layernorm_group(),
            tied_gains_continuous_block(), rescaling_needs_zero_eps()]
