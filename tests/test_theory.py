"""Tests of the executable theory (``theory/``): each proposition passes, the same machinery rejects
deliberately wrong rules, and a wrong rule in the library's own gauge spec fails the proof."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sympy")

from gaugejax.gauge import SignedPermutation  # noqa: E402
from theory import blocks, general_d, norm_charts as nc, optimizer  # noqa: E402
from theory import ceiling as ce  # noqa: E402
from theory.proof import Proof  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIXED = SignedPermutation(np.array([2, 0, 1]), np.array([1, -1, -1]))
GLOBAL = SignedPermutation(np.array([2, 0, 1]), np.array([-1, -1, -1]))


# --------------------------------------------------------------------------- norm charts
@pytest.mark.parametrize("chart", nc.CHARTS, ids=lambda c: c.name)
@pytest.mark.parametrize("d", [2, 3])
def test_census_counts_and_rules(chart, d):
    c = nc.census(chart, d)
    assert c.count == nc.EXPECTED_COUNTS[chart.name](d)
    assert c.rules_match_spec
    if chart.centered:
        assert c.all_global_sign


@pytest.mark.parametrize("name,expected", [("rmsnorm_generic", 384), ("layernorm_affine", 48)])
def test_census_d4(name, expected):
    assert nc.census(nc.CHART_BY_NAME[name], 4).count == expected


@pytest.mark.parametrize("chart", nc.CHARTS, ids=lambda c: c.name)
def test_first_order_lemma(chart):
    assert nc.first_order_lemma(chart, 3)


def test_group_enumeration_is_b_d():
    els = list(nc.hyperoctahedral(3))
    assert len(els) == 48 and len(set(els)) == 48
    g = els[17]
    x = np.arange(1.0, 4.0)
    assert np.array_equal(np.array(nc.gauge_matrix(g) * nc.sp.Matrix(x), dtype=float).ravel(), g.apply(x))


def test_wrong_rule_signed_rmsnorm_gain_is_rejected():
    rms = nc.CHART_BY_NAME["rmsnorm_generic"]
    assert nc.rule_holds(rms, MIXED, "spec")
    assert not nc.rule_holds(rms, MIXED, "signed_gain")
    # with no negative sign the (wrong) signed gain is harmless: the test above is not vacuous
    assert nc.rule_holds(rms, SignedPermutation(np.array([2, 0, 1])), "signed_gain")


def test_wrong_rule_nonglobal_layernorm_signs_are_rejected():
    for chart in (nc.CHART_BY_NAME["layernorm_affine"], nc.CHART_BY_NAME["layernorm_plain"]):
        for g in nc.hyperoctahedral(3):
            dec = nc.decide(chart, g, verify=False)
            assert dec.equivariant == g.is_global_sign
            if not g.is_global_sign:
                assert dec.stage == "linear" and not nc.rule_holds(chart, g, "spec")


def test_wrong_rule_unsigned_layernorm_bias_is_rejected():
    ln = nc.CHART_BY_NAME["layernorm_affine"]
    assert nc.rule_holds(ln, GLOBAL, "spec")
    assert not nc.rule_holds(ln, GLOBAL, "unsigned_bias")


def test_decide_solution_is_spec_rule():
    dec = nc.decide(nc.CHART_BY_NAME["layernorm_affine"], GLOBAL)
    want = nc.spec_rule_params(nc.CHART_BY_NAME["layernorm_affine"], GLOBAL)
    assert dec.equivariant
    assert [str(v) for v in dec.params["g"]] == [str(v) for v in want["g"]]
    assert [str(v) for v in dec.params["b"]] == [str(v) for v in want["b"]]


# --------------------------------------------------------------------------- general d
@pytest.mark.parametrize("fn", [general_d.gain_commutation_is_signed_permutation,
                                general_d.centering_commutation_and_layernorm_group,
                                general_d.tied_gains_continuous_block,
                                general_d.rescaling_needs_zero_eps], ids=lambda f: f.__name__)
def test_general_d_derivations(fn):
    pf = fn()
    assert pf.passed, pf.failed_steps()
    assert sum(s.detail != "reasoning" for s in pf.steps) >= 3  # real checks, not only prose


def test_resolve_ranges_keeps_unproven_guards():
    import sympy as sp

    from theory.proof import resolve_ranges

    d = sp.Symbol("d", integer=True, positive=True)
    i = sp.Idx("i", d)
    assert resolve_ranges(sp.Piecewise((1, d >= i + 1), (0, True)), d) == 1
    guarded = sp.Piecewise((1, d >= i + 5), (0, True))
    assert resolve_ranges(guarded, d) == guarded


def test_proof_records_failures():
    pf = Proof("x", "y")
    pf.check("true", True)
    pf.check("false", 1 == 2)
    assert not pf.passed and pf.failed_steps() == ["false"]


# --------------------------------------------------------------------------- blocks (the library's spec)
from theory import families  # noqa: E402

CONFIGS = [(family, *cfg) for family, fam_configs in families.CONFIGS.items() for cfg in fam_configs]


@pytest.mark.parametrize("family,label,make", CONFIGS, ids=[c[1].split(":")[0] for c in CONFIGS])
def test_library_spec_carries_the_gauge_through_every_family(family, label, make):
    if family not in blocks.library_families():
        pytest.skip(f"the library does not register {family!r}")
    r = blocks.check_config(label, make)
    assert r.passed, r.failures()
    assert r.generated == blocks.group_order(r.norm) and not r.uncovered
    names = list(r.stages)
    assert names[0].startswith("embedding") and names[-1] in ("logits", "pooler") and any("norm" in n for n in names)


def test_every_library_family_has_a_symbolic_model():
    assert set(blocks.library_families()) <= set(families.FAMILIES) & set(families.CONFIGS)


def _mutate_library(monkeypatch, path, new_axes):
    """Replaces the library's own ``gauge_spec`` by one with a wrong rule at ``path``."""
    import gaugejax
    import gaugejax.models

    original = gaugejax.models.gauge_spec

    def wrong_spec(config):
        spec = original(config)
        node = spec
        for k in path[:-1]:
            node = node[k]
        if path[-1] in node:
            node[path[-1]] = new_axes(node[path[-1]])
        return spec

    monkeypatch.setattr(gaugejax.models, "gauge_spec", wrong_spec)
    monkeypatch.setattr(gaugejax, "gauge_spec", wrong_spec)
    return wrong_spec


