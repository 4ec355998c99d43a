"""Transformers as pure JAX functions, and their gauge specs.

Every family registered in :data:`FAMILIES` (RMSNorm: Llama/Mistral/Qwen2, Qwen3, Gemma 1/2/3,
OLMo2, Granite, SmolLM3, Phi-3, the MoEs; LayerNorm: GPT-2, GPT-NeoX, GPT-J, Phi-2, OPT, Cohere,
StableLM, Falcon, BERT) is one parameter table plus one block function (:mod:`.family`).
``forward`` and ``residual_stream`` are jit-compiled and batched; norms and softmax run in float32
(float64 when given float64 weights with x64 enabled), matmuls in ``compute_dtype``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gaugejax.errors import CheckpointError, GaugeError
from gaugejax.gauge import SignedPermutation
from gaugejax.group import Group
from gaugejax.models import bert, runner
from gaugejax.models.base import Model, ModelConfig
from gaugejax.models.family import FAMILIES, MODEL_TYPES, Family, config_from_hf, family_module
from gaugejax.models.gpt2 import GPT2Config
from gaugejax.models.llama import LlamaConfig
from gaugejax.models.neox import NeoXConfig
from gaugejax.models.runner import Hook
from gaugejax.spec import apply_spec

__all__ = [
    "FAMILIES", "MODEL_TYPES", "Family", "Model", "ModelConfig", "LlamaConfig", "GPT2Config", "NeoXConfig",
    "family_module", "config_from_hf", "tiny_config", "random_model", "forward", "residual_stream",
    "gauge_spec", "apply_gauge", "check_gauge_for",
]


_TINY_HF: dict[str, Any] = dict(
    vocab_size=256, hidden_size=64, n_embd=64, num_hidden_layers=2, n_layer=2, num_attention_heads=4, n_head=4,
    num_key_value_heads=2, head_dim=16, intermediate_size=128, n_inner=128, ffn_dim=128, ffn_hidden_size=128,
    moe_intermediate_size=64, shared_expert_intermediate_size=64, num_local_experts=4, num_experts=4,
    num_experts_per_tok=2, max_position_embeddings=128, n_positions=128, rotary_dim=8, word_embed_proj_dim=64,
)
"""Small sizes under every name a family's ``config.json`` uses; each model type reads the ones it computes."""


def _tiny_from_hf(model_type: str) -> ModelConfig:
    """A small config of a model type through its own ``config_from_hf`` (its defaults for everything else)."""
    keys = FAMILIES[MODEL_TYPES[model_type]].module.KEYS
    keys = keys[model_type] if isinstance(keys, dict) else keys
    cfg = {k: v for k, v in _TINY_HF.items() if k in keys.computed}
    return config_from_hf({"model_type": model_type, **cfg})


def tiny_config(kind: str = "llama", **overrides: Any) -> ModelConfig:
    """A small config of a family or HF model type, for tests and demos.

    ``d_model = 64``, 2 layers, vocabulary 256, 4 heads of 16. ``llama``, ``mistral``, ``qwen2``
    (GQA; qwen2 with q/k/v biases), ``gpt2``, ``neox`` and ``bert`` are spelled out; every other
    registered family or HF model type is read by its own ``config_from_hf`` from a small
    ``config.json`` (a family name stands for its first model type, e.g. ``moe`` for ``mixtral``).

    Args:
      kind: a family name (:data:`FAMILIES`) or an HF model type (:data:`MODEL_TYPES`).
      **overrides: fields to change.

    Example:
      >>> tiny_config("qwen2").qkv_bias
      True
      >>> tiny_config("moe").model_type, tiny_config("falcon").d_model
      ('mixtral', 64)
    """
    kind = {"gpt_neox": "neox"}.get(kind, kind)
    if kind in ("llama", "mistral", "qwen2"):
        base = LlamaConfig(model_type=kind, vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                           head_dim=16, d_ff=128, qkv_bias=kind == "qwen2", norm_eps=1e-6,
                           sliding_window=16 if kind == "mistral" else None)
    elif kind == "gpt2":
        base = GPT2Config(vocab_size=256, d_model=64, n_layers=2, n_heads=4, d_ff=256, max_positions=128)
    elif kind == "neox":
        base = NeoXConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, d_ff=256, max_positions=128)
    elif kind == "bert":
        base = bert.BertConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, d_ff=256, max_positions=128)
    elif kind in MODEL_TYPES or kind in FAMILIES:
        mt = kind if kind in MODEL_TYPES else next(t for t, f in MODEL_TYPES.items() if f == kind)
        base = _tiny_from_hf(mt)
    else:
        raise CheckpointError(f"unknown kind {kind!r}: use a family ({', '.join(FAMILIES)}) or an HF model type")
    return base.replace(**overrides)


