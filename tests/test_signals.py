"""Interrupted runs leave nothing behind (issue 25 item 4).

A real ``gaugejax apply`` runs in a subprocess on a checkpoint deep enough (600 tiny layers, 5400
tensors) that streaming its tensors takes seconds. The test waits until the write is under way
(the shard file exists in the temporary folder), freezes the process with SIGSTOP, checks that it
is mid-write (the output does not exist yet), then sends the signal and lets it run on: no test
hook, no timing guess.

* SIGTERM and SIGHUP roll the write back as Ctrl-C does: one line, exit 128 + signal, nothing left.
* SIGKILL cannot be caught: its leftovers stay until the next write of the same output, which
  removes them (they carry the dead writer's pid and owner record) and writes the output.
* Leftovers that are not provably a dead gaugejax run's are kept: a live writer's, one without an
  owner record, one from another host.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gaugejax as gj
from gaugejax.atomic import MANIFEST, atomic_path
from gaugejax.leftovers import OWNER, owner_tag, remove_stale, write_owner

ENV = dict(os.environ, JAX_PLATFORMS="cpu")


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """A 600-layer tiny Llama (5400 tensors, 6 MB) and a gauge for it."""
    root = tmp_path_factory.mktemp("deep")
    cfg = gj.tiny_config("llama", d_model=16, n_layers=600, n_heads=2, n_kv_heads=1, head_dim=8, d_ff=32,
                         vocab_size=64)
    gj.save_model(gj.random_model(cfg, 0), root / "ckpt")
    gj.SignedPermutation.random(1, 16).save(root / "g.npz")
    return root


def _start_apply(deep: Path, out: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "gaugejax", "apply", str(deep / "ckpt"), "--gauge", str(deep / "g.npz"),
            "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _leftovers(out: Path) -> list[Path]:
    if not out.parent.is_dir():
        return []
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _freeze_mid_write(runs: list[tuple[subprocess.Popen, Path]], timeout: float = 300) -> list[Path]:
    """Waits until each process streams tensors into the temporary folder of its output and
    SIGSTOPs it there; returns the folders. All are watched at once (they run concurrently)."""
    frozen: dict[int, Path] = {}
    end = time.monotonic() + timeout
    while len(frozen) < len(runs) and time.monotonic() < end:
        for i, (proc, out) in enumerate(runs):
            if i in frozen:
                continue
            assert proc.poll() is None, proc.communicate()
            tmps = [p for p in _leftovers(out) if (p / "model.safetensors").exists()]
            if tmps:
                proc.send_signal(signal.SIGSTOP)
                assert not out.exists(), "the write finished before the process was stopped"
                frozen[i] = tmps[0]
        time.sleep(0.005)
    if len(frozen) < len(runs):
        for proc, _ in runs:
            proc.kill()
        raise AssertionError("a write never began")
    return [frozen[i] for i in range(len(runs))]


def test_sigterm_and_sighup_roll_back_like_ctrl_c(deep, tmp_path):
    sigs = (signal.SIGTERM, signal.SIGHUP)
    outs = [tmp_path / sig.name / "out" for sig in sigs]
    runs = [(_start_apply(deep, out), out) for out in outs]
    tmps = _freeze_mid_write(runs)
    for sig, (proc, _), tmp in zip(sigs, runs, tmps):
        assert (tmp / OWNER).is_file()
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
    for sig, (proc, out) in zip(sigs, runs):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + sig, err
        assert err.strip() == f"error: stopped by {sig.name}; nothing was written"
        assert not out.parent.exists()  # no output, no temporary folder, and the parent made for it removed


def test_sigkill_leftovers_are_removed_by_the_next_write(deep, tmp_path):
    out = tmp_path / "out"
    proc = _start_apply(deep, out)
    (tmp,) = _freeze_mid_write([(proc, out)])
    proc.kill()
    proc.wait()
    assert _leftovers(out) == [tmp] and (tmp / "model.safetensors").stat().st_size > 0  # partial data stays
    owner = json.loads((tmp / OWNER).read_text())
    assert owner["pid"] == proc.pid and tmp.name.startswith(f".out.gj{proc.pid}-")
    rerun = _start_apply(deep, out)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert _leftovers(out) == []
    assert (out / MANIFEST).is_file() and (out / "model.safetensors").is_file()


def _fake_leftover(parent: Path, tag: str, *, owner: bool = True) -> Path:
    p = parent / f".out.{tag}.abcd1234.tmp"
    p.mkdir()
    (p / "model.safetensors").write_bytes(b"partial")
    if owner:
        write_owner(p)
    return p


def test_only_provably_dead_leftovers_are_removed(tmp_path):
    """A live writer's temporary folder (this process), one without owner record, one from another
    host, and a user's look-alike file are kept; a dead writer's is removed on the next write."""
    dead = subprocess.run([sys.executable, "-c", "from gaugejax.leftovers import owner_tag; print(owner_tag())"],
                          capture_output=True, text=True, env=ENV, check=True).stdout.strip()
    live = _fake_leftover(tmp_path, owner_tag())
    anonymous = _fake_leftover(tmp_path, dead.replace("gj", "gj9", 1), owner=False)
    pid, start, _host = dead[2:].split("-")
    foreign = _fake_leftover(tmp_path, f"gj{pid}-{start}-00000000")
    user_file = tmp_path / ".out.notes.tmp"
    user_file.write_text("mine")
    stale = tmp_path / f".out.{dead}.abcd1234.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    json.dump({"written_by": "gaugejax", "pid": int(pid), "started": int(start), "host": socket.gethostname()},
              (stale / OWNER).open("w"))
    assert remove_stale(tmp_path / "out") == [stale]
    assert live.is_dir() and anonymous.is_dir() and foreign.is_dir() and user_file.is_file()
    with atomic_path(tmp_path / "out.npz") as t:  # a file output: its leftovers are named the same way
        assert t.name.startswith(f".out.npz.{owner_tag()}.") and t.name.endswith(".tmp.npz")
        t.write_bytes(b"PK")
