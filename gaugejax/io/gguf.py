"""GGUF files (llama.cpp): read a model (llama, qwen2, qwen3, gemma 1-3, phi3), its tokenizer and a summary.

The bounded parser :mod:`gaugejax.io.gguf_parse` reads the header; quantized tensors are
dequantized to float32 by ``gguf``'s own block formulas (:mod:`gaugejax.io.gguf_dequant`), so
every tool sees the same float weights llama.cpp and ``transformers`` compute with.

Layout facts a reader must undo:

* GGUF lists dimensions innermost first (``ne = [in, out]``); the arrays here are in numpy order,
  i.e. ``(out, in)``, the PyTorch ``nn.Linear`` layout.
* llama.cpp's converter permutes the rows of ``attn_q`` and ``attn_k`` of the ``llama``
  architecture from the Hugging Face "rotate half" RoPE layout to its interleaved one, and stores
  Gemma's norm gains as ``w + 1``; :mod:`gaugejax.io.gguf_arch` undoes both, exactly as
  ``transformers``' GGUF loader does.
* Tensor names come from the family's parameter table when it declares them, else from
  ``gguf``'s own ``TensorNameMap`` (the map llama.cpp's converter and transformers use).

:func:`open_gguf` checks a file and its metadata without reading tensor data;
:func:`load_gguf` builds the model from it and :func:`gaugejax.io.gguf_apply.apply_gauge_to_gguf`
streams it, tensor by tensor, into a gauged Hugging Face directory. The tokenizer is built from the
``tokenizer.*`` metadata by :mod:`gaugejax.io.tokenizer`.

Example:
  >>> from gaugejax.io.gguf import load_gguf, gguf_tokenizer
  >>> m = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")    # doctest: +SKIP
  >>> ids = gguf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")("Hello")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gaugejax.errors import CheckpointError
from gaugejax.io.gguf_arch import ARCHITECTURES, Arch, hf_config, reverse_permute
from gaugejax.io.gguf_dequant import dequantize_array
from gaugejax.io.gguf_parse import STRING, GGUFHeader, TensorEntry, read_header
from gaugejax.models.base import Model, ModelConfig
from gaugejax.models.table import HFTensor

__all__ = ["load_gguf", "open_gguf", "GGUFModelFile", "gguf_tokenizer", "gguf_detokenizer", "gguf_tokenizer_files",
           "gguf_metadata", "reverse_permute", "SUPPORTED_ARCHITECTURES"]

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
    """The ``tokenizer.*`` metadata of a GGUF file as plain Python values, plus ``general.architecture``
    (the vocabulary arrays cost a small multiple of the bytes they take in the file; nothing else is decoded)."""
    header = _header(path)
    keys = [k for k in header.fields if k.startswith("tokenizer.") or k == "general.architecture"]
    return {k: _plain(header.value(k)) for k in keys}


@dataclass(frozen=True)
class GGUFModelFile:
    """A GGUF model file whose header, metadata and tensor shapes are checked; no tensor data read yet.

    Attributes:
      path: the file.
      header: its parsed header (:class:`~gaugejax.io.gguf_parse.GGUFHeader`).
      arch: how llama.cpp wrote its architecture (:class:`~gaugejax.io.gguf_arch.Arch`).
      config: the model config its metadata describes.
      names: Hugging Face tensor name → GGUF tensor name, for every tensor of the model.
    """

    path: Path
    header: GGUFHeader
    arch: Arch
    config: ModelConfig
    names: dict[str, str]

    def tensor(self, t: HFTensor) -> np.ndarray:
        """Tensor ``t`` dequantized into a new float32 array, in the Hugging Face layout
        (Q/K rows un-permuted, Gemma norms un-shifted)."""
        name = self.names[t.name]
        entry = self.header.tensors[name]
        qtype = _gguf().GGMLQuantizationType(entry.type)
        try:
            w = dequantize_array(self.header.tensor_data(name), qtype, entry.shape)
        except CheckpointError as e:
            raise CheckpointError(f"{self.path}: tensor {name!r}: {e}") from None
        if self.arch.permute_qk and name.endswith("attn_q.weight"):
            return reverse_permute(w, self.config.n_heads)
        if self.arch.permute_qk and name.endswith("attn_k.weight"):
            return reverse_permute(w, self.config.n_kv_heads)
        if self.arch.norm_shift and name.endswith("norm.weight"):
            w -= np.float32(self.arch.norm_shift)
        return w


def open_gguf(path: str | os.PathLike) -> GGUFModelFile:
    """Opens a GGUF model file: header, config and tensor names and shapes checked, no tensor data read.

    Raises:
      CheckpointError: ``gguf`` missing, not a GGUF file, another architecture (the message lists
        the supported ones), unknown metadata, missing or unexpected tensors, shapes that disagree
        with the metadata.
    """
    p = Path(path)
    header = _header(p)
    arch_field = header.fields.get("general.architecture")
    if arch_field is not None and arch_field.type != STRING:  # never decode a crafted array to name it
        raise CheckpointError(f"{p}: general.architecture is a GGUF {arch_field.type_names[0]}, not a string "
                              "(corrupt or crafted GGUF)")
    # decoded when read; the vocabulary arrays are large and not needed here
    meta = header.values(k for k in header.fields if not k.startswith("tokenizer.ggml.") or k.endswith("_id"))
    tensors = header.tensors
    arch, cfg = hf_config(meta, {k: t.dims for k, t in tensors.items()}, p)
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
    return GGUFModelFile(p, header, arch, config, names)


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
      CheckpointError: as :func:`open_gguf`, or a tensor ``gguf`` cannot dequantize.
    """
    src = open_gguf(path)
    from gaugejax.io.hf import params_from_tensors

    cast = None if dtype is None or np.dtype(dtype) == np.float32 else dtype  # tensors come as new float32 arrays
    return Model(src.config, params_from_tensors(src.config, src.tensor, cast))


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

