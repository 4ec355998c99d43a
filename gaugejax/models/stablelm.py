"""StableLM (StableLM-2, StableLM-3B-4E1T, ``StableLmForCausalLM``): LayerNorm, partial rotary, SwiGLU.

Block: ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``, or in parallel ``x + attn(ln1(x)) +
mlp(ln1(x))`` (``use_parallel_residual``). Rotary acts on the first ``partial_rotary_factor ·
head_dim`` dims (half-split). Optional q/k biases and per-head q/k LayerNorms (one bias-free
LayerNorm per head, stored as one HF tensor per head and stacked here as ``(heads, head_dim)``;
they act on heads, not the stream). Gauge group ``S_d × {±1}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jax

from gaugejax.models import layers as L
from gaugejax.models import lnshared as S
from gaugejax.models.config_keys import Keys, get_bool, get_choice, get_int, refuse, rope_from_hf
from gaugejax.models.lnshared import embed, final_norm  # noqa: F401  (this family's forward pieces)
from gaugejax.models.table import NONE, READ, WRITE, Param


@dataclass(frozen=True)
class StableLmConfig(S.PartialRotaryConfig):
    """StableLM config.

    Attributes:
      n_kv_heads: key/value heads.
      rope_theta: RoPE base; rotary_pct: the rotated fraction of each head.
      qkv_bias: q/k/v projections have biases.
      qk_layernorm: per-head LayerNorms on queries and keys.
      parallel_residual: attention and MLP read the same LayerNorm and add in parallel.
      max_positions: HF ``max_position_embeddings``.
    """

    family: str = "stablelm"
    model_type: str = "stablelm"
    n_kv_heads: int = 4
    rope_theta: float = 10000.0
    rotary_pct: float = 0.25
    qkv_bias: bool = False
    qk_layernorm: bool = False
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
    nkv = S.kv_heads(cfg, nh)
    theta, _, partial = rope_from_hf(cfg, partial_key="partial_rotary_factor", default_partial=0.25,
                                     kinds=("default",))
    if not 0 < partial <= 1 or int(d // nh * partial) % 2 or int(d // nh * partial) == 0:
        refuse(cfg, "partial_rotary_factor", f"the rotated part of a {d // nh}-wide head must be even and non-empty")
    return StableLmConfig(
        **S.hf_sizes(cfg, d, nh),
        n_kv_heads=nkv,
        tie_embeddings=get_bool(cfg, "tie_word_embeddings", False),
        activation=get_choice(cfg, "hidden_act", "silu", L.ACTIVATIONS),
        rope_theta=theta,
        rotary_pct=partial,
        qkv_bias=get_bool(cfg, "use_qkv_bias", False),
        qk_layernorm=get_bool(cfg, "qk_layernorm", False),
        parallel_residual=get_bool(cfg, "use_parallel_residual", False),
        max_positions=get_int(cfg, "max_position_embeddings", 4096),
        hf_extra=KEYS.extra(cfg),
    )


def config_to_hf(c: StableLmConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = json.loads(c.hf_extra)
    cfg.pop("rope_scaling", None)
    cfg.update(
        model_type="stablelm", architectures=["StableLmForCausalLM"], vocab_size=c.vocab_size,
        intermediate_size=c.d_ff, hidden_size=c.d_model, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, hidden_act=c.activation, max_position_embeddings=c.max_positions,
        layer_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_embeddings, use_qkv_bias=c.qkv_bias,
        qk_layernorm=c.qk_layernorm, use_parallel_residual=c.parallel_residual,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta, "partial_rotary_factor": c.rotary_pct},
    )
    return cfg


_L = "model.layers.{i}."


def params(c: StableLmConfig) -> list[Param]:
    """The parameter table (per-head q/k LayerNorms are stacks of one HF tensor per head)."""
    d, f, v, hd = c.d_model, c.d_ff, c.vocab_size, c.head_dim
    kv = c.n_kv_heads * hd
    a = _L + "self_attn."
    table = [
        Param("embed", (v, d), READ, "model.embed_tokens.weight", shard=0),
        *S.ln_rows("attn_norm", d, _L + "input_layernorm"),
        Param("q", (d, d), READ, a + "q_proj.weight", shard=0),
        Param("k", (kv, d), READ, a + "k_proj.weight", shard=0),
        Param("v", (kv, d), READ, a + "v_proj.weight", shard=0),
        Param("o", (d, d), WRITE, a + "o_proj.weight", shard=1),
    ]
    if c.qkv_bias:
        table += [Param("q_bias", (d,), NONE, a + "q_proj.bias", shard=0),
                  Param("k_bias", (kv,), NONE, a + "k_proj.bias", shard=0),
                  Param("v_bias", (kv,), NONE, a + "v_proj.bias", shard=0)]
    if c.qk_layernorm:
        table += [Param("q_norm", (c.n_heads, hd), NONE, a + "q_layernorm.norms.{e}.weight"),
                  Param("k_norm", (c.n_kv_heads, hd), NONE, a + "k_layernorm.norms.{e}.weight")]
    if not c.parallel_residual:
        table += S.ln_rows("mlp_norm", d, _L + "post_attention_layernorm")
    return table + [
        Param("gate", (f, d), READ, _L + "mlp.gate_proj.weight", shard=0),
        Param("up", (f, d), READ, _L + "mlp.up_proj.weight", shard=0),
        Param("down", (d, f), WRITE, _L + "mlp.down_proj.weight", shard=1),
        *S.ln_rows("final_norm", d, "model.norm"),
        *S.head_rows(c),
    ]


def context(c: StableLmConfig, t: int) -> dict[str, jax.Array]:
    """Partial-rotary ``cos``/``sin`` and the causal mask for ``t`` positions."""
    return S.rope_context(t, c.rotary_dim, c.rope_theta)


def block(c: StableLmConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """Sequential ``x + attn(ln1(x))``, ``x + mlp(ln2(x))``, or parallel ``x + attn(ln1(x)) + mlp(ln1(x))``."""
    h = S.ln(c, p, "attn_norm", x)
    q, k, v = S.split_heads(c, p, h)
    if c.qk_layernorm:
        q, k = L.layer_norm(q, p["q_norm"], None, c.norm_eps), L.layer_norm(k, p["k_norm"], None, c.norm_eps)
    attn = S.rotary_attention(p, q, k, v, ctx)
    if c.parallel_residual:
        return x + attn + S.gated_mlp(c, p, h)
    x = x + attn
    return x + S.gated_mlp(c, p, S.ln(c, p, "mlp_norm", x))
