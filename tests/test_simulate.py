"""gj.simulate: generators, the sufficient-statistic sampler, and the on-device ceiling."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaugejax as gj
from gaugejax import simulate as sm
from gaugejax import wishart as wi
from gaugejax.matching import match_correlation

D, N = 16, 1024  # one compiled ceiling per (d, n, structure, sampler): keep these few


@pytest.mark.parametrize("sampler", ["tokens", "wishart"])
def test_ceiling_reproduces_the_theorem(sampler):
    """High SNR (τ = 0.9·32 ≫ τ*): raw signed = positive fraction exactly (m >= 2 and m = 0);
    permutation recovers every source with sign accuracy = positive fraction; sign-marginalized all."""
    for f in (0.0, 0.25, 0.5, 1.0):
        out = gj.simulate.ceiling(jax.random.key(3), d=D, n=N, rho=0.9, positive_fraction=f, trials=6, sampler=sampler)
        assert set(out) == set(sm.METHODS)
        for method in sm.METHODS:
            for k in ("perm", "signed"):
                assert out[method][k].shape == (6,)
        np.testing.assert_array_equal(np.asarray(out["signed"]["perm"]), f)
        np.testing.assert_array_equal(np.asarray(out["signed"]["signed"]), f)
        np.testing.assert_array_equal(np.asarray(out["permutation"]["perm"]), 1.0)
        np.testing.assert_array_equal(np.asarray(out["permutation"]["signed"]), f)
        np.testing.assert_array_equal(np.asarray(out["sign_marginalized"]["perm"]), 1.0)
        np.testing.assert_array_equal(np.asarray(out["sign_marginalized"]["signed"]), 1.0)


def test_m1_is_a_tie_broken_by_noise():
    out = gj.simulate.ceiling(jax.random.key(4), d=D, n=N, rho=0.9, positive_fraction=1 - 1 / D, trials=12,
                              methods=("signed",), sampler="wishart")
    right = np.rint(np.asarray(out["signed"]["perm"]) * D)
    assert set(right.tolist()) <= {D, D - 2}  # the truth or one of the d - 1 tied transpositions
    assert (right == D - 2).sum() >= 9  # truth wins with probability ≈ 2^-(d-1); 12 trials


def test_device_ceiling_equals_host_matcher():
    """The accuracies computed on device equal the host matcher's on the same correlation matrices."""
    d, n, m = 12, 96, 6  # low SNR: many conflicts, the exact solver does real work
    keys = jax.random.split(jax.random.key(5), 5)
    acc = jax.jit(sm.accuracies)
    for k in keys:
        x, y, perm, signs = sm.generate(k, d=d, n=n, rho=0.4, m=m)
        c = np.asarray(sm.correlation(x, y))
        dev = acc(jnp.asarray(c), perm, signs)
        truth = gj.SignedPermutation(np.asarray(perm), np.asarray(signs))
        for method in sm.METHODS:
            host = match_correlation(c, method, warn=False).gauge.agreement(truth)
            # float32 device solver vs float64 host solver: ties within float32 rounding could pick another
            # optimum; on these continuous matrices the assignments coincide.
            assert float(dev[method]["perm"]) == pytest.approx(host["perm"], abs=1e-6)
            assert float(dev[method]["signed"]) == pytest.approx(host["signed"], abs=1e-6)