def _with_signs(axes, signed):
    from gaugejax.spec import Axes, AxisAction

    return Axes(*(None if a is None else AxisAction(a.group, signed) for a in axes.actions))


@pytest.mark.parametrize("path,signed,stage", [
    (("layers", "attn_norm"), True, "attention norm"),   # the RMSNorm gain signed
    (("layers", "down"), False, "mlp"),                   # a writing matrix without its sign
    (("layers", "attn_norm_bias"), False, "attention norm"),  # a LayerNorm bias without its sign
])
def test_a_wrong_rule_in_the_library_fails_the_proof(monkeypatch, path, signed, stage):
    _mutate_library(monkeypatch, path, lambda a: _with_signs(a, signed))
    kind = "gpt2" if "bias" in path[-1] else "llama"
    label, make = families.CONFIGS[kind][0]
    r = blocks.check_config(label, make)      # the library's (now wrong) spec
    assert not r.passed and f"{stage} under sign flip" in r.failures()
    assert r.equivariant is False and not r.uncovered   # the wrong rule, not a coverage gap, is what fails


def test_python_m_theory_fails_on_a_signed_rmsnorm_gain(monkeypatch, capsys):
    from theory.__main__ import main

    _mutate_library(monkeypatch, ("layers", "attn_norm"), lambda a: _with_signs(a, True))
    assert main(["--only", "blocks"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL]" in out and "attention norm under sign flip" in out and "0 of 1 propositions pass" in out


def test_a_wrong_role_in_the_parameter_tables_fails_the_proof(monkeypatch):
    """Deeper than ``gauge_spec``: sign every norm gain in the table every family derives its spec from."""
    table = pytest.importorskip("gaugejax.models.table")
    if not hasattr(table, "Role"):
        pytest.skip("no parameter tables")
    from gaugejax.spec import RESIDUAL, Axes

    original = table.Role.axes
    monkeypatch.setattr(table.Role, "axes", lambda self, ndim: Axes(RESIDUAL) if self is table.Role.GAIN
                        else original(self, ndim))
    checks, _ = blocks.check_library()
    rms = [c for c in checks if c.norm == "rmsnorm"]
    assert rms and not any(c.passed for c in rms)
    assert all(any("norm under sign flip" in f for f in c.failures()) for c in rms)


def test_a_parameter_the_symbolic_model_ignores_is_reported(monkeypatch):
    original = blocks.symbolic_params

    def with_extra(config):
        p = original(config)
        from theory.symbolic import syms

        p["layers"]["new_gate"] = syms("new_gate", (1, 3))
        return p

    import gaugejax

    spec_orig = gaugejax.models.gauge_spec

    def spec_fn(config):
        from gaugejax.spec import RESIDUAL, Axes

        spec = spec_orig(config)
        spec["layers"]["new_gate"] = Axes(None, RESIDUAL)
        return spec

    monkeypatch.setattr(blocks, "symbolic_params", with_extra)
    label, make = families.CONFIGS["llama"][0]
    r = blocks.check_config(label, make, spec_fn=spec_fn)
    assert not r.passed and r.uncovered == ["layers.new_gate"]


def test_a_family_without_symbolic_model_fails(monkeypatch):
    monkeypatch.setattr(blocks, "library_families", lambda: ("llama", "gpt2", "neox", "bert", "newfamily"))
    pf = __import__("theory.report", fromlist=["x"]).blocks_proposition()
    assert not pf.passed and any("symbolic model" in s for s in pf.failed_steps())


def test_layernorm_models_reject_a_single_sign_flip():
    label, make = families.CONFIGS["gpt2"][0]
    r = blocks.check_config(label, make)
    assert r.control and not r.control["attention norm"] and r.control["logits"]


def test_certificate_never_fails_a_true_identity():
    import sympy as sp

    x = sp.Symbol("x", real=True)
    assert not blocks._certainly_nonzero(np.array([sp.sqrt(x**2 + 1) ** 2 - x**2 - 1], dtype=object))
    assert blocks._certainly_nonzero(np.array([x], dtype=object))
    assert blocks.is_zero(np.array([(x + 1) ** 2 * sp.exp(x + 1) - (x**2 + 2 * x + 1) * sp.exp(1 + x)], dtype=object))


def test_generators_generate_the_groups():
    assert len(blocks.closure(blocks.generators("rmsnorm").values())) == 48
    els = blocks.closure(blocks.generators("layernorm").values())
    assert len(els) == 12 and all(g.is_global_sign for g in els)


# --------------------------------------------------------------------------- optimizer
def test_adamw_step_commutes_with_signed_mu():
    assert optimizer.step_commutes(MIXED, axis=1)
    assert optimizer.step_commutes(MIXED, axis=0)
    assert optimizer.step_commutes(MIXED, axis=0, param_signed=False, mu_signed=False)


def test_wrong_rule_unsigned_mu_is_rejected():
    assert not optimizer.step_commutes(MIXED, mu_signed=False)
    assert not optimizer.step_commutes(MIXED, nu_signed=True)
    # all signs +1: the unsigned transport is the same map, so the identity holds (not vacuous)
    assert optimizer.step_commutes(SignedPermutation(np.array([2, 0, 1])), mu_signed=False)


def test_gradient_transport():
    assert optimizer.gradient_transport(MIXED)
    assert not optimizer.gradient_transport(MIXED, signed=False)


def test_optax_cross_check():
    pytest.importorskip("optax")
    errs = optimizer.optax_cross_check(MIXED)
    assert errs["formula_err"] < 1e-12 and errs["signed_err"] < 1e-12 and errs["unsigned_err"] > 1e-6


# --------------------------------------------------------------------------- ceiling (theory side)
def test_ceiling_theorem_proof():
    pf = ce.ceiling_theorem()
    assert pf.passed, pf.failed_steps()


def test_population_maximizers_m1_tie():
    truth = SignedPermutation(np.array([3, 1, 0, 4, 2]), np.array([1, 1, -1, 1, 1]))
    best = ce.population_maximizers(truth, "signed")
    acc = (best == truth.perm).sum(1)
    assert len(best) == 5 and sorted(acc.tolist()) == [3, 3, 3, 3, 5]


def test_approximations_are_monotone_and_reach_the_ceiling():
    for method in ce.METHODS:
        prev = {"extreme_value": 0.0, "two_cycle": 0.0}
        for tau in (1.0, 2.0, 3.0, 4.0, 6.0, 9.0):
            ap = ce.approx_accuracy(method, tau, 128, 0.5, rho=0.05)
            assert ap["lo"] <= ap["hi"]
            for k in prev:
                assert ap[k] >= prev[k] - 1e-12
            prev = ap
        ceiling = 0.5 if method == "signed" else 1.0
        assert abs(prev["lo"] - ceiling) < 1e-6 and abs(prev["hi"] - ceiling) < 1e-6
    # at moderate SNR the extreme-value model is the pessimistic one
    ap = ce.approx_accuracy("sign_marginalized", 3.5, 256, 0.5, rho=0.08)
    assert ap["extreme_value"] < ap["two_cycle"]
    assert 2.5 < ce.transition_tau(64) < ce.transition_tau(1024) < 4.5


# --------------------------------------------------------------------------- CLI and report
def test_cli_help():
    r = subprocess.run([sys.executable, "-m", "theory", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "ceiling" in r.stdout
    r = subprocess.run([sys.executable, "-m", "theory", "ceiling", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "--out" in r.stdout


def test_cli_json_sections(capsys):
    from theory.__main__ import main

    assert main(["--only", "charts", "optimizer", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["norm_counts"]["rmsnorm_generic"] == {"2": 8, "3": 48, "4": 384}
    assert res["norm_counts"]["layernorm_affine"] == {"2": 4, "3": 12, "4": 48}
    assert res["norm_counts"]["rmsnorm_tied"] == {"2": 8, "3": 48, "4": 384}
    assert res["norm_counts"]["layernorm_plain"] == {"2": 4, "3": 12, "4": 48}
    assert all({"name", "status", "passed"} <= set(p) for p in res["propositions"])
    assert res["passed"] and all(p["passed"] for p in res["propositions"])


def test_cli_exit_code_when_a_proposition_fails(monkeypatch, capsys):
    from theory.__main__ import main

    def broken():
        pf = Proof("broken", "a deliberately failing proposition")
        pf.check("1 = 2", 1 == 2)
        return pf

    monkeypatch.setattr(optimizer, "adamw_covariance", broken)
    assert main(["--only", "optimizer"]) == 1
    assert "[FAIL]" in capsys.readouterr().out


def test_cli_bad_arguments():
    r = subprocess.run([sys.executable, "-m", "theory", "--only", "nonsense"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2


@pytest.mark.slow
def test_full_report_json():
    r = subprocess.run([sys.executable, "-m", "theory", "--json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["passed"]
    names = [p["name"] for p in res["propositions"]]
    assert len(names) == 10 and any("ceiling" in n for n in names)
    assert res["norm_counts"]["layernorm_affine"] == {"2": 4, "3": 12, "4": 48}


def test_readme_has_generated_ceiling_section():
    text = open(os.path.join(ROOT, "theory", "README.md"), encoding="utf-8").read()
    assert ce.README_BEGIN in text and ce.README_END in text
    block = text[text.index(ce.README_BEGIN): text.index(ce.README_END)]
    for d in (64, 256, 1024):
        assert f"| {d} | 0.50 |" in block
    assert os.path.exists(os.path.join(ROOT, "theory", "figures", "ceiling_fraction.png"))
    assert os.path.exists(os.path.join(ROOT, "theory", "figures", "ceiling_snr.png"))


def test_write_readme_section_replaces_in_place(tmp_path):
    p = tmp_path / "R.md"
    p.write_text("# T\n\nintro\n\n" + ce.README_BEGIN + "\nold\n" + ce.README_END + "\n\nafter\n")
    ce.write_readme_section(str(p), "new table")
    text = p.read_text()
    assert "new table" in text and "old" not in text and text.endswith("after\n") and text.startswith("# T")
