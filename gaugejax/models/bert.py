"""BERT encoders (post-LN LayerNorm): the LayerNorm control, e.g. all-MiniLM-L6-v2.

Embeddings ``x = LN(word + position + token_type)``; block (post-LN):
``x = LN(x + attn(x)); x = LN(x + mlp(x))`` with bidirectional attention (no causal mask).
The residual stream at index 0 is the embeddings after the embedding LayerNorm, index i the output
of block i, as ``transformers``' ``BertModel(output_hidden_states=True)`` reports them. There is no
final norm (the last block already ends in one) and no LM head: ``forward`` returns the final
hidden states. Token types are all 0 and every sequence is unpadded (no attention mask).

The gauge group is ``S_d × {±1}`` (docs/conventions.md §2): LayerNorm gains permute, LayerNorm biases and
everything written into the stream take the (global) sign.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.models import layers as L
from gaugejax.models import lnshared as S
from gaugejax.models import table as T
from gaugejax.models.config_keys import Keys, get_choice, get_int
from gaugejax.models.table import NONE, READ, Param


@dataclass(frozen=True)
class BertConfig(S.LayerNormConfig):
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


KEYS = Keys(
    computed={"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "layer_norm_eps", "hidden_act", "max_position_embeddings", "type_vocab_size"},
    inert={"hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "tie_word_embeddings"},
    fixed={"position_embedding_type": ("absolute",)},
)
"""The BERT ``config.json`` keys (everything else is refused); ``tie_word_embeddings`` only ties
the masked-LM head, which a ``BertModel`` encoder does not have."""


def config_from_hf(cfg: dict) -> BertConfig:
    """Builds the config from a Hugging Face BERT ``config.json`` dict (closed world: see :data:`KEYS`)."""
    KEYS.check(cfg)
    d, nh = S.heads(cfg, "hidden_size", "num_attention_heads", "hidden_size={d} is not a multiple of the head count")
    return BertConfig(
        **S.hf_sizes(cfg, d, nh, eps=1e-12),
        activation=get_choice(cfg, "hidden_act", "gelu", L.ACTIVATIONS),
        max_positions=get_int(cfg, "max_position_embeddings", 512),
        type_vocab_size=get_int(cfg, "type_vocab_size", 2),
        hf_extra=KEYS.extra(cfg),
    )


def config_to_hf(c: BertConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    return S.to_hf(c, "BertModel", **S.sizes_to_hf(c), hidden_act=c.activation,
                   max_position_embeddings=c.max_positions, type_vocab_size=c.type_vocab_size)


_E = "encoder.layer.{i}."


def params(c: BertConfig) -> list[Param]:
    """The parameter table of a ``BertModel`` checkpoint (keys without a ``bert.`` prefix)."""
    d, f = c.d_model, c.d_ff
    return [
        *T.embed_rows(c, "embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight"),
        Param("type_embed", (c.type_vocab_size, d), READ, "embeddings.token_type_embeddings.weight"),
        *S.ln_rows("embed_norm", d, "embeddings.LayerNorm"),
        *S.biased_attention_rows(d, d, [_E + "attention.self." + n for n in ("query", "key", "value")]
                                + [_E + "attention.output.dense"]),
        *S.ln_rows("attn_norm", d, _E + "attention.output.LayerNorm"),
        *S.biased_mlp_rows(d, f, _E + "intermediate.dense", _E + "output.dense"),
        *S.ln_rows("mlp_norm", d, _E + "output.LayerNorm"),
        Param("pooler", (d, d), READ, "pooler.dense.weight"),
        Param("pooler_bias", (d,), NONE, "pooler.dense.bias"),
    ]


def context(c: BertConfig, t: int) -> dict[str, jax.Array]:
    """Bidirectional attention: every query sees every key (unpadded input)."""
    return {"mask": jnp.ones((t, t), bool)}


def embed(c: BertConfig, p: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """``LN(word + position + token_type 0)`` ``(B, T, D)``: residual index 0."""
    return S.ln(c, p, "embed_norm", S.embed_learned(c, p, tokens) + p["type_embed"][0])


def block(c: BertConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """Post-LN: ``x = LN(x + attn(x)); x = LN(x + mlp(x))``."""
    x = S.ln(c, p, "attn_norm", x + S.attend(p, *S.split_heads(c, p, x), ctx["mask"]))
    return S.ln(c, p, "mlp_norm", x + S.biased_mlp(c, p, x))


def final_norm(c: BertConfig, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """Post-LN BERT has no separate final norm: the last block already ends in one."""
    return x


def pooled(c: BertConfig, params: dict[str, Any], final: jax.Array) -> jax.Array:
    """``BertModel``'s ``pooler_output``: ``tanh(W · h_[CLS] + b)`` of shape ``(B, D)`` (not a residual chart)."""
    return jnp.tanh(L.linear(final[:, 0], params["pooler"], params["pooler_bias"]))


def mean_pool(final: jax.Array) -> jax.Array:
    """Sentence-transformers' mean pooling over tokens (unpadded input): ``(B, D)``, in the residual chart."""
    return jnp.mean(final, axis=1)
