"""Property tests of the ceiling theorem against the library's matcher (``gaugejax.matching``).

Statement checked (theory/ceiling.py): decorrelated coordinates, a true gauge with ``m`` negative
signs of ``d``, high SNR (ρ = 0.95, n = 2048, so every sample-correlation error is far below the
margin ρ): raw signed matching recovers exactly the positive coordinates when ``m != 1`` (and
``d`` or ``d - 2`` coordinates when ``m = 1``: a tie at the population level); permutation
matching recovers every source with all signs +1; sign-marginalized matching recovers the gauge.
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gaugejax.gauge import SignedPermutation
from theory import ceiling as ce

match = pytest.importorskip("gaugejax.matching").match

RHO, N = 0.95, 2048


@settings(deadline=None, max_examples=20)
@given(d=st.integers(4, 32), frac=st.floats(0, 1), seed=st.integers(0, 2**20))
def test_high_snr_exact_statement(d, frac, seed):
    m = int(round(frac * d))
    truth, x, y = ce.synthetic(d, N, RHO, m, seed)
    assert int((truth.signs < 0).sum()) == m
    positive = truth.signs > 0

    signed = match(x, y, "signed", warn=False).gauge
    right = signed.perm == truth.perm
    if m != 1:
        assert np.array_equal(right, positive)  # exactly the d - m positive coordinates
    else:
        assert int(right.sum()) in (d, d - 2)
        assert right[positive].sum() >= d - 2
    assert signed.is_permutation

    perm_only = match(x, y, "permutation", warn=False).gauge
    assert np.array_equal(perm_only.perm, truth.perm) and perm_only.is_permutation
    assert perm_only.agreement(truth)["signed"] == pytest.approx((d - m) / d)

    assert match(x, y, "sign_marginalized", warn=False).gauge == truth


@settings(deadline=None, max_examples=12)
@given(d=st.integers(4, 8), m=st.integers(0, 8), seed=st.integers(0, 2**20))
def test_finite_n_certificate(d, m, seed):
    """(iv): once every sample correlation is within δ < ρ/(2d) of its population value, the
    library's signed matcher lands in the population maximiser set (exact accuracy)."""
    assume(m <= d)
    rho, n = 0.9, 8192
    truth, x, y = ce.synthetic(d, n, rho, m, seed)
    c_hat = np.corrcoef(x.astype(np.float64), y.astype(np.float64), rowvar=False)[:d, d:]
    c_pop = np.asarray(ce.population_correlation(truth, 1).tolist(), np.float64) * rho
    delta = np.abs(c_hat - c_pop).max()
    assume(delta < rho / (2 * d))
    got = match(x, y, "signed", warn=False).gauge.perm
    maximizers = ce.population_maximizers(truth, "signed")
    assert any(np.array_equal(got, p) for p in maximizers)


@settings(deadline=None, max_examples=10)
@given(d=st.integers(6, 7), seed=st.integers(0, 2**20))
def test_population_maximizers_beyond_exhaustive_range(d, seed):
    truth = SignedPermutation.random(seed, d)
    m = int((truth.signs < 0).sum())
    best = ce.population_maximizers(truth, "signed")
    acc = (best == truth.perm).sum(1)
    if m != 1:
        assert np.all(acc == d - m) and len(best) == int(ce.sp.subfactorial(m))
    else:
        assert sorted(acc.tolist()) == [d - 2] * (d - 1) + [d]
    sm = ce.population_maximizers(truth, "sign_marginalized")
    assert len(sm) == 1 and np.array_equal(sm[0], truth.perm)


def test_m1_tie_is_broken_mostly_against_the_truth():
    """m = 1 at high SNR: the truth wins only with probability ≈ 2^-(d-1) (d = 4: 1/8)."""
    d, seeds = 4, 48
    counts = []
    for s in range(seeds):
        truth, x, y = ce.synthetic(d, N, 0.98, 1, 5000 + s)
        counts.append(int((match(x, y, "signed", warn=False).gauge.perm == truth.perm).sum()))
    assert set(counts) <= {d, d - 2}
    wins = counts.count(d)
    assert 0 < wins <= 16  # binomial(48, 1/8): mean 6; far from "always right"
