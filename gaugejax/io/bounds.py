"""Sizes read from files, checked against what the files hold before anything is allocated.

A checkpoint's ``config.json`` (or GGUF metadata) says how big the model is; its weight files say
how big it really is. Before a model is built from a config, each size key is checked against the
tensors the weight files declare (their headers are already checked against the files' sizes):

* a layer count can be at most the number of stored tensors (every layer stores at least one);
* any other size (width, vocabulary, heads, experts) can be at most the largest dimension of a
  non-empty stored tensor, or the number of tensors (experts stored one tensor each).

What passes is small enough to enumerate; each stored tensor's shape is then compared with the one
the parsed config implies (``HFCheckpoint.check_complete``, ``load_gguf``) before data is read.

JSON side files (``config.json``, the shard index) are read with a byte cap (:func:`read_capped`).

Example:
  >>> check_config_sizes({"num_hidden_layers": 10**9, "hidden_size": 16}, n_tensors=20, max_dim=64,
  ...                    where="ckpt/config.json")
  Traceback (most recent call last):
  ...
  gaugejax.errors.CheckpointError: ckpt/config.json: num_hidden_layers=1000000000 but the weight files hold only 20 tensors (at least one per layer); fix num_hidden_layers
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping

from gaugejax.errors import CheckpointError

__all__ = ["LAYER_KEYS", "SIZE_KEYS", "MAX_CONFIG_BYTES", "MAX_INDEX_BYTES", "read_capped", "check_config_sizes",
           "largest_dimension", "checked_config"]

LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "block_count")
"""Config keys (HF ``config.json`` spellings and GGUF's ``{arch}.block_count``) that count layers."""
SIZE_KEYS = ("hidden_size", "n_embd", "n_embed", "d_model", "embedding_length", "vocab_size", "intermediate_size",
             "n_inner", "ffn_dim", "feed_forward_length", "moe_intermediate_size", "shared_expert_intermediate_size",
             "num_attention_heads", "n_head", "attention.head_count", "num_key_value_heads", "num_kv_heads",
             "attention.head_count_kv", "head_dim", "attention.key_length", "attention.value_length",
             "num_local_experts", "num_experts", "num_experts_per_tok", "rotary_dim", "type_vocab_size")
"""Config keys that size some stored tensor (a dimension, or a count of per-expert tensors)."""
MAX_CONFIG_BYTES = 16 * 2**20
"""``config.json`` / ``cfg.json`` larger than this are refused (real ones are a few KiB)."""
MAX_INDEX_BYTES = 64 * 2**20
"""``model.safetensors.index.json`` larger than this is refused (a 1000-shard index is ~100 KiB)."""


def read_capped(path: str | os.PathLike, limit: int, fix: str = "repair or replace it") -> bytes:
    """The bytes of a side file (``config.json``, an index), refused in one line past ``limit`` bytes.

    Example:
      >>> import tempfile
      >>> p = os.path.join(tempfile.mkdtemp(), "config.json")
      >>> _ = open(p, "w").write("{}" + " " * 2000)
      >>> read_capped(p, 1000)
      Traceback (most recent call last):
      ...
      gaugejax.errors.CheckpointError: ...config.json holds over 1000 bytes, far more than a JSON side file needs; repair or replace it
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as e:
        raise CheckpointError(f"cannot read {os.fspath(path)} ({e.strerror or e})") from None
    if len(raw) > limit:
        raise CheckpointError(f"{os.fspath(path)} holds over {limit} bytes, far more than a JSON side file needs; "
                              f"{fix}")
    return raw


def _count(v: Any) -> int | None:
    """``v`` when it is a plain integer, else ``None`` (other types are the config parser's to refuse)."""
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def check_config_sizes(config: Mapping[str, Any], *, n_tensors: int, max_dim: int, where: str,
                       prefix: str = "") -> None:
    """Refuses a size key (:data:`LAYER_KEYS`, :data:`SIZE_KEYS`, after ``prefix``) the stored
    tensors cannot hold: one line naming the key.

    Args:
      config: the raw ``config.json`` dict or GGUF metadata.
      n_tensors: number of stored tensors.
      max_dim: the largest dimension of any stored tensor.
      where: the file, for messages.
      prefix: key prefix (GGUF: ``"{arch}."``).
    """
    for key in LAYER_KEYS:
        n = _count(config.get(prefix + key))
        if n is not None and n > n_tensors:
            raise CheckpointError(f"{where}: {prefix}{key}={n} but the weight files hold only {n_tensors} tensors "
                                  f"(at least one per layer); fix {prefix}{key}")
    bound = max(max_dim, n_tensors)
    for key in SIZE_KEYS:
        n = _count(config.get(prefix + key))
        if n is not None and n > bound:
            raise CheckpointError(f"{where}: {prefix}{key}={n} but no stored tensor has a dimension over {max_dim} "
                                  f"(and there are {n_tensors} tensors); fix {prefix}{key}")


def largest_dimension(shapes: Iterable[tuple[int, ...]]) -> int:
    """The largest dimension of any non-empty shape (an empty tensor may claim any dimension for free).

    Example:
      >>> largest_dimension([(64, 8), (10**9, 0), ()])
      64
    """
    return max((max(s) for s in shapes if s and math.prod(s) > 0), default=0)


def checked_config(raw: Any, shapes: Iterable[tuple[int, ...]], where: str):
    """The :class:`~gaugejax.models.base.ModelConfig` of a raw ``config.json`` dict, its size keys
    checked against the stored tensor ``shapes`` (:func:`check_config_sizes`) before it is parsed.

    Example:
      >>> cfg = {"model_type": "llama", "vocab_size": 10**12, "hidden_size": 8, "num_hidden_layers": 1,
      ...        "num_attention_heads": 2, "intermediate_size": 16}
      >>> checked_config(cfg, [(64, 8), (8,)], "ckpt/config.json")
      Traceback (most recent call last):
      ...
      gaugejax.errors.CheckpointError: ckpt/config.json: vocab_size=1000000000000 but no stored tensor has a dimension over 64 (and there are 2 tensors); fix vocab_size
    """
    from gaugejax.models import config_from_hf

    shapes = [tuple(s) for s in shapes]
    if isinstance(raw, dict):
        check_config_sizes(raw, n_tensors=len(shapes), max_dim=largest_dimension(shapes), where=where)
    return config_from_hf(raw)
