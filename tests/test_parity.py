"""Parity with ``transformers`` on tiny random checkpoints written by ``save_pretrained``.

Per architecture variant: our logits and every hidden state equal transformers'; the checkpoint
moved by ``apply_gauge_to_checkpoint`` loads in transformers with the same logits and hidden
states ``h[..., perm] * signs``; a bfloat16 checkpoint keeps its dtype on write.

Tolerances are float32 ones: both sides compute in float32 with different summation
orders (XLA einsum vs torch matmul, fused vs unfused softmax), so results differ by a few float32
ulps per layer. Measured here: ≲ 5e-7 relative to the reference's scale. We allow 1e-4 relative
(about 200× headroom): any real bug (wrong rope scaling, mask, bias or sign) shows up at 1e-2
or more, as ``test_variant_features_matter`` checks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import gaugejax as gj  # noqa: E402
from gaugejax.io import apply_gauge_to_checkpoint, load_model, save_model  # noqa: E402
from gaugejax.io.safetensors_stream import SafetensorsFile  # noqa: E402
from helpers_hf import KINDS, hf_reference, rel_err, save_tiny, tokens_for  # noqa: E402

RTOL = 1e-4  # relative to the reference's max |value|; float32 parity, see the module docstring


def _gauge_for(model, seed=3):
    d = model.config.d_model
    if model.config.norm == "rmsnorm":
        return gj.SignedPermutation.random(seed, d)  # all of B_d
    return gj.SignedPermutation.random(seed, d, signed=False, global_sign=True)  # S_d × {±1}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """kind → (directory, tokens, transformers logits, transformers hidden states)."""
    root = tmp_path_factory.mktemp("parity")
    toks = tokens_for()
    out = {}
    for kind in KINDS:
        d = save_tiny(kind, root / kind)
        out[kind] = (d, toks, *hf_reference(d, toks))
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_forward_matches_transformers(checkpoints, kind):
    d, toks, ref_logits, ref_hidden = checkpoints[kind]
    model = load_model(d)
    logits = np.asarray(gj.forward(model, toks))
    hidden = np.asarray(gj.residual_stream(model, toks))  # final_norm=True: transformers' convention
    assert logits.shape == ref_logits.shape
    assert hidden.shape == ref_hidden.shape == (model.config.n_layers + 1, *toks.shape, model.config.d_model)
    assert rel_err(logits, ref_logits) < RTOL
    for i in range(len(hidden)):  # each layer against its own scale
        assert rel_err(hidden[i], ref_hidden[i]) < RTOL, f"hidden state {i}"


@pytest.mark.parametrize("kind", list(KINDS))
def test_pre_norm_stream_differs_only_in_last_entry(checkpoints, kind):
    d, toks, _, ref_hidden = checkpoints[kind]
    model = load_model(d)
    pre = np.asarray(gj.residual_stream(model, toks, final_norm=False))
    post = np.asarray(gj.residual_stream(model, toks))
    np.testing.assert_array_equal(pre[:-1], post[:-1])
    assert rel_err(pre[-1], ref_hidden[-1]) > 1e-2  # the final norm is not the identity here


@pytest.mark.parametrize("kind,feature", [
    ("llama_rope_linear", dict(rope_scaling=None)),
    ("llama_rope_llama3", dict(rope_scaling=None)),
    ("mistral", dict(sliding_window=None)),
])
def test_variant_features_matter(checkpoints, kind, feature):
    """The variant's feature changes the logits, so the parity test above really covers it."""
    d, toks, ref_logits, _ = checkpoints[kind]
    model = load_model(d)
    plain = gj.Model(model.config.replace(**feature), model.params)
    assert rel_err(np.asarray(gj.forward(plain, toks)), ref_logits) > 1e-3


@pytest.mark.parametrize("kind", ["qwen2", "qwen2_tied", "llama", "llama_tied", "gpt2", "neox_parallel",
                                  "neox_sequential"])
