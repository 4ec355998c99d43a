"""Checkpoint I/O: bit-exact round trips, shards, gauge rewrites and refusing bad input.

Exactness claims here are bit-for-bit (``assert_array_equal``): saving, loading and applying a
gauge only copy, index and negate numbers. The one float comparison (transformers reading our
sharded output) uses the float32 parity tolerance of ``test_parity.py``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import gaugejax as gj
from gaugejax.errors import CheckpointError, GaugeError
from gaugejax.io import apply_gauge_to_checkpoint, load_model, save_model
from gaugejax.io.safetensors_stream import SafetensorsFile, TensorInfo, write_safetensors
from gaugejax.models import family_module, tiny_config

KINDS = ["llama", "qwen2", "mistral", "gpt2", "neox"]


@functools.lru_cache(maxsize=None)
def _model(kind: str, seed: int = 0) -> gj.Model:
    """A tiny random model, built once per session (drawing parameters compiles per shape)."""
    return gj.random_model(tiny_config(kind), seed=seed)


def _gauge(model: gj.Model, seed: int = 7) -> gj.SignedPermutation:
    if model.config.norm == "rmsnorm":
        return gj.SignedPermutation.random(seed, model.d)
    return gj.SignedPermutation.random(seed, model.d, signed=False, global_sign=True)


def _expected_tensors(model: gj.Model) -> dict[str, np.ndarray]:
    """HF name → the array that must be stored, straight from the params."""
    out = {}
    for t in family_module(model.config).hf_tensors(model.config):
        src = model.params["layers"][t.key][t.layer] if t.layer is not None else model.params[t.key]
        a = np.asarray(src)
        out[t.name] = a.T if t.transpose else a
    return out


def _read_dir(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of a directory via safetensors' own numpy reader (independent of ours)."""
    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _assert_params_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_is_bit_exact(tmp_path, kind):
    m = _model(kind)
    d = save_model(m, tmp_path / "m")
    _assert_params_equal(load_model(d).params, m.params)
    stored = _read_dir(d)
    expected = _expected_tensors(m)
    assert set(stored) == set(expected)
    for name, arr in expected.items():
        np.testing.assert_array_equal(stored[name], arr, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_transported_model_round_trip_is_bit_exact(tmp_path, kind):
    """Column-permuted (Fortran-ordered) tensors must not be saved scrambled."""
    m = _model(kind)
    g = _gauge(m)
    moved = gj.apply_gauge(m, g)
    d = save_model(moved, tmp_path / "moved")
    _assert_params_equal(load_model(d).params, moved.params)
    stored = _read_dir(d)
    for name, arr in _expected_tensors(moved).items():
        np.testing.assert_array_equal(stored[name], arr, err_msg=name)
    # one reading matrix spelled out by hand, against the untouched original
    if m.config.family == "llama":
        name, w = "model.layers.1.self_attn.q_proj.weight", np.asarray(m.params["layers"]["q"][1])
    elif m.config.family == "gpt2":  # Conv1D stores (in, out): the residual axis is the rows
        name, w = "transformer.h.1.attn.c_attn.weight", np.asarray(m.params["layers"]["qkv"][1])
    else:
        name, w = "gpt_neox.layers.1.attention.query_key_value.weight", np.asarray(m.params["layers"]["qkv"][1])
    want = w[:, g.perm] * g.signs
    got = stored[name].T if m.config.family == "gpt2" else stored[name]
    np.testing.assert_array_equal(got, want)


def test_fortran_ordered_tensor_written_in_logical_order(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    g = gj.SignedPermutation.random(0, 4)
    moved = w[:, g.perm] * g.signs.astype(np.float32)
    fortran = np.asfortranarray(moved)
    assert not fortran.flags.c_contiguous
    write_safetensors(tmp_path / "x.safetensors", [(TensorInfo("w", fortran.dtype, fortran.shape), lambda: fortran)])
    np.testing.assert_array_equal(load_file(tmp_path / "x.safetensors")["w"], moved)
    np.testing.assert_array_equal(np.asarray(SafetensorsFile(tmp_path / "x.safetensors")["w"]), moved)


def test_bfloat16_round_trip_is_bit_exact(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as torch_load_file

    f32 = _model("llama")
    m = gj.Model(f32.config, jax.tree.map(lambda x: np.asarray(x).astype(jax.numpy.bfloat16), f32.params))
    d = save_model(m, tmp_path / "bf16")
    loaded = load_model(d)
    _assert_params_equal(loaded.params, m.params)
    assert json.loads((d / "config.json").read_text())["torch_dtype"] == "bfloat16"
    theirs = torch_load_file(d / "model.safetensors")
    for name, arr in _expected_tensors(m).items():
        assert theirs[name].dtype == torch.bfloat16
        np.testing.assert_array_equal(theirs[name].view(torch.int16).numpy(), arr.view(np.int16), err_msg=name)


def test_save_with_dtype_casts_storage(tmp_path):
    m = _model("llama")
    d = save_model(m, tmp_path / "f16", dtype=np.float16)
    stored = _read_dir(d)
    assert {a.dtype for a in stored.values()} == {np.dtype(np.float16)}
    for name, arr in _expected_tensors(m).items():
        np.testing.assert_array_equal(stored[name], arr.astype(np.float16))


# ----------------------------------------------------------------------------------------- shards

def _sharded(tmp_path, kind="llama") -> tuple[gj.Model, Path]:
    m = _model(kind)
    return m, save_model(m, tmp_path / "sharded", max_shard_bytes=40_000)


def test_sharded_save_has_index_and_loads(tmp_path):
    m, d = _sharded(tmp_path)
    shards = sorted(p.name for p in d.glob("*.safetensors"))
    assert len(shards) > 2
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((d / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(_expected_tensors(m))
    assert set(index["weight_map"].values()) == set(shards)
    for name, f in index["weight_map"].items():
        assert name in SafetensorsFile(d / f)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in _expected_tensors(m).values())
    _assert_params_equal(load_model(d).params, m.params)


def test_sharded_save_loads_in_transformers(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from helpers_hf import hf_reference, rel_err

    m, d = _sharded(tmp_path)
    toks = np.random.default_rng(0).integers(0, m.config.vocab_size, (2, 9))
    logits, _ = hf_reference(d, toks)
    # float32 parity tolerance, as in test_parity.py (measured ~3e-7)
    assert rel_err(np.asarray(gj.forward(m, toks)), logits) < 1e-4


def test_apply_gauge_keeps_shards(tmp_path):
    m, d = _sharded(tmp_path)
    g = _gauge(m)
    out = apply_gauge_to_checkpoint(d, tmp_path / "gauged", g)
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(p.name for p in d.glob("*.safetensors"))
    assert (json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
            == json.loads((d / "model.safetensors.index.json").read_text())["weight_map"])
    for f in d.glob("*.safetensors"):  # same tensors in the same file, same order
        assert SafetensorsFile(out / f.name).keys() == SafetensorsFile(f).keys()
    stored = _read_dir(out)
    for name, arr in _expected_tensors(gj.apply_gauge(m, g)).items():
        np.testing.assert_array_equal(stored[name], arr, err_msg=name)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_apply_gauge_then_inverse_is_bit_identical(tmp_path, kind):
    m = _model(kind)
    src = save_model(m, tmp_path / "src", max_shard_bytes=60_000)
    g = _gauge(m)
    mid = apply_gauge_to_checkpoint(src, tmp_path / "mid", g)
    back = apply_gauge_to_checkpoint(mid, tmp_path / "back", g.inverse())
    a, b = _read_dir(src), _read_dir(back)
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name].view(np.uint32), b[name].view(np.uint32), err_msg=name)  # incl. -0.0
    assert any(not np.array_equal(a[n], v) for n, v in _read_dir(mid).items())
    for f in src.glob("*.safetensors"):
        assert (back / f.name).read_bytes() == f.read_bytes()


def test_apply_gauge_copies_other_files(tmp_path):
    m = _model("llama")
    src = save_model(m, tmp_path / "src")
    (src / "tokenizer.json").write_text("{}")
    (src / "pytorch_model.bin").write_bytes(b"pickle")  # never copied
    out = apply_gauge_to_checkpoint(src, tmp_path / "out", _gauge(m))
    assert (out / "tokenizer.json").read_text() == "{}"
    assert json.loads((out / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    assert not (out / "pytorch_model.bin").exists()


# -------------------------------------------------------------------------------------- bad input
#
# Every failure: a CheckpointError/GaugeError, no output directory and no temporary directory
# left beside it, and an existing output left as it was.

def _src(tmp_path, kind="llama") -> tuple[gj.Model, Path]:
    m = _model(kind)
    return m, save_model(m, tmp_path / "src")


def _drop_tensor(d: Path, name: str) -> None:
    f = d / "model.safetensors"
    tensors = load_file(f)
    del tensors[name]
    save_file(tensors, f, metadata={"format": "pt"})


def _bad_sources(tmp_path):
    """name → (source path, gauge, expected error type, message fragment)."""
    llama, good = _src(tmp_path)
    g = _gauge(llama)
    cases = {}

    cases["missing_dir"] = (tmp_path / "nope", g, CheckpointError, "does not exist|not a")

    no_cfg = tmp_path / "no_config"
    shutil.copytree(good, no_cfg)
    (no_cfg / "config.json").unlink()
    cases["no_config"] = (no_cfg, g, CheckpointError, "config.json")

    pickle_dir = tmp_path / "pickle"
    pickle_dir.mkdir()
    shutil.copy(good / "config.json", pickle_dir / "config.json")
    (pickle_dir / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    cases["pickle_dir"] = (pickle_dir, g, CheckpointError, "pickle")

    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x04not really")
    cases["pt_file"] = (pt, g, CheckpointError, "pickle")

    missing = tmp_path / "missing_tensor"
    shutil.copytree(good, missing)
    _drop_tensor(missing, "model.layers.1.mlp.up_proj.weight")
    cases["missing_tensor"] = (missing, g, CheckpointError, "missing tensor")

    unknown = tmp_path / "unknown_type"
    shutil.copytree(good, unknown)
    cfg = json.loads((unknown / "config.json").read_text())
    cfg["model_type"] = "mamba"
    (unknown / "config.json").write_text(json.dumps(cfg))
    cases["unknown_model_type"] = (unknown, g, CheckpointError, "mamba")

    trunc = tmp_path / "truncated"
    shutil.copytree(good, trunc)
    f = trunc / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    cases["truncated"] = (trunc, g, CheckpointError, "truncated|inconsistent")

    cases["wrong_d"] = (good, gj.SignedPermutation.random(0, llama.d + 1), GaugeError, f"d={llama.d + 1}")

    gpt2, gpt2_dir = _model("gpt2"), tmp_path / "gpt2"
    save_model(gpt2, gpt2_dir)
    signs = np.ones(gpt2.d, np.int8)
    signs[:3] = -1
    cases["gpt2_local_signs"] = (gpt2_dir, gj.SignedPermutation(np.arange(gpt2.d), signs), GaugeError, "LayerNorm")
    return cases


BAD = ["missing_dir", "no_config", "pickle_dir", "pt_file", "missing_tensor", "unknown_model_type", "truncated",
       "wrong_d", "gpt2_local_signs"]


@pytest.fixture(scope="module")
def bad_sources(tmp_path_factory):
    return _bad_sources(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", BAD)
def test_bad_input_writes_nothing(bad_sources, tmp_path, case):
    src, g, err, msg = bad_sources[case]
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(err, match=msg):
        apply_gauge_to_checkpoint(src, work / "out", g)
    assert os.listdir(work) == []  # no output, no .out.*.tmp beside it


@pytest.mark.parametrize("case", BAD)
def test_bad_input_keeps_existing_output(bad_sources, tmp_path, case):
    src, g, err, msg = bad_sources[case]
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(err, match=msg):
        apply_gauge_to_checkpoint(src, out, g)
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "old"


@pytest.mark.parametrize("case", [c for c in BAD if c not in ("wrong_d", "gpt2_local_signs")])
def test_bad_input_refused_by_load_model(bad_sources, case):
    src, _, err, msg = bad_sources[case]
    with pytest.raises(err, match=msg):
        load_model(src)


def test_failure_mid_stream_leaves_nothing(tmp_path):
    _, src = _src(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    seen = []

    def boom(name):
        seen.append(name)
        if len(seen) == 5:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        apply_gauge_to_checkpoint(src, work / "out", gj.SignedPermutation.identity(64), on_tensor=boom)
    assert os.listdir(work) == []


def test_save_refuses_params_that_disagree_with_config(tmp_path):
    m = _model("llama")
    layers = dict(m.params["layers"], q=m.params["layers"]["q"][:, :-1])
    bad = gj.Model(m.config, dict(m.params, layers=layers))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(CheckpointError, match="shape"):
        save_model(bad, work / "out")
    assert os.listdir(work) == []


def test_save_failing_mid_write_leaves_nothing(tmp_path, monkeypatch):
    import gaugejax.io.hf as hf

    real = hf.write_safetensors
    calls = []

    def flaky(path, tensors, metadata=None):
        calls.append(path)
        if len(calls) == 2:  # the second shard: the first is already on disk
            raise OSError("disk full")
        return real(path, tensors, metadata)

    monkeypatch.setattr(hf, "write_safetensors", flaky)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(OSError, match="disk full"):
        save_model(_model("llama"), work / "out", max_shard_bytes=40_000)
    assert len(calls) == 2
    assert os.listdir(work) == []


def test_bare_safetensors_and_unknown_file_refused(tmp_path):
    _, src = _src(tmp_path)
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(src / "model.safetensors")
    other = tmp_path / "weights.npz"
    other.write_bytes(b"")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_model(other)
