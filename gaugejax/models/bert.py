"""BERT encoders (post-LN LayerNorm): the LayerNorm control, e.g. all-MiniLM-L6-v2.

Embeddings ``x = LN(word + position + token_type)``; block (post-LN):
``x = LN(x + attn(x)); x = LN(x + mlp(x))`` with bidirectional attention (no causal mask).
The residual stream at index 0 is the embeddings after the embedding LayerNorm, index i the output
of block i, as ``transformers``' ``BertModel(output_hidden_states=True)`` reports them. There is no
final norm (the last block already ends in one) and no LM head: :func:`unembed` returns the final
hidden states. Token types are all 0 and every sequence is unpadded (no attention mask).

The gauge group is ``S_d × {±1}`` (SPEC §2): LayerNorm gains permute, LayerNorm biases and
everything written into the stream take the (global) sign.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.models import layers as L
from gaugejax.models.base import HFTensor, ModelConfig, init_from_shapes
from gaugejax.spec import RESIDUAL, RESIDUAL_PERM, Axes

_HF_KNOWN = {
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "layer_norm_eps", "hidden_act", "max_position_embeddings", "type_vocab_size", "architectures",
    "torch_dtype", "dtype", "tie_word_embeddings",
}


@dataclass(frozen=True)
class BertConfig(ModelConfig):
    """BERT encoder config (post-LN LayerNorm with bias, learned positions, GELU MLP, pooler).

    Attributes:
      max_positions: learned absolute positions.
      type_vocab_size: token-type (segment) embeddings; every token uses type 0.
    """

    family: str = "bert"
    model_type: str = "bert"
    max_positions: int = 512
    type_vocab_size: int = 2
    activation: str = "gelu"
    norm_eps: float = 1e-12

    @property
    def norm(self) -> str:
        return "layernorm"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def config_from_hf(cfg: dict) -> BertConfig:
    """Builds the config from a Hugging Face BERT ``config.json`` dict."""
    from gaugejax.errors import CheckpointError

    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"BERT position_embedding_type={cfg['position_embedding_type']!r} is not supported")
    if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
        raise CheckpointError("BERT decoders (is_decoder / cross-attention) are not supported")
    return BertConfig(
        vocab_size=cfg["vocab_size"],
        d_model=cfg["hidden_size"],
        n_layers=cfg["num_hidden_layers"],
        n_heads=cfg["num_attention_heads"],
        d_ff=cfg["intermediate_size"],
        norm_eps=cfg.get("layer_norm_eps", 1e-12),
        activation=cfg.get("hidden_act", "gelu"),
        max_positions=cfg.get("max_position_embeddings", 512),
        type_vocab_size=cfg.get("type_vocab_size", 2),
        hf_extra=json.dumps({k: v for k, v in cfg.items() if k not in _HF_KNOWN}),
    )


def config_to_hf(c: BertConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = json.loads(c.hf_extra)
    cfg.update(
        model_type="bert", architectures=["BertModel"], vocab_size=c.vocab_size, hidden_size=c.d_model,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, intermediate_size=c.d_ff,
        layer_norm_eps=c.norm_eps, hidden_act=c.activation, max_position_embeddings=c.max_positions,
        type_vocab_size=c.type_vocab_size,
    )
    return cfg


def param_shapes(c: BertConfig) -> dict[str, Any]:
    """Shapes of every parameter (per layer inside ``"layers"``, without the layer axis)."""
    d, f = c.d_model, c.d_ff
    layer = {
        "q": (d, d), "q_bias": (d,), "k": (d, d), "k_bias": (d,), "v": (d, d), "v_bias": (d,),
        "o": (d, d), "o_bias": (d,), "attn_norm": (d,), "attn_norm_bias": (d,),
        "fc_in": (f, d), "fc_in_bias": (f,), "fc_out": (d, f), "fc_out_bias": (d,),
        "mlp_norm": (d,), "mlp_norm_bias": (d,),
    }
    return {
        "embed": (c.vocab_size, d), "pos_embed": (c.max_positions, d), "type_embed": (c.type_vocab_size, d),
        "embed_norm": (d,), "embed_norm_bias": (d,), "layers": layer, "pooler": (d, d), "pooler_bias": (d,),
    }


def param_axes(c: BertConfig) -> dict[str, Any]:
    """The gauge spec (SPEC §3): every embedding table writes rows into the stream; LN gains permute."""
    read, write, gain, vec, none = Axes(None, RESIDUAL), Axes(RESIDUAL, None), Axes(RESIDUAL_PERM), Axes(RESIDUAL), Axes(None)
    layer = {
        "q": read, "q_bias": none, "k": read, "k_bias": none, "v": read, "v_bias": none,
        "o": write, "o_bias": vec, "attn_norm": gain, "attn_norm_bias": vec,
        "fc_in": read, "fc_in_bias": none, "fc_out": write, "fc_out_bias": vec,
        "mlp_norm": gain, "mlp_norm_bias": vec,
    }
    return {
        "embed": read, "pos_embed": read, "type_embed": read, "embed_norm": gain, "embed_norm_bias": vec,
        "layers": layer, "pooler": read, "pooler_bias": none,
    }


_LAYER_NAMES = {
    "q": "attention.self.query.weight", "q_bias": "attention.self.query.bias",
    "k": "attention.self.key.weight", "k_bias": "attention.self.key.bias",
    "v": "attention.self.value.weight", "v_bias": "attention.self.value.bias",
    "o": "attention.output.dense.weight", "o_bias": "attention.output.dense.bias",
    "attn_norm": "attention.output.LayerNorm.weight", "attn_norm_bias": "attention.output.LayerNorm.bias",
    "fc_in": "intermediate.dense.weight", "fc_in_bias": "intermediate.dense.bias",
    "fc_out": "output.dense.weight", "fc_out_bias": "output.dense.bias",
    "mlp_norm": "output.LayerNorm.weight", "mlp_norm_bias": "output.LayerNorm.bias",
}


def hf_tensors(c: BertConfig) -> list[HFTensor]:
    """Every safetensors key of a ``BertModel`` checkpoint (no ``bert.`` prefix) and where it lives."""
    out = [
        HFTensor("embeddings.word_embeddings.weight", "embed", None),
        HFTensor("embeddings.position_embeddings.weight", "pos_embed", None),
        HFTensor("embeddings.token_type_embeddings.weight", "type_embed", None),
        HFTensor("embeddings.LayerNorm.weight", "embed_norm", None),
        HFTensor("embeddings.LayerNorm.bias", "embed_norm_bias", None),
    ]
    for i in range(c.n_layers):
        out += [HFTensor(f"encoder.layer.{i}.{n}", k, i) for k, n in _LAYER_NAMES.items()]
    out += [HFTensor("pooler.dense.weight", "pooler", None), HFTensor("pooler.dense.bias", "pooler_bias", None)]
    return out


def init_params(c: BertConfig, key: jax.Array, dtype=jnp.float32) -> dict[str, Any]:
    """Random parameters with generic gains (see :func:`~gaugejax.models.base.init_from_shapes`)."""
    return init_from_shapes(param_shapes(c), c.n_layers, key, dtype)


def _block(c: BertConfig, x: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
    b, t, d = x.shape
    q = L.linear(x, p["q"], p["q_bias"]).reshape(b, t, c.n_heads, c.head_dim)
    k = L.linear(x, p["k"], p["k_bias"]).reshape(b, t, c.n_heads, c.head_dim)
    v = L.linear(x, p["v"], p["v_bias"]).reshape(b, t, c.n_heads, c.head_dim)
    a = L.attention(q, k, v, jnp.ones((t, t), bool)).reshape(b, t, d)  # bidirectional
    x = L.layer_norm(x + L.linear(a, p["o"], p["o_bias"]), p["attn_norm"], p["attn_norm_bias"], c.norm_eps)
    act = L.activation(c.activation)
    h = L.linear(act(L.linear(x, p["fc_in"], p["fc_in_bias"])), p["fc_out"], p["fc_out_bias"])
    return L.layer_norm(x + h, p["mlp_norm"], p["mlp_norm_bias"], c.norm_eps)


def hidden_states(c: BertConfig, params: dict[str, Any], tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The residual stream ``(n_layers + 1, B, T, D)`` and the final hidden states ``(B, T, D)``.

    Index 0 is the embeddings after the embedding LayerNorm, index i the output of block i; the
    final hidden states are the last entry (post-LN BERT has no separate final norm).
    """
    t = tokens.shape[1]
    x = params["embed"][tokens] + params["pos_embed"][jnp.arange(t)][None] + params["type_embed"][0]
    x = L.layer_norm(x, params["embed_norm"], params["embed_norm_bias"], c.norm_eps)
    stream, x_last = L.run_blocks(lambda x, p: _block(c, x, p), x, params["layers"])
    return stream, x_last


def unembed(c: BertConfig, params: dict[str, Any], final: jax.Array) -> jax.Array:
    """BERT encoders have no LM head here: returns the final hidden states ``(B, T, D)`` unchanged."""
    return final


def pooled(c: BertConfig, params: dict[str, Any], final: jax.Array) -> jax.Array:
    """``BertModel``'s ``pooler_output``: ``tanh(W · h_[CLS] + b)`` of shape ``(B, D)`` (not a residual chart)."""
    return jnp.tanh(L.linear(final[:, 0], params["pooler"], params["pooler_bias"]))


def mean_pool(final: jax.Array) -> jax.Array:
    """Sentence-transformers' mean pooling over tokens (unpadded input): ``(B, D)``, in the residual chart."""
    return jnp.mean(final, axis=1)
