"""Safe writes: gaugejax never removes or changes a file it did not create, with or without --overwrite.

The property test builds random folder layouts (user files with random names and bytes, user
folders, previous gaugejax outputs, the inputs), points a writing command at a random path (an
existing file or folder, a new path, a path under a file, the folder holding the inputs, an input
itself) and checks, after the command: on failure the tree is exactly as before; on success only
the output path (and parent folders made for it) changed, and anything it replaced was a previous
gaugejax output. Unit tests cover the pieces: manifests, permissions, parent cleanup, the
two-output transaction, read-only file systems.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import gaugejax as gj
from gaugejax.atomic import MANIFEST, Output, atomic_path, atomic_paths, check_output, is_previous_output
from gaugejax.cli import main
from gaugejax.errors import GaugeJaxError

D = 16
EMPTY = hashlib.sha256(b"").hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Relative path → content hash, link target or "dir" for everything under ``root``."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = ("link:" + os.readlink(p) if p.is_symlink() else "dir" if p.is_dir()
                        else hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def run_cli(argv: list[str], capsys=None) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of an in-process ``gaugejax`` run."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_checkpoint):
    """Inputs every command reads (copied into each layout): a checkpoint, a gauge, a vector, an SAE."""
    from gaugejax import formats

    root = tmp_path_factory.mktemp("inputs")
    shutil.copytree(tiny_checkpoint, root / "rms")
    gj.SignedPermutation.random(3, D).save(root / "g.npz")
    np.save(root / "v.npy", np.linspace(-1, 1, D).astype(np.float32))
    formats.write_sae(root / "sae", formats.SAEFile({"W_enc": np.ones((D, 4), np.float32),
                                                     "W_dec": np.ones((4, D), np.float32)}, "saelens"))
    return root


# command → (argv before -o, what the output is: "file" with a suffix or "dir")
COMMANDS = {
    "compose": (["compose", "{i}/g.npz"], ".npz"),
    "steering": (["transport", "--kind", "steering", "{i}/v.npy", "--gauge", "{i}/g.npz"], ".npy"),
    "sae": (["transport", "--kind", "sae", "{i}/sae", "--gauge", "{i}/g.npz"], "dir"),
    "apply": (["apply", "{i}/rms", "--gauge", "{i}/g.npz"], "dir"),
}

NAMES = st.sampled_from(["a", "b", "out", "data", "x.npz", "y.npy", "notes.txt", "m.json", "sub"])
ENTRY = st.tuples(st.lists(NAMES, min_size=1, max_size=3), st.sampled_from(["file", "dir", "empty_file"]),
                  st.binary(min_size=1, max_size=64))
PREVIOUS = st.lists(st.tuples(st.lists(NAMES, min_size=1, max_size=2), st.sampled_from(list(COMMANDS))),
                    max_size=3)


def _build(root: Path, entries, previous, inp: Path) -> tuple[set[str], list[Path]]:
    """Creates user entries and previous gaugejax outputs; returns what gaugejax created (relative
    paths) and the previous outputs' paths."""
    shutil.copytree(inp, root / "in")
    # the inputs were written by gaugejax (save_model, write_sae, gauge.save) except the numpy vector
    ours = {k for k in tree(root) if k.startswith("in/") and k != "in/v.npy"}
    for parts, kind, data in entries:
        p = root.joinpath(*parts)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.exists():
                continue
            if kind == "dir":
                p.mkdir()
                (p / "mine.txt").write_bytes(b"user:" + data)
            else:
                p.write_bytes(b"" if kind == "empty_file" else b"user:" + data)
        except OSError:  # a name already taken by a file on the way
            continue
    written = []
    for parts, cmd in previous:
        head, suffix = COMMANDS[cmd]
        p = root.joinpath(*parts)
        p = p if suffix == "dir" else p.with_name(p.name + suffix)
        argv = [a.format(i=root / "in") for a in head] + ["-o", str(p)]
        if run_cli(argv)[0] == 0:
            ours |= {k for k in tree(root) if (root / k) == p or p in (root / k).parents}
            written.append(p)
    return ours, written


WHERE = st.sampled_from(["previous", "previous", "existing", "existing", "existing", "under", "fresh", "root", "inputs"])


