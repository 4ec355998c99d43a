"""Mixture-of-experts decoders: Mixtral, Qwen2-MoE and Qwen3-MoE (RMSNorm, RoPE, GQA, routed SwiGLU experts).

Block: ``x = x + attn(rms(x)); x = x + moe(rms(x))`` with, for ``h = rms(x)``,

    moe(h) = Σ_e w_e(h) · down_e(act(gate_e h) ⊙ up_e h)  [+ σ(g · h) · shared(h)]   (Qwen2-MoE)

where ``w(h)`` keeps the top-k entries of ``softmax(router h)`` (renormalised over those k when
``norm_topk``; Mixtral always) and is zero elsewhere.

Gauge roles: the router ``(E, d)`` reads the stream (``READ``), so the router logits, hence the
routing, are unchanged by a gauge; expert ``gate``/``up`` ``(E, f, d)`` read and ``down``
``(E, d, f)`` writes, with the expert axis first and never gauged; the shared expert is a dense
SwiGLU MLP and its sigmoid gate ``(1, d)`` reads. Qwen3-MoE's ``q_norm``/``k_norm`` act on
``head_dim`` (not the stream): untouched.

Compute: the *dense equivalent*: every expert runs on every token and is weighted by its routing
weight (zero for the experts not selected). It equals the sparse computation exactly and is
simple, but costs ``E / k`` times the sparse FLOPs and holds ``B·T·E·f`` activations per layer:
fine for tests and small models; for a large MoE (e.g. 128 experts) run short sequences or small
batches. The router runs in float32 as in ``transformers``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.models import dense as D
from gaugejax.models import layers as L
from gaugejax.models import table as T
from gaugejax.models.config_keys import Keys, get_bool, get_choice, get_int, refuse, rope_from_hf, rope_source
from gaugejax.models.table import GAIN, NONE, READ, WRITE, Param


@dataclass(frozen=True)
class MoEConfig(D.RMSNormConfig):
    """Config of a routed mixture-of-experts decoder (a sliding window: Mixtral only).

    Attributes:
      n_experts, top_k: routed experts, experts per token (``d_ff`` is one expert's width).
      norm_topk: renormalise the k routing weights to sum to one.
      d_shared: width of the always-on shared expert with a sigmoid gate (Qwen2-MoE), 0 for none.
      qkv_bias: q/k/v projections have biases; o_bias: the output projection too.
      qk_norm: RMSNorm on each query/key head (Qwen3-MoE), gains of length ``head_dim``.
    """

    family: str = "moe"
    model_type: str = "mixtral"
    rope_theta: float = 1e6
    n_experts: int = 4
    top_k: int = 2
    norm_topk: bool = True
    d_shared: int = 0
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False


_ARCH = {"mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM"}
_COMMON = {
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
    "rms_norm_eps", "rope_theta", "rope_parameters", "rope_scaling", "tie_word_embeddings", "hidden_act",
    "max_position_embeddings", "num_experts_per_tok",
}
_TRAINING = {"output_router_logits", "router_aux_loss_coef", "router_jitter_noise"}  # losses and training noise
_QWEN_FIXED = {"use_sliding_window": (False,), "mlp_only_layers": ([],), "decoder_sparse_step": (1,)}
KEYS: dict[str, Keys] = {
    "mixtral": Keys(computed=_COMMON | {"intermediate_size", "num_local_experts", "sliding_window"}, inert=_TRAINING),
    "qwen2_moe": Keys(computed=_COMMON | {"moe_intermediate_size", "shared_expert_intermediate_size", "num_experts",
                                          "norm_topk_prob", "qkv_bias", "layer_types"},
                      inert=_TRAINING | {"intermediate_size", "max_window_layers", "sliding_window"},
                      fixed=_QWEN_FIXED),
    "qwen3_moe": Keys(computed=_COMMON | {"moe_intermediate_size", "num_experts", "num_local_experts",
                                          "norm_topk_prob", "attention_bias", "layer_types"},
                      inert=_TRAINING | {"intermediate_size", "max_window_layers", "sliding_window"},
                      fixed=_QWEN_FIXED),
}
"""Per ``model_type``: the ``config.json`` keys computed, inert or fixed (everything else is refused).

Qwen-MoE: every layer must be a mixture-of-experts layer with full attention (``mlp_only_layers``,
``decoder_sparse_step`` and ``use_sliding_window`` at their defaults), so ``intermediate_size``
(the width of dense layers), ``max_window_layers`` and ``sliding_window`` do not enter the
computation."""


def config_from_hf(cfg: dict) -> MoEConfig:
    """Builds the config from a Mixtral / Qwen2-MoE / Qwen3-MoE ``config.json`` dict (closed world: :data:`KEYS`)."""
    mt = cfg.get("model_type")
    KEYS[mt].check(cfg)
    fields = D.gqa_fields(cfg, {"rms_norm_eps": 1e-5 if mt == "mixtral" else 1e-6, "tie_word_embeddings": False,
                                "max_position_embeddings": 4096})
    theta, scaling, partial = rope_from_hf(cfg)
    if partial != 1.0:
        refuse(cfg, rope_source(cfg), "partial_rotary_factor != 1 is not computed for MoE families")
    if mt == "mixtral":
        n_experts, d_ff = get_int(cfg, "num_local_experts", 8), get_int(cfg, "intermediate_size")
        window = get_int(cfg, "sliding_window", None, none_ok=True)
    else:
        types = cfg.get("layer_types")
        if types is not None and (not isinstance(types, list) or set(types) - {"full_attention"}):
            refuse(cfg, "layer_types", "only full-attention layers are computed")
        key = "num_experts" if "num_experts" in cfg or mt == "qwen2_moe" else "num_local_experts"
        n_experts, d_ff, window = get_int(cfg, key, 60 if mt == "qwen2_moe" else 128), get_int(
            cfg, "moe_intermediate_size"), None
    top_k = get_int(cfg, "num_experts_per_tok", 2)
    if top_k > n_experts:
        refuse(cfg, "num_experts_per_tok", f"more experts per token than the {n_experts} experts")
    bias = get_bool(cfg, "attention_bias", False) if mt == "qwen3_moe" else False
    return MoEConfig(
        family="moe",
        model_type=mt,
        **fields,
        d_ff=d_ff,
        activation=get_choice(cfg, "hidden_act", "silu", L.ACTIVATIONS),
        rope_theta=theta,
        rope_scaling=None if scaling is None else json.dumps(scaling, sort_keys=True),
        sliding_window=window,
        n_experts=n_experts,
        top_k=top_k,
        norm_topk=True if mt == "mixtral" else get_bool(cfg, "norm_topk_prob", False),
        d_shared=get_int(cfg, "shared_expert_intermediate_size") if mt == "qwen2_moe" else 0,
        qkv_bias=get_bool(cfg, "qkv_bias", True) if mt == "qwen2_moe" else bias,
        o_bias=bias,
        qk_norm=mt == "qwen3_moe",
        hf_extra=KEYS[mt].extra(cfg),
    )


def config_to_hf(c: MoEConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = D.gqa_to_hf(c, _ARCH[c.model_type])
    cfg.update(hidden_act=c.activation, rope_parameters=D.rope_to_hf(c.rope_theta, c.rope_scaling),
               num_experts_per_tok=c.top_k, sliding_window=c.sliding_window)
    if c.model_type == "mixtral":
        cfg.update(intermediate_size=c.d_ff, num_local_experts=c.n_experts)
    else:
        cfg.update(moe_intermediate_size=c.d_ff, num_experts=c.n_experts, norm_topk_prob=c.norm_topk,
                   decoder_sparse_step=1, mlp_only_layers=[], use_sliding_window=False)
    if c.model_type == "qwen2_moe":
        cfg.update(shared_expert_intermediate_size=c.d_shared, qkv_bias=c.qkv_bias)
    if c.model_type == "qwen3_moe":
        cfg.update(attention_bias=c.o_bias)
    return cfg


_L = "model.layers.{i}."


def params(c: MoEConfig) -> list[Param]:
    """The parameter table; experts are stacks ``(E, ...)`` with one HF tensor per expert."""
    d, f, e = c.d_model, c.d_ff, c.n_experts
    a = _L + "self_attn."
    table = [D.embed_row(c), Param("attn_norm", (d,), GAIN, _L + "input_layernorm.weight"),
             *T.gqa_attention_rows(c, a, qkv_bias=c.qkv_bias, o_bias=c.o_bias)]
    if c.qk_norm:  # RMSNorm over head_dim: not a residual gain, even when head_dim == d
        table += [Param("q_norm", (c.head_dim,), NONE, a + "q_norm.weight"),
                  Param("k_norm", (c.head_dim,), NONE, a + "k_norm.weight")]
    table.append(Param("mlp_norm", (d,), GAIN, _L + "post_attention_layernorm.weight"))
    if c.model_type == "mixtral":
        m, names = _L + "block_sparse_moe.", ("w1", "w3", "w2")
    else:
        m, names = _L + "mlp.", ("gate_proj", "up_proj", "down_proj")
    table += [
        Param("router", (e, d), READ, m + "gate.weight"),
        Param("expert_gate", (e, f, d), READ, m + f"experts.{{e}}.{names[0]}.weight", shard=1),
        Param("expert_up", (e, f, d), READ, m + f"experts.{{e}}.{names[1]}.weight", shard=1),
        Param("expert_down", (e, d, f), WRITE, m + f"experts.{{e}}.{names[2]}.weight", shard=2),
    ]
    if c.d_shared:
        s = c.d_shared
        table += [Param("shared_gate", (s, d), READ, m + "shared_expert.gate_proj.weight", shard=0),
                  Param("shared_up", (s, d), READ, m + "shared_expert.up_proj.weight", shard=0),
                  Param("shared_down", (d, s), WRITE, m + "shared_expert.down_proj.weight", shard=1),
                  Param("shared_expert_gate", (1, d), READ, m + "shared_expert_gate.weight")]
    return table + D.head_rows(c, GAIN)


def context(c: MoEConfig, t: int) -> dict[str, jax.Array]:
    """RoPE ``cos``/``sin`` and the causal (sliding-window) mask for ``t`` positions."""
    cos, sin = L.rope_cos_sin(jnp.arange(t), c.head_dim, c.rope_theta, c.rope_scaling_dict, c.max_positions)
    return {"cos": cos, "sin": sin, "mask": L.causal_mask(t, c.sliding_window)}


def embed(c: MoEConfig, p: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """Token embeddings ``(B, T, D)``."""
    return p["embed"][tokens]


def _attention(c: MoEConfig, p: dict[str, jax.Array], h: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    b, t, _ = h.shape
    q = L.linear(h, p["q"], p.get("q_bias")).reshape(b, t, c.n_heads, c.head_dim)
    k = L.linear(h, p["k"], p.get("k_bias")).reshape(b, t, c.n_kv_heads, c.head_dim)
    v = L.linear(h, p["v"], p.get("v_bias")).reshape(b, t, c.n_kv_heads, c.head_dim)
    if c.qk_norm:
        q, k = L.rms_norm(q, p["q_norm"], c.norm_eps), L.rms_norm(k, p["k_norm"], c.norm_eps)
    q, k = L.apply_rope(q, ctx["cos"], ctx["sin"]), L.apply_rope(k, ctx["cos"], ctx["sin"])
    a = L.attention(q, k, v, ctx["mask"]).reshape(b, t, c.n_heads * c.head_dim)
    return L.linear(a, p["o"], p.get("o_bias"))


def routing(c: MoEConfig, logits: jax.Array) -> jax.Array:
    """Routing weights ``(..., E)`` from router logits: the top-k of the softmax, zero elsewhere.

    Example:
      >>> c = MoEConfig(n_experts=3, top_k=2, norm_topk=True)
      >>> [round(float(w), 3) for w in routing(c, jnp.log(jnp.array([0.5, 0.3, 0.2])))]
      [0.625, 0.375, 0.0]
    """
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    top, idx = jax.lax.top_k(probs, c.top_k)
    if c.norm_topk:
        top = top / jnp.sum(top, axis=-1, keepdims=True)
    return jnp.sum(jax.nn.one_hot(idx, c.n_experts, dtype=top.dtype) * top[..., None], axis=-2)


def _moe(c: MoEConfig, p: dict[str, jax.Array], h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The MoE MLP on normed ``h`` ``(B, T, D)`` (dense equivalent) and its router logits ``(B, T, E)``."""
    act = L.activation(c.activation)
    logits = L.linear(h, p["router"])
    w = routing(c, logits).astype(h.dtype)  # (B, T, E)
    g = jnp.einsum("btd,efd->btef", h, p["expert_gate"])
    u = jnp.einsum("btd,efd->btef", h, p["expert_up"])
    out = jnp.einsum("btef,bte,edf->btd", act(g) * u, w, p["expert_down"])
    if c.d_shared:
        shared = L.linear(act(L.linear(h, p["shared_gate"])) * L.linear(h, p["shared_up"]), p["shared_down"])
        out = out + jax.nn.sigmoid(L.linear(h, p["shared_expert_gate"])) * shared
    return out, logits


def _block(c: MoEConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]):
    x = x + _attention(c, p, L.rms_norm(x, p["attn_norm"], c.norm_eps), ctx)
    y, logits = _moe(c, p, L.rms_norm(x, p["mlp_norm"], c.norm_eps))
    return x + y, logits


def block(c: MoEConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``x = x + attn(rms(x)); x = x + moe(rms(x))``."""
    return _block(c, p, x, ctx)[0]


def final_norm(c: MoEConfig, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final RMSNorm."""
    return L.rms_norm(x, p["final_norm"], c.norm_eps)


@jax.jit
def router_logits(model, tokens: jax.Array) -> jax.Array:
    """Every layer's router logits ``(n_layers, B, T, E)`` (``transformers``' ``output_router_logits``).

    A gauge leaves them unchanged (the router reads the stream), so routing is chart-independent.

    Args:
      model: a :class:`~gaugejax.models.base.Model` of this family.
      tokens: ``(B, T)`` integer ids.
    """
    from gaugejax.models.runner import upcast

    c, p = model.config, upcast(model.params)
    ctx = context(c, tokens.shape[1])

    def step(x, inputs):
        lp, i = inputs
        x, logits = _block(c, lp, x, {**ctx, "layer": i})
        return x, logits

    _, logits = jax.lax.scan(step, embed(c, p, tokens), (p["layers"], jnp.arange(c.n_layers)))
    return logits
