"""Closed-world ``config.json`` parsing: every key is computed, known inert, or refused at load.

Each family declares, per Hugging Face ``model_type``, a :class:`Keys` table:

* ``computed``: keys its ``config_from_hf`` reads (and whose values it validates with the typed
  getters here, so a bad value is refused at load, never at the first forward pass);
* ``inert``: keys known not to change an evaluation forward pass (dropout, initialisation, token
  ids, bookkeeping), on top of :data:`COMMON_INERT`;
* ``fixed``: keys that do change the computation but that gaugejax only computes at the listed
  values (transformers' defaults); any other value is refused.

Any other key is refused with a one-line :class:`~gaugejax.errors.CheckpointError` naming it.
Inert and fixed keys are kept (``ModelConfig.hf_extra``) and written back on save.

Example:
  >>> keys = Keys(computed={"hidden_size"}, fixed={"mlp_bias": (False,)})
  >>> keys.check({"model_type": "llama", "hidden_size": 8, "use_cache": True})
  >>> keys.check({"model_type": "llama", "mlp_bias": True})
  Traceback (most recent call last):
  ...
  gaugejax.errors.CheckpointError: llama config key 'mlp_bias'=true is not supported (gaugejax computes only mlp_bias=false)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from gaugejax.errors import CheckpointError

COMMON_INERT = frozenset({
    # bookkeeping
    "model_type", "architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype",
    "_commit_hash", "name_or_path", "tokenizer_class", "prefix", "task_specific_params", "finetuning_task",
    "id2label", "label2id", "num_labels", "problem_type", "gradient_checkpointing",
    # token ids (padding_idx only zeroes a row at initialisation and masks its gradient)
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
    # training, caching and kernel choices (numerically the same function in evaluation)
    "initializer_range", "use_cache", "attention_dropout", "chunk_size_feed_forward", "torchscript",
    "use_bfloat16", "tf_legacy_loss", "_attn_implementation", "_attn_implementation_autoset",
    "attn_implementation", "return_dict", "output_hidden_states", "output_attentions", "tie_encoder_decoder",
    # generation defaults stored in old config.json files
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty",
    "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
    "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
})
"""Keys no supported family's forward pass reads."""

COMMON_FIXED: Mapping[str, tuple] = {
    "is_decoder": (False,), "add_cross_attention": (False,), "is_encoder_decoder": (False,),
    "cross_attention_hidden_size": (None,), "pruned_heads": ({},),
}
"""Compute-changing keys of every config, computed only at transformers' defaults."""


