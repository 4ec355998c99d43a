"""Issue 25 item 1: a size field in a file never decides how much memory gaugejax takes.

Each test builds a small file whose size field lies and checks the refusal (one
:class:`~gaugejax.errors.GaugeJaxError` line naming what is wrong) or that only what is needed is
read. The fuzz harness (tests/fuzz) runs thousands of such files with memory and time measured;
these are the cases of the issue, each a fast unit test.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import gaugejax as gj
from gaugejax.errors import CheckpointError, GaugeError, GaugeJaxError, TransportError


def _gguf_bytes(*kvs: bytes, n_tensors: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(kvs)) + b"".join(kvs)


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


@pytest.fixture(scope="module")
def two_layers(tmp_path_factory):
    cfg = gj.tiny_config("llama", d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=8, d_ff=32, vocab_size=64)
    path = tmp_path_factory.mktemp("size") / "two"
    gj.save_model(gj.random_model(cfg, 0), path)
    return path


def _with_config(src, dst, **changes):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_gguf_array_claiming_2_to_40_elements_is_refused_at_once(tmp_path):
    """The issue's 49-byte file: one UINT8 array claiming 2^40 elements (gguf.GGUFReader walked it)."""
    from gaugejax.io.gguf import gguf_metadata

    path = tmp_path / "a.gguf"
    path.write_bytes(_gguf_bytes(_key("a") + struct.pack("<IIQ", 9, 0, 2**40)))
    assert path.stat().st_size == 49
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="claims 1099511627776 array elements") as e:
        gguf_metadata(path)
    assert time.perf_counter() - start < 1.0 and "\n" not in str(e.value)


def test_gguf_two_million_empty_strings_cost_no_objects(tmp_path):
    """2M empty strings (16 MB) are walked, not materialised: the summary shows the count only.
    The peak is measured in a child process (ru_maxrss): under 100 MiB above a bare import."""
    n = 2_000_000
    path = tmp_path / "s.gguf"
    path.write_bytes(_gguf_bytes(_key("general.architecture") + struct.pack("<I", 8) + _key("llama"),
                                 _key("x.strings") + struct.pack("<IIQ", 9, 8, n) + b"\0" * (8 * n)))
    code = ("import resource, sys; from gaugejax.io.gguf import gguf_metadata; "
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; m = gguf_metadata(sys.argv[1]); "
            "print(m['metadata']['x.strings'], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout
    shown, growth_kib = out.rsplit(" ", 1)
    assert shown == f"<array of {n}>"
    assert int(growth_kib) < 100 * 1024, out  # the file is 16 MB; gguf's reader took 3.3 GB


def test_gguf_architecture_array_is_refused_undecoded(tmp_path):
    """``general.architecture`` as an array of 2M strings: refused by its type, never decoded to be named."""
    n = 2_000_000
    path = tmp_path / "a.gguf"
    path.write_bytes(_gguf_bytes(_key("general.architecture") + struct.pack("<IIQ", 9, 8, n) + b"\0" * (8 * n)))
    with pytest.raises(CheckpointError, match="general.architecture is a GGUF ARRAY, not a string"):
        gj.load_model(path)


def test_gguf_metadata_that_the_tensors_cannot_hold_names_the_key(tmp_path):
    from gaugejax.io.gguf_arch import hf_config

    meta = {"general.architecture": "llama", "llama.block_count": 10**9, "llama.embedding_length": 16}
    tensors = {"token_embd.weight": (16, 64), "output_norm.weight": (16,)}
    with pytest.raises(CheckpointError, match="llama.block_count=1000000000 .* fix llama.block_count"):
        hf_config(meta, tensors, tmp_path / "m.gguf")
    meta.update({"llama.block_count": 1, "llama.embedding_length": 2**40})
    with pytest.raises(CheckpointError, match="fix llama.embedding_length"):
        hf_config(meta, tensors, tmp_path / "m.gguf")
    meta.update({"llama.embedding_length": "16"})
    with pytest.raises(CheckpointError, match="llama.embedding_length is '16', not a positive integer"):
        hf_config(meta, tensors, tmp_path / "m.gguf")


def test_sparse_safetensors_claiming_a_3gib_header_is_refused_unread(tmp_path, two_layers):
    ckpt = shutil.copytree(two_layers, tmp_path / "c")
    with open(ckpt / "model.safetensors", "wb") as fh:
        fh.write(struct.pack("<Q", 3 * 2**30))
        fh.truncate(3 * 2**30 + 64)  # sparse: the length is there, the bytes are not
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="claims 3221225472 bytes, over the 100000000-byte limit"):
        gj.load_model(ckpt)
    assert time.perf_counter() - start < 2.0


