"""Tokenizers from GGUF metadata, built with the ``tokenizers`` library alone.

A GGUF file has no ``tokenizer.json``; it stores its vocabulary under llama.cpp's keys
(``tokenizer.ggml.model``, ``.tokens``, ``.scores``, ``.token_type``, ``.merges``, the special
token ids and the ``add_bos_token`` / ``add_eos_token`` flags). :func:`gguf_tokenizer` turns them
into the ``tokenizers.Tokenizer`` that ``transformers`` builds for the same file (its
``integrations.gguf`` converters, which hand the vocabulary to ``LlamaTokenizer``,
``GemmaTokenizer`` or ``GPT2Tokenizer``), so both give the same ids:

* ``gpt2``: byte-level BPE (GPT-2, Llama 3, Qwen 2/3, SmolLM), pre-split by the regex its
  ``tokenizer.ggml.pre`` names;
* ``llama``: SentencePiece BPE with byte fallback (Llama 2, TinyLlama, Mistral, Gemma 1-3,
  Phi-3). Gemma spells its blank tokens with spaces and stores no merges: the merges are rebuilt
  from the vocabulary in file order, and spaces become ``▁`` in a normalizer. Phi-3 prefixes
  ``▁`` in a normalizer instead of a ``Metaspace`` pre-tokenizer.

Any other tokenizer model is refused with one line. :func:`tokenizer_files` gives the
``tokenizer.json`` / ``tokenizer_config.json`` pair a Hugging Face directory needs, so a
checkpoint written from a GGUF tokenizes as the GGUF does.

Example:
  >>> meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b", "ab"],
  ...         "tokenizer.ggml.merges": ["a b"]}
  >>> gguf_tokenizer(meta, "qwen2").encode("abab").ids
  [2, 2]
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from gaugejax.errors import CheckpointError

__all__ = ["gguf_tokenizer", "tokenizer_files", "TOKENIZER_MODELS"]

TOKENIZER_MODELS = ("gpt2", "llama")
"""``tokenizer.ggml.model`` values gaugejax builds."""

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types
_SPACE = "\u2581"  # SentencePiece's visible space

# Pre-tokenizer splits for the ``tokenizer.ggml.pre`` names whose merges were learned on them (as
# transformers' GGUF tokenizer builder has them); any other name keeps the model's own split.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "smaug-bpe", "dbrx", "pixtral"),
                    _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2_SPLIT),
}

_SPECIAL_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
                "pad_token": "padding_token_id"}
"""``tokenizer_config.json`` names → GGUF ``tokenizer.ggml.*`` id keys."""


def _lib():
    try:
        import tokenizers
    except ImportError:
        raise CheckpointError("building a GGUF tokenizer needs the `tokenizers` package: pip install tokenizers") \
            from None
    return tokenizers


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table (the byte-level BPE alphabet)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# ----------------------------------------------------------------------------------- metadata

def _list(meta: Mapping[str, Any], key: str, kind: type | tuple[type, ...], *, required: bool = False) -> list:
    value = meta.get(f"tokenizer.ggml.{key}")
    if value is None:
        if required:
            raise CheckpointError(f"GGUF tokenizer metadata lacks tokenizer.ggml.{key}")
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise CheckpointError(f"GGUF tokenizer.ggml.{key} must be a list of {getattr(kind, '__name__', 'numbers')}")
    return list(value)


def _token_id(meta: Mapping[str, Any], key: str, n: int) -> int | None:
    tid = meta.get(f"tokenizer.ggml.{key}")
    if tid is None:
        return None
    if isinstance(tid, bool) or not isinstance(tid, int) or not 0 <= tid < n:
        raise CheckpointError(f"GGUF tokenizer.ggml.{key}={tid!r} is not a token id of its {n}-token vocabulary; "
                              "the file is damaged: re-convert it, or pass --tokens")
    return tid


def _merges(raw: list[str]) -> list[tuple[str, str]]:
    out = []
    for m in raw:
        left, sep, right = m.partition(" ")
        if not sep or not left or not right:
            raise CheckpointError(f"GGUF tokenizer.ggml.merges holds {m[:40]!r}, not two tokens separated by a space; "
                                  "the file is damaged: re-convert it, or pass --tokens")
        out.append((left, right))
    return out


def generate_merges(vocab: Mapping[str, int], scores: Mapping[str, float]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece vocabulary: every split of a token into two tokens.

    Best first by the token's score, then longer left pieces first, ties in the order of ``scores``: the
    order of transformers' ``generate_merges``, which its GGUF loader uses, so the ids agree.
    (transformers also sorts each token's splits by their pieces' ids first; that cannot change the
    result, since a token's splits all differ in the length of their left piece.) The final order
    is one stable ``numpy.lexsort`` (Gemma 3: 514906 merges of 262144 tokens).

    Example:
      >>> generate_merges({"a": 0, "b": 1, "ab": 2, "abb": 3}, {"a": 0, "b": 0, "ab": -1, "abb": -2})
      [('a', 'b'), ('ab', 'b')]
    """
    import numpy as np

    lefts, rights, values = [], [], []
    for token, score in scores.items():
        for i in range(1, len(token)):
            left = token[:i]
            if left in vocab:
                right = token[i:]
                if right in vocab:
                    lefts.append(left)
                    rights.append(right)
                    values.append(score)
    n_left = np.fromiter(map(len, lefts), np.int64, len(lefts))
    n_right = np.fromiter(map(len, rights), np.int64, len(rights))
    order = np.lexsort((-n_right, -n_left, -np.asarray(values, np.float64)))  # descending, stable
    return [(lefts[i], rights[i]) for i in order.tolist()]