def _target(root: Path, where: str, choice: int, suffix: str, previous: list[Path]) -> Path:
    """The output path: a previous output, an existing entry, a new path under an entry, a fresh
    nested path, the layout root, or a path among the inputs."""
    name = "new" + ("" if suffix == "dir" else suffix)
    existing = [root / e for e in sorted(tree(root)) if not e.startswith("in")] or [root / "in"]
    options = {
        "previous": previous or existing,
        "existing": existing,
        "under": [e / name for e in existing],
        "fresh": [root / "fresh" / "deeper" / name],
        "root": [root],
        "inputs": [root / "in", root / "in" / "rms", root / "in" / "g.npz", root / "in" / "sae", root / "in" / "v.npy"],
    }[where]
    return options[choice % len(options)]


@settings(max_examples=int(os.environ.get("GJX_SAFE_WRITE_EXAMPLES", 40)), suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(entries=st.lists(ENTRY, max_size=6), previous=PREVIOUS, cmd=st.sampled_from(list(COMMANDS)), where=WHERE,
       choice=st.integers(0, 10_000), overwrite=st.booleans())
# the defects of issue 9, always run: a user folder, the folder holding the inputs, a previous output plus a user file
@example(entries=[(["data"], "dir", b"thesis")], previous=[], cmd="apply", where="existing", choice=0, overwrite=True)
@example(entries=[], previous=[], cmd="sae", where="root", choice=0, overwrite=True)
@example(entries=[(["out", "notes.txt"], "file", b"mine")], previous=[(["out"], "apply")], cmd="apply",
         where="previous", choice=0, overwrite=True)
@example(entries=[], previous=[(["out"], "sae")], cmd="apply", where="previous", choice=0, overwrite=True)
def test_writes_never_touch_what_gaugejax_did_not_create(inputs, entries, previous, cmd, where, choice, overwrite):
    root = Path(tempfile.mkdtemp(prefix="gjx-layout-"))
    try:
        ours, written = _build(root, entries, previous, inputs)
        head, suffix = COMMANDS[cmd]
        target = _target(root, where, choice, suffix, written)
        argv = [a.format(i=root / "in") for a in head] + ["-o", str(target)] + (["--overwrite"] if overwrite else [])
        before = tree(root)
        code, out, err = run_cli(argv)
        after = tree(root)
        rel = str(target.relative_to(root)) if target != root else "."
        inside = {k for k in before if (root / k) == target or target in (root / k).parents}
        event(f"{'written' if code == 0 else 'refused'}, target {'existed' if inside else 'new'}"
              f"{', was ours' if inside and inside <= ours else ''}{', --overwrite' if overwrite else ''}")
        if code != 0:
            assert after == before, err  # a refusal leaves everything as it was
            assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
        else:
            was_empty = before.get(rel) == EMPTY or inside == {rel} and before[rel] == "dir"
            # what was at the target was nothing, an empty file or folder, or (with --overwrite) our output
            assert target == root or not inside or was_empty or (overwrite and inside <= ours), (inside - ours, err)
            for k, v in before.items():
                if k not in inside:
                    assert after.get(k) == v, k  # everything else is untouched
            for k in set(after) - set(before):  # new: the output, or parent folders made for it
                assert (root / k) == target or target in (root / k).parents or (root / k) in target.parents, k
        # a fresh path of the command's format in an existing folder outside the inputs must be writable
        fresh = (rel not in before and target != root and target.parent.is_dir() and target.suffix == ("" if suffix == "dir" else suffix)
                 and root / "in" not in target.parents)
        if fresh:
            assert code == 0, err
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- the pieces
def test_issue_scenario_output_into_the_models_folder(tmp_path, tiny_checkpoint, capsys):
    """`apply models/a -o models` used to delete models/a and every sibling; now it is refused."""
    models = tmp_path / "models"
    shutil.copytree(tiny_checkpoint, models / "a")
    (models / "notes.txt").write_text("precious")
    gj.SignedPermutation.random(0, D).save(tmp_path / "g.npz")
    before = tree(tmp_path)
    for extra in ([], ["--overwrite"]):
        code, _, err = run_cli(["apply", str(models / "a"), "--gauge", str(tmp_path / "g.npz"), "-o", str(models)]
                               + extra, capsys)
        assert code == 2 and "contains the input" in err
    assert tree(tmp_path) == before


def test_overwrite_replaces_only_a_previous_output(tmp_path, tiny_checkpoint, capsys):
    g = tmp_path / "g.npz"
    gj.SignedPermutation.random(0, D).save(g)
    out = tmp_path / "out"
    argv = ["apply", str(tiny_checkpoint), "--gauge", str(g), "-o", str(out)]
    assert run_cli(argv, capsys)[0] == 0
    assert is_previous_output(out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["written_by"] == "gaugejax" and "model.safetensors" in manifest["files"]
    code, _, err = run_cli(argv, capsys)  # exists, not empty, no --overwrite
    assert code == 2 and "--overwrite" in err
    assert run_cli(argv + ["--overwrite"], capsys)[0] == 0  # a previous output: replaced
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(argv + ["--overwrite"], capsys)
    assert code == 2 and "notes.txt" in err and (out / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary or backup left


def test_library_save_model_never_deletes_a_user_folder(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    m = gj.random_model(gj.tiny_config("llama", d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8,
                                       d_ff=32, vocab_size=64), 0)
    with pytest.raises(GaugeJaxError, match="not a gaugejax output"):
        gj.save_model(m, user)
    assert (user / "thesis.tex").read_text() == "precious"
    gj.save_model(m, tmp_path / "m")
    gj.save_model(m, tmp_path / "m")  # the library may replace its own previous output
    with pytest.raises(GaugeJaxError, match="not empty"):
        gj.save_model(m, tmp_path / "m", overwrite=False)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_outputs_get_ordinary_permissions(tmp_path, mask):
    old = os.umask(mask)
    try:
        with atomic_path(tmp_path / "f.npz") as tmp:
            np.savez(tmp, x=np.zeros(2))
        with atomic_path(tmp_path / "d", directory=True) as tmp:
            (tmp / "a.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.npz").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~mask


def test_parent_folders_made_for_a_failed_write_are_removed(tmp_path):
    target = tmp_path / "a" / "b" / "c" / "out"
    with pytest.raises(RuntimeError):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_two_outputs_commit_together_or_not_at_all(tmp_path):
    g, d = tmp_path / "g.npz", tmp_path / "out"
    with pytest.raises(GaugeJaxError, match="did not write|not empty"):
        with atomic_paths([Output(g), Output(d, directory=True, overwrite=False)]) as (tg, td):
            tg.write_bytes(b"PK")
            (td / "model.safetensors").write_bytes(b"x")
            d.mkdir()
            (d / "raced.txt").write_text("a user file that appeared during the write")
    assert not g.exists()  # the gauge was not left without its checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (d / "raced.txt").exists()


def test_read_only_file_system_is_one_line(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    gj.SignedPermutation.random(0, D).save(tmp_path / "g.npz")
    argv = ["apply", str(tiny_checkpoint), "--gauge", str(tmp_path / "g.npz"), "-o", str(tmp_path / "x" / "out")]
    before = tree(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if Path(p) == tmp_path else real_access(p, m, **k))
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(os, "access", real_access)

    def erofs(*a, **k):  # the check passed, then the file system turned out read-only
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "x"))
    monkeypatch.setattr(tempfile, "mkdtemp", erofs)
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "Read-only file system" in err and len(err.strip().splitlines()) == 1
    assert tree(tmp_path) == before  # the parent made for the write is gone again


def test_check_output_reasons(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", directory=True)  # an empty folder is fine
    check_output(tmp_path / "new" / "deeper", directory=True)
    for target, kw, reason in [
        (tmp_path / "f" / "x", {}, "is a file"),
        (tmp_path / "f", {"directory": True}, "is a file"),
        (tmp_path / "empty", {}, "is a directory"),
        (tmp_path / "f", {"overwrite": True}, "kind gaugejax writes"),
        (tmp_path, {"directory": True, "inputs": [tmp_path / "f"]}, "contains the input"),
        (tmp_path / "f", {"inputs": [tmp_path / "f"]}, "is the input"),
    ]:
        with pytest.raises(GaugeJaxError, match=reason):
            check_output(target, **kw)
