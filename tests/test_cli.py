"""The core commands: demo, info, apply, verify; --help everywhere; bad input → exit 2, nothing written."""

import json
import subprocess
import sys

import numpy as np
import pytest

import gaugejax as gj
from gaugejax.cli import COMMAND_MODULES, build_parser, main


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rms = gj.random_model(gj.tiny_config("llama", n_layers=2), seed=0)
    ln = gj.random_model("gpt2", seed=0)
    gj.save_model(rms, root / "rms")
    gj.save_model(ln, root / "ln")
    return root


def _listing(path):
    return sorted(p.name for p in path.iterdir())


def test_help_for_every_command(capsys):
    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    assert "demo" in subs and "apply" in subs and "verify" in subs and "info" in subs
    for name in subs:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage: gaugejax " + name in capsys.readouterr().out
    assert set(subs) <= {m.replace("_", "-") for m in COMMAND_MODULES} | set(COMMAND_MODULES)


def test_console_script_and_module_entry_points():
    out = subprocess.run([sys.executable, "-m", "gaugejax", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "apply" in out.stdout
    out = subprocess.run(["gaugejax", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == gj.__version__


def test_demo(capsys):
    assert main(["demo", "--d-model", "64"]) == 0
    out = capsys.readouterr().out
    assert "signed permutation" in out and "per-coordinate signs" in out
    assert out.count("yes") >= 2 and "NO" in out


def test_info(ckpts, capsys):
    assert main(["info", str(ckpts / "rms"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["norm"] == "rmsnorm" and info["gauge_group"].startswith("B_d") and info["d_model"] == 64
    assert main(["info", str(ckpts / "ln")]) == 0
    assert "S_d" in capsys.readouterr().out


def test_apply_then_verify(ckpts, tmp_path, capsys):
    out = tmp_path / "gauged"
    gfile = tmp_path / "g.npz"
    assert main(["apply", str(ckpts / "rms"), "--random-gauge", "7", "--save-gauge", str(gfile), "-o", str(out)]) == 0
    g = gj.SignedPermutation.load(gfile)
    assert not g.is_global_sign  # a genuine B_d element
    assert main(["verify", str(ckpts / "rms"), str(out), "--gauge", str(gfile), "--n-tokens", "64"]) == 0
    assert "verified" in capsys.readouterr().out
    # the wrong gauge (its permutation part only) must fail verification with exit 1
    gfile.unlink()
    g.permutation_part().save(gfile)
    assert main(["verify", str(ckpts / "rms"), str(out), "--gauge", str(gfile), "--n-tokens", "64"]) == 1
    assert "NOT verified" in capsys.readouterr().out
    # exact round trip through the CLI
    inv = tmp_path / "inv.npz"
    g.inverse().save(inv)
    back = tmp_path / "back"
    assert main(["apply", str(out), "--gauge", str(inv), "-o", str(back)]) == 0
    a, b = gj.load_model(ckpts / "rms"), gj.load_model(back)
    import jax

    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _fails(argv, capsys, *, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert match in err, err


def test_bad_input_exits_2_and_writes_nothing(ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    signed = tmp_path / "signed.npz"
    gj.SignedPermutation.random(0, 64, negative_fraction=0.5).save(signed)
    wrong_d = tmp_path / "wrong_d.npz"
    gj.SignedPermutation.identity(8).save(wrong_d)
    before = _listing(tmp_path)
    _fails(["apply", str(ckpts / "ln"), "--gauge", str(signed), "-o", str(out)], capsys, match="global sign")
    _fails(["apply", str(ckpts / "rms"), "--gauge", str(wrong_d), "-o", str(out)], capsys, match="d=8")
    _fails(["apply", str(tmp_path / "missing"), "--gauge", str(signed), "-o", str(out)], capsys, match="does not exist")
    _fails(["apply", str(ckpts / "rms"), "--gauge", str(tmp_path / "nope.npz"), "-o", str(out)], capsys,
           match="does not exist")
    (tmp_path / "model.bin").write_bytes(b"\x80\x04pickle")
    _fails(["apply", str(tmp_path / "model.bin"), "--gauge", str(signed), "-o", str(out)], capsys, match="pickle")
    _fails(["info", str(tmp_path / "model.bin")], capsys, match="pickle")
    _fails(["verify", str(ckpts / "rms"), str(ckpts / "ln"), "--gauge", str(signed)], capsys, match="")
    _fails(["apply", str(ckpts / "rms"), "--gauge", str(signed), "-o", str(ckpts / "rms")], capsys, match="differ")
    assert _listing(tmp_path) == sorted(before + ["model.bin"])  # no output, no temp dirs


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


# --------------------------------------------------------------------------- issue 9: trust
def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(path):
    """Content of a file or folder, to tell whether it changed."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        return {str(q.relative_to(p)): q.read_bytes() for q in sorted(p.rglob("*")) if q.is_file()}
    return p.read_bytes()


@pytest.fixture(scope="module")
def trust(tmp_path_factory, tiny_checkpoint):
    """Inputs of the --overwrite contract tests: the tiny checkpoint, a gauge, a vector, lists, an SAE."""
    from gaugejax import formats

    w = tmp_path_factory.mktemp("trust")
    gj.SignedPermutation.random(5, 16).save(w / "g.npz")
    np.save(w / "v.npy", np.linspace(-1, 1, 16).astype(np.float32))
    (w / "n.json").write_text(json.dumps([{"index": 3, "score": 0.5}]))
    sae = {"W_enc": np.ones((16, 4), np.float32), "W_dec": np.ones((4, 16), np.float32)}
    formats.write_sae(w / "sae", formats.SAEFile(sae, "saelens"))
    formats.write_sae(w / "sae.safetensors", formats.SAEFile(sae, "safetensors"))
    return w, tiny_checkpoint


# argv before the output path, and whether the output is a folder. Every writing command is here.
WRITERS = {
    "apply": (["apply", "{ck}", "--gauge", "{w}/g.npz", "-o"], "out", True),
    "compose": (["compose", "{w}/g.npz", "{w}/g.npz", "-o"], "out.npz", False),
    "transport-steering": (["transport", "--kind", "steering", "{w}/v.npy", "--gauge", "{w}/g.npz", "-o"],
                           "out.npy", False),
    "transport-neurons": (["transport", "--kind", "neurons", "{w}/n.json", "--gauge", "{w}/g.npz", "-o"],
                          "out.json", False),
    "transport-sae-dir": (["transport", "--kind", "sae", "{w}/sae", "--gauge", "{w}/g.npz", "-o"], "out", True),
    "transport-sae-file": (["transport", "--kind", "sae", "{w}/sae.safetensors", "--gauge", "{w}/g.npz", "-o"],
                           "out.safetensors", False),
    "transport-checkpoint": (["transport", "--kind", "checkpoint", "{ck}", "--gauge", "{w}/g.npz", "-o"], "out", True),
    "merge": (["merge", "{ck}", "{ck}", "-o"], "out", True),
    "canon": (["canon", "{ck}", "-o"], "out.npz", False),
    "audit-json": (["audit", "{ck}", "-k", "1", "--n-tokens", "64", "--json"], "out.json", False),
    "audit-plot": (["audit", "{ck}", "-k", "1", "--n-tokens", "64", "--plot"], "out.png", False),
    "align": (["align", "{ck}", "{ck}", "--min-tokens", "128", "--max-tokens", "256", "--seq-len", "64", "-o"],
              "out.npz", False),
    "align-path": (["align-path", "{ck}", "{ck}", "--max-tokens", "128", "--n-tokens", "128", "--seq-len", "64",
                    "-o"], "out.npz", False),
    "simulate": (["simulate", "--sweeps", "fraction", "--d", "8", "--n", "64", "--trials", "2", "--fractions", "0.5",
                  "--out"], "out", True),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "simulate" else n for n in WRITERS])
def test_overwrite_contract(name, trust, tmp_path, capsys):
    """Refused without --overwrite; with it, a previous output is replaced but a foreign file never is."""
    w, ck = trust
    head, out_name, is_dir = WRITERS[name]
    out = tmp_path / out_name
    argv = [a.format(w=w, ck=ck) for a in head] + [str(out)]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    first = _snapshot(out)
    code, _, err = _run(argv, capsys)
    assert code == 2 and "not empty" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert _snapshot(out) == first
    code, _, err = _run(argv + ["--overwrite"], capsys)
    assert code == 0, err
    # a file gaugejax did not write stops --overwrite
    if is_dir:
        (out / "notes.txt").write_text("mine")
    else:
        out.write_bytes(b"user bytes, not a gaugejax output")
    mine = _snapshot(out)
    code, _, err = _run(argv + ["--overwrite"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert _snapshot(out) == mine
    assert sorted(p.name for p in tmp_path.iterdir()) == [out_name]  # no temporary or backup left


def test_every_writing_command_is_in_the_contract_test():
    from gaugejax.cli import build_parser

    action = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    writers = {n for n, p in action.choices.items() if any("--overwrite" in a.option_strings for a in p._actions)}
    covered = {WRITERS[k][0][0] for k in WRITERS}
    # reproduce runs the experiments (minutes); its refusals are in test_cli_bad_input.py and its
    # report-folder recognition is tested below
    assert writers - covered == {"reproduce"}


def test_reproduce_recognises_a_previous_report_folder(tmp_path):
    from gaugejax.atomic import check_output
    from gaugejax.cli.reproduce import is_report_folder
    from gaugejax.errors import GaugeJaxError

    (tmp_path / "REPORT.md").write_text("# gaugejax: reproduction\n")
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "ceiling.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    check_output(tmp_path, directory=True, overwrite=True, recognise=is_report_folder)
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(GaugeJaxError, match="not a gaugejax output"):
        check_output(tmp_path, directory=True, overwrite=True, recognise=is_report_folder)


def test_save_gauge_and_checkpoint_are_written_together(trust, tmp_path, capsys):
    """apply --random-gauge --save-gauge: an unwritable gauge path is found before any work."""
    w, ck = trust
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "out"
    code, _, err = _run(["apply", str(ck), "--random-gauge", "1", "--save-gauge", str(tmp_path / "afile" / "g.npz"),
                         "-o", str(out)], capsys)
    assert code == 2 and "is a file" in err and not out.exists()
    code, _, err = _run(["apply", str(ck), "--random-gauge", "1", "--save-gauge", str(tmp_path / "g.npz"),
                         "-o", str(out)], capsys)
    assert code == 0 and (out / "model.safetensors").is_file()
    g = gj.SignedPermutation.load(tmp_path / "g.npz")
    assert g == gj.SignedPermutation.load(tmp_path / "g.npz") and g.d == 16


def _bf16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("fmt", ["npy", "npz", "safetensors"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "float64"])
def test_vectors_in_every_float_dtype_transport_exactly(fmt, dtype, trust, tmp_path, capsys):
    """bf16 saved by numpy is |V2 on disk; every float dtype moves bit for bit (permutation + sign bit)."""
    from gaugejax import formats

    w, _ = trust
    dt = _bf16() if dtype == "bfloat16" else np.dtype(dtype)
    v = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32).astype(dt)
    src = tmp_path / f"v.{fmt}"
    if fmt == "npy":
        np.save(src, v)  # bfloat16 → '|V2'
    elif fmt == "npz":
        np.savez(src, layer_7=v)
    else:
        formats.write_tensors(src, formats.TensorFile({"layer_7": v}, "safetensors"))
    out, back = tmp_path / f"out.{fmt}", tmp_path / f"back.{fmt}"
    code, _, err = _run(["transport", "--kind", "steering", str(src), "--gauge", str(w / "g.npz"), "-o", str(out)],
                        capsys)
    assert code == 0, err
    g = gj.SignedPermutation.load(w / "g.npz")
    got = formats.read_tensors(out)
    name = "array" if fmt == "npy" else "layer_7"
    moved = got.tensors[name]
    want = np.where(g.signs < 0, -v[:, g.perm], v[:, g.perm])  # negation is exact in every float dtype
    assert moved.dtype == dt and moved.tobytes() == want.astype(dt).tobytes()
    if fmt != "safetensors":  # the stored dtype is kept: |V2 stays |V2 for numpy's readers
        stored = np.load(out) if fmt == "npy" else np.load(out)["layer_7"]
        original = np.load(src) if fmt == "npy" else np.load(src)["layer_7"]
        assert stored.dtype == original.dtype
    code, _, err = _run(["transport", "--kind", "steering", str(out), "--gauge", str(w / "g.npz"), "--inverse",
                         "-o", str(back)], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(formats.read_tensors(back).tensors[name].view(np.uint8), v.view(np.uint8))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int32", "bool"])
def test_integer_vectors_are_refused(dtype, trust, tmp_path, capsys):
    """uint8 used to wrap silently (-1 → 255): integer vectors are refused, nothing is written."""
    w, _ = trust
    np.save(tmp_path / "v.npy", (np.arange(16) % 2).astype(dtype))
    code, _, err = _run(["transport", "--kind", "steering", str(tmp_path / "v.npy"), "--gauge", str(w / "g.npz"),
                         "-o", str(tmp_path / "out.npy")], capsys)
    assert code == 2 and f"dtype {dtype}" in err and "floating point" in err
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("doc", [
    {"features": [3, 5]},
    [{"feature": 3, "activation": 1.5}],
    {"latents": [{"index": 3}]},
])
def test_sae_latent_lists_are_not_remapped(doc, trust, tmp_path, capsys):
    """Latent ids index the SAE's dictionary, not the residual stream: refused with the reason."""
    w, _ = trust
    (tmp_path / "l.json").write_text(json.dumps(doc))
    code, _, err = _run(["transport", "--kind", "neurons", str(tmp_path / "l.json"), "--gauge", str(w / "g.npz"),
                         "-o", str(tmp_path / "out.json")], capsys)
    assert code == 2 and "SAE latents" in err and not (tmp_path / "out.json").exists()


def test_residual_lists_are_remapped_even_with_a_feature_label(trust, tmp_path, capsys):
    w, _ = trust
    g = gj.SignedPermutation.load(w / "g.npz")
    doc = {"neurons": [{"index": 3, "score": 0.5, "feature": "refusal direction"}]}
    (tmp_path / "n.json").write_text(json.dumps(doc))
    code, _, err = _run(["transport", "--kind", "neurons", str(tmp_path / "n.json"), "--gauge", str(w / "g.npz"),
                         "-o", str(tmp_path / "out.json")], capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / "out.json").read_text())["neurons"][0]
    j = int(np.flatnonzero(g.perm == 3)[0])
    assert rec == {"index": j, "score": 0.5 * int(g.signs[j]), "feature": "refusal direction"}