@pytest.mark.parametrize("d", [5, 6])  # odd: one square draw for the triangle; even: the half-size draw
def test_wishart_sampler_has_the_token_law(d):
    """Same distribution of the sample correlation matrix: matched (s_j C[p_j, j]) and unmatched
    entries' mean and spread agree within 5 Monte Carlo standard errors (2000 matrices each)."""
    n, rho, trials = 24, 0.6, 2000
    perm, signs = sm.random_gauge(jax.random.key(0), d, 2)
    keys = jax.random.split(jax.random.key(1), trials)
    tok = jax.jit(jax.vmap(lambda k: sm.correlation(*sm.generate(k, d=d, n=n, rho=rho, m=2)[:2])))(keys)
    tok_g = jax.vmap(lambda k: jnp.stack(sm.random_gauge(jax.random.split(k, 4)[0], d, 2)))(keys)
    wis = jax.jit(jax.vmap(lambda k: sm.wishart_correlation(k, d=d, n=n, rho=rho, perm=perm, signs=signs)))(keys)

    def split(c, p, s):  # c: (T, d, d); p, s: (T, d)
        c = np.asarray(c)
        t = np.arange(c.shape[0])[:, None]
        onehot = np.zeros(c.shape, bool)
        onehot[t, p, np.arange(d)[None, :]] = True
        return (c[t, p, np.arange(d)[None, :]] * s).ravel(), c[~onehot].ravel()

    tm, to = split(tok, np.asarray(tok_g[:, 0]), np.asarray(tok_g[:, 1]))  # each token pair has its own gauge
    wm, wo = split(wis, np.tile(np.asarray(perm), (trials, 1)), np.tile(np.asarray(signs), (trials, 1)))
    for a, b in ((tm, wm), (to, wo)):
        se = np.sqrt(a.var() / a.size + b.var() / b.size)
        assert abs(a.mean() - b.mean()) < 5 * se
        se2 = np.sqrt((a**2).var() / a.size + (b**2).var() / b.size)
        assert abs((a**2).mean() - (b**2).mean()) < 5 * se2


@pytest.mark.parametrize("spec,check", [
    ("ar1:0.6", lambda r: (np.diag(r, 1).mean(), 0.6, np.diag(r, 2).mean(), 0.36)),
    ("block:0.4:4", lambda r: (r[0, 1], 0.4, r[0, 5], 0.0)),
    ("factors:0.5:2", lambda r: (np.abs(r[np.triu_indices(8, 1)]).max() <= 0.55, True, 0.0, 0.0)),
    ("student_t:4", lambda r: (0.0, 0.0, np.abs(r[np.triu_indices(8, 1)]).max() < 0.05, True)),
])
def test_structures_have_their_correlation(spec, check):
    x, _, _, _ = sm.generate(jax.random.key(2), d=8, n=40000, rho=0.5, m=0, structure=spec)
    x = np.asarray(x, np.float64)
    np.testing.assert_allclose(x.std(0), 1.0, atol=0.05)  # unit variance by construction
    a, b, c, e = check(np.corrcoef(x, rowvar=False))
    assert a == pytest.approx(b, abs=0.03) and c == pytest.approx(e, abs=0.03)  # 40k samples: se ≈ 0.005


def test_outliers_and_parse():
    x, _, _, _ = sm.generate(jax.random.key(6), d=8, n=4000, rho=0.5, m=0, structure="outliers:20:2")
    sd = np.asarray(x).std(0)
    assert (np.sort(sd)[-2:] > 15).all() and (np.sort(sd)[:-2] < 1.2).all()
    assert sm.parse_structure("block:0.3:32") == sm.Structure("block", 0.3, block=32)
    assert sm.parse_structure({"kind": "factors", "strength": 0.2}).kind == "factors"
    for bad in ("ar1:1.5", "nope:1", "student_t:2", "ar1:x"):
        with pytest.raises(ValueError):
            sm.parse_structure(bad)


def test_low_snr_loses_coordinates():
    out = gj.simulate.ceiling(jax.random.key(7), d=D, n=N, rho=1.0 / 32, positive_fraction=0.5, trials=6,
                              methods=("sign_marginalized",), sampler="wishart")  # τ = 1 < τ*
    assert float(np.mean(out["sign_marginalized"]["perm"])) < 0.6


