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

from dataclasses import dataclass
from typing import Any

import jax

from gaugejax.models import layers as L
from gaugejax.models import lnshared as S
from gaugejax.models import table as T
from gaugejax.models.config_keys import Keys, get_bool, get_choice, get_int, refuse
from gaugejax.models.table import READ, Param

OFFSET = 2
"""Rows of ``embed_positions`` before position 0 (fairseq's padding convention)."""


@dataclass(frozen=True)
class OPTConfig(S.LayerNormConfig):
    """OPT config.

    Attributes:
      pre_norm: HF ``do_layer_norm_before`` (LayerNorm on each branch's input, and a final one).
    """

    family: str = "opt"
    model_type: str = "opt"
    activation: str = "relu"
    tie_embeddings: bool = True
    pre_norm: bool = True


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
    d, nh = S.heads(cfg, "hidden_size", "num_attention_heads")
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
    return S.to_hf(c, "OPTForCausalLM", vocab_size=c.vocab_size, hidden_size=c.d_model,
                   ffn_dim=c.d_ff, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
                   max_position_embeddings=c.max_positions, activation_function=c.activation,
                   do_layer_norm_before=c.pre_norm, word_embed_proj_dim=c.d_model, tie_word_embeddings=c.tie_embeddings)


_D = "model.decoder."
_L = _D + "layers.{i}."


def params(c: OPTConfig) -> list[Param]:
    """The parameter table (``embed_positions`` fused from ``pos_offset`` and ``pos_embed``)."""
    d, f = c.d_model, c.d_ff
    a = _L + "self_attn."
    table = [
        *T.embed_rows(c, _D + "embed_tokens.weight"),
        Param("pos_offset", (OFFSET, d), READ, _D + "embed_positions.weight"),
        Param("pos_embed", (c.max_positions, d), READ, _D + "embed_positions.weight"),
        *S.ln_rows("attn_norm", d, _L + "self_attn_layer_norm"),
        *S.biased_attention_rows(d, d, [a + n for n in ("q_proj", "k_proj", "v_proj", "out_proj")]),
        *S.ln_rows("mlp_norm", d, _L + "final_layer_norm"),
        *S.biased_mlp_rows(d, f, _L + "fc1", _L + "fc2", ("fc1", "fc2")),
    ]
    if c.pre_norm:
        table += S.ln_rows("final_norm", d, _D + "final_layer_norm")
    return table + S.head_rows(c)


def context(c: OPTConfig, t: int) -> dict[str, jax.Array]:
    """The causal mask for ``t`` positions."""
    return {"mask": L.causal_mask(t)}


def embed(c: OPTConfig, p: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """Token plus learned position embeddings ``(B, T, D)`` (position ``t`` is row ``t + 2`` on disk)."""
    return S.embed_learned(c, p, tokens)


def block(c: OPTConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """Pre-norm ``x + attn(ln1(x))``, ``x + mlp(ln2(x))``; post-norm ``ln1(x + attn(x))``, ``ln2(x + mlp(x))``."""

    def attn(h):
        return S.attend(p, *S.split_heads(c, p, h), ctx["mask"])

    def mlp(h):
        return S.biased_mlp(c, p, h, "fc1", "fc2")

    if c.pre_norm:
        x = x + attn(S.ln(c, p, "attn_norm", x))
        return x + mlp(S.ln(c, p, "mlp_norm", x))
    x = S.ln(c, p, "attn_norm", x + attn(x))
    return S.ln(c, p, "mlp_norm", x + mlp(x))


def final_norm(c: OPTConfig, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final LayerNorm (pre-norm models); post-norm models have none."""
    return S.final_norm(c, p, x) if c.pre_norm else x