# ----------------------------------------------------------------------------------- builders

def _byte_level(tk, tokens: list[str], meta: Mapping[str, Any]):
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {(t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))): i
             for i, t in enumerate(tokens)}
    tok = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=_merges(_list(meta, "merges", str)), dropout=None,
                                     unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                                     fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = tk.decoders.ByteLevel()
    return tok, alphabet


def _sentencepiece(tk, tokens: list[str], meta: Mapping[str, Any], architecture: str):
    gemma = architecture in ("gemma", "gemma2", "gemma3")
    if gemma:  # blank tokens are stored as spaces; the merges follow file order, not scores
        tokens = [_SPACE * len(t) if " " in t and not t.strip() else t for t in tokens]
    vocab = {t: i for i, t in enumerate(tokens)}
    if meta.get("tokenizer.ggml.merges") is not None:
        merges = _merges(_list(meta, "merges", str))
    elif gemma:
        merges = generate_merges(vocab, {t: -i for i, t in enumerate(tokens)})
    else:
        scores = _list(meta, "scores", (int, float), required=True)
        if len(scores) != len(tokens):
            raise CheckpointError(f"GGUF tokenizer.ggml.scores has {len(scores)} entries for {len(tokens)} tokens")
        merges = generate_merges(vocab, dict(zip(tokens, scores)))
    unk = _token_id(meta, "unknown_token_id", len(tokens))
    unk_token = tokens[unk] if unk is not None else ("<unk>" if gemma else None)
    tok = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True, dropout=None,
                                     unk_token=unk_token if unk_token in vocab else None))
    replace, fallback, fuse = tk.decoders.Replace(_SPACE, " "), tk.decoders.ByteFallback(), tk.decoders.Fuse()
    if gemma:
        tok.normalizer = tk.normalizers.Replace(" ", _SPACE)
        tok.pre_tokenizer = tk.pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
        tok.decoder = tk.decoders.Sequence([replace, fallback, fuse])
        return tok
    if architecture == "phi3":  # the prefix space comes from a normalizer
        tok.normalizer = tk.normalizers.Sequence([tk.normalizers.Prepend(_SPACE), tk.normalizers.Replace(" ", _SPACE)])
    else:
        tok.pre_tokenizer = tk.pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="first", split=False)
    tok.decoder = tk.decoders.Sequence([replace, fallback, fuse, tk.decoders.Strip(" ", 1, 0)])
    return tok


