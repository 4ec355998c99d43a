"""Files from outside an input never reach an output (issue 25 item 2).

The rule (gaugejax/io/containment.py): a file of an input folder is read or copied only if, every
link resolved, it lies inside the folder, except that a folder of a Hugging Face cache snapshot
may link to its own repository's blobs; special files (FIFOs, devices) are refused before they are
opened; copies never widen a file's mode. Each case runs the real command on a real folder
layout built in ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gaugejax as gj
from gaugejax.cli import main
from gaugejax.io.containment import hf_cache_blobs

D = 16


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _folder(tiny_checkpoint: Path, where: Path) -> Path:
    shutil.copytree(tiny_checkpoint, where)
    (where / ".gaugejax").unlink()
    return where


@pytest.fixture()
def gauge(tmp_path) -> Path:
    gj.SignedPermutation.random(1, D).save(tmp_path / "g.npz")
    return tmp_path / "g.npz"


def _sae_folder(where: Path) -> Path:
    from gaugejax.io.safetensors_stream import TensorInfo, write_safetensors

    where.mkdir()
    t = {"W_enc": np.ones((D, 4), np.float32), "W_dec": np.ones((4, D), np.float32)}
    write_safetensors(where / "sae_weights.safetensors", [(TensorInfo(k, v.dtype, v.shape), (lambda v=v: v))
                                                          for k, v in t.items()])
    (where / "cfg.json").write_text('{"d_in": 16}')
    return where


# --------------------------------------------------------------------------- links
def test_link_out_of_a_checkpoint_is_refused(tmp_path, tiny_checkpoint, gauge, capsys):
    """The issue's case: a link to /proc/self/environ would put the environment into the output."""
    src = _folder(tiny_checkpoint, tmp_path / "src")
    (src / "notes.txt").symlink_to("/proc/self/environ")
    code, err = run(["apply", src, "--gauge", gauge, "-o", tmp_path / "out"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "notes.txt links outside the input folder" in err and "remove the link" in err
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
def test_every_file_of_the_folder_follows_the_rule(tmp_path, tiny_checkpoint, gauge, capsys, name):
    """Weights and config read from outside, or a tokenizer read for probe text, are refused too."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    src = _folder(tiny_checkpoint, tmp_path / "src")
    if (src / name).exists():
        shutil.move(src / name, outside / name)
    else:
        (outside / name).write_text("{}")
    (src / name).symlink_to(outside / name)
    code, err = run(["verify", src, src, "--gauge", gauge, "--n-tokens", "16"], capsys)
    assert code == 2 and f"{name} links outside the input folder" in err, err


def test_links_inside_the_folder_are_copied_as_files(tmp_path, tiny_checkpoint, gauge, capsys):
    src = _folder(tiny_checkpoint, tmp_path / "src")
    (src / "real").mkdir()
    (src / "real" / "tokenizer_config.json").write_text('{"inside": true}')
    (src / "tokenizer_config.json").symlink_to("real/tokenizer_config.json")
    code, err = run(["apply", src, "--gauge", gauge, "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    copied = tmp_path / "out" / "tokenizer_config.json"
    assert not copied.is_symlink() and copied.read_text() == '{"inside": true}'


def test_sae_folder_link_out_is_refused(tmp_path, gauge, capsys):
    sae = _sae_folder(tmp_path / "sae")
    (sae / "secret.txt").symlink_to("/proc/self/environ")
    code, err = run(["transport", "--kind", "sae", sae, "--gauge", gauge, "-o", tmp_path / "out"], capsys)
    assert code == 2 and "secret.txt links outside the input folder" in err, err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- Hugging Face cache
def _blob(repo: Path, data: bytes) -> str:
    h = hashlib.sha256(data).hexdigest()
    (repo / "blobs" / h).write_bytes(data)
    return h


def _hf_cache(tiny_checkpoint: Path, cache: Path, repo_name: str = "models--org--tiny") -> Path:
    """``huggingface_hub``'s cache layout: every snapshot file a relative link to a blob."""
    repo = cache / repo_name
    rev = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / rev
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    snap.mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    files = {p.name: p.read_bytes() for p in tiny_checkpoint.iterdir() if p.name != ".gaugejax"}
    files["tokenizer_config.json"] = b'{"bos_token": "<s>"}'
    files["generation_config.json"] = b'{"do_sample": false}'
    for name, data in files.items():
        (snap / name).symlink_to(Path("..", "..", "blobs", _blob(repo, data)))
    return snap


def test_hugging_face_cache_snapshot_applies(tmp_path, tiny_checkpoint, gauge, capsys):
    snap = _hf_cache(tiny_checkpoint, tmp_path / "hub")
    assert hf_cache_blobs(snap) == (tmp_path / "hub" / "models--org--tiny" / "blobs").resolve()
    out = tmp_path / "out"
    code, err = run(["apply", snap, "--gauge", gauge, "-o", out], capsys)
    assert code == 0, err
    for name in ("config.json", "tokenizer_config.json", "generation_config.json"):
        assert not (out / name).is_symlink() and (out / name).read_bytes() == (snap / name).read_bytes(), name
    g = gj.SignedPermutation.load(gauge)
    tokens = np.arange(32).reshape(2, 16) % 64
    assert gj.verify(gj.load_model(snap), gj.load_model(out), g, tokens).ok


def test_a_snapshot_may_not_link_into_another_repository(tmp_path, tiny_checkpoint, gauge, capsys):
    snap = _hf_cache(tiny_checkpoint, tmp_path / "hub")
    other = tmp_path / "hub" / "models--someone--else" / "blobs"
    other.mkdir(parents=True)
    (other / "abc").write_text("not yours")
    (snap / "notes.txt").symlink_to(Path("..", "..", "..", "models--someone--else", "blobs", "abc"))
    code, err = run(["apply", snap, "--gauge", gauge, "-o", tmp_path / "out"], capsys)
    assert code == 2 and "notes.txt links outside the input folder" in err, err


# --------------------------------------------------------------------------- special files
def test_fifo_weights_do_not_hang_info(tmp_path, tiny_checkpoint):
    """A FIFO named model.safetensors blocked ``info`` forever (a subprocess, so a hang fails the test)."""
    src = _folder(tiny_checkpoint, tmp_path / "src")
    (src / "model.safetensors").unlink()
    os.mkfifo(src / "model.safetensors")
    p = subprocess.run([sys.executable, "-m", "gaugejax", "info", str(src)], capture_output=True, text=True,
                       timeout=180, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "model.safetensors is a FIFO, not a regular file" in p.stderr


@pytest.mark.parametrize("name", ["notes", "tokenizer.json"])
def test_special_files_in_a_folder_are_refused(tmp_path, tiny_checkpoint, gauge, capsys, name):
    """A FIFO beside the weights, which apply would copy, is refused (it used to be skipped silently)."""
    src = _folder(tiny_checkpoint, tmp_path / "src")
    os.mkfifo(src / name)
    code, err = run(["apply", src, "--gauge", gauge, "-o", tmp_path / "out"], capsys)
    assert code == 2 and f"{name} is a FIFO" in err, err
    assert not (tmp_path / "out").exists()


def test_fifo_gguf_and_token_file_are_refused(tmp_path, gauge, tiny_checkpoint, capsys):
    os.mkfifo(tmp_path / "model.gguf")
    os.mkfifo(tmp_path / "tokens.npy")
    code, err = run(["info", tmp_path / "model.gguf"], capsys)
    assert code == 2 and "model.gguf is a FIFO" in err, err
    code, err = run(["verify", tiny_checkpoint, tiny_checkpoint, "--gauge", gauge, "--tokens", tmp_path / "tokens.npy"],
                    capsys)
    assert code == 2 and "tokens.npy is a FIFO" in err, err


# --------------------------------------------------------------------------- modes
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644])
def test_copied_files_keep_a_narrow_mode(tmp_path, tiny_checkpoint, gauge, capsys, mode):
    """A 0600 file came out 0644; now every copy keeps its source's bits (within the umask)."""
    old = os.umask(0o022)
    try:
        src = _folder(tiny_checkpoint, tmp_path / "src")
        (src / "tokenizer_config.json").write_text("{}")
        os.chmod(src / "tokenizer_config.json", mode)
        sae = _sae_folder(tmp_path / "sae")
        os.chmod(sae / "cfg.json", mode)
        assert run(["apply", src, "--gauge", gauge, "-o", tmp_path / "out"], capsys)[0] == 0
        assert run(["transport", "--kind", "sae", sae, "--gauge", gauge, "-o", tmp_path / "sae_out"], capsys)[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out" / "tokenizer_config.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "sae_out" / "cfg.json").stat().st_mode) == mode


def test_fifo_probe_text_does_not_hang_verify(tmp_path, tiny_checkpoint, gauge):
    """``--text`` naming a FIFO, with a checkpoint that ships a tokenizer, blocked the read forever."""
    tokenizers = pytest.importorskip("tokenizers")
    src = _folder(tiny_checkpoint, tmp_path / "src")
    vocab = {chr(97 + i): i for i in range(26)} | {"[UNK]": 26}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.save(str(src / "tokenizer.json"))
    os.mkfifo(tmp_path / "probe.txt")
    p = subprocess.run([sys.executable, "-m", "gaugejax", "verify", str(src), str(src), "--gauge", str(gauge), "--text",
                        str(tmp_path / "probe.txt")], capture_output=True, text=True, timeout=180,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr
    assert "probe.txt is a FIFO, not a regular file" in p.stderr
