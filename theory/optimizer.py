"""Optimizer covariance: one AdamW step commutes with the gauge under the documented state rules.

The rules are those of ``docs/conventions.md`` §3: ``mu`` like its parameter, ``nu`` permuted only.

AdamW (Loshchilov & Hutter; ``optax.adamw``, ``torch.optim.AdamW``), element-wise, step ``t``::

    mu'  = b1 mu + (1 - b1) G
    nu'  = b2 nu + (1 - b2) G²
    W'   = W - lr ( (mu' / (1 - b1^t)) / (sqrt(nu' / (1 - b2^t)) + eps) + wd W )

A gauge acts on a parameter by a signed permutation ``T`` of its entries (e.g. ``W[:, perm] *
signs`` for a matrix reading the stream). Transport of state: ``mu`` by ``T`` (signed), ``nu`` by
``|T|`` (permutation only), ``count`` untouched. The claims:

* gradients transport like parameters (chain rule, ``T`` orthogonal on the entries),
* ``step(T·state, T·G) = T·step(state, G)`` exactly, so (by induction) whole trajectories agree,
* with ``mu`` transported without signs, or ``nu`` with signs, the identity fails.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from gaugejax.gauge import SignedPermutation
from theory.proof import Proof

LR, B1, B2, EPS, WD = sp.symbols("lr beta1 beta2 epsilon wd", positive=True)
COUNT = sp.Symbol("count", integer=True, nonnegative=True)


def adamw_step(w: np.ndarray, g: np.ndarray, mu: np.ndarray, nu: np.ndarray, count=COUNT,
               lr=LR, b1=B1, b2=B2, eps=EPS, wd=WD):
    """One AdamW step on object (sympy) or float arrays. Returns ``(w', mu', nu', count + 1)``."""
    t = count + 1
    sqrt = np.vectorize(sp.sqrt, otypes=[object]) if w.dtype == object else np.sqrt
    mu2 = b1 * mu + (1 - b1) * g
    nu2 = b2 * nu + (1 - b2) * g * g
    mhat = mu2 / (1 - b1**t)
    nhat = nu2 / (1 - b2**t)
    w2 = w - lr * (mhat / (sqrt(nhat) + eps) + wd * w)
    return w2, mu2, nu2, t


def _syms(name, shape, **assumptions):
    flat = sp.symbols(f"{name}_0:{int(np.prod(shape))}", **assumptions)
    return np.array(flat, dtype=object).reshape(shape)


def _zero(a: np.ndarray) -> bool:
    return all(sp.simplify(sp.expand(v)) == 0 for v in np.asarray(a).ravel())


def step_commutes(gauge: SignedPermutation, mu_signed: bool = True, nu_signed: bool = False,
                  axis: int = 1, param_signed: bool = True) -> bool:
    """Whether ``step(T·state) = T·step(state)`` holds symbolically for one parameter.

    Args:
      gauge: the residual gauge.
      mu_signed: transport ``mu`` with signs (correct) or without (wrong).
      nu_signed: transport ``nu`` with signs (wrong) or without (correct).
      axis: residual axis of the parameter (1: a ``(2, d)`` matrix reading the stream; 0: a
        ``(d, 2)`` matrix writing it).
      param_signed: whether the parameter itself takes signs (False for an RMSNorm gain; then
        ``axis`` must be 0 and the parameter is a ``(d,)`` vector).

    Returns:
      True iff ``W``, ``mu`` and ``nu`` after one step agree exactly in chart B.
    """
    d = gauge.d
    shape = (2, d) if axis == 1 else (d, 2)
    if not param_signed:
        shape = (d,)
    w, g, mu = _syms("W", shape, real=True), _syms("G", shape, real=True), _syms("mu", shape, real=True)
    nu = _syms("nu", shape, positive=True)

    def move(a, signed):
        return gauge.apply(a, axis=axis, signed=signed and param_signed)

    wa, mua, nua, _ = adamw_step(w, g, mu, nu)
    wb, mub, nub, _ = adamw_step(move(w, True), move(g, True), move(mu, mu_signed), move(nu, nu_signed))
    return (_zero(wb - move(wa, True)) and _zero(mub - move(mua, mu_signed))
            and _zero(nub - move(nua, nu_signed)))


def gradient_transport(gauge: SignedPermutation, signed: bool = True) -> bool:
    """Chain rule: if ``L_B(W) = L_A(T⁻¹ W)`` then ``∇L_B(T W) = T ∇L_A(W)``, for a generic loss.

    The loss is an undefined sympy function of all entries of a ``(2, d)`` reading matrix.

    Args:
      gauge: the residual gauge.
      signed: compare with the signed transport ``T ∇L_A`` (True, the claim) or with the
        permutation-only one (False; fails whenever a sign is -1).
    """
    d = gauge.d
    w = _syms("W", (2, d), real=True)
    f = sp.Function("L")
    loss_a = f(*w.ravel())
    grad_a = np.array([sp.diff(loss_a, v) for v in w.ravel()], dtype=object).reshape(w.shape)
    wb = _syms("V", (2, d), real=True)  # chart-B coordinates
    back = gauge.inverse().apply(wb, axis=1)  # T⁻¹ V
    loss_b = f(*back.ravel())
    grad_b = np.array([sp.diff(loss_b, v) for v in wb.ravel()], dtype=object).reshape(w.shape)
    at = dict(zip(wb.ravel(), gauge.apply(w, axis=1).ravel()))  # evaluate at V = T W
    grad_b = np.vectorize(lambda e: sp.sympify(e).xreplace(at).doit(), otypes=[object])(grad_b)
    return _zero(grad_b - gauge.apply(grad_a, axis=1, signed=signed))


def optax_cross_check(gauge: SignedPermutation, seed: int = 0, steps: int = 3) -> dict:
    """Numeric cross-check with ``optax.adamw``: our formula equals optax's step, and the optax
    trajectory of the transported state is the transported trajectory (signed ``mu``) while an
    unsigned ``mu`` drifts away.

    Returns:
      ``{"formula_err", "signed_err", "unsigned_err"}`` (max absolute differences, float64).
    """
    import jax
    import jax.numpy as jnp
    import optax

    with _x64():
        rng = np.random.default_rng(seed)
        d = gauge.d
        w = rng.normal(size=(4, d))
        target = rng.normal(size=(16, 4))
        xs = rng.normal(size=(16, d))

        def loss_a(w_):
            return jnp.mean((xs @ w_.T - target) ** 2)

        xs_b = gauge.apply(xs, axis=1)  # inputs in chart B: the loss is the same function

        def loss_b(w_):
            return jnp.mean((xs_b @ w_.T - target) ** 2)

        opt = optax.adamw(1e-2, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1)
        wa = jnp.asarray(w)
        sa = opt.init(wa)
        formula_err = 0.0
        for _ in range(steps):  # warm up a non-trivial state
            ga = jax.grad(loss_a)(wa)
            mine = adamw_step(np.asarray(wa), np.asarray(ga), np.asarray(sa[0].mu), np.asarray(sa[0].nu),
                              int(sa[0].count), 1e-2, 0.9, 0.99, 1e-8, 0.1)[0]
            up, sa = opt.update(ga, sa, wa)
            wa = optax.apply_updates(wa, up)
            formula_err = max(formula_err, float(np.abs(mine - np.asarray(wa)).max()))

        def transported(signed_mu):
            adam = sa[0]
            state = (adam._replace(mu=gauge.apply(adam.mu, axis=1, signed=signed_mu),
                                   nu=gauge.apply(adam.nu, axis=1, signed=False)),) + tuple(sa[1:])
            return gauge.apply(wa, axis=1), state

        def run(w_, s_, loss):
            for _ in range(steps):
                up, s_ = opt.update(jax.grad(loss)(w_), s_, w_)
                w_ = optax.apply_updates(w_, up)
            return w_

        ref = gauge.apply(run(wa, sa, loss_a), axis=1)
        errs = {}
        for key, signed in (("signed_err", True), ("unsigned_err", False)):
            wb, sb = transported(signed)
            errs[key] = float(np.abs(np.asarray(run(wb, sb, loss_b)) - np.asarray(ref)).max())
        return {"formula_err": formula_err, **errs}


def _x64():
    import jax

    if hasattr(jax, "enable_x64"):  # jax >= 0.7
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # pragma: no cover (older jax)

    return enable_x64()


def adamw_covariance(gauge: SignedPermutation | None = None, numeric: bool = True) -> Proof:
    """Proposition 4 as a :class:`Proof` (symbolic steps, plus the optax cross-check)."""
    gauge = gauge or SignedPermutation(np.array([2, 0, 1]), np.array([1, -1, -1]))
    pf = Proof("AdamW covariance",
               "One AdamW step (bias correction, decoupled weight decay) commutes with a signed "
               "permutation when mu is transported signed and nu permutation-only; it does not when "
               "mu is transported without signs (or nu with signs).",
               status="proved symbolically (+ optax numeric cross-check)")
    pf.check("gradients transport like parameters: ∇L_B(TW) = T∇L_A(W) (generic loss)",
             gradient_transport(gauge))
    pf.check("reading matrix W (2, d): step(T·state) = T·step(state) with mu signed, nu unsigned",
             step_commutes(gauge, axis=1))
    pf.check("writing matrix W (d, 2): same", step_commutes(gauge, axis=0))
    pf.check("RMSNorm gain (permuted, never signed): mu and nu both permutation-only",
             step_commutes(gauge, axis=0, param_signed=False, mu_signed=False))
    pf.check("(wrong rule) mu without signs: the identity fails",
             not step_commutes(gauge, mu_signed=False))
    pf.check("(wrong rule) nu with signs: the identity fails", not step_commutes(gauge, nu_signed=True))
    pf.note("by induction over steps (each step's gradient transports, lemma 1) whole training "
            "trajectories agree in the two charts")
    if numeric:
        errs = optax_cross_check(gauge)
        pf.data.update(errs)
        pf.check("optax.adamw matches the formula above (float64, 3 steps)", errs["formula_err"] < 1e-12,
                 detail=f"max err {errs['formula_err']:.1e}")
        pf.check("optax trajectory from the signed-transported state = transported trajectory",
                 errs["signed_err"] < 1e-12, detail=f"max err {errs['signed_err']:.1e}")
        pf.check("optax trajectory from unsigned mu differs", errs["unsigned_err"] > 1e-6,
                 detail=f"max diff {errs['unsigned_err']:.1e}")
    return pf
