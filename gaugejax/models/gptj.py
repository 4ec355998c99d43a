"""GPT-J: LayerNorm, parallel block, partial interleaved rotary, biased MLP and output head.

Block: ``h = ln(x); x = x + attn(h) + mlp(h)`` (one LayerNorm feeds both branches); logits
``= ln_f(x) @ lm_head.T + b``. Rotary acts on the first ``rotary_dim`` dims of each head, rotating
adjacent pairs ``(2i, 2i + 1)`` (not halves). Gauge group ``S_d × {±1}``: the MLP's output bias
and the LayerNorm biases are stream vectors (``VECTOR``), the head's bias is per token (``NONE``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

from gaugejax.models import layers as L
from gaugejax.models import lnshared as S
from gaugejax.models import table as T
from gaugejax.models.config_keys import Keys, get_bool, get_choice, get_int, refuse
from gaugejax.models.lnshared import embed, final_norm  # noqa: F401  (this family's forward pieces)
from gaugejax.models.table import NONE, Param


@dataclass(frozen=True)
class GPTJConfig(S.LayerNormConfig):
    """GPT-J config.

    Attributes:
      rotary_dim: rotated dims of each head (interleaved pairs).
    """

    family: str = "gptj"
    model_type: str = "gptj"
    activation: str = "gelu_new"
    rotary_dim: int = 8


KEYS = Keys(
    computed={"vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "rotary_dim", "n_inner",
              "activation_function", "layer_norm_epsilon", "tie_word_embeddings"},
    inert={"resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_type", "summary_use_proj", "summary_activation",
           "summary_proj_to_labels", "summary_first_dropout", "n_ctx", "scale_attn_weights"},
    fixed={"rotary": (True,), "scale_attn": (True,)},
)
"""The ``config.json`` keys computed, inert or fixed (everything else is refused).

``summary_*`` configure sequence-classification heads only; ``n_ctx`` is an unused alias of the
context length in old files; ``rotary`` and ``scale_attn`` are always on in transformers.
``scale_attn_weights`` (in EleutherAI/gpt-j-6b's published file, a GPT-2 leftover) is never read by
transformers' ``models/gptj`` (neither its config class nor ``modeling_gptj.py``, which always scales
scores by ``1/sqrt(head_dim)``), so it is inert at any value."""


def config_from_hf(cfg: dict) -> GPTJConfig:
    """Builds the config from a Hugging Face GPT-J ``config.json`` dict (closed world: :data:`KEYS`)."""
    KEYS.check(cfg)
    d, nh = S.heads(cfg, "n_embd", "n_head")
    rot = get_int(cfg, "rotary_dim", None, none_ok=True)
    if rot is None or rot % 2 or rot > d // nh:
        refuse(cfg, "rotary_dim", f"an even number of rotated dims up to the head size {d // nh} is computed")
    return GPTJConfig(
        **S.gpt_sizes(cfg, d, nh),
        tie_embeddings=get_bool(cfg, "tie_word_embeddings", False),
        activation=get_choice(cfg, "activation_function", "gelu_new", L.ACTIVATIONS),
        rotary_dim=rot,
        max_positions=get_int(cfg, "n_positions", 2048),
        hf_extra=KEYS.extra(cfg),
    )


def config_to_hf(c: GPTJConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    return S.to_hf(c, "GPTJForCausalLM", **S.gpt_sizes_to_hf(c), n_positions=c.max_positions,
                   rotary_dim=c.rotary_dim, activation_function=c.activation, tie_word_embeddings=c.tie_embeddings)


_H = "transformer.h.{i}."


def params(c: GPTJConfig) -> list[Param]:
    """The parameter table."""
    d, f, v = c.d_model, c.d_ff, c.vocab_size
    return [
        *T.embed_rows(c, "transformer.wte.weight"),
        *S.ln_rows("norm", d, _H + "ln_1"),
        *T.attention_rows(_H + "attn.", d, d, d, out="out_proj"),
        *S.biased_mlp_rows(d, f, _H + "mlp.fc_in", _H + "mlp.fc_out"),
        *S.ln_rows("final_norm", d, "transformer.ln_f"),
        *S.head_rows(c),
        Param("lm_head_bias", (v,), NONE, "lm_head.bias", shard=0),
    ]


def context(c: GPTJConfig, t: int) -> dict[str, jax.Array]:
    """Rotary ``cos``/``sin`` (base 10000) and the causal mask for ``t`` positions."""
    return S.rope_context(t, c.rotary_dim, 10000.0)


def block(c: GPTJConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``h = ln(x); x + attn(h) + mlp(h)``."""
    h = S.ln(c, p, "norm", x)
    attn = S.rotary_attention(p, *S.split_heads(c, p, h), ctx, rope=L.apply_rope_interleaved)
    return x + attn + S.biased_mlp(c, p, h)
