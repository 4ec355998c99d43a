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