def test_tie_and_biases_are_read(checkpoints, kind):
    d, *_ = checkpoints[kind]
    model = load_model(d)
    cfg = json.loads((d / "config.json").read_text())
    assert model.config.tie_embeddings == bool(cfg.get("tie_word_embeddings", kind == "gpt2"))
    assert ("lm_head" in model.params) == (not model.config.tie_embeddings)
    assert ("q_bias" in model.params["layers"]) == kind.startswith("qwen2")
    if kind.startswith("neox"):
        assert model.config.parallel_residual == (kind == "neox_parallel")


@pytest.mark.parametrize("kind", list(KINDS))
def test_gauged_checkpoint_loads_in_transformers(checkpoints, tmp_path, kind):
    d, toks, ref_logits, ref_hidden = checkpoints[kind]
    g = _gauge_for(load_model(d))
    out = apply_gauge_to_checkpoint(d, tmp_path / "gauged", g)
    logits, hidden = hf_reference(out, toks)
    # the gauge is exact in real arithmetic; float32 matmuls over permuted inputs sum in another
    # order, so equality holds to float32 rounding (same RTOL as above)
    assert rel_err(logits, ref_logits) < RTOL
    for i in range(len(hidden)):
        assert rel_err(hidden[i], g.apply(ref_hidden[i])) < RTOL, f"hidden state {i}"
    # and our own load of the gauged checkpoint agrees with apply_gauge in memory, bit for bit
    ours = load_model(out)
    moved = gj.apply_gauge(load_model(d), g)
    for a, b in zip(_leaves(ours.params), _leaves(moved.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _leaves(params):
    import jax

    return jax.tree.leaves(params)


def test_gauge_is_not_trivial(checkpoints, tmp_path):
    """Guards the test above: the gauged checkpoint's hidden states are not the original ones."""
    d, toks, _, ref_hidden = checkpoints["llama"]
    g = _gauge_for(load_model(d))
    _, hidden = hf_reference(apply_gauge_to_checkpoint(d, tmp_path / "g", g), toks)
    assert rel_err(hidden[1], ref_hidden[1]) > 0.1


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_bfloat16_round_trip(tmp_path, kind):
    toks = tokens_for()
    src = save_tiny(kind, tmp_path / "bf16", dtype="bfloat16")
    model = load_model(src)
    import jax

    assert {str(x.dtype) for x in jax.tree.leaves(model.params)} == {"bfloat16"}  # storage dtype kept
    # transformers upcasting the same bf16 weights to float32 is the float32 reference: our forward
    # upcasts too, so the float32 tolerance applies (a bf16 forward would be ~1e-2 off)
    ref_logits, ref_hidden = hf_reference(src, toks, dtype="float32")
    logits = gj.forward(model, toks)
    assert logits.dtype == np.float32
    assert rel_err(np.asarray(logits), ref_logits) < RTOL
    # write: dtype preserved, tensors bit-identical to what save_pretrained wrote
    dst = save_model(model, tmp_path / "ours")
    theirs, ours = _tensors(src), _tensors(dst)
    assert set(ours) >= {k for k in theirs if not k.endswith("lm_head.weight")}
    for name, arr in ours.items():
        assert str(arr.dtype) == "bfloat16", name
        if name in theirs:
            np.testing.assert_array_equal(arr.view(np.uint16), theirs[name].view(np.uint16), err_msg=name)
    assert json.loads((dst / "config.json").read_text())["torch_dtype"] == "bfloat16"
    # a gauged bf16 checkpoint stays bf16 and still loads in transformers with the same logits
    g = _gauge_for(model)
    gauged = apply_gauge_to_checkpoint(src, tmp_path / "gauged", g)
    assert {str(a.dtype) for a in _tensors(gauged).values()} == {"bfloat16"}
    logits2, hidden2 = hf_reference(gauged, toks, dtype="float32")
    assert rel_err(logits2, ref_logits) < RTOL
    assert rel_err(hidden2[1], g.apply(ref_hidden[1])) < RTOL


def _tensors(directory) -> dict[str, np.ndarray]:
    """Every stored tensor of a directory, with GPT-2's optional ``transformer.`` prefix dropped."""
    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        sf = SafetensorsFile(f)
        for k in sf.keys():
            out[k.removeprefix("transformer.")] = np.array(sf[k])
    return out
