"""On-device exact assignment: same optimum as scipy on random, near-gauge, tie-heavy matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.optimize import linear_sum_assignment

from gaugejax import assignment, assignment_device as ad
from gaugejax.gauge import SignedPermutation

# Few distinct shapes (each one compiles once) covering 1..64, square and rectangular.
SHAPES = [(1, 1), (2, 2), (3, 3), (4, 7), (7, 4), (8, 8), (13, 13), (16, 16), (31, 40), (64, 64)]
_solve = jax.jit(ad.solve)


def _scipy_opt(s):
    s = np.asarray(s, np.float64)
    r, c = linear_sum_assignment(s, maximize=True)
    return float(s[r, c].sum())


def _checked_objective(out, s):
    rows, cols = np.asarray(out.rows), np.asarray(out.cols)
    k = min(s.shape)
    assert rows.shape == cols.shape == (k,)
    assert len(set(rows.tolist())) == k and len(set(cols.tolist())) == k
    assert (np.diff(rows) > 0).all()
    return float(np.asarray(s, np.float64)[rows, cols].sum())


def _near_gauge(rng, d, noise, neg_frac=0.0):
    perm = rng.permutation(d)
    s = noise * rng.standard_normal((d, d))
    s[perm, np.arange(d)] += np.where(rng.random(d) < neg_frac, -1.0, 1.0) * rng.uniform(0.3, 1.0, d)
    return s.astype(np.float32)


def _matrix(kind, shape, rng):
    n, m = shape
    if kind == "ties":  # small integers: every operation is exact in float32, so equality is exact
        return rng.integers(0, 3, shape).astype(np.float32)
    if kind == "random":
        return rng.random(shape, dtype=np.float32)
    d = max(n, m)
    s = _near_gauge(rng, d, 0.05 if kind == "near" else 0.3, 0.5 if kind == "hard" else 0.0)[:n, :m]
    return np.abs(s) if kind == "near" else s


# Tolerance: the device solver works in float32; its duals carry float32 rounding, so the optimum is
# scipy's (float64) up to a few ulps of the objective's scale (measured: identical assignments).
@given(shape=st.sampled_from(SHAPES), seed=st.integers(0, 2**31 - 1),
       kind=st.sampled_from(["random", "near", "hard", "ties"]))
def test_objective_equals_scipy(shape, seed, kind):
    s = _matrix(kind, shape, np.random.default_rng(seed))
    got = _checked_objective(_solve(jnp.asarray(s)), s)
    if kind == "ties":
        assert got == _scipy_opt(s)
    else:
        assert got == pytest.approx(_scipy_opt(s), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("d", [256, 1024])
@pytest.mark.parametrize("kind", ["near", "hard", "random", "ties"])
def test_fixed_large_cases(d, kind):
    s = _matrix(kind, (d, d), np.random.default_rng(d))
    out = _solve(jnp.asarray(s))
    if kind == "ties":
        assert _checked_objective(out, s) == _scipy_opt(s)  # integer entries: exact arithmetic
    else:
        assert _checked_objective(out, s) == pytest.approx(_scipy_opt(s), rel=1e-6)
    assert bool(out.certified) == (kind == "near")  # the near-gauge |C| is settled by the certificate


@pytest.mark.parametrize("d,m", [(16, 0), (16, 1), (16, 2), (16, 5), (16, 16), (256, 1), (256, 128), (1024, 1)])
def test_signed_objective_structural_ties(d, m):
    """Raw signed score ρ·P_signed of a decorrelated population: m = 1 has d tied optima, m >= 2
    a derangement block; ρ = 0.5 is exact in float32, so the optimum must match exactly."""
    rng = np.random.default_rng(m)
    signs = np.ones(d, np.int8)
    signs[rng.permutation(d)[:m]] = -1
    g = SignedPermutation(rng.permutation(d), signs)
    c = np.zeros((d, d), np.float32)
    c[g.perm, np.arange(d)] = 0.5 * g.signs
    out = _solve(jnp.asarray(c))
    got = _checked_objective(out, c)
    # m = 1: the truth and the d - 1 transpositions tie at ρ(d - 2); m != 1: ρ(d - m).
    assert got == _scipy_opt(c) == 0.5 * (d - 2 if m == 1 else d - m)
    right = np.asarray(out.cols)[g.perm] == np.arange(d)
    assert right.sum() in ((d, d - 2) if m == 1 else (d - m,))


def test_vmap_equals_one_by_one():
    rng = np.random.default_rng(7)
    batch = np.stack([_matrix(k, (16, 16), rng) for k in ("near", "hard", "random", "ties")])
    out = jax.jit(ad.solve_batched)(jnp.asarray(batch))
    for b in range(batch.shape[0]):
        one = _solve(jnp.asarray(batch[b]))
        np.testing.assert_array_equal(np.asarray(out.cols[b]), np.asarray(one.cols))
        assert _checked_objective(one, batch[b]) == pytest.approx(_scipy_opt(batch[b]), rel=1e-6)


def test_certificate_and_assignment_method():
    a, ok = ad.row_argmax_certificate(jnp.asarray(np.eye(4)[[1, 0, 3, 2]]))
    assert a.tolist() == [1, 0, 3, 2] and bool(ok)
    assert not bool(ad.row_argmax_certificate(jnp.ones((2, 2)))[1])
    s = _matrix("hard", (40, 40), np.random.default_rng(3))
    res = assignment.solve(s, method="device")
    assert res.solver == "device" and res.objective == pytest.approx(_scipy_opt(s), rel=1e-6)
    assert assignment.solve(s.T[:, :30], method="device").objective == pytest.approx(_scipy_opt(s.T[:, :30]), rel=1e-6)


def test_empty_and_bad_rank():
    out = ad.solve(jnp.zeros((0, 3)))
    assert out.cols.shape == (0,)
    with pytest.raises(ValueError):
        ad.solve(jnp.zeros(3))


@pytest.mark.parametrize("method", ["signed", "permutation", "sign_marginalized"])
def test_match_device_switch_same_optimum(method):
    from gaugejax.matching import match

    rng = np.random.default_rng(11)
    d, n = 48, 512
    g = SignedPermutation.random(5, d, negative_fraction=0.5)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (0.9 * g.apply(x) + 0.44 * rng.standard_normal((n, d))).astype(np.float32)
    host = match(x, y, method, warn=False)
    dev = match(x, y, method, warn=False, device=True)
    assert dev.solver == "device"
    # same float32 correlation matrix, optimum to float32 rounding of the objective
    assert dev.objective == pytest.approx(host.objective, rel=1e-6)
    if method == "sign_marginalized":
        assert dev.gauge == host.gauge == g


def test_first_index_is_argmax_of_a_mask():
    rng = np.random.default_rng(0)
    m = rng.integers(0, 3, (9, 7)) == 0
    m[0] = False  # no True: the length
    got = np.asarray(ad._first(jnp.asarray(m), axis=1))
    assert got.tolist() == np.where(m.any(axis=1), np.argmax(m, axis=1), 7).tolist()
    x = rng.integers(0, 3, (5, 6)).astype(np.float32)  # ties: the first minimum, like argmin
    low, j = ad._argmin(jnp.asarray(x), axis=1)
    assert np.asarray(j).tolist() == np.argmin(x, axis=1).tolist() and np.asarray(low).tolist() == x.min(1).tolist()


@pytest.mark.parametrize("kind", ["hard", "ties"])
def test_row_reduction_keeps_duals_feasible_and_tight(kind):
    """After the priced start and the row reduction: u_i + v_j <= c_ij everywhere, equality on every
    matched pair, a consistent partial matching, and fewer free rows (integer ties: exact)."""
    s = _matrix(kind, (48, 48), np.random.default_rng(4))
    c = -jnp.asarray(s)
    u1, j1, u2 = ad._top2(c)
    v = jnp.zeros((48,), c.dtype)
    _, col4row, row4col = ad._tight_start(c, v)
    v, col4row, row4col = ad._reduce_rows(c, v, col4row, row4col)
    u = jnp.min(c - v[None, :], axis=1)
    red = np.asarray(c - u[:, None] - v[None, :], np.float64)
    tol = 0.0 if kind == "ties" else 1e-6  # float32 rounding of three terms of size <= 2
    assert red.min() >= -tol
    c4r, r4c = np.asarray(col4row), np.asarray(row4col)
    matched = np.flatnonzero(c4r >= 0)
    assert (r4c[c4r[matched]] == matched).all() and (r4c >= 0).sum() == matched.size
    assert np.abs(red[matched, c4r[matched]]).max(initial=0.0) <= tol
    before = int((np.asarray(ad._tight_start(-jnp.asarray(s), jnp.zeros(48))[1]) >= 0).sum())
    assert matched.size > before if kind == "hard" else matched.size >= before  # ties: zero bids are skipped
