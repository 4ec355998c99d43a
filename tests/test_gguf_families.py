"""GGUF files of every architecture the reader supports, written here as llama.cpp's converter writes them.

Each case builds a tiny random ``transformers`` model (odd sizes, GQA, randomised norm gains and
biases), writes it with ``gguf.GGUFWriter`` in llama.cpp's layout (F32 tensors, the converter's
metadata keys, ``gguf``'s ``TensorNameMap`` names, Q/K rows permuted for ``llama``, Gemma norms
stored as ``w + 1``) and loads it with ``gj.load_model``. Oracles:

* ``transformers``' own GGUF load (``from_pretrained(dir, gguf_file=...)``): weights bit for bit
  (both sides dequantize with ``gguf`` and undo the same layout steps in float32), logits and
  every hidden state. transformers 5 cannot read ``gemma`` (Gemma 1) GGUF files (no config map),
  so that case compares against the original model only.
* the original torch model, for every case (logits and hidden states).

Tolerance: :data:`RTOL` = 1e-4 of the reference's max |value|: float32 in different summation
orders (measured ≤ 5e-6 here, gemma3 with 6 layers the largest); a layout bug (rows left permuted, a norm off by one) moves logits
by tens of percent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers requires it for gguf_file=

import gaugejax as gj  # noqa: E402
from gaugejax.errors import CheckpointError  # noqa: E402
from gaugejax.io import load_model  # noqa: E402
from gaugejax.io.gguf import SUPPORTED_ARCHITECTURES, gguf_metadata  # noqa: E402
from family_helpers import randomize  # noqa: E402
from helpers_hf import rel_err, run_hf  # noqa: E402
from gguf_writing import llama_cpp_permute, write_tensors  # noqa: E402

RTOL = 1e-4

_SMALL = dict(vocab_size=97, hidden_size=56, intermediate_size=78, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0)
_GEMMA = dict(_SMALL, hidden_size=48, num_attention_heads=2, num_key_value_heads=1, head_dim=256)
CASES = {
    # arch: (config class, model class, kwargs, transformers reads it back from GGUF)
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(_SMALL, tie_word_embeddings=False), True),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(_SMALL, tie_word_embeddings=True), True),
    # head_dim 128 = Qwen3Config's default: transformers' GGUF loader does not read qwen3.attention.key_length
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(_SMALL, head_dim=128, tie_word_embeddings=False), True),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(_GEMMA, head_dim=16), False),
    # head_dim 256 = transformers' default query_pre_attn_scalar, which its GGUF loader cannot read
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(_GEMMA, sliding_window=5, query_pre_attn_scalar=256), True),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
               dict(_GEMMA, num_hidden_layers=6, sliding_window=5, query_pre_attn_scalar=256), True),
    # vocab > 32000: transformers' GGUF load keeps Phi3Config's default pad_token_id=32000
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(_SMALL, vocab_size=32011, tie_word_embeddings=False), True),
}
"""Every architecture of :data:`gaugejax.io.gguf.SUPPORTED_ARCHITECTURES`."""
GGUF_ARCHITECTURES = tuple(CASES)
"""Read by the support matrix (``gaugejax.support``)."""


def write_gguf(path: Path, model, arch: str, qtype=None) -> Path:
    """Writes a transformers model as llama.cpp's ``convert_hf_to_gguf.py`` would (F32 tensors;
    matrices in ``qtype`` when given, 1-D tensors F32 as llama.cpp keeps them)."""
    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny {arch}")
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    rope = c.rope_parameters.get("full_attention", c.rope_parameters) if arch == "gemma3" else c.rope_parameters
    w.add_rope_freq_base(rope["rope_theta"])
    if rope.get("rope_type") == "linear":  # llama.cpp's converter: rope.scaling.type / rope.scaling.factor
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    w.add_vocab_size(c.vocab_size)
    if arch in ("llama", "phi3"):
        w.add_rope_dimension_count(head_dim)
    if arch in ("qwen3", "gemma", "gemma2", "gemma3"):
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if arch in ("gemma2", "gemma3"):
        w.add_sliding_window(c.sliding_window)
    if arch == "gemma2":
        w.add_attn_logit_softcapping(c.attn_logit_softcapping)
        w.add_final_logit_softcapping(c.final_logit_softcapping)
    names = gguf.get_tensor_name_map({v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch], c.num_hidden_layers)
    tensors = []
    for hf_name, t in model.state_dict().items():
        if hf_name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        stem, _, suffix = hf_name.rpartition(".")
        name = f"{names.get_name(stem)}.{suffix}"
        a = t.detach().numpy().astype(np.float32)
        if arch == "llama" and name.endswith("attn_q.weight"):
            a = llama_cpp_permute(a, c.num_attention_heads)
        elif arch == "llama" and name.endswith("attn_k.weight"):
            a = llama_cpp_permute(a, c.num_key_value_heads)
        elif arch.startswith("gemma") and name.endswith("norm.weight"):
            a = a + 1  # llama.cpp's Gemma converters: data_torch + 1
        tensors.append((name, a))
    write_tensors(w, tensors, qtype)
    return path


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    """(arch, directory, .gguf path, original torch model, token batch)."""
    arch = request.param
    cfg_cls, model_cls, kwargs, _ = CASES[arch]
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**kwargs)).eval()
    randomize(model, 0)
    d = tmp_path_factory.mktemp(arch)
    path = write_gguf(d / f"{arch}.gguf", model, arch)
    toks = np.random.default_rng(0).integers(0, kwargs["vocab_size"], (2, 11))
    return arch, d, path, model, toks


def test_cases_cover_every_supported_architecture():
    assert set(CASES) == set(SUPPORTED_ARCHITECTURES)


def _compare(model: gj.Model, toks: np.ndarray, ref_logits: np.ndarray, ref_hidden: np.ndarray) -> None:
    assert rel_err(gj.forward(model, toks), ref_logits) < RTOL
    hidden = np.asarray(gj.residual_stream(model, toks))
    assert hidden.shape == ref_hidden.shape
    for i, (a, b) in enumerate(zip(hidden, ref_hidden)):
        assert rel_err(a, b) < RTOL, f"hidden state {i}"


def test_gguf_matches_original_model(case):
    arch, _, path, model, toks = case
    ours = load_model(path)
    assert ours.config.model_type == CASES[arch][1].replace("ForCausalLM", "").lower().replace("gemma3", "gemma3_text")
    assert ours.config.tie_embeddings == bool(model.config.tie_word_embeddings)
    _compare(ours, toks, *run_hf(model, toks))


def test_gguf_matches_transformers_gguf_load(case):
    arch, d, path, _, toks = case
    if not CASES[arch][3]:
        with pytest.raises(ValueError, match="not supported"):  # transformers has no GGUF config map for it
            transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=path.name, dtype=torch.float32)
        pytest.skip(f"transformers cannot load {arch} GGUF files; compared with the original model only")
    hf = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=path.name, dtype=torch.float32).eval()
    ours = load_model(path)
    _assert_same_weights(ours, hf)
    _compare(ours, toks, *run_hf(hf, toks))


def _assert_same_weights(ours: gj.Model, hf) -> None:
    """Our params equal transformers' state dict bit for bit (fused tensors part by part)."""
    sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    fam = gj.models.family_module(ours.config)
    for t in fam.hf_tensors(ours.config):
        mine = np.asarray(ours.params["layers"][t.key][t.layer] if t.layer is not None else ours.params[t.key])
        if t.parts:  # a fused tensor (phi3 qkv_proj / gate_up_proj): compare its parts
            mine = np.concatenate([np.asarray(ours.params["layers"][k][t.layer]) for k, _ in t.parts], t.fuse_axis)
        np.testing.assert_array_equal(mine, sd[t.name], err_msg=t.name)


