"""GPT-2: LayerNorm with bias, learned positions, GELU MLP, tied embeddings.

Block: ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``. HF stores GPT-2 matrices as ``Conv1D``
``(in, out)``; we keep ``(out, in)`` and transpose on load and save.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.models import layers as L
from gaugejax.models.base import ModelConfig
from gaugejax.models.config_keys import Keys, get_bool, get_choice, get_float, get_int, refuse
from gaugejax.models.table import GAIN, NONE, READ, VECTOR, WRITE, Param


@dataclass(frozen=True)
class GPT2Config(ModelConfig):
    """GPT-2 config (LayerNorm with bias, learned positions, GELU MLP, tied embeddings).

    Attributes:
      max_positions: learned absolute positions (``n_positions``).
      scale_attn: attention scores are divided by ``sqrt(head_dim)`` (``scale_attn_weights``).
      scale_by_layer: block ``i``'s scores are also divided by ``i + 1``
        (``scale_attn_by_inverse_layer_idx``).
    """

    family: str = "gpt2"
    model_type: str = "gpt2"
    max_positions: int = 1024
    activation: str = "gelu_new"
    tie_embeddings: bool = True
    scale_attn: bool = True
    scale_by_layer: bool = False

    @property
    def norm(self) -> str:
        return "layernorm"


KEYS = Keys(
    computed={"vocab_size", "n_embd", "n_layer", "n_head", "n_inner", "layer_norm_epsilon", "activation_function",
              "n_positions", "tie_word_embeddings", "scale_attn_weights", "scale_attn_by_inverse_layer_idx"},
    inert={"n_ctx", "resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_type", "summary_use_proj",
           "summary_activation", "summary_proj_to_labels", "summary_first_dropout", "reorder_and_upcast_attn"},
)
"""The GPT-2 ``config.json`` keys (everything else is refused). ``reorder_and_upcast_attn`` only
changes the order and precision of a float16 product: the same function at float32. ``n_ctx`` is
not read by transformers; ``summary_*`` configure the double-heads model's extra head."""
_ALIASES = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions", "num_attention_heads": "n_head",
            "num_hidden_layers": "n_layer"}


def _canonical(cfg: dict) -> dict:
    """Resolves transformers' ``attribute_map`` aliases (``hidden_size`` is ``n_embd``, ...)."""
    cfg = dict(cfg)
    for alias, key in _ALIASES.items():
        if alias in cfg:
            value = cfg.pop(alias)
            if key in cfg and cfg[key] != value:
                refuse({**cfg, alias: value}, alias, f"contradicts {key}={cfg[key]!r}")
            cfg[key] = value
    return cfg


def config_from_hf(cfg: dict) -> GPT2Config:
    """Builds the config from a Hugging Face GPT-2 ``config.json`` dict (closed world: see :data:`KEYS`)."""
    cfg = _canonical(cfg)
    KEYS.check(cfg)
    d = get_int(cfg, "n_embd")
    nh = get_int(cfg, "n_head")
    if d % nh:
        refuse(cfg, "n_head", f"n_embd={d} is not a multiple of the head count")
    return GPT2Config(
        vocab_size=get_int(cfg, "vocab_size"),
        d_model=d,
        n_layers=get_int(cfg, "n_layer"),
        n_heads=nh,
        d_ff=get_int(cfg, "n_inner", None, none_ok=True) or 4 * d,
        norm_eps=get_float(cfg, "layer_norm_epsilon", 1e-5),
        activation=get_choice(cfg, "activation_function", "gelu_new", L.ACTIVATIONS),
        max_positions=get_int(cfg, "n_positions", 1024),
        tie_embeddings=get_bool(cfg, "tie_word_embeddings", True),
        scale_attn=get_bool(cfg, "scale_attn_weights", True),
        scale_by_layer=get_bool(cfg, "scale_attn_by_inverse_layer_idx", False),
        hf_extra=KEYS.extra(cfg),
    )