def _show(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _same(a: Any, b: Any) -> bool:
    """``a == b`` without ``True == 1`` / ``0 == False``."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


@dataclass(frozen=True)
class Keys:
    """A model type's closed world of ``config.json`` keys (see the module docstring).

    Attributes:
      computed: keys ``config_from_hf`` reads and validates.
      inert: keys that do not affect the forward pass (besides :data:`COMMON_INERT`).
      fixed: key → the values gaugejax computes (besides :data:`COMMON_FIXED`).
    """

    computed: frozenset[str] | set[str] = frozenset()
    inert: frozenset[str] | set[str] = frozenset()
    fixed: Mapping[str, tuple] = field(default_factory=dict)

    def check(self, cfg: dict) -> None:
        """Raises :class:`CheckpointError` on the first key that is unknown or has an unsupported value."""
        fixed = {**COMMON_FIXED, **self.fixed}
        for key, value in cfg.items():
            if key in self.computed or key in self.inert or key in COMMON_INERT:
                continue
            if key in fixed:
                if not any(_same(value, ok) for ok in fixed[key]):
                    allowed = " or ".join(f"{key}={_show(v)}" for v in fixed[key])
                    raise CheckpointError(f"{cfg.get('model_type')} config key {key!r}={_show(value)} is not supported "
                                          f"(gaugejax computes only {allowed})")
                continue
            raise CheckpointError(f"{cfg.get('model_type')} config key {key!r}={_show(value)} is not understood by "
                                  "gaugejax, which refuses what it cannot compute; remove the key if it is inert")

    def extra(self, cfg: dict) -> str:
        """The keys that are not computed, as JSON text (kept in ``hf_extra`` and written back on save)."""
        return json.dumps({k: v for k, v in cfg.items() if k not in self.computed}, sort_keys=True)


# ------------------------------------------------------------------------------- typed getters

def refuse(cfg: dict, key: str, why: str) -> None:
    """Raises :class:`CheckpointError`: ``key`` has a value gaugejax does not compute, and why."""
    raise CheckpointError(f"{cfg.get('model_type')} config key {key!r}={_show(cfg.get(key))} is not supported: {why}")


_MISSING = object()


def get_int(cfg: dict, key: str, default: Any = _MISSING, *, low: int = 1, none_ok: bool = False) -> int | None:
    """An integer ``>= low`` (``default`` when absent; ``None`` allowed with ``none_ok``)."""
    v = cfg.get(key, default)
    if v is _MISSING:
        raise CheckpointError(f"{cfg.get('model_type')} config.json lacks {key!r}")
    if v is None and none_ok:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise CheckpointError(f"{cfg.get('model_type')} config key {key!r}={_show(v)} must be an integer >= {low}")
    return v


def get_float(cfg: dict, key: str, default: Any = _MISSING, *, positive: bool = True) -> float:
    """A finite float (``> 0`` when ``positive``), ``default`` when absent."""
    v = cfg.get(key, default)
    if v is _MISSING:
        raise CheckpointError(f"{cfg.get('model_type')} config.json lacks {key!r}")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        raise CheckpointError(f"{cfg.get('model_type')} config key {key!r}={_show(v)} must be a "
                              f"{'positive ' if positive else ''}finite number")
    return float(v)


def get_bool(cfg: dict, key: str, default: bool) -> bool:
    """A JSON boolean, ``default`` when absent."""
    v = cfg.get(key, default)
    if not isinstance(v, bool):
        raise CheckpointError(f"{cfg.get('model_type')} config key {key!r}={_show(v)} must be true or false")
    return v


def get_choice(cfg: dict, key: str, default: str, choices: Iterable[str]) -> str:
    """One of ``choices`` (e.g. an activation gaugejax computes), ``default`` when absent."""
    v = cfg.get(key, default)
    choices = sorted(choices)
    if v not in choices:
        raise CheckpointError(f"{cfg.get('model_type')} config key {key!r}={_show(v)} is not supported "
                              f"(supported: {', '.join(choices)})")
    return v


# -------------------------------------------------------------------------------------- RoPE

ROPE_KEYS: Mapping[str, frozenset[str]] = {
    "default": frozenset(),
    "linear": frozenset({"factor"}),
    # transformers' dynamic NTK scales from max_position_embeddings; original_max_position_embeddings is unused
    "dynamic": frozenset({"factor", "original_max_position_embeddings"}),
    "llama3": frozenset({"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}),
    "yarn": frozenset({"factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow",
                       "mscale", "mscale_all_dim", "truncate"}),
    "longrope": frozenset({"short_factor", "long_factor", "factor", "attention_factor",
                           "original_max_position_embeddings"}),
}
"""RoPE types gaugejax computes and the ``rope_parameters`` keys each one reads."""

ROPE_REQUIRED: Mapping[str, frozenset[str]] = {
    "linear": frozenset({"factor"}), "dynamic": frozenset({"factor"}),
    "llama3": frozenset({"factor", "low_freq_factor", "high_freq_factor"}), "yarn": frozenset({"factor"}),
    "longrope": frozenset({"short_factor", "long_factor"}),
}
"""The keys each RoPE type cannot do without (the others have transformers' defaults)."""

BASIC_ROPE = ("default", "linear", "dynamic", "llama3")
"""The RoPE types a family accepts unless it asks for more (``yarn`` / ``longrope`` need the
family's rotary module to apply their attention factor, as Llama's does)."""

_ROPE_OPTIONAL = frozenset({"attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"})
"""Keys that may be ``null`` (transformers then derives them; longrope's ``factor`` too)."""


def rope_from_hf(cfg: dict, *, theta_key: str = "rope_theta", partial_key: str | None = None,
                 default_partial: float = 1.0, kinds: Iterable[str] = BASIC_ROPE) -> tuple[float, dict | None, float]:
    """RoPE base, scaling and partial rotary factor, as transformers 5 resolves them.

    ``rope_scaling`` (older files) replaces ``rope_parameters`` when set; the base and the partial
    factor come from that dict first, then from the top-level ``theta_key`` / ``partial_key``.

    Returns:
      ``(theta, scaling or None, partial_rotary_factor)``; ``scaling`` holds ``rope_type`` and the
      keys that type reads (``None`` for plain RoPE).

    Raises:
      CheckpointError: a RoPE type or a RoPE key gaugejax does not compute, or a bad value.
    """
    params = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    if not isinstance(params, dict):
        refuse(cfg, "rope_parameters", "expected a JSON object")
    if any(isinstance(v, dict) for v in params.values()):
        refuse(cfg, "rope_parameters", "per-layer-type RoPE parameters are not computed")
    params = dict(params)
    kind = params.pop("rope_type", params.pop("type", "default"))
    params.pop("type", None)
    if kind not in kinds:
        raise CheckpointError(f"{cfg.get('model_type')} RoPE type {kind!r} is not supported "
                              f"(supported: {', '.join(kinds)})")
    theta = get_float({"model_type": cfg.get("model_type"), "rope_theta": params.pop("rope_theta", cfg.get(theta_key, 10000.0))},
                      "rope_theta")
    partial_default = cfg.get(partial_key, default_partial) if partial_key else default_partial
    partial = params.pop("partial_rotary_factor", partial_default)
    partial = get_float({"model_type": cfg.get("model_type"), "partial_rotary_factor": partial}, "partial_rotary_factor")
    unknown = sorted(set(params) - ROPE_KEYS[kind])
    if unknown:
        raise CheckpointError(f"{cfg.get('model_type')} RoPE key {unknown[0]!r} is not computed for rope_type {kind!r}")
    for k in ROPE_KEYS[kind]:
        if k not in params:
            if k in ROPE_REQUIRED[kind]:
                raise CheckpointError(f"{cfg.get('model_type')} RoPE type {kind!r} lacks {k!r}")
            continue
        _check_rope_value(cfg, kind, k, params[k])
    if kind in ("llama3", "yarn", "longrope") and "original_max_position_embeddings" not in params:
        params["original_max_position_embeddings"] = cfg.get("max_position_embeddings")
    return theta, (None if kind == "default" else {"rope_type": kind, **params}), partial


def _check_rope_value(cfg: dict, kind: str, key: str, value: Any) -> None:
    """Refuses a ``rope_parameters`` value of the wrong type (lists of factors, ``truncate``, numbers)."""
    where = {"model_type": cfg.get("model_type"), key: value}
    if key in ("short_factor", "long_factor"):
        if (not isinstance(value, list) or not value
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in value)):
            refuse(where, key, "expected a non-empty list of finite numbers")
    elif key == "truncate":
        get_bool(where, key, True)
    elif value is None and (key in _ROPE_OPTIONAL or (kind == "longrope" and key == "factor")):
        return
    else:
        get_float(where, key, positive=key not in _ROPE_OPTIONAL)
        if key.startswith("beta_") and value < 0:
            refuse(where, key, "YaRN's rotation counts must be >= 0 (0 or null: transformers' default)")