def test_layout_steps_matter(case):
    """Skipping a layout step (Q/K un-permutation, the Gemma norm shift) breaks parity: the tests above see it."""
    arch, _, path, model, toks = case
    from gaugejax.io import gguf_arch

    a = gguf_arch.ARCHITECTURES[arch]
    if not (a.permute_qk or a.norm_shift):
        pytest.skip(f"llama.cpp stores {arch} in the Hugging Face layout")
    import dataclasses

    broken = dataclasses.replace(a, permute_qk=False, norm_shift=0.0)
    patched = {**gguf_arch.ARCHITECTURES, arch: broken}
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(gguf_arch, "ARCHITECTURES", patched)
        bad = load_model(path)
    finally:
        mp.undo()
    assert rel_err(gj.forward(bad, toks), run_hf(model, toks)[0]) > 1e-2


@pytest.mark.parametrize("arch", ["qwen3", "gemma2", "phi3"])
def test_quantized_gguf_matches_transformers_gguf_load(tmp_path, arch):
    """Q8_0 matrices (rows of 64/96/512 values: whole 32-value blocks): the same dequantized weights
    as transformers', bit for bit, Gemma norms un-shifted and Phi-3's fused tensors split alike."""
    cfg_cls, model_cls, kwargs, _ = CASES[arch]
    kwargs = dict(kwargs, hidden_size=64, intermediate_size=96)
    torch.manual_seed(2)
    model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**kwargs)).eval()
    randomize(model, 2)
    path = write_gguf(tmp_path / "q.gguf", model, arch, qtype=gguf.GGMLQuantizationType.Q8_0)
    assert gguf_metadata(path)["tensor_types"]["Q8_0"] > 0
    ours = load_model(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
    _assert_same_weights(ours, hf)
    toks = np.random.default_rng(2).integers(0, kwargs["vocab_size"], (2, 11))
    ref_logits, ref_hidden = run_hf(hf, toks)
    _compare(ours, toks, ref_logits, ref_hidden)
    assert rel_err(gj.forward(ours, toks), run_hf(model, toks)[0]) < 5e-2  # Q8_0 moves the logits a little


def test_gemma3_linear_rope_scaling_on_global_layers(tmp_path):
    """Gemma 3 (4B and up) scales the RoPE of its global layers linearly; llama.cpp stores it as
    ``rope.scaling.*`` and applies it to global layers only (transformers' GGUF loader ignores it,
    so the original model is the reference)."""
    cfg_cls, model_cls, kwargs, _ = CASES["gemma3"]
    torch.manual_seed(1)
    model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(
        **kwargs, rope_scaling={"rope_type": "linear", "factor": 8.0})).eval()
    randomize(model, 1)
    ours = load_model(write_gguf(tmp_path / "g.gguf", model, "gemma3"))
    assert ours.config.rope_scaling is not None and ours.config.local_rope_scaling is None
    toks = np.random.default_rng(1).integers(0, kwargs["vocab_size"], (2, 11))
    ref_logits, ref_hidden = run_hf(model, toks)
    _compare(ours, toks, ref_logits, ref_hidden)
    unscaled = gj.Model(ours.config.replace(rope_scaling=None), ours.params)
    assert rel_err(gj.forward(unscaled, toks), ref_logits) > 1e-3  # the scaling matters at these positions


