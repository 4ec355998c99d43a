"""``tokenizer.json`` of a Hugging Face directory, read by ``gaugejax.io.load_tokenizer`` (the
``tokenizers`` library alone), against ``transformers.AutoTokenizer`` on the same directory.

One test per tokenizer model type the supported families publish, each file laid out as the
published one it names (normalizer, pre-tokenizer, model, post-processor, decoder and the
``tokenizer_class`` of ``tokenizer_config.json``), its vocabulary trained here on this repository's
README so the test needs no download:

* byte-level BPE: GPT-2 / OPT / GPT-J / SmolLM2 (``GPT2Tokenizer``) and Qwen2 / Qwen3 (NFC
  normalizer, Split regex before ByteLevel; ``Qwen2Tokenizer``);
* SentencePiece BPE with byte fallback: Llama 2 / Phi-3 (``Prepend("▁")`` + ``Replace`` normalizer,
  ``LlamaTokenizer``: transformers 5 re-derives that class's pre-tokenization and differs from the
  file on leading spaces, a strict xfail says where), Mistral / TinyLlama conversions (``Metaspace``
  pre-tokenizer) and Gemma (spaces kept as pieces, ``GemmaTokenizer``), written by
  :func:`gaugejax.io.tokenizer.tokenizer_files` from a SentencePiece model trained with the
  ``sentencepiece`` package;
* WordPiece: BERT / all-MiniLM-L6-v2 (``BertTokenizer``, lower-cased, ``[CLS] $A [SEP]``);
* Unigram: no supported family publishes one today (T5, ALBERT and XLNet do); checked so a
  checkpoint that carries one is read right (``PreTrainedTokenizerFast``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

from test_gguf_tokenizer import TEXTS, _metadata, _write, sentencepiece_vocab  # noqa: E402,F401

from gaugejax.io import load_tokenizer  # noqa: E402
from gaugejax.io.tokenizer import tokenizer_files  # noqa: E402
from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,  # noqa: E402
                        processors, trainers)

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
"""The pre-tokenizer regex of Qwen2's published tokenizer.json."""


def _corpus() -> list[str]:
    readme = Path(__file__).parents[1] / "README.md"
    return [line for line in readme.read_text(encoding="utf-8").splitlines() if line.strip()] + TEXTS[2:5]


def _save(tmp_path: Path, tok: Tokenizer, config: dict) -> Path:
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


def _assert_same_ids(folder: Path) -> None:
    oracle = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = load_tokenizer(folder)
    for text in TEXTS:
        assert ours(text).tolist() == oracle(text)["input_ids"], text


def _byte_level(pre_tokenizer, normalizer=None) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=700, special_tokens=specials,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def test_byte_level_bpe_gpt2_smollm2(tmp_path):
    tok = _byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False))
    _assert_same_ids(_save(tmp_path, tok, {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>",
                                           "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                                           "add_prefix_space": False}))


def test_byte_level_bpe_qwen2(tmp_path):
    split = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = _byte_level(split, normalizers.NFC())
    _assert_same_ids(_save(tmp_path, tok, {"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>",
                                           "pad_token": "<|endoftext|>", "bos_token": None,
                                           "unk_token": None, "add_prefix_space": False}))


LLAMA_REBUILT = ("transformers 5 rebuilds LlamaTokenizer's pre-tokenization from its class (Metaspace, no "
                 "normalizer) and keeps only the file's vocabulary: on a text that starts with spaces or a special "
                 "token its ids differ from the file's Prepend + Replace normalizer, which gaugejax and the tokenizers "
                 "library follow")


@pytest.mark.parametrize("arch, tokenizer_class", [
    ("llama", "LlamaTokenizer"), ("gemma3", "GemmaTokenizer"), ("phi3", "PreTrainedTokenizerFast"),
    pytest.param("phi3", "LlamaTokenizer", marks=pytest.mark.xfail(strict=True, reason=LLAMA_REBUILT))])
def test_sentencepiece_bpe_byte_fallback(tmp_path, sentencepiece_vocab, arch, tokenizer_class):
    """``llama``: Metaspace layout (Mistral, TinyLlama conversions); ``phi3``: the Prepend + Replace
    normalizer of Llama 2's and Phi-3's published files; ``gemma3``: Gemma's."""
    meta = _metadata(_write(tmp_path / f"{arch}.gguf", arch, *sentencepiece_vocab))
    folder = tmp_path / "hf"
    folder.mkdir()
    for name, text in tokenizer_files(meta, arch).items():
        if name == "tokenizer_config.json":
            text = json.dumps({**json.loads(text), "tokenizer_class": tokenizer_class})
        (folder / name).write_text(text, encoding="utf-8")
    assert json.loads((folder / "tokenizer.json").read_text())["model"]["byte_fallback"] is True
    _assert_same_ids(folder)


def test_wordpiece_bert_minilm(tmp_path):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(_corpus(), trainers.WordPieceTrainer(vocab_size=700, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    _assert_same_ids(_save(tmp_path, tok, {"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                                           "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                                           "cls_token": "[CLS]", "mask_token": "[MASK]"}))


def test_unigram(tmp_path):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Nmt(), normalizers.NFKC(),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    specials = ["<pad>", "</s>", "<unk>"]
    tok.train_from_iterator(_corpus(), trainers.UnigramTrainer(vocab_size=700, special_tokens=specials,
                                                               unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    _assert_same_ids(_save(tmp_path, tok, {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>",
                                           "unk_token": "<unk>", "pad_token": "<pad>"}))
