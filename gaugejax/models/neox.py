"""GPT-NeoX (Pythia): LayerNorm, partial rotary, parallel residual.

Parallel block: ``x = x + attn(ln1(x)) + mlp(ln2(x))``; sequential:
``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``. The fused ``query_key_value`` rows are laid out
``(heads, 3, head_dim)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jax

from gaugejax.models import layers as L
from gaugejax.models import lnshared as S
from gaugejax.models import table as T
from gaugejax.models.config_keys import Keys, get_bool, get_choice, get_int, refuse, rope_from_hf, rope_source
from gaugejax.models.lnshared import embed, final_norm  # noqa: F401  (this family's forward pieces)
from gaugejax.models.table import Param


@dataclass(frozen=True)
class NeoXConfig(S.PartialRotaryConfig):
    """GPT-NeoX config (LayerNorm, partial rotary, optional parallel residual).

    Attributes:
      rotary_pct: fraction of each head that RoPE rotates.
      rope_theta: RoPE base.
      rope_scaling: RoPE scaling (``linear``, ``dynamic``, ``llama3``) as JSON text, or ``None``.
      parallel_residual: ``x + attn(ln1(x)) + mlp(ln2(x))`` instead of two sequential residuals.
    """

    family: str = "neox"
    model_type: str = "gpt_neox"
    rope_scaling: str | None = None
    parallel_residual: bool = True
    activation: str = "gelu"


KEYS = Keys(
    computed={"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "layer_norm_eps", "rotary_pct", "rotary_emb_base", "rope_theta", "partial_rotary_factor",
              "rope_parameters", "rope_scaling", "use_parallel_residual", "max_position_embeddings", "hidden_act",
              "tie_word_embeddings"},
    inert={"hidden_dropout", "classifier_dropout"},
    fixed={"attention_bias": (True,)},
)
"""The GPT-NeoX ``config.json`` keys (everything else is refused)."""


def config_from_hf(cfg: dict) -> NeoXConfig:
    """Builds the config from a Hugging Face GPT-NeoX ``config.json`` dict (closed world: see :data:`KEYS`).

    transformers takes the RoPE base and rotary fraction from ``rope_parameters``, else from
    ``rotary_emb_base`` / ``rotary_pct``; top-level ``rope_theta`` / ``partial_rotary_factor`` are
    not read by it, so they are accepted only when they agree.
    """
    KEYS.check(cfg)
    d, nh = S.heads(cfg, "hidden_size", "num_attention_heads", "hidden_size={d} is not a multiple of the head count")
    theta, rope, partial = rope_from_hf(cfg, theta_key="rotary_emb_base", partial_key="rotary_pct",
                                        default_partial=0.25)
    for key, used in (("rope_theta", theta), ("partial_rotary_factor", partial)):
        if key in cfg and cfg[key] != used:
            refuse(cfg, key, f"transformers ignores it for GPT-NeoX and uses {used}")
    rotary = int(d // nh * partial)
    if rotary % 2 or not 0 < partial <= 1 or rotary < 2:
        refuse(cfg, "rotary_pct", f"rotary dimension {rotary} must be a positive even number")
    if rope is not None and rope["rope_type"] == "dynamic" and rotary <= 2:
        refuse(cfg, rope_source(cfg), f"dynamic RoPE needs a rotary dimension > 2, got {rotary}")
    return NeoXConfig(
        **S.hf_sizes(cfg, d, nh),
        rotary_pct=partial,
        rope_theta=theta,
        rope_scaling=None if rope is None else json.dumps(rope, sort_keys=True),
        parallel_residual=get_bool(cfg, "use_parallel_residual", True),
        max_positions=get_int(cfg, "max_position_embeddings", 2048),
        activation=get_choice(cfg, "hidden_act", "gelu", L.ACTIVATIONS),
        tie_embeddings=get_bool(cfg, "tie_word_embeddings", False),
        hf_extra=KEYS.extra(cfg),
    )


def config_to_hf(c: NeoXConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    return S.to_hf(c, "GPTNeoXForCausalLM", **S.sizes_to_hf(c), rotary_pct=c.rotary_pct,
                   rotary_emb_base=c.rope_theta,
                   rope_parameters={"rope_theta": c.rope_theta, "partial_rotary_factor": c.rotary_pct,
                                    **(json.loads(c.rope_scaling) if c.rope_scaling else {"rope_type": "default"})},
                   use_parallel_residual=c.parallel_residual, max_position_embeddings=c.max_positions,
                   hidden_act=c.activation, tie_word_embeddings=c.tie_embeddings, attention_bias=True)


_G = "gpt_neox.layers.{i}."


def params(c: NeoXConfig) -> list[Param]:
    """The parameter table."""
    keys = {n: _G + k for n, k in (("attn_norm", "input_layernorm"), ("qkv", "attention.query_key_value"),
                                  ("o", "attention.dense"), ("mlp_norm", "post_attention_layernorm"),
                                  ("fc_in", "mlp.dense_h_to_4h"), ("fc_out", "mlp.dense_4h_to_h"))}
    return [*T.embed_rows(c, "gpt_neox.embed_in.weight"),
            *S.fused_block_rows(c, {**keys, "final_norm": "gpt_neox.final_layer_norm"}),
            *S.head_rows(c, "embed_out.weight")]


def context(c: NeoXConfig, t: int) -> dict[str, jax.Array]:
    """Partial-rotary ``cos``/``sin`` and the causal mask for ``t`` positions."""
    scaling = None if c.rope_scaling is None else json.loads(c.rope_scaling)
    return S.rope_context(t, c.rotary_dim, c.rope_theta, scaling, c.max_positions)


def block(c: NeoXConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """Parallel ``x + attn(ln1(x)) + mlp(ln2(x))`` or sequential residual."""
    b, t, _ = x.shape
    hd = c.head_dim
    qkv = L.linear(S.ln(c, p, "attn_norm", x), p["qkv"], p["qkv_bias"]).reshape(b, t, c.n_heads, 3, hd)
    attn = S.rotary_attention(p, qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :], ctx)

    def mlp(z):
        return S.biased_mlp(c, p, S.ln(c, p, "mlp_norm", z))

    if c.parallel_residual:
        return x + attn + mlp(x)
    x = x + attn
    return x + mlp(x)