def test_safetensors_shape_of_many_huge_dimensions_is_refused(tmp_path):
    from gaugejax.io.safetensors_stream import SafetensorsFile

    for shape, why in (([2**62] * 30, "inconsistent offsets"), ([1] * 40, "at most 32")):
        header = json.dumps({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 4]}}).encode()
        (tmp_path / "w.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
        with pytest.raises(CheckpointError, match=why):
            SafetensorsFile(tmp_path / "w.safetensors")


def test_config_claiming_a_billion_layers_is_refused_in_under_two_seconds(tmp_path, two_layers):
    """The issue: ``apply`` ran 71 s up to 7.4 GB, then blamed "tokens and batches"."""
    from gaugejax.io import apply_gauge_to_checkpoint

    ckpt = _with_config(two_layers, tmp_path / "c", num_hidden_layers=10**9)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="num_hidden_layers=1000000000 but the weight files hold only "
                                              r"\d+ tensors .*; fix num_hidden_layers") as e:
        apply_gauge_to_checkpoint(ckpt, tmp_path / "out", gj.SignedPermutation.identity(16))
    assert time.perf_counter() - start < 2.0 and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key,value", [("vocab_size", 10**12), ("hidden_size", 2**40), ("intermediate_size", 2**31),
                                       ("num_attention_heads", 2**63)])
def test_config_sizes_the_weights_cannot_hold_name_the_key(tmp_path, two_layers, key, value):
    ckpt = _with_config(two_layers, tmp_path / "c", **{key: value})
    with pytest.raises(CheckpointError, match=f"{key}={value} but no stored tensor .*; fix {key}"):
        gj.load_model(ckpt)


def test_oversized_config_json_is_refused_unparsed(tmp_path, two_layers):
    ckpt = shutil.copytree(two_layers, tmp_path / "c")
    (ckpt / "config.json").write_bytes(b"{" + b" " * (17 * 2**20) + b"}")
    with pytest.raises(CheckpointError, match="far more than a JSON side file needs"):
        gj.load_model(ckpt)


def _zip_with_claim(path, members: dict[str, bytes], name: str, declared: int) -> None:
    """An archive whose extra member ``name`` declares ``declared`` bytes but holds 10 (as a hostile
    writer would set the zip directory)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for k, blob in members.items():
            z.writestr(k, blob)
        z.writestr(name, b"0123456789")
    data = bytearray(path.read_bytes())
    for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = data.rfind(sig)
        data[pos + at:pos + at + 4] = struct.pack("<I", declared)
    path.write_bytes(bytes(data))


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_gauge_file_with_a_huge_extra_member_reads_only_perm_and_signs(tmp_path):
    g = gj.SignedPermutation.random(0, 16)
    path = tmp_path / "g.npz"
    _zip_with_claim(path, {"perm.npy": _npy(g.perm), "signs.npy": _npy(g.signs)}, "junk.npy", 2**31)
    assert gj.SignedPermutation.load(path) == g  # the 2 GiB member is never opened
    with pytest.raises(GaugeError, match="'junk.npy' declares 2147483648 bytes from .* compressed") as e:
        gj.load_gauge_metadata(path)
    assert "\n" not in str(e.value)


def test_npy_header_claiming_more_than_the_file_holds_is_refused(tmp_path):
    from gaugejax.cli.common import load_token_file

    header = {"descr": "<i4", "fortran_order": False, "shape": (2**40,)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    (tmp_path / "t.npy").write_bytes(buf.getvalue() + b"\0" * 64)
    with pytest.raises(GaugeJaxError, match=r"describes int32\[1099511627776\] .* only 64 bytes follow"):
        load_token_file(tmp_path / "t.npy")
    from gaugejax.formats import read_tensors

    (tmp_path / "v.npy").write_bytes((tmp_path / "t.npy").read_bytes())
    with pytest.raises(TransportError, match="not a plain .npy array"):
        read_tensors(tmp_path / "v.npy")


def test_cli_info_on_the_49_byte_gguf_is_one_line_under_a_memory_cap(tmp_path):
    """``gaugejax info`` itself, under an 8 GB address-space cap as in the issue (it hung or raised
    MemoryError there): one line on stderr, exit 2."""
    path = tmp_path / "a.gguf"
    path.write_bytes(_gguf_bytes(_key("a") + struct.pack("<IIQ", 9, 0, 2**40)))

    capped = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (8 * 10**9,) * 2); "
              "sys.argv = ['gaugejax', 'info', sys.argv[1]]; runpy.run_module('gaugejax', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", capped, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0, r.stderr
    assert r.stderr.startswith("error: ") and "claims 1099511627776 array elements" in r.stderr


def test_align_state_file_with_a_bomb_member_is_refused_unread(tmp_path):
    """A ``--state`` file whose statistics member inflates to 512 MiB (from 0.5 MiB): refused from the
    zip directory, in a child process whose peak grows by under 100 MiB (np.load inflated it all)."""
    sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
    from mutate import mutate_npz

    buf = io.BytesIO()
    np.savez(buf, format=np.array("gaugejax-align-state-1"), key=np.array("k"))
    (tmp_path / "s.npz").write_bytes(mutate_npz(buf.getvalue(), ("zip_bomb", "stats_count.npy", 2**29)))
    code = ("import resource, sys; from gaugejax.runstate import load_state; "
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    load_state(sys.argv[1], 'k')\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.npz")], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].startswith("GaugeJaxError") and "not a gaugejax align state file" in out[0], out
    assert int(out[1]) < 100 * 1024, out
