"""Matching (docs/conventions.md §4): the three methods, the LayerNorm group, diagnostics and certificates."""

import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

from gaugejax import stats
from gaugejax.errors import GaugeError
from gaugejax.gauge import SignedPermutation, load_gauge_metadata
from gaugejax.matching import (AmbiguousMatchWarning, MatchResult, correlation_interval, error_halfwidth,
                               match, match_correlation, match_stats)


def _acts(n, d, seed=0):
    """Decorrelated coordinates with unequal scales and offsets (like residual channels)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * rng.uniform(0.5, 3, d) + rng.normal(size=d) * 5).astype(np.float32)


@given(seed=st.integers(0, 2**31 - 1), neg=st.sampled_from([0.0, 0.25, 0.5, 1.0]))
def test_exact_copy_recovered_by_sign_marginalized(seed, neg):
    x = _acts(512, 32, seed % 1000)
    g = SignedPermutation.random(seed, 32, negative_fraction=neg)
    r = match(x, g.apply(x))
    assert r.gauge == g and r.certified and r.group == "B_d"
    # float32 correlation of an exact copy: 1 up to a few ulps
    np.testing.assert_allclose(np.abs(r.matched_corr), 1.0, atol=1e-5)


@given(seed=st.integers(0, 2**31 - 1), m=st.integers(2, 24))
def test_signed_recovers_exactly_the_positive_fraction(seed, m):
    # the ceiling (docs/conventions.md §5): with m >= 2 negative signs the raw signed matcher deranges the negative block.
    d = 32
    x = _acts(512, d, seed % 1000)
    g = SignedPermutation.random(seed, d, negative_fraction=m / d)
    r = match(x, g.apply(x), "signed", warn=False)
    assert r.gauge.is_permutation
    ok = r.gauge.perm == g.perm
    assert ok.sum() == d - m and (g.signs[ok] == 1).all()


def test_signed_single_negative():
    # With m = 1 the negative coordinate i0 ties (at high SNR) with every 2-cycle through a positive
    # coordinate i1: swapping costs 1 on i1 and gains 1 on i0, so the noise decides. Raw signed
    # matching then gets d - 2 right (the swap) or d; it is not forced right.
    d = 16
    x = _acts(512, d)
    g = SignedPermutation.random(1, d, negative_fraction=1 / d)
    ok = int((match(x, g.apply(x), "signed", warn=False).gauge.perm == g.perm).sum())
    assert ok in (d - 2, d)


def test_permutation_method_drops_signs():
    x = _acts(400, 16)
    g = SignedPermutation.random(2, 16)
    r = match(x, g.apply(x), "permutation")
    assert r.gauge == g.permutation_part() and r.group == "S_d"
    assert (np.sign(r.matched_corr) == g.signs).all()


def test_layernorm_global_sign_recovered():
    x = _acts(400, 24)
    for s in (1, -1):
        g = SignedPermutation(np.random.default_rng(s + 5).permutation(24), np.full(24, s))
        r = match(x, g.apply(x), norm="layernorm")
        assert r.group == "S_d x ±1" and r.gauge == g and r.certified and not r.sign_conflict.any()


def test_layernorm_rejects_or_flags_bd():
    x = _acts(400, 24)
    g = SignedPermutation.random(3, 24, negative_fraction=0.25)
    with pytest.warns(AmbiguousMatchWarning) as record:
        r = match(x, g.apply(x), norm="layernorm")
    assert any("not a LayerNorm symmetry" in str(w.message) for w in record)
    assert r.gauge.is_global_sign and r.gauge.signs[0] == 1
    assert r.sign_conflict.sum() == 6 and r.ambiguous[r.sign_conflict].all()
    with pytest.raises(GaugeError, match="LayerNorm"):
        match(x, g.apply(x), norm="layernorm", group="B_d")
    # the same projection on request, without a norm
    assert match(x, g.apply(x), group="S_d x +-1", warn=False).group == "S_d x ±1"


def test_layers_pool_evidence():
    # One layer alone is too noisy for some coordinates; the mean over layers recovers all.
    rng = np.random.default_rng(4)
    d, n, L = 24, 300, 6
    x = np.stack([_acts(n, d, l) for l in range(L)])
    g = SignedPermutation.random(4, d)
    y = g.apply(x) + 2.0 * rng.normal(size=x.shape).astype(np.float32) * x.std(1, keepdims=True)
    single = match(x[0], y[0], warn=False)
    pooled = match(x, y, warn=False)
    assert pooled.gauge == g
    assert pooled.margin.min() > single.margin.min()
    assert match(x, y, layers=[1, 3], warn=False).layers == (1, 3)


def test_match_stats_layers_and_labels():
    x = np.stack([_acts(200, 8, l) for l in range(3)])
    s = stats.update(stats.init(8, n_layers=3), x, x[..., ::-1])
    r = match_stats(s, layers=[0, 2], layer_labels=[5, 30])
    assert r.layers == (5, 30) and r.n_tokens == 200
    assert r.gauge.perm.tolist() == list(range(7, -1, -1))
    with pytest.raises(ValueError):
        match_stats(s, layers=[3])


def test_small_sample_is_ambiguous_and_warns():
    rng = np.random.default_rng(5)
    x = _acts(12, 32)
    y = x + 3 * rng.normal(size=x.shape).astype(np.float32) * x.std(0)
    with pytest.warns(AmbiguousMatchWarning, match="ambiguously"):
        r = match(x, y)
    assert r.ambiguous.any() and not r.certified


def test_constant_and_duplicate_channels_flagged_never_nan():
    x = _acts(300, 8)
    x[:, 2] = 1.5  # constant: unidentifiable
    x[:, 5] = x[:, 4]  # duplicate: a tie between 4 and 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AmbiguousMatchWarning)
        r = match(x, x)
    assert np.isfinite(r.matched_corr).all() and np.isfinite(r.margin).all()
    assert r.ambiguous[[2, 4, 5]].all() and not r.ambiguous[[0, 1, 3, 6, 7]].any()


def test_no_token_count_means_exact_margins_only():
    c = np.array([[0.1, -0.9, 0.0], [0.8, 0.0, 0.2], [0.0, 0.3, 0.7]])
    r = match_correlation(c)
    assert r.n_tokens is None and not r.certified and not r.ambiguous.any()
    assert r.gauge.perm.tolist() == [1, 0, 2] and r.gauge.signs.tolist() == [1, -1, 1]
    np.testing.assert_allclose(r.margin, [0.6, 0.6, 0.4], atol=1e-6)  # float32 differences
    assert r.objective == pytest.approx(2.4, abs=1e-6)


def test_width_mismatch_and_bad_arguments():
    with pytest.raises(GaugeError, match="different widths"):
        match(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(GaugeError):
        match_correlation(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="unknown matching method"):
        match_correlation(np.eye(2), "greedy")
    with pytest.raises(ValueError):
        match_correlation(np.eye(2), "signed", group="B_d")
    with pytest.raises(ValueError):
        match_correlation(np.eye(2), norm="batchnorm")
    with pytest.raises(GaugeError, match="unknown gauge group"):
        match_correlation(np.eye(2), group="O(d)")
    corr = np.stack([np.eye(3), np.full((3, 3), np.nan)])
    with pytest.raises(GaugeError, match="correlations at layer 7 are NaN"):
        match_correlation(corr, layers=[4, 7])


def test_summary_and_gauge_file(tmp_path):
    x = _acts(300, 16)
    g = SignedPermutation.random(6, 16)
    r = match(x, g.apply(x))
    s = r.summary()
    assert s["confident_fraction"] == 1.0 and s["negative_signs"] == int((g.signs < 0).sum())
    assert len(s["weakest"]) == 5 and s["n_tokens"] == 300
    path = tmp_path / "g.npz"
    r.save(path, src="a")
    assert SignedPermutation.load(path) == g
    meta = load_gauge_metadata(path)
    assert str(meta["method"]) == "sign_marginalized" and int(meta["n_tokens"]) == 300
    assert meta["ambiguous"].dtype == bool and meta["margin"].shape == (16,)
    assert str(meta["src"]) == "a" and bool(meta["certified"])
    assert isinstance(r, MatchResult)


def test_interval_helpers():
    lo, hi = correlation_interval(np.array([-1.0, 0.0, 0.5, 1.0]), 0.2)
    assert lo[0] == -1 and hi[-1] == 1 and lo[-1] == 1 and hi[0] == -1
    assert (lo <= [-1, 0, 0.5, 1]).all() and (hi >= [-1, 0, 0.5, 1]).all()
    assert error_halfwidth(None, 10, 0.99) == 0 and error_halfwidth(3, 10, 0.99) == 1
    assert error_halfwidth(10_000, 100, 0.99) < error_halfwidth(1_000, 100, 0.99)
