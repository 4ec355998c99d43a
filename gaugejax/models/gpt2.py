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
from gaugejax.models.table import GAIN, NONE, READ, VECTOR, WRITE, Param


@dataclass(frozen=True)
class GPT2Config(ModelConfig):
    """GPT-2 config (LayerNorm with bias, learned positions, GELU MLP, tied embeddings)."""

    family: str = "gpt2"
    model_type: str = "gpt2"
    max_positions: int = 1024
    activation: str = "gelu_new"
    tie_embeddings: bool = True

    @property
    def norm(self) -> str:
        return "layernorm"


_HF_KNOWN = {
    "model_type", "vocab_size", "n_embd", "n_layer", "n_head", "n_inner", "layer_norm_epsilon",
    "activation_function", "n_positions", "n_ctx", "tie_word_embeddings", "architectures", "torch_dtype", "dtype",
}


def config_from_hf(cfg: dict) -> GPT2Config:
    """Builds the config from a Hugging Face GPT-2 ``config.json`` dict."""
    d = cfg["n_embd"]
    from gaugejax.errors import CheckpointError

    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if cfg.get(flag):
            raise CheckpointError(f"GPT-2 option {flag}=true is not supported")
    return GPT2Config(
        vocab_size=cfg["vocab_size"],
        d_model=d,
        n_layers=cfg["n_layer"],
        n_heads=cfg["n_head"],
        d_ff=cfg.get("n_inner") or 4 * d,
        norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
        activation=cfg.get("activation_function", "gelu_new"),
        max_positions=cfg.get("n_positions", 1024),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        hf_extra=json.dumps({k: v for k, v in cfg.items() if k not in _HF_KNOWN}),
    )


def config_to_hf(c: GPT2Config) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = json.loads(c.hf_extra)
    cfg.update(
        model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=c.vocab_size, n_embd=c.d_model,
        n_layer=c.n_layers, n_head=c.n_heads, n_inner=c.d_ff, layer_norm_epsilon=c.norm_eps,
        activation_function=c.activation, n_positions=c.max_positions, tie_word_embeddings=c.tie_embeddings,
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
    a = L.attention(q, k, v, ctx["mask"]).reshape(b, t, d)
    x = x + L.linear(a, p["o"], p["o_bias"])
    h = L.layer_norm(x, p["mlp_norm"], p["mlp_norm_bias"], c.norm_eps)
    act = L.activation(c.activation)
    return x + L.linear(act(L.linear(h, p["fc_in"], p["fc_in_bias"])), p["fc_out"], p["fc_out_bias"])


def final_norm(c: GPT2Config, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final LayerNorm."""
    return L.layer_norm(x, p["final_norm"], p["final_norm_bias"], c.norm_eps)
