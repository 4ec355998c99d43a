"""OPT: LayerNorm, learned positions with an offset of 2, ReLU MLP, tied head; pre- or post-norm.

Pre-norm (``do_layer_norm_before``, every OPT but opt-350m): ``x = x + attn(ln1(x));
x = x + mlp(ln2(x))`` and a final LayerNorm. Post-norm: ``x = ln1(x + attn(x));
x = ln2(x + mlp(x))`` and no final norm (the stream is a LayerNorm output, still in the chart).
The position table ``embed_positions`` has ``max_positions + 2`` rows, position ``t`` reading row
``t + 2``; it is split on load into the two offset rows (unused, kept for the round trip) and
``pos_embed`` (``max_positions`` rows), both written into the stream like token embeddings
(``READ``). Gauge group ``S_d × {±1}``.

Refused: ``word_embed_proj_dim != hidden_size`` (``project_in`` / ``project_out``, e.g. opt-350m):
the embeddings and the head then live in another space and transformers reports the last hidden
state in that width, not the residual stream's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.models import layers as L
from gaugejax.models.base import ModelConfig
from gaugejax.models.config_keys import Keys, get_bool, get_choice, get_int, refuse
from gaugejax.models.table import GAIN, NONE, READ, VECTOR, WRITE, Param

OFFSET = 2
"""Rows of ``embed_positions`` before position 0 (fairseq's padding convention)."""


@dataclass(frozen=True)
class OPTConfig(ModelConfig):
    """OPT config.

    Attributes:
      pre_norm: HF ``do_layer_norm_before`` (LayerNorm on each branch's input, and a final one).
      max_positions: learned positions (HF ``max_position_embeddings``).
    """

    family: str = "opt"
    model_type: str = "opt"
    activation: str = "relu"
    tie_embeddings: bool = True
    pre_norm: bool = True
    max_positions: int = 2048

    @property
    def norm(self) -> str:
        return "layernorm"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


KEYS = Keys(
    computed={"vocab_size", "hidden_size", "ffn_dim", "num_hidden_layers", "num_attention_heads",
              "max_position_embeddings", "activation_function", "do_layer_norm_before", "word_embed_proj_dim",
              "tie_word_embeddings"},
    inert={"dropout", "activation_dropout", "layerdrop", "init_std", "scale_embedding"},
    fixed={"_remove_final_layer_norm": (False,), "enable_bias": (True,), "layer_norm_elementwise_affine": (True,)},
)
"""The ``config.json`` keys computed, inert or fixed (everything else is refused).

``scale_embedding`` is ignored by transformers' OPT. LayerNorms use PyTorch's default eps 1e-5
(OPT has no eps key)."""


def config_from_hf(cfg: dict) -> OPTConfig:
    """Builds the config from a Hugging Face OPT ``config.json`` dict (closed world: :data:`KEYS`)."""
    KEYS.check(cfg)
    d, nh = get_int(cfg, "hidden_size"), get_int(cfg, "num_attention_heads")
    if d % nh:
        refuse(cfg, "num_attention_heads", f"the width {d} is not a multiple of {nh} heads")
    if get_int(cfg, "word_embed_proj_dim", d) != d:
        refuse(cfg, "word_embed_proj_dim", f"embeddings of another width than hidden_size={d} go through "
               "project_in/project_out, which gaugejax does not compute (e.g. opt-350m)")
    return OPTConfig(
        vocab_size=get_int(cfg, "vocab_size"),
        d_model=d,
        n_layers=get_int(cfg, "num_hidden_layers"),
        n_heads=nh,
        d_ff=get_int(cfg, "ffn_dim"),
        norm_eps=1e-5,
        tie_embeddings=get_bool(cfg, "tie_word_embeddings", True),
        activation=get_choice(cfg, "activation_function", "relu", L.ACTIVATIONS),
        pre_norm=get_bool(cfg, "do_layer_norm_before", True),
        max_positions=get_int(cfg, "max_position_embeddings", 2048),
        hf_extra=KEYS.extra(cfg),
    )


def config_to_hf(c: OPTConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = json.loads(c.hf_extra)
    cfg.update(
        model_type="opt", architectures=["OPTForCausalLM"], vocab_size=c.vocab_size, hidden_size=c.d_model,
        ffn_dim=c.d_ff, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        max_position_embeddings=c.max_positions, activation_function=c.activation, do_layer_norm_before=c.pre_norm,
        word_embed_proj_dim=c.d_model, tie_word_embeddings=c.tie_embeddings,
    )
    return cfg


_D = "model.decoder."
_L = _D + "layers.{i}."


def params(c: OPTConfig) -> list[Param]:
    """The parameter table (``embed_positions`` fused from ``pos_offset`` and ``pos_embed``)."""
    d, f, v = c.d_model, c.d_ff, c.vocab_size
    a = _L + "self_attn."
    table = [
        Param("embed", (v, d), READ, _D + "embed_tokens.weight", shard=0),
        Param("pos_offset", (OFFSET, d), READ, _D + "embed_positions.weight"),
        Param("pos_embed", (c.max_positions, d), READ, _D + "embed_positions.weight"),
        Param("attn_norm", (d,), GAIN, _L + "self_attn_layer_norm.weight"),
        Param("attn_norm_bias", (d,), VECTOR, _L + "self_attn_layer_norm.bias"),
    ]
    for n in ("q", "k", "v"):
        table += [Param(n, (d, d), READ, a + f"{n}_proj.weight", shard=0),
                  Param(f"{n}_bias", (d,), NONE, a + f"{n}_proj.bias", shard=0)]
    table += [
        Param("o", (d, d), WRITE, a + "out_proj.weight", shard=1),
        Param("o_bias", (d,), VECTOR, a + "out_proj.bias"),
        Param("mlp_norm", (d,), GAIN, _L + "final_layer_norm.weight"),
        Param("mlp_norm_bias", (d,), VECTOR, _L + "final_layer_norm.bias"),
        Param("fc1", (f, d), READ, _L + "fc1.weight", shard=0),
        Param("fc1_bias", (f,), NONE, _L + "fc1.bias", shard=0),
        Param("fc2", (d, f), WRITE, _L + "fc2.weight", shard=1),
        Param("fc2_bias", (d,), VECTOR, _L + "fc2.bias"),
    ]
    if c.pre_norm:
        table += [Param("final_norm", (d,), GAIN, _D + "final_layer_norm.weight"),
                  Param("final_norm_bias", (d,), VECTOR, _D + "final_layer_norm.bias")]
    if not c.tie_embeddings:
        table.append(Param("lm_head", (v, d), READ, "lm_head.weight", shard=0))
    return table


def context(c: OPTConfig, t: int) -> dict[str, jax.Array]:
    """The causal mask for ``t`` positions."""
    return {"mask": L.causal_mask(t)}


def embed(c: OPTConfig, p: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """Token plus learned position embeddings ``(B, T, D)`` (position ``t`` is row ``t + 2`` on disk)."""
    return p["embed"][tokens] + p["pos_embed"][jnp.arange(tokens.shape[1])][None]


def block(c: OPTConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """Pre-norm ``x + attn(ln1(x))``, ``x + mlp(ln2(x))``; post-norm ``ln1(x + attn(x))``, ``ln2(x + mlp(x))``."""
    b, t, d = x.shape

    def ln(z, name):
        return L.layer_norm(z, p[name], p[name + "_bias"], c.norm_eps)

    def attn(h):
        q, k, v = (L.linear(h, p[n], p[n + "_bias"]).reshape(b, t, c.n_heads, c.head_dim) for n in ("q", "k", "v"))
        return L.linear(L.attention(q, k, v, ctx["mask"]).reshape(b, t, d), p["o"], p["o_bias"])

    def mlp(h):
        return L.linear(L.activation(c.activation)(L.linear(h, p["fc1"], p["fc1_bias"])), p["fc2"], p["fc2_bias"])

    if c.pre_norm:
        x = x + attn(ln(x, "attn_norm"))
        return x + mlp(ln(x, "mlp_norm"))
    x = ln(x + attn(x), "attn_norm")
    return ln(x + mlp(x), "mlp_norm")


def final_norm(c: OPTConfig, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final LayerNorm (pre-norm models); post-norm models have none."""
    return L.layer_norm(x, p["final_norm"], p["final_norm_bias"], c.norm_eps) if c.pre_norm else x