def random_model(config: ModelConfig | str = "llama", seed: int | jax.Array = 0, dtype=jnp.float32) -> Model:
    """A model with random parameters and generic norm gains.

    Example:
      >>> m = random_model("gpt2", seed=1)
      >>> m.config.norm
      'layernorm'
    """
    if isinstance(config, str):
        config = tiny_config(config)
    key = jax.random.key(seed) if isinstance(seed, (int, np.integer)) else seed
    return Model(config, family_module(config).init_params(config, key, dtype))


def _in_dtype(params: Any, compute_dtype: Any) -> Any:
    """Global params in the compute dtype; the stacked blocks are cast one at a time inside the scan
    (:func:`gaugejax.models.runner.hidden_states`), so bf16 weights never get a full float32 copy."""
    if compute_dtype is None:
        leaves = jax.tree.leaves(params)
        compute_dtype = jnp.float64 if any(x.dtype == jnp.float64 for x in leaves) else jnp.float32
    cast = lambda x: x.astype(compute_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
    return {k: (v if k == "layers" else jax.tree.map(cast, v)) for k, v in params.items()}


@partial(jax.jit, static_argnums=(0, 3, 4))
def _stream_and_final(config: ModelConfig, params: Any, tokens: jax.Array, hook: Hook | None = None,
                      compute_dtype: Any = None):
    return family_module(config).hidden_states(config, _in_dtype(params, compute_dtype), tokens, hook=hook)


@partial(jax.jit, static_argnums=(0, 3, 4))
def _logits(config: ModelConfig, params: Any, tokens: jax.Array, hook: Hook | None = None, compute_dtype: Any = None):
    params = _in_dtype(params, compute_dtype)
    _, final = family_module(config).hidden_states(config, params, tokens, hook=hook)
    logits = runner.unembed(config, params, final)
    return logits if compute_dtype is None else logits.astype(jnp.float32)


def _check_tokens(model: Model, tokens: Any) -> tuple[jax.Array, bool]:
    shape = getattr(tokens, "shape", None)
    if shape is None:
        tokens = np.asarray(tokens)
        shape = tokens.shape
    if len(shape) not in (1, 2) or shape[-1] == 0:
        raise GaugeError(f"tokens must be (seq,) or (batch, seq) with seq > 0, got shape {tuple(shape)}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise GaugeError(f"tokens must be integers, got dtype {tokens.dtype}")
    if not isinstance(tokens, jax.core.Tracer):
        t = np.asarray(tokens)
        if t.size and (t.min() < 0 or t.max() >= model.config.vocab_size):
            raise GaugeError(f"token ids must lie in [0, {model.config.vocab_size}), got [{t.min()}, {t.max()}]")
    learned = model.params.get("pos_embed") if isinstance(model.params, dict) else None
    if learned is not None and shape[-1] > learned.shape[0]:
        raise GaugeError(f"sequence length {shape[-1]} exceeds the model's {learned.shape[0]} learned positions")
    squeeze = len(shape) == 1
    tokens = jnp.asarray(tokens, jnp.int32)
    return (tokens[None] if squeeze else tokens), squeeze


def _check_hook(model: Model, hook: Hook | None) -> Hook | None:
    if hook is None:
        return None
    try:
        layer, fn = hook
    except (TypeError, ValueError):
        raise GaugeError("hook must be a (layer, fn) pair") from None
    n = model.config.n_layers
    if not isinstance(layer, (int, np.integer)) or not 0 <= int(layer) <= n or not callable(fn):
        raise GaugeError(f"hook must be (layer, fn) with an int layer in [0, {n}] (0 = embeddings, {n} = before "
                         f"the final norm) and a callable fn, got ({layer!r}, {fn!r})")
    return int(layer), fn


def _dtype_key(compute_dtype: Any) -> str | None:
    """A hashable name of the compute dtype (``None``: float32, float64 for float64 weights)."""
    if compute_dtype is None:
        return None
    dt = jnp.dtype(compute_dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        raise GaugeError(f"compute_dtype must be a float dtype (bfloat16, float32), got {compute_dtype!r}")
    return dt.name


def forward(model: Model, tokens: Any, *, hook: Hook | None = None, compute_dtype: Any = None) -> jax.Array:
    """Next-token logits.

    Args:
      model: a :class:`Model`.
      tokens: integer ids ``(batch, seq)`` (or ``(seq,)``).
      hook: optional ``(layer, fn)``: the residual stream at index ``layer`` (0 = embeddings, ``i``
        = after block ``i``) is replaced by ``fn(x)`` (``x``: ``(batch, seq, d)``) and the
        remaining blocks continue from it. ``fn`` is a compile-time constant: reuse the same
        function object to reuse the compiled program (or call
        :func:`gaugejax.models.runner.hidden_states` inside your own ``jax.jit``).
      compute_dtype: dtype of matmuls and of the stream (default float32, or float64 for float64
        weights); norms and softmax always run in float32. Weights are cast block by block.

    Returns:
      float32 logits ``(batch, seq, vocab)`` (no batch axis for 1-D input).

    Example:
      >>> m = random_model("llama")
      >>> forward(m, jnp.array([[1, 2, 3]])).shape
      (1, 3, 256)
    """
    tokens, squeeze = _check_tokens(model, tokens)
    out = _logits(model.config, model.params, tokens, _check_hook(model, hook), _dtype_key(compute_dtype))
    return out[0] if squeeze else out


def residual_stream(model: Model, tokens: Any, *, final_norm: bool = True, hook: Hook | None = None,
                    compute_dtype: Any = None) -> jax.Array:
    """The residual stream at every layer, as ``transformers``' ``output_hidden_states``.

    Args:
      model: a :class:`Model`.
      tokens: integer ids ``(batch, seq)`` (or ``(seq,)``).
      final_norm: the last entry is after the final norm (as ``transformers`` reports it); with
        ``False`` it is the pre-norm stream after the last block.
      hook: optional ``(layer, fn)`` edit of the stream, as in :func:`forward`; entry ``layer``
        holds the edited stream, later entries the blocks' response to it.
      compute_dtype: as in :func:`forward` (the stream is returned in it).

    Returns:
      ``(n_layers + 1, batch, seq, d)``: index 0 the embeddings, index i after block i.

    Example:
      >>> m = random_model("bert")
      >>> plain = residual_stream(m, [[1, 2, 3]])
      >>> same = residual_stream(m, [[1, 2, 3]], hook=(1, lambda x: x))
      >>> bool(jnp.allclose(plain, same))
      True
    """
    tokens, squeeze = _check_tokens(model, tokens)
    stream, final = _stream_and_final(model.config, model.params, tokens, _check_hook(model, hook),
                                      _dtype_key(compute_dtype))
    if final_norm:
        stream = stream.at[-1].set(final)
    return stream[:, 0] if squeeze else stream


def gauge_spec(config: ModelConfig | Model) -> dict[str, Any]:
    """The gauge spec of a model's params (per-layer entries carry the leading layer axis).

    Example:
      >>> gauge_spec(tiny_config("llama"))["layers"]["attn_norm"]
      Axes(None, residual:perm)
    """
    if isinstance(config, Model):
        config = config.config
    axes = family_module(config).param_axes(config)
    axes["layers"] = {k: a.prepend(1) for k, a in axes["layers"].items()}
    return axes


def check_gauge_for(config: ModelConfig, gauge: SignedPermutation) -> None:
    """Raises unless ``gauge`` is a symmetry of models of this config (docs/conventions.md §2).

    The group is :meth:`gaugejax.group.Group.of` the config (RMSNorm with generic gains: all of
    ``B_d``; LayerNorm: permutations with one global sign).
    """
    group = Group.of(config)
    try:
        group.check(gauge, config.d_model)
    except GaugeError as err:
        if gauge.d != config.d_model:
            raise
        norm = "LayerNorm" if config.norm == "layernorm" else config.norm
        raise GaugeError(f"a {norm} model ({config.model_type}) admits only {group}: {err}") from None


def apply_gauge(model: Model, gauge: SignedPermutation) -> Model:
    """The same function in a new chart: every parameter moved by its rule (docs/conventions.md §3).

    Afterwards ``residual_stream(new, t) == gauge.apply(residual_stream(model, t))`` and the logits
    are unchanged. Exact: only indexing and negation, so ``apply_gauge(apply_gauge(m, g),
    g.inverse())`` returns ``m`` bit for bit.

    Raises:
      GaugeError: wrong dimension, or non-global signs on a LayerNorm model.
    """
    check_gauge_for(model.config, gauge)
    return Model(model.config, apply_spec(model.params, gauge_spec(model.config), gauge))
