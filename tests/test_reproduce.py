"""``gaugejax reproduce``: the report machinery (fast) and the whole ``--quick`` run (slow).

The slow test runs every experiment at reduced size into ``tmp_path`` and asserts the report's
qualitative claims on ``results.json`` (B_d transport keeps what S_d transport breaks, etc.).
"""

import json

import numpy as np
import pytest

from experiments import EXPERIMENTS, run_experiments
from experiments.common import Context, Result, SeedRow, Table, fmt, stable_int
from experiments.report import render, write_report


def test_every_experiment_module_has_the_protocol():
    from experiments import experiment_module

    for name in EXPERIMENTS:
        mod = experiment_module(name)
        assert mod.NAME == name and isinstance(mod.TITLE, str) and callable(mod.run)


def test_keys_are_stable_and_distinct(tmp_path):
    import jax

    a, b = Context(tmp_path, seed=3), Context(tmp_path, seed=3)
    assert stable_int("sae") == stable_int("sae") != stable_int("steering")
    assert np.array_equal(jax.random.key_data(a.key("sae", 1)), jax.random.key_data(b.key("sae", 1)))
    assert not np.array_equal(jax.random.key_data(a.key("sae", 1)), jax.random.key_data(a.key("sae", 2)))
    assert a.rng("x").integers(0, 1 << 30) == b.rng("x").integers(0, 1 << 30)


def test_fmt():
    assert fmt(0.5) == "0.5" and fmt(3) == "3" and fmt(True) == "yes" and fmt(1.5e-7) == "1.50e-07"
    assert fmt(float("nan")) == "nan" and fmt("x") == "x"


def test_report_renders_tables_rows_and_differences(tmp_path):
    r = Result("sae", "SAE", setting="setting text", wall_s=1.5,
               tables=[Table("T", ["a", "b|c"], [[1, 0.25]], note="n")],
               headline=[SeedRow("claim", "0.004 vs 1.08", "0.1 vs 1.3", "SmolLM2")],
               notes=["Differs in kind: because."], claims={"x": np.float32(1.0)})
    skipped = Result("steering", "Steering", skipped="package missing")
    path = write_report([r, skipped], tmp_path, quick=True, seed=0, total_s=2.0, command="gaugejax reproduce")
    text = path.read_text()
    assert "| claim | seed's figure | ours | setting |" in text
    assert "| claim | 0.004 vs 1.08 | 0.1 vs 1.3 | SmolLM2 |" in text
    assert "b\\|c" in text and "Differs in kind: because." in text and "skipped: package missing" in text
    assert "not run" in text  # headline rows of experiments that were not selected
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["experiments"]["sae"]["claims"]["x"] == 1.0
    assert render([r], quick=False, seed=0, total_s=1.0).startswith("# gaugejax")


def test_cli_rejects_unknown_experiment(tmp_path, capsys):
    from gaugejax.cli import main

    assert main(["reproduce", "nonsense", "--out", str(tmp_path / "o")]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_data_splits_are_disjoint():
    from experiments.data import SPLITS

    seen = set()
    for residues in SPLITS.values():
        assert not seen.intersection(residues)
        seen.update(residues)
    assert seen == set(range(20))


def test_ceiling_experiment(tmp_path):
    (r,) = run_experiments(["ceiling"], out=tmp_path, quick=True)
    c = r.claims
    assert c["signed_ceiling_max_gap"] < 0.02          # signed matcher sits on the ceiling for m >= 2
    assert c["sign_marginalized_min"] == 1.0           # sign-marginalized recovers everything
    assert c["permutation_perm_min"] == 1.0            # permutation matcher: right permutation, no signs
    assert abs(c["permutation_signed_at_half"] - 0.5) < 0.02
    assert (tmp_path / "ceiling.png").stat().st_size > 1000


@pytest.mark.slow
def test_quick_reproduction_run(tmp_path):
    from gaugejax.cli import main

    assert main(["reproduce", "--quick", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert "seed's figure" in report
    data = json.loads((tmp_path / "results.json").read_text())["experiments"]
    assert set(data) == set(EXPERIMENTS)
    for name, e in data.items():
        assert e["wall_s"] > 0
        for f in e["figures"]:
            assert (tmp_path / f).stat().st_size > 1000, f
    ran = {k: v["claims"] for k, v in data.items() if not v["skipped"]}
    assert {"ceiling", "trajectories", "merges", "optimizer"} <= set(ran)  # need no optional package

    c = ran["ceiling"]
    assert c["signed_ceiling_max_gap"] < 0.02 and c["sign_marginalized_min"] == 1.0

    c = ran["trajectories"]
    assert c["composed"] >= 0.95 and c["composed"] >= c["endpoint"]

    c = ran["merges"]
    assert c["last_B_d_aligned"] < c["last_S_d_aligned"] and c["last_B_d_aligned"] < c["last_unaligned"]
    assert c["last_B_d_aligned"] < max(c["last_a"], c["last_b"]) + 0.5

    c = ran["optimizer"]
    assert c["dist_signed"] < 1e-4 < c["dist_permutation_only"]
    assert c["dist_permutation_only"] > 100 * max(c["dist_signed"], 1e-9)

    if "sae" in ran:
        c = ran["sae"]
        assert c["bd_gauge_exact"]
        assert abs(c["nmse_bd"] - c["nmse_original"]) < 1e-3 * c["nmse_original"] + 1e-6
        assert c["nmse_sd"] > 5 * c["nmse_bd"] and c["nmse_sd"] > 0.5    # B_d NMSE << S_d NMSE
        assert c["ev_bd"] - c["ev_sd"] > 0.5
    if "steering" in ran:
        c = ran["steering"]
        assert abs(c["kept_bd"] - 1) < 0.02 and abs(c["refusal_kept_bd"] - 1) < 0.05
        assert abs(c["kept_sd"]) < 0.6
    if "audits" in ran:
        c = ran["audits"]
        assert c["bd_relative_signed_min"] == 1.0 and c["raw_signed_bd_max"] <= 0.25
    if "layernorm" in ran:
        c = ran["layernorm"]
        assert c["symmetry_max_rel_err"] < 1e-5 < 1e-3 < c["non_global_min_rel_err"]
        assert c["permutation_matcher_accuracy"] == 1.0


def test_cli_outside_a_checkout_says_how_to_get_the_experiments(monkeypatch, tmp_path, capsys):
    import sys

    from gaugejax.cli import main, reproduce

    monkeypatch.setitem(sys.modules, "experiments", None)     # not importable ...
    monkeypatch.setattr(reproduce, "_checkout_candidates", lambda: [tmp_path])  # ... and no checkout around
    assert main(["reproduce", "ceiling", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "clone the gaugejax repository" in err
    assert not (tmp_path / "o").exists()


def test_only_the_library_is_packaged():
    """``pip install .`` ships gaugejax alone: no experiments, no top-level ``theory`` in site-packages."""
    import os
    import tomllib

    from setuptools import find_packages

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        find = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]
    found = find_packages(root, include=find["include"], exclude=find.get("exclude", ()))
    assert "gaugejax" in found and "gaugejax.cli" in found
    assert all(p == "gaugejax" or p.startswith("gaugejax.") for p in found), found
