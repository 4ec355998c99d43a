"""StableLM (StableLM-2, StableLM-3B-4E1T, ``StableLmForCausalLM``): LayerNorm, partial rotary, SwiGLU.

Block: ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``, or in parallel ``x + attn(ln1(x)) +
mlp(ln1(x))`` (``use_parallel_residual``). Rotary acts on the first ``partial_rotary_factor ·
head_dim`` dims (half-split). Optional q/k biases and per-head q/k LayerNorms (one bias-free
LayerNorm per head, stored as one HF tensor per head and stacked here as ``(heads, head_dim)``;
they act on heads, not the stream). Gauge group ``S_d × {±1}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

from gaugejax.models import lnshared as S
from gaugejax.models import table as T
from gaugejax.models.config_keys import Keys, get_bool
from gaugejax.models.lnshared import embed, final_norm, rotary_context as context  # noqa: F401  (its pieces)
from gaugejax.models.table import NONE, Param


@dataclass(frozen=True)
class StableLmConfig(S.RotaryDecoderConfig):
    """StableLM config (its q/k LayerNorms have no bias).

    Attributes:
      qkv_bias: q/k/v projections have biases.
      parallel_residual: attention and MLP read the same LayerNorm and add in parallel.
      max_positions: HF ``max_position_embeddings``.
    """

    family: str = "stablelm"
    model_type: str = "stablelm"
    qkv_bias: bool = False
    parallel_residual: bool = False
    max_positions: int = 4096


KEYS = Keys(
    computed={"vocab_size", "intermediate_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "hidden_act", "max_position_embeddings", "layer_norm_eps",
              "tie_word_embeddings", "rope_parameters", "rope_scaling", "rope_theta", "partial_rotary_factor",
              "use_qkv_bias", "qk_layernorm", "use_parallel_residual"},
    inert={"hidden_dropout"},
)
"""The ``config.json`` keys computed or inert (everything else is refused)."""


def config_from_hf(cfg: dict) -> StableLmConfig:
    """Builds the config from a Hugging Face StableLM ``config.json`` dict (closed world: :data:`KEYS`)."""
    KEYS.check(cfg)
    d, nh = S.heads(cfg, "hidden_size", "num_attention_heads")
    fields = S.decoder_fields(cfg, nh, activation="silu", tie=False, max_positions=4096)
    theta, partial = S.rotary_fraction(cfg, d // nh, 0.25)
    return StableLmConfig(
        **S.hf_sizes(cfg, d, nh), **fields, rope_theta=theta, rotary_pct=partial,
        qkv_bias=get_bool(cfg, "use_qkv_bias", False),
        qk_layernorm=get_bool(cfg, "qk_layernorm", False),
        parallel_residual=get_bool(cfg, "use_parallel_residual", False),
        hf_extra=KEYS.extra(cfg),
    )


def config_to_hf(c: StableLmConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = S.decoder_to_hf(c, "StableLmForCausalLM")
    cfg.update(use_qkv_bias=c.qkv_bias, qk_layernorm=c.qk_layernorm, use_parallel_residual=c.parallel_residual,
               rope_parameters=S.partial_rope_to_hf(c))
    return cfg


_L = "model.layers.{i}."


def params(c: StableLmConfig) -> list[Param]:
    """The parameter table (per-head q/k LayerNorms are stacks of one HF tensor per head)."""
    d, f, hd = c.d_model, c.d_ff, c.head_dim
    kv = c.n_kv_heads * hd
    a = _L + "self_attn."
    table = [
        *T.embed_rows(c, "model.embed_tokens.weight"),
        *S.ln_rows("attn_norm", d, _L + "input_layernorm"),
        *T.attention_rows(a, d, d, kv),
        *T.attention_bias_rows(a, d, d, kv, qkv=c.qkv_bias, o=False),
    ]
    if c.qk_layernorm:
        table += [Param("q_norm", (c.n_heads, hd), NONE, a + "q_layernorm.norms.{e}.weight"),
                  Param("k_norm", (c.n_kv_heads, hd), NONE, a + "k_layernorm.norms.{e}.weight")]
    if not c.parallel_residual:
        table += S.ln_rows("mlp_norm", d, _L + "post_attention_layernorm")
    return table + [
        *T.gated_mlp_rows(_L + "mlp.", d, f),
        *S.ln_rows("final_norm", d, "model.norm"),
        *S.head_rows(c),
    ]


def block(c: StableLmConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """Sequential ``x + attn(ln1(x))``, ``x + mlp(ln2(x))``, or parallel ``x + attn(ln1(x)) + mlp(ln1(x))``."""
    h = S.ln(c, p, "attn_norm", x)
    attn = S.rotary_attention(p, *S.decoder_heads(c, p, h), ctx)
    if c.parallel_residual:
        return x + attn + S.gated_mlp(c, p, h)
    x = x + attn
    return x + S.gated_mlp(c, p, S.ln(c, p, "mlp_norm", x))