def test_bad_arguments():
    k = jax.random.key(0)
    with pytest.raises(ValueError, match="methods"):
        sm.ceiling(k, d=4, n=64, rho=0.5, positive_fraction=0.5, trials=2, methods=("greedy",))
    with pytest.raises(ValueError, match="wishart"):
        sm.ceiling(k, d=4, n=64, rho=0.5, positive_fraction=0.5, trials=2, sampler="wishart", correlation="ar1:0.5")
    with pytest.raises(ValueError):
        sm.ceiling(k, d=4, n=64, rho=1.5, positive_fraction=0.5, trials=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "simulate" in dir(gj)


def test_cli_simulate_writes_json_and_plots_and_respects_overwrite(tmp_path, capsys):
    import json

    from gaugejax.cli import main

    out = tmp_path / "sim"
    argv = ["simulate", "--out", str(out), "--sweeps", "fraction", "tau", "--d", "8", "--n", "256", "--trials", "2",
            "--fractions", "0.5", "1", "--taus", "4", "15"]
    assert main(argv) == 0
    res = json.loads((out / "simulate.json").read_text())
    assert [r["signed"]["perm"]["mean"] for r in res["fraction"]] == [0.5, 1.0]  # τ = 0.9·16: the ceiling
    assert {p.name for p in out.glob("*.png")} == {"fraction.png", "tau.png"}
    assert main(argv) == 2  # existing, non-empty output: refused without --overwrite
    assert "overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    assert main(["simulate", "--out", str(tmp_path / "x"), "--d", "8", "--taus", "99", "--n", "256"]) == 2
    assert not (tmp_path / "x").exists()


def test_mixed_sign_correlations_break_the_raw_ceiling():
    """Beyond the theorem (R = I): strong shared factors with random-sign loadings give a negative
    coordinate's column positive entries ρ|R_ik|, and at high SNR (τ ≈ 29) raw signed matching then
    recovers fewer than the positive coordinates; sign-marginalized still recovers every one."""
    out = gj.simulate.ceiling(jax.random.key(8), d=32, n=1024, rho=0.9, positive_fraction=0.5, trials=8,
                              correlation="factors:0.9", methods=("signed", "sign_marginalized"))
    signed = np.asarray(out["signed"]["perm"])
    assert signed.max() <= 0.5 and signed.mean() < 0.45  # measured mean 0.42 with this key
    np.testing.assert_array_equal(np.asarray(out["sign_marginalized"]["signed"]), 1.0)


def test_workers_do_not_change_results():
    """Trial t always uses fold_in(key, t): two concurrent streams (one padded share) give the
    single stream's accuracies exactly."""
    kw = dict(d=D, n=N, rho=0.05, positive_fraction=0.5, trials=5, sampler="wishart")  # τ = 1.6: varied results
    one = gj.simulate.ceiling(jax.random.key(9), workers=1, **kw)
    two = gj.simulate.ceiling(jax.random.key(9), workers=2, **kw)
    for method in sm.METHODS:
        for k in ("perm", "signed"):
            assert two[method][k].shape == (5,)
            np.testing.assert_array_equal(np.asarray(one[method][k]), np.asarray(two[method][k]))
    assert len(set(np.asarray(one["sign_marginalized"]["perm"]).tolist())) > 1  # the check can fail


def test_bartlett_triangle_and_triangular_product():
    """The half-size draw fills exactly the strict upper triangle, each entry from its own draw; the
    blocked triangular product equals the dense one (float32 GEMM rounding: rtol 1e-5)."""
    for d in (6, 7):
        u = np.asarray(wi._bartlett_upper(jax.random.key(d), d))
        iu = np.triu_indices(d, 1)
        assert (u[np.tril_indices(d)] == 0).all() and (u[iu] != 0).all()
        assert len(set(u[iu].tolist())) == len(iu[0])  # no draw used twice
    u = np.asarray(wi._bartlett_upper(jax.random.key(0), 12)) + np.diag(np.arange(1.0, 13.0, dtype=np.float32))
    x = np.asarray(jax.random.normal(jax.random.key(1), (12, 5)))
    got = np.asarray(wi._triu_t_matmul(jnp.asarray(u), jnp.asarray(x), leaf=2))  # 12 -> 6 -> 3: every branch
    np.testing.assert_allclose(got, u.T.astype(np.float64) @ x, rtol=1e-5, atol=1e-5)


def test_normal_draws_are_standard():
    """Mean, variance, skewness and kurtosis of 2^18 draws within 5 standard errors of N(0, 1);
    legacy uint32 keys give the same stream, other key implementations fall back to jax.random."""
    z = np.asarray(wi._normal(jax.random.key(5), (512, 512)), np.float64).ravel()
    se = 1 / np.sqrt(z.size)
    assert abs(z.mean()) < 5 * se and abs(z.var() - 1) < 5 * np.sqrt(2) * se
    assert abs((z**3).mean()) < 5 * np.sqrt(15) * se and abs((z**4).mean() - 3) < 5 * np.sqrt(96) * se
    np.testing.assert_array_equal(np.asarray(wi._normal(jax.random.PRNGKey(5), (4,))),
                                  np.asarray(wi._normal(jax.random.key(5), (4,))))
    assert np.isfinite(np.asarray(wi._normal(jax.random.key(5, impl="rbg"), (4,)))).all()
