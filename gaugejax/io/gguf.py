"""GGUF files (llama.cpp): read a model (llama, qwen2, qwen3, gemma 1-3, phi3), its tokenizer and a summary.

The ``gguf`` package (``pip install gguf``) parses the file; quantized tensors are dequantized to
float32 with ``gguf.quants.dequantize`` (vectorized per tensor), so every tool sees the same float
weights llama.cpp and ``transformers`` compute with.

Two layout facts matter:

* GGUF lists dimensions innermost first (``ne = [in, out]``); the reader's arrays are already in
  numpy order, i.e. ``(out, in)``, the PyTorch ``nn.Linear`` layout.
* llama.cpp's converter permutes the rows of ``attn_q`` and ``attn_k`` of the ``llama``
  architecture from the Hugging Face "rotate half" RoPE layout to its interleaved one, and stores
  Gemma's norm gains as ``w + 1``; :mod:`gaugejax.io.gguf_arch` undoes both, exactly as
  ``transformers``' GGUF loader does.
* Tensor names come from the family's parameter table when it declares them, else from
  ``gguf``'s own ``TensorNameMap`` (the map llama.cpp's converter and transformers use).

Example:
  >>> from gaugejax.io.gguf import load_gguf, gguf_tokenizer
  >>> m = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")    # doctest: +SKIP
  >>> ids = gguf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")("Hello")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gaugejax.errors import CheckpointError
from gaugejax.io.gguf_arch import ARCHITECTURES, hf_config, reverse_permute
from gaugejax.io.gguf_parse import GGUFHeader, TensorEntry, read_header
from gaugejax.models.base import Model
from gaugejax.models.table import HFTensor

__all__ = ["load_gguf", "gguf_tokenizer", "gguf_metadata", "reverse_permute", "SUPPORTED_ARCHITECTURES"]

SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)


def _gguf():
    try:
        import gguf
    except ImportError:
        raise CheckpointError("reading .gguf files needs the `gguf` package: pip install gguf") from None
    return gguf


def _header(path: str | os.PathLike) -> GGUFHeader:
    """The checked header of a GGUF file (:func:`gaugejax.io.gguf_parse.read_header`)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p} does not exist or is not a file")
    _gguf()
    return read_header(p)


def _plain(value: Any) -> Any:
    """A metadata value as plain Python (numeric arrays become lists: what tokenizer code expects)."""
    return value.tolist() if isinstance(value, np.ndarray) else value