def config_to_hf(c: GPT2Config) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = json.loads(c.hf_extra)
    cfg.update(
        model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=c.vocab_size, n_embd=c.d_model,
        n_layer=c.n_layers, n_head=c.n_heads, n_inner=c.d_ff, layer_norm_epsilon=c.norm_eps,
        activation_function=c.activation, n_positions=c.max_positions, tie_word_embeddings=c.tie_embeddings,
        scale_attn_weights=c.scale_attn, scale_attn_by_inverse_layer_idx=c.scale_by_layer,
    )
    return cfg


_H = "transformer.h.{i}."


def params(c: GPT2Config) -> list[Param]:
    """The parameter table. HF ``Conv1D`` matrices are stored ``(in, out)`` (``transpose=True``)."""
    d, f = c.d_model, c.d_ff
    table = [
        Param("embed", (c.vocab_size, d), READ, "transformer.wte.weight", shard=0),
        Param("pos_embed", (c.max_positions, d), READ, "transformer.wpe.weight"),
        Param("attn_norm", (d,), GAIN, _H + "ln_1.weight"),
        Param("attn_norm_bias", (d,), VECTOR, _H + "ln_1.bias"),
        Param("qkv", (3 * d, d), READ, _H + "attn.c_attn.weight", transpose=True, shard=0),
        Param("qkv_bias", (3 * d,), NONE, _H + "attn.c_attn.bias", shard=0),
        Param("o", (d, d), WRITE, _H + "attn.c_proj.weight", transpose=True, shard=1),
        Param("o_bias", (d,), VECTOR, _H + "attn.c_proj.bias"),
        Param("mlp_norm", (d,), GAIN, _H + "ln_2.weight"),
        Param("mlp_norm_bias", (d,), VECTOR, _H + "ln_2.bias"),
        Param("fc_in", (f, d), READ, _H + "mlp.c_fc.weight", transpose=True, shard=0),
        Param("fc_in_bias", (f,), NONE, _H + "mlp.c_fc.bias", shard=0),
        Param("fc_out", (d, f), WRITE, _H + "mlp.c_proj.weight", transpose=True, shard=1),
        Param("fc_out_bias", (d,), VECTOR, _H + "mlp.c_proj.bias"),
        Param("final_norm", (d,), GAIN, "transformer.ln_f.weight"),
        Param("final_norm_bias", (d,), VECTOR, "transformer.ln_f.bias"),
    ]
    if not c.tie_embeddings:
        table.append(Param("lm_head", (c.vocab_size, d), READ, "lm_head.weight", shard=0))
    return table


def context(c: GPT2Config, t: int) -> dict[str, jax.Array]:
    """The causal mask for ``t`` positions."""
    return {"mask": L.causal_mask(t)}


def embed(c: GPT2Config, p: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """Token plus learned position embeddings ``(B, T, D)``."""
    return p["embed"][tokens] + p["pos_embed"][jnp.arange(tokens.shape[1])][None]


def block(c: GPT2Config, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``."""
    b, t, d = x.shape
    hd = d // c.n_heads
    h = L.layer_norm(x, p["attn_norm"], p["attn_norm_bias"], c.norm_eps)
    q, k, v = jnp.split(L.linear(h, p["qkv"], p["qkv_bias"]), 3, axis=-1)
    q, k, v = (z.reshape(b, t, c.n_heads, hd) for z in (q, k, v))
    if not c.scale_attn:  # attention() divides by sqrt(hd): undo it on q
        q = q * jnp.sqrt(jnp.asarray(hd, q.dtype))
    if c.scale_by_layer:
        q = q / (ctx["layer"] + 1).astype(q.dtype)
    a = L.attention(q, k, v, ctx["mask"]).reshape(b, t, d)
    x = x + L.linear(a, p["o"], p["o_bias"])
    h = L.layer_norm(x, p["mlp_norm"], p["mlp_norm_bias"], c.norm_eps)
    act = L.activation(c.activation)
    return x + L.linear(act(L.linear(h, p["fc_in"], p["fc_in_bias"])), p["fc_out"], p["fc_out_bias"])


def final_norm(c: GPT2Config, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final LayerNorm."""
    return L.layer_norm(x, p["final_norm"], p["final_norm_bias"], c.norm_eps)
