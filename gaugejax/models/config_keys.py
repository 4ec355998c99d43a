"""Closed-world ``config.json`` parsing: every key is computed, known inert, or refused at load.

Each family declares, per Hugging Face ``model_type``, a :class:`Keys` table:

* ``computed``: keys its ``config_from_hf`` reads (and whose values it validates with the typed
  getters here, so a bad value is refused at load, never at the first forward pass);
* ``inert``: keys known not to change an evaluation forward pass (dropout, initialisation), on top
  of the keys inert for every family by rule (:func:`inert_by_rule`: transformers' base config
  attributes, token ids, private keys, ``auto_map``, a null ``quantization_config``);
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
from gaugejax.models.hf_base_keys import BASE_KEYS

COMMON_FIXED: Mapping[str, tuple] = {
    "is_decoder": (False,), "add_cross_attention": (False,), "is_encoder_decoder": (False,),
    "cross_attention_hidden_size": (None,), "pruned_heads": ({},),
}
"""Compute-changing keys of every config, computed only at transformers' defaults."""

FORWARD_BASE_KEYS: Mapping[str, str] = {
    "tie_word_embeddings": "decides whether the output head is the token embedding (read by Cohere's forward "
                           "and by every model's weight tying)",
    "rope_parameters": "the RoPE base and scaling (read by every rotary family)",
    "rope_scaling": "the old name of rope_parameters",
    "rope_theta": "the RoPE base",
    "per_layer_config": "per-layer overrides of sizes and flags (heterogeneous models, transformers 5.14+)",
    "attribute_map": "renames config keys, so it changes what every other key means",
}
"""Attributes of transformers' config base class that can change the forward pass: never inert by
rule. A family computes them, lists them as fixed, or they are refused (with :data:`COMMON_FIXED`)."""

TRAINING_ONLY = frozenset({"initializer_range", "attention_dropout"})
"""Keys of every supported family's own config that only initialisation (the weights' scale) or
training (a dropout probability: each family applies ``dropout=0.0 if not self.training``) read."""


def inert_by_rule(key: str, value: Any) -> bool:
    """Whether a key is bookkeeping by rule, for every family (unless the family computes it).

    Inert: every attribute of transformers' config base class (:data:`~gaugejax.models.hf_base_keys.BASE_KEYS`,
    read from each release since 4.45) except :data:`FORWARD_BASE_KEYS` and :data:`COMMON_FIXED`;
    every ``*_token_id`` / ``*_token_ids`` (a ``padding_idx`` only zeroes a row at initialisation);
    every private key (leading ``_``, e.g. ``_model_name_or_path`` from a GGUF's ``general.name``);
    ``auto_map`` (remote-code class names); ``quantization_config`` when null; :data:`TRAINING_ONLY`.
    The base attributes were checked against the modeling code of every supported family in
    transformers 5.25: those read by a forward pass are ``output_attentions`` / ``output_hidden_states``
    / ``return_dict`` (outputs only), ``chunk_size_feed_forward`` (BERT's feed-forward run on chunks
    of positions: the same numbers), ``use_cache``, ``num_labels`` / ``problem_type`` (classification
    heads only) and ``_attn_implementation`` (the attention kernel), none of which changes the logits.
    The one private key a supported forward reads, OPT's ``_remove_final_layer_norm``, is fixed by
    its family: :meth:`Keys.check` consults a family's computed, inert and fixed keys before this rule.

    Example:
      >>> [inert_by_rule(k, v) for k, v in [("unk_token_id", 0), ("_model_name_or_path", "x"),
      ...  ("quantization_config", None), ("output_hidden_states", True), ("rope_theta", 1e4), ("mlp_bias", True)]]
      [True, True, True, True, False, False]
    """
    if key.startswith("_") or key.endswith(("_token_id", "_token_ids")) or key == "auto_map" or key in TRAINING_ONLY:
        return True
    if key == "quantization_config":
        return value is None
    return key in BASE_KEYS and key not in FORWARD_BASE_KEYS and key not in COMMON_FIXED