def tokenizer_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``tokenizer.*`` metadata of a GGUF file as plain Python values (the vocabulary arrays
    cost a small multiple of the bytes they take in the file; nothing else is decoded)."""
    header = _header(path)
    return {k: _plain(header.value(k)) for k in header.fields if k.startswith("tokenizer.")}


def load_gguf(path: str | os.PathLike, dtype=None) -> Model:
    """Loads a GGUF file (architectures in :data:`SUPPORTED_ARCHITECTURES`) into a :class:`Model`.

    Args:
      path: the ``.gguf`` file.
      dtype: cast the weights to this dtype (default float32, the dequantized precision).

    Returns:
      A model of the family of the Hugging Face ``model_type`` the architecture maps to (``llama``,
      ``qwen2``, ``qwen3``, ``gemma``, ``gemma2``, ``gemma3_text``, ``phi3``); tied embeddings when
      the file has no ``output.weight``. Q/K rows are un-permuted and Gemma norms un-shifted back
      to the Hugging Face layout, so ``save_model`` writes a directory ``transformers`` loads with
      the same logits.

    Raises:
      CheckpointError: ``gguf`` missing, not a GGUF file, another architecture (the message lists
        the supported ones), unknown metadata, missing or unexpected tensors, shapes that disagree
        with the metadata.
    """
    p = Path(path)
    header = _header(p)
    gguf = _gguf()
    # decoded when read; the vocabulary arrays are large and not needed here
    meta = header.values(k for k in header.fields if not k.startswith("tokenizer.ggml.") or k.endswith("_id"))
    tensors = header.tensors
    arch, cfg = hf_config(meta, {k: t.dims for k, t in tensors.items()}, p)
    from gaugejax.io.hf import params_from_tensors
    from gaugejax.models import config_from_hf

    config = config_from_hf(cfg)
    names = _tensor_names(config, meta["general.architecture"], p)
    wanted = set(names.values())
    missing = sorted(wanted - set(tensors))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{p}: missing tensors {', '.join(missing[:3])}{more}")
    extra = sorted(set(tensors) - wanted)
    if extra:
        raise CheckpointError(f"{p}: unexpected tensors {', '.join(extra[:3])} "
                              "(an architecture variant gaugejax does not support?)")
    _check_shapes(config, names, tensors, p)

    def get(t: HFTensor) -> np.ndarray:
        name = names[t.name]
        shape = tensors[name].shape  # numpy order: (out, in)
        try:
            qtype = gguf.GGMLQuantizationType(tensors[name].type)
            w = np.asarray(gguf.quants.dequantize(header.tensor_data(name), qtype), dtype=np.float32)
        except (NotImplementedError, ValueError) as e:
            raise CheckpointError(f"{p}: tensor {name!r}: {str(e).splitlines()[0]}") from None
        if w.size != int(np.prod(shape)):
            raise CheckpointError(f"{p}: tensor {name!r} holds {w.size} values, its shape says {shape}")
        w = w.reshape(shape)
        if arch.permute_qk and name.endswith("attn_q.weight"):
            w = reverse_permute(w, config.n_heads)
        elif arch.permute_qk and name.endswith("attn_k.weight"):
            w = reverse_permute(w, config.n_kv_heads)
        elif arch.norm_shift and name.endswith("norm.weight"):
            w = w - np.float32(arch.norm_shift)
        return w

    params = params_from_tensors(config, get, np.float32 if dtype is None else dtype)
    return Model(config, params)


def _check_shapes(config, names: dict[str, str], tensors: dict[str, TensorEntry], path: Path) -> None:
    """Refuses a stored tensor whose shape is not the one the metadata implies (before any data is read)."""
    from gaugejax.io.hf import hf_tensor_shapes

    for hf_name, want in hf_tensor_shapes(config).items():
        got = tensors[names[hf_name]].shape
        if got != tuple(want):
            raise CheckpointError(f"{path}: tensor {names[hf_name]!r} has shape {got} but the metadata implies "
                                  f"{tuple(want)}; the file is damaged or from another converter")


def _tensor_names(config, arch_name: str, path: Path) -> dict[str, str]:
    """HF tensor name → GGUF name: the family table's ``gguf`` names, else ``gguf``'s ``TensorNameMap``."""
    from gaugejax.models import family_module

    gguf = _gguf()
    fam = family_module(config)
    names = fam.gguf_names(config)
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch_name]
    name_map = gguf.get_tensor_name_map(arch, config.n_layers)
    for t in fam.hf_tensors(config):
        if t.name in names:
            continue
        stem, _, suffix = t.name.rpartition(".")
        g = name_map.get_name(stem)
        if g is None:
            raise CheckpointError(f"{path}: no GGUF name for tensor {t.name!r}")
        names[t.name] = f"{g}.{suffix}"
    return names


def gguf_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """A summary of a GGUF file for ``gaugejax info`` (no tensor data is read).

    Returns:
      A dict with ``format``, ``architecture``, ``name``, ``supported``, ``n_tensors``,
      ``n_params``, ``tensor_types`` (ggml type → count), ``file_bytes``, ``tokenizer`` (the
      ``tokenizer.ggml.model``), ``vocab_size`` and ``metadata`` (every scalar key except the
      chat template; arrays appear as ``"<array of N>"``).
    """
    p = Path(path)
    header = _header(p)
    meta: dict[str, Any] = {}
    for k, f in header.fields.items():
        if k == "tokenizer.chat_template":
            continue
        meta[k] = f"<array of {f.count}>" if f.subtype is not None else header.value(k)
    arch = meta.get("general.architecture")
    tensors = header.tensors
    embd = tensors.get("token_embd.weight")
    return {
        "format": "gguf",
        "architecture": arch,
        "name": meta.get("general.name"),
        "supported": isinstance(arch, str) and arch in SUPPORTED_ARCHITECTURES,
        "tied_embeddings": "output.weight" not in tensors,
        "n_tensors": len(tensors),
        "n_params": sum(t.n_elements for t in tensors.values()),
        "tensor_types": dict(Counter(header.type_name(n) for n in tensors)),
        "file_bytes": header.size,
        "tokenizer": meta.get("tokenizer.ggml.model"),
        "vocab_size": int(embd.dims[-1]) if embd is not None and embd.dims else None,
        "metadata": meta,
    }


# --------------------------------------------------------------------------------------- tokenizer

def _bytes_to_unicode() -> dict[int, str]:
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


# Pre-tokenizer splits for the ``tokenizer.ggml.pre`` names whose merges were learned on them (as
# transformers' GGUF tokenizer builder has them); any other name gets GPT-2's own split.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2_SPLIT),
}
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


def _build_tokenizer(meta: dict[str, Any], path: Path):
    try:
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    except ImportError:
        raise CheckpointError("building a GGUF tokenizer needs the `tokenizers` package: pip install tokenizers") \
            from None
    if "tokenizer.huggingface.json" in meta:
        return Tokenizer.from_str(meta["tokenizer.huggingface.json"])
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise CheckpointError(f"{path}: tokenizer model {kind!r} is not supported (supported: gpt2 byte-level BPE)")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges: list[str] = meta.get("tokenizer.ggml.merges") or []
    types: list[int] = meta.get("tokenizer.ggml.token_type") or []
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {(t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))): i
             for i, t in enumerate(tokens)}
    bad = next((m for m in merges if not isinstance(m, str) or " " not in m), None)
    if bad is not None:
        raise CheckpointError(f"{path}: tokenizer.ggml.merges holds {str(bad)[:40]!r}, not two tokens separated by a "
                              "space; the file is damaged: re-convert it, or pass --tokens")
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], dropout=None, unk_token=None,
                     continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    split = _SPLITS.get(meta.get("tokenizer.ggml.pre"))
    if split is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    control = [AddedToken(t, normalized=False, special=True)
               for t, ty in zip(tokens, types) if ty == _CONTROL and set(t) <= alphabet]
    if control:
        tok.add_special_tokens(control)
    user = [AddedToken(t, normalized=False, special=False)
            for t, ty in zip(tokens, types) if ty == _USER_DEFINED and t in vocab]
    if user:
        tok.add_tokens(user)
    single, special = "$A:0", []
    for flag, key, where in (("add_bos_token", "bos_token_id", "before"), ("add_eos_token", "eos_token_id", "after")):
        tid = meta.get(f"tokenizer.ggml.{key}")
        if meta.get(f"tokenizer.ggml.{flag}") and tid is not None:
            if not 0 <= int(tid) < len(tokens):
                raise CheckpointError(f"{path}: tokenizer.ggml.{key}={tid} lies outside the {len(tokens)}-token "
                                      "vocabulary; the file is damaged: re-convert it, or pass --tokens")
            t = tokens[int(tid)]
            single = f"{t}:0 {single}" if where == "before" else f"{single} {t}:0"
            special.append((t, int(tid)))
    if special:
        tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=special)
    return tok


def _file_tokenizer(path: str | os.PathLike):
    """The ``tokenizers.Tokenizer`` built from the ``tokenizer.*`` metadata of a GGUF file."""
    p = Path(path)
    return _build_tokenizer(tokenizer_metadata(p), p)


def gguf_tokenizer(path: str | os.PathLike) -> Callable[[str], np.ndarray]:
    """A ``text -> int32 token ids`` function built from the vocabulary in a GGUF file.

    Byte-level BPE (``tokenizer.ggml.model == "gpt2"``: GPT-2, Llama 3, Qwen2, SmolLM) from
    ``tokenizer.ggml.tokens`` and ``tokenizer.ggml.merges``; control tokens are special, BOS/EOS
    are added when ``tokenizer.ggml.add_bos_token`` / ``add_eos_token`` say so. Built with the
    ``tokenizers`` package alone; it matches ``transformers``' GGUF tokenizer.

    Raises:
      CheckpointError: ``gguf`` or ``tokenizers`` missing, or a tokenizer model other than ``gpt2``.
    """
    tok = _file_tokenizer(path)
    return lambda text: np.asarray(tok.encode(text).ids, np.int32)


def gguf_detokenizer(path: str | os.PathLike) -> Callable[[Any], str]:
    """The inverse of :func:`gguf_tokenizer`: ``token ids -> text`` (special tokens are kept).

    Example:
      >>> decode = gguf_detokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")   # doctest: +SKIP
      >>> decode(gguf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")("Hello"))   # doctest: +SKIP
      'Hello'

    Raises:
      CheckpointError: ``gguf`` or ``tokenizers`` missing, or a tokenizer model other than ``gpt2``.
    """
    tok = _file_tokenizer(path)
    return lambda ids: tok.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=False)
