"""Exact assignment: every solver reaches scipy's optimum; the fast paths are certified."""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.optimize import linear_sum_assignment

from gaugejax import assignment
from gaugejax.assignment import solve

SHAPES = [(1, 1), (2, 2), (5, 5), (12, 12), (7, 10), (10, 7), (24, 24)]
SOLVERS = ["auto", "scipy", "lapjv"]


def _opt(s, maximize=True):
    r, c = linear_sum_assignment(np.asarray(s, np.float64), maximize=maximize)
    return float(np.asarray(s, np.float64)[r, c].sum())


def _check(a, s):
    s = np.asarray(s, np.float64)
    k = min(s.shape)
    assert a.rows.shape == a.cols.shape == (k,)
    assert len(set(a.rows.tolist())) == k and len(set(a.cols.tolist())) == k
    assert (np.diff(a.rows) > 0).all()
    assert a.objective == pytest.approx(float(s[a.rows, a.cols].sum()), rel=1e-12, abs=1e-12)


def _near_gauge(rng, d, noise, neg_frac=0.0):
    perm = rng.permutation(d)
    signs = np.where(rng.random(d) < neg_frac, -1.0, 1.0)
    s = noise * rng.normal(size=(d, d))
    s[perm, np.arange(d)] += signs * rng.uniform(0.3, 1.0, d)
    return s.astype(np.float32)


# Objectives are float64 sums of the same float32/float64 entries in a different order, so equal
# to ~1e-12 relative; integer-valued (tied) matrices must agree exactly.
@pytest.mark.parametrize("method", SOLVERS)
@given(shape=st.sampled_from(SHAPES), seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["random", "near", "hard", "ties"]))
def test_objective_equals_scipy(method, shape, seed, kind):
    rng = np.random.default_rng(seed)
    n, m = shape
    if kind == "random":
        s = rng.random(shape)
    elif kind == "ties":
        s = rng.integers(0, 3, shape).astype(np.float64)
    else:
        d = max(n, m)
        s = _near_gauge(rng, d, 0.05 if kind == "near" else 0.3, 0.5 if kind == "hard" else 0.0)[:n, :m]
    a = solve(s, method=method)
    _check(a, s)
    assert a.objective == pytest.approx(_opt(s), rel=1e-12, abs=1e-9)


@given(shape=st.sampled_from([(3, 3), (6, 6), (5, 8)]), seed=st.integers(0, 2**31 - 1), ties=st.booleans())
def test_optax_hungarian_equals_scipy(shape, seed, ties):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 3, shape).astype(np.float32) if ties else rng.random(shape).astype(np.float32)
    a = solve(s, method="optax")
    _check(a, s)
    # optax works in float32: its optimum is scipy's up to float32 rounding of the duals.
    assert a.objective == pytest.approx(_opt(s), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("method", SOLVERS)
def test_minimize(method):
    c = [[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]
    a = solve(c, maximize=False, method=method)
    assert a.objective == 5.0 and a.cols.tolist() == [1, 0, 2]


def test_near_gauge_takes_argmax_path():
    rng = np.random.default_rng(0)
    s = _near_gauge(rng, 300, 0.05)
    a = solve(s)
    assert a.solver == "argmax"
    assert a.objective == pytest.approx(_opt(s), rel=1e-12)


def test_local_conflicts_take_block_path():
    # Row 4 prefers column 3, which row 3 claims too: the block {3, 4} × all columns certifies in
    # one round (its optimum uses columns 3 and 4, which no clean row claims).
    rng = np.random.default_rng(1)
    d = 200
    s = (0.01 * rng.normal(size=(d, d)) + 0.8 * np.eye(d)).astype(np.float32)
    s[4, 3] = 0.9
    a = solve(s)
    assert a.solver == "argmax+block(2)"
    assert a.cols.tolist() == list(range(d))
    assert a.objective == pytest.approx(_opt(s), rel=1e-12)


def test_hard_matrix_falls_back_to_fastest_exact():
    rng = np.random.default_rng(2)
    s = _near_gauge(rng, 200, 0.05, neg_frac=0.5)
    a = solve(s)
    assert a.solver == assignment.fastest_exact_solver()
    assert a.objective == pytest.approx(_opt(s), rel=1e-12)


def test_without_lap_falls_back_to_scipy(monkeypatch):
    monkeypatch.setattr(assignment, "_has_lap", lambda: False)
    rng = np.random.default_rng(3)
    s = _near_gauge(rng, 100, 0.05, neg_frac=0.5)
    a = solve(s)
    assert a.solver == "scipy" and a.objective == pytest.approx(_opt(s), rel=1e-12)


def test_row_argmax_certificate():
    assert assignment.row_argmax_certificate(np.eye(4)[[1, 0, 3, 2]]).tolist() == [1, 0, 3, 2]
    assert assignment.row_argmax_certificate(np.array([[1.0, 0.0], [1.0, 0.0]])) is None


@pytest.mark.parametrize("bad", [np.zeros(3), np.array([[0.0, np.nan], [1.0, 0.0]]), np.array([[np.inf, 0.0], [0.0, 1.0]])])
@pytest.mark.parametrize("method", ["auto", "scipy"])
def test_bad_input(bad, method):
    with pytest.raises(ValueError):
        solve(bad, method=method)


def test_unknown_method_and_empty():
    with pytest.raises(ValueError, match="unknown assignment method"):
        solve(np.eye(2), method="greedy")
    assert solve(np.zeros((0, 3))).rows.shape == (0,)


@pytest.mark.parametrize("seed", range(6))
def test_block_path_exact_at_moderate_size(seed):
    # Near-gauge |C| with a few weak coordinates: conflicts are resolved by the priced block.
    rng = np.random.default_rng(seed)
    d = 400
    s = np.abs(_near_gauge(rng, d, 0.12))
    a = solve(s)
    assert a.objective == pytest.approx(_opt(s), rel=1e-12)
    r = solve(s[:, :-3].T.copy())  # rectangular, transposed internally
    assert r.objective == pytest.approx(_opt(s[:, :-3].T), rel=1e-12)