def test_unsupported_architecture_refused_listing_supported(tmp_path, capsys):
    w = gguf.GGUFWriter(str(tmp_path / "s.gguf"), "starcoder2")
    w.add_embedding_length(8)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="architecture 'starcoder2' is not supported") as e:
        load_model(tmp_path / "s.gguf")
    msg = str(e.value)
    assert "\n" not in msg and all(a in msg for a in SUPPORTED_ARCHITECTURES)
    assert gguf_metadata(tmp_path / "s.gguf")["supported"] is False
    from gaugejax.cli import main

    assert main(["info", str(tmp_path / "s.gguf")]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "'starcoder2'" in err[0] and all(a in err[0] for a in SUPPORTED_ARCHITECTURES)


def test_unknown_metadata_key_refused(tmp_path):
    torch.manual_seed(0)
    cfg_cls, model_cls, kwargs, _ = CASES["qwen3"]
    model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**kwargs)).eval()
    path = write_gguf(tmp_path / "q.gguf", model, "qwen3")
    r = gguf.GGUFReader(str(path))
    w = gguf.GGUFWriter(str(tmp_path / "q2.gguf"), "qwen3")
    for k, f in r.fields.items():
        if k.startswith("qwen3.") and k != "qwen3.vocab_size":
            v = f.contents()
            (w.add_float32 if isinstance(v, float) else w.add_uint32)(k, v)
    w.add_uint32("qwen3.expert_count", 4)
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data).reshape(tuple(reversed([int(n) for n in t.shape]))))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="'qwen3.expert_count' is not supported"):
        load_model(tmp_path / "q2.gguf")