def check_not_quantized(cfg: dict) -> None:
    """Refuses a non-null ``quantization_config`` in one line naming its ``quant_method``."""
    q = cfg.get("quantization_config")
    if q is None:
        return
    method = q.get("quant_method", "unknown") if isinstance(q, dict) else q
    raise CheckpointError(f"{cfg.get('model_type')} checkpoint is quantized (quantization_config quant_method "
                          f"{_show(method)}); gaugejax reads dense weights: dequantize it first (and drop the key)")


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
      inert: keys that do not affect the forward pass (besides those :func:`inert_by_rule`).
      fixed: key → the values gaugejax computes (besides :data:`COMMON_FIXED`).
    """

    computed: frozenset[str] | set[str] = frozenset()
    inert: frozenset[str] | set[str] = frozenset()
    fixed: Mapping[str, tuple] = field(default_factory=dict)

    def check(self, cfg: dict) -> None:
        """Raises :class:`CheckpointError` on the first key that is unknown or has an unsupported value."""
        check_not_quantized(cfg)
        fixed = {**COMMON_FIXED, **self.fixed}
        for key, value in cfg.items():
            if key in self.computed or key in self.inert:
                continue
            if key in fixed:
                if not any(_same(value, ok) for ok in fixed[key]):
                    allowed = " or ".join(f"{key}={_show(v)}" for v in fixed[key])
                    raise CheckpointError(f"{cfg.get('model_type')} config key {key!r}={_show(value)} is not supported "
                                          f"(gaugejax computes only {allowed})")
                continue
            if inert_by_rule(key, value):
                continue
            raise CheckpointError(f"{cfg.get('model_type')} config key {key!r}={_show(value)} is not understood by "
                                  "gaugejax, which refuses what it cannot compute; remove the key if it is inert")

    def extra(self, cfg: dict) -> str:
        """The keys that are not computed, as JSON text (kept in ``hf_extra`` and written back on save)."""
        return json.dumps({k: v for k, v in cfg.items() if k not in self.computed}, sort_keys=True)


# ------------------------------------------------------------------------------- typed getters

def refuse(cfg: dict, key: str, why: str) -> None:
    """Raises :class:`CheckpointError`: ``key`` has a value gaugejax does not compute, and why.

    A refused ``rope_parameters`` that the file lacks (or holds as null) is named ``rope_scaling``
    when the RoPE parameters came from there (:func:`rope_source`).

    Example:
      >>> refuse({"model_type": "phi3", "rope_scaling": {"type": "su"}}, "rope_parameters", "why")
      Traceback (most recent call last):
      ...
      gaugejax.errors.CheckpointError: phi3 config key 'rope_scaling'={"type": "su"} is not supported: why
    """
    if key == "rope_parameters" and cfg.get(key) is None:
        key = rope_source(cfg)
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


def rope_source(cfg: dict) -> str:
    """The key the RoPE parameters are read from: ``rope_scaling`` when set (older files; it replaces
    ``rope_parameters``, as in transformers 5), else ``rope_parameters``.

    Example:
      >>> rope_source({"rope_scaling": None, "rope_parameters": {"rope_type": "default"}})
      'rope_parameters'
    """
    return "rope_scaling" if cfg.get("rope_scaling") else "rope_parameters"


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
    mt, src = cfg.get("model_type"), rope_source(cfg)
    params = cfg.get(src) or {}
    if not isinstance(params, dict):
        refuse(cfg, src, "expected a JSON object")
    if any(isinstance(v, dict) for v in params.values()):
        refuse(cfg, src, "per-layer-type RoPE parameters are not computed")
    params = dict(params)
    kind = params.pop("rope_type", params.pop("type", "default"))
    params.pop("type", None)
    if kind not in kinds:
        raise CheckpointError(f"{mt} RoPE type {kind!r} ({src}) is not supported (supported: {', '.join(kinds)})")
    theta = get_float({"model_type": mt, "rope_theta": params.pop("rope_theta", cfg.get(theta_key, 10000.0))},
                      "rope_theta")
    partial_default = cfg.get(partial_key, default_partial) if partial_key else default_partial
    partial = params.pop("partial_rotary_factor", partial_default)
    partial = get_float({"model_type": mt, "partial_rotary_factor": partial}, "partial_rotary_factor")
    unknown = sorted(set(params) - ROPE_KEYS[kind])
    if unknown:
        raise CheckpointError(f"{mt} RoPE key {unknown[0]!r} in {src} is not computed for rope_type {kind!r}")
    for k in ROPE_KEYS[kind]:
        if k not in params:
            if k in ROPE_REQUIRED[kind]:
                raise CheckpointError(f"{mt} RoPE type {kind!r} ({src}) lacks {k!r}")
            continue
        _check_rope_value(cfg, kind, f"{src}.{k}", params[k])
    if kind in ("llama3", "yarn", "longrope") and "original_max_position_embeddings" not in params:
        params["original_max_position_embeddings"] = cfg.get("max_position_embeddings")
    return theta, (None if kind == "default" else {"rope_type": kind, **params}), partial


def _check_rope_value(cfg: dict, kind: str, name: str, value: Any) -> None:
    """Refuses a RoPE value of the wrong type (lists of factors, ``truncate``, numbers); ``name`` is
    ``SOURCE.KEY`` (e.g. ``rope_scaling.factor``)."""
    where, key = {"model_type": cfg.get("model_type"), name: value}, name.split(".")[-1]
    if key in ("short_factor", "long_factor"):
        if (not isinstance(value, list) or not value
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in value)):
            refuse(where, name, "expected a non-empty list of finite numbers")
    elif key == "truncate":
        get_bool(where, name, True)
    elif value is None and (key in _ROPE_OPTIONAL or (kind == "longrope" and key == "factor")):
        return
    else:
        get_float(where, name, positive=key not in _ROPE_OPTIONAL)
        if key.startswith("beta_") and value < 0:
            refuse(where, name, "YaRN's rotation counts must be >= 0 (0 or null: transformers' default)")