def _built(path: Path, build: Callable[[], Any]) -> Any:
    """``build()``, its one-line errors prefixed with ``path``; the ``tokenizers`` library's plain
    ``Exception`` (a vocabulary it cannot build) becomes one too."""
    try:
        return build()
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:
        if type(e) is not Exception:  # a bug, not the library's refusal
            raise
        raise CheckpointError(f"{path}: its tokenizer metadata does not build a tokenizer "
                              f"({(str(e).splitlines() or [''])[0][:80]}); the file is damaged: re-convert it, "
                              "or pass --tokens") from None


def _file_tokenizer(path: str | os.PathLike):
    """The ``tokenizers.Tokenizer`` built from the ``tokenizer.*`` metadata of a GGUF file."""
    from gaugejax.io.tokenizer import gguf_tokenizer as build

    p = Path(path)
    meta = tokenizer_metadata(p)
    return _built(p, lambda: build(meta, str(meta.get("general.architecture"))))


def gguf_tokenizer(path: str | os.PathLike) -> Callable[[str], np.ndarray]:
    """A ``text -> int32 token ids`` function built from the vocabulary in a GGUF file.

    Every tokenizer model of :data:`gaugejax.io.tokenizer.TOKENIZER_MODELS` (byte-level BPE
    ``gpt2``: GPT-2, Llama 3, Qwen2, SmolLM; SentencePiece ``llama``: Llama 2, Mistral, Gemma,
    Phi-3), built with the ``tokenizers`` package alone by :mod:`gaugejax.io.tokenizer`; it gives
    the ids ``transformers``' GGUF tokenizer gives.

    Raises:
      CheckpointError: ``gguf`` or ``tokenizers`` missing, an unsupported tokenizer model, or
        damaged tokenizer metadata (one line naming the file).
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
      CheckpointError: as :func:`gguf_tokenizer`.
    """
    tok = _file_tokenizer(path)
    return lambda ids: tok.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=False)


def gguf_tokenizer_files(path: str | os.PathLike) -> dict[str, str]:
    """``tokenizer.json`` and ``tokenizer_config.json`` texts for a Hugging Face directory written
    from a GGUF file (:func:`gaugejax.io.tokenizer.tokenizer_files`: special tokens, BOS/EOS, chat
    template); ``transformers.AutoTokenizer`` on that directory gives the GGUF tokenizer's ids.

    ``gaugejax apply`` writes them beside the weights. A model loaded from a GGUF does not carry
    them (a :class:`Model` is only its config and parameters), so write them with the directory:

    Example:
      >>> out = gj.save_model(gj.load_model("m.gguf"), "out")      # doctest: +SKIP
      >>> for name, text in gguf_tokenizer_files("m.gguf").items():  # doctest: +SKIP
      ...     (out / name).write_text(text, encoding="utf-8")

    Returns:
      name → text; empty when the file carries no tokenizer (no ``tokenizer.ggml.model``).

    Raises:
      CheckpointError: as :func:`gguf_tokenizer`.
    """
    from gaugejax.io.tokenizer import tokenizer_files

    p = Path(path)
    meta = tokenizer_metadata(p)
    if "tokenizer.ggml.model" not in meta and "tokenizer.huggingface.json" not in meta:
        return {}
    return _built(p, lambda: tokenizer_files(meta, str(meta.get("general.architecture"))))
