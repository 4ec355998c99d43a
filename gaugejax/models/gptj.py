"""GPT-J: LayerNorm, parallel block, partial interleaved rotary, biased MLP and output head.

Block: ``h = ln(x); x = x + attn(h) + mlp(h)`` (one LayerNorm feeds both branches); logits
``= ln_f(x) @ lm_head.T + b``. Rotary acts on the first ``rotary_dim`` dims of each head, rotating
adjacent pairs ``(2i, 2i + 1)`` (not halves). Gauge group ``S_d × {±1}``: the MLP's output bias
and the LayerNorm biases are stream vectors (``VECTOR``), the head's bias is per token (``NONE``).
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
class GPTJConfig(ModelConfig):
    """GPT-J config.

    Attributes:
      rotary_dim: rotated dims of each head (interleaved pairs).
      max_positions: HF ``n_positions``.
    """

    family: str = "gptj"
    model_type: str = "gptj"
    activation: str = "gelu_new"
    rotary_dim: int = 8
    max_positions: int = 2048

    @property
    def norm(self) -> str:
        return "layernorm"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


KEYS = Keys(
    computed={"vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "rotary_dim", "n_inner",
              "activation_function", "layer_norm_epsilon", "tie_word_embeddings"},
    inert={"resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_type", "summary_use_proj", "summary_activation",
           "summary_proj_to_labels", "summary_first_dropout", "n_ctx"},
    fixed={"rotary": (True,), "scale_attn": (True,)},
)
"""The ``config.json`` keys computed, inert or fixed (everything else is refused).

``summary_*`` configure sequence-classification heads only; ``n_ctx`` is an unused alias of the
context length in old files; ``rotary`` and ``scale_attn`` are always on in transformers."""


def config_from_hf(cfg: dict) -> GPTJConfig:
    """Builds the config from a Hugging Face GPT-J ``config.json`` dict (closed world: :data:`KEYS`)."""
    KEYS.check(cfg)
    d, nh = get_int(cfg, "n_embd"), get_int(cfg, "n_head")
    if d % nh:
        refuse(cfg, "n_head", f"the width {d} is not a multiple of {nh} heads")
    rot = get_int(cfg, "rotary_dim", None, none_ok=True)
    if rot is None or rot % 2 or rot > d // nh:
        refuse(cfg, "rotary_dim", f"an even number of rotated dims up to the head size {d // nh} is computed")
    return GPTJConfig(
        vocab_size=get_int(cfg, "vocab_size"),
        d_model=d,
        n_layers=get_int(cfg, "n_layer"),
        n_heads=nh,
        d_ff=get_int(cfg, "n_inner", None, none_ok=True) or 4 * d,
        norm_eps=get_float(cfg, "layer_norm_epsilon", 1e-5),
        tie_embeddings=get_bool(cfg, "tie_word_embeddings", False),
        activation=get_choice(cfg, "activation_function", "gelu_new", L.ACTIVATIONS),
        rotary_dim=rot,
        max_positions=get_int(cfg, "n_positions", 2048),
        hf_extra=KEYS.extra(cfg),
    )


def config_to_hf(c: GPTJConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = json.loads(c.hf_extra)
    cfg.update(
        model_type="gptj", architectures=["GPTJForCausalLM"], vocab_size=c.vocab_size, n_positions=c.max_positions,
        n_embd=c.d_model, n_layer=c.n_layers, n_head=c.n_heads, rotary_dim=c.rotary_dim, n_inner=c.d_ff,
        activation_function=c.activation, layer_norm_epsilon=c.norm_eps, tie_word_embeddings=c.tie_embeddings,
    )
    return cfg


_H = "transformer.h.{i}."


def params(c: GPTJConfig) -> list[Param]:
    """The parameter table."""
    d, f, v = c.d_model, c.d_ff, c.vocab_size
    table = [
        Param("embed", (v, d), READ, "transformer.wte.weight", shard=0),
        Param("norm", (d,), GAIN, _H + "ln_1.weight"),
        Param("norm_bias", (d,), VECTOR, _H + "ln_1.bias"),
        Param("q", (d, d), READ, _H + "attn.q_proj.weight", shard=0),
        Param("k", (d, d), READ, _H + "attn.k_proj.weight", shard=0),
        Param("v", (d, d), READ, _H + "attn.v_proj.weight", shard=0),
        Param("o", (d, d), WRITE, _H + "attn.out_proj.weight", shard=1),
        Param("fc_in", (f, d), READ, _H + "mlp.fc_in.weight", shard=0),
        Param("fc_in_bias", (f,), NONE, _H + "mlp.fc_in.bias", shard=0),
        Param("fc_out", (d, f), WRITE, _H + "mlp.fc_out.weight", shard=1),
        Param("fc_out_bias", (d,), VECTOR, _H + "mlp.fc_out.bias"),
        Param("final_norm", (d,), GAIN, "transformer.ln_f.weight"),
        Param("final_norm_bias", (d,), VECTOR, "transformer.ln_f.bias"),
    ]
    if not c.tie_embeddings:
        table.append(Param("lm_head", (v, d), READ, "lm_head.weight", shard=0))
    table.append(Param("lm_head_bias", (v,), NONE, "lm_head.bias", shard=0))
    return table


def context(c: GPTJConfig, t: int) -> dict[str, jax.Array]:
    """Rotary ``cos``/``sin`` (base 10000) and the causal mask for ``t`` positions."""
    cos, sin = L.rope_cos_sin(jnp.arange(t), c.rotary_dim, 10000.0, None)
    return {"cos": cos, "sin": sin, "mask": L.causal_mask(t)}


def embed(c: GPTJConfig, p: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """Token embeddings ``(B, T, D)``."""
    return p["embed"][tokens]


def block(c: GPTJConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``h = ln(x); x + attn(h) + mlp(h)``."""
    b, t, d = x.shape
    h = L.layer_norm(x, p["norm"], p["norm_bias"], c.norm_eps)
    q, k, v = (L.linear(h, p[n]).reshape(b, t, c.n_heads, c.head_dim) for n in ("q", "k", "v"))
    q, k = L.apply_rope_interleaved(q, ctx["cos"], ctx["sin"]), L.apply_rope_interleaved(k, ctx["cos"], ctx["sin"])
    attn = L.linear(L.attention(q, k, v, ctx["mask"]).reshape(b, t, d), p["o"])
    act = L.activation(c.activation)
    mlp = L.linear(act(L.linear(h, p["fc_in"], p["fc_in_bias"])), p["fc_out"], p["fc_out_bias"])
    return x + attn + mlp


def final_norm(c: GPTJConfig, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final LayerNorm."""
    return L.layer_norm(x, p["final_norm"], p["final_norm_bias"], c.norm_eps)