def gguf_tokenizer(meta: Mapping[str, Any], architecture: str):
    """The ``tokenizers.Tokenizer`` a GGUF file's ``tokenizer.*`` metadata describes.

    Args:
      meta: the file's metadata, ``key -> value`` (at least the ``tokenizer.*`` keys).
      architecture: its ``general.architecture`` (Gemma and Phi-3 SentencePiece vocabularies
        differ in how they place spaces).

    Returns:
      A ``tokenizers.Tokenizer`` giving the ids ``transformers`` gives for the same file,
      BOS/EOS added as ``tokenizer.ggml.add_bos_token`` / ``add_eos_token`` say (SentencePiece
      vocabularies add BOS unless told not to, as llama.cpp does).

    Raises:
      CheckpointError: ``tokenizers`` is missing, the tokenizer model is not one of
        :data:`TOKENIZER_MODELS`, or the metadata is damaged (an id outside the vocabulary, a
        malformed merge).
    """
    tk = _lib()
    if isinstance(meta.get("tokenizer.huggingface.json"), str):
        try:
            return tk.Tokenizer.from_str(meta["tokenizer.huggingface.json"])
        except Exception as e:  # the tokenizers library raises plain Exception subclasses
            raise CheckpointError(f"GGUF tokenizer.huggingface.json is not a valid tokenizer: {str(e)[:80]}") from None
    kind = meta.get("tokenizer.ggml.model")
    if kind not in TOKENIZER_MODELS:
        raise CheckpointError(f"GGUF tokenizer model {kind!r} is not supported (supported: gpt2 byte-level BPE, "
                              "llama SentencePiece BPE); pass --tokens with token ids instead")
    tokens = _list(meta, "tokens", str, required=True)
    types = _list(meta, "token_type", int)
    if kind == "gpt2":
        tok, alphabet = _byte_level(tk, tokens, meta)
        keep = lambda t: set(t) <= alphabet  # noqa: E731  (a control token outside the byte alphabet is a mislabel)
    else:
        tok, keep = _sentencepiece(tk, tokens, meta, architecture), (lambda t: True)
    config = tokenizer_config(meta)
    special = {config[name] for name in _SPECIAL_IDS if config.get(name)} if kind == "llama" else set()
    control = [tk.AddedToken(t, normalized=False, special=True) for i, t in enumerate(tokens)
               if ((i < len(types) and types[i] == _CONTROL) or t in special) and keep(t)]
    if control:
        tok.add_special_tokens(control)
    user = [tk.AddedToken(t, normalized=False, special=False)  # token_to_id: no 262144-entry get_vocab() dict
            for t, ty in zip(tokens, types) if ty == _USER_DEFINED and tok.token_to_id(t) is not None]
    if user:
        tok.add_tokens(user)
    split = _SPLITS.get(meta.get("tokenizer.ggml.pre"))
    if split is not None:
        tok.pre_tokenizer = tk.pre_tokenizers.Sequence([
            tk.pre_tokenizers.Split(tk.Regex(split), behavior="isolated"),
            tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.post_processor = _post_processor(tk, tokens, meta, config)
    return tok


def _post_processor(tk, tokens: list[str], meta: Mapping[str, Any], config: Mapping[str, Any]):
    """BOS/EOS around each sequence, as transformers' ``update_post_processor`` writes them."""
    ends, special = {}, []
    for flag, name in (("add_bos_token", "bos_token"), ("add_eos_token", "eos_token")):
        tid = _token_id(meta, _SPECIAL_IDS[name], len(tokens))
        if config.get(flag) and tid is not None:
            ends[name] = tokens[tid]
            special.append((tokens[tid], tid))

    def one(seq: str, type_id: int) -> str:
        parts = [f"{ends['bos_token']}:{type_id}"] if "bos_token" in ends else []
        parts.append(f"${seq}:{type_id}")
        return " ".join(parts + ([f"{ends['eos_token']}:{type_id}"] if "eos_token" in ends else []))

    return tk.processors.TemplateProcessing(single=one("A", 0), pair=f"{one('A', 0)} {one('B', 1)}",
                                            special_tokens=special)


def tokenizer_config(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``tokenizer_config.json`` fields a GGUF's metadata states (special tokens, BOS/EOS flags, chat template).

    Example:
      >>> tokenizer_config({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["<unk>", "<s>"],
      ...                   "tokenizer.ggml.bos_token_id": 1})
      {'add_bos_token': True, 'add_eos_token': False, 'bos_token': '<s>'}
    """
    tokens = meta.get("tokenizer.ggml.tokens") or []
    sentencepiece = meta.get("tokenizer.ggml.model") == "llama"
    out: dict[str, Any] = {"add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", sentencepiece)),
                           "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False))}
    for name, key in _SPECIAL_IDS.items():
        tid = _token_id(meta, key, len(tokens))
        if tid is not None:
            out[name] = tokens[tid]
    template = meta.get("tokenizer.chat_template")
    if isinstance(template, str):
        out["chat_template"] = template
    return out


def tokenizer_files(meta: Mapping[str, Any], architecture: str) -> dict[str, str]:
    """``tokenizer.json`` and ``tokenizer_config.json`` texts for a Hugging Face directory.

    ``transformers.AutoTokenizer`` loads the pair and gives the same ids as from the GGUF file.

    Raises:
      CheckpointError: as :func:`gguf_tokenizer`.
    """
    tok = gguf_tokenizer(meta, architecture)
    config = {**tokenizer_config(meta), "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    return {"tokenizer.json": tok.to_str(), "tokenizer_config.json": json.dumps(config, indent=2, sort_keys=True) + "\n"}
