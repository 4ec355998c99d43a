"""Phi-3: a Llama-style RMSNorm decoder whose HF checkpoint fuses ``qkv_proj`` and ``gate_up_proj``.

Block: ``x = x + attn(rms(x)); x = x + mlp(rms(x))`` with ``mlp(h) = down(act(gate h) ⊙ up h)``.
The fused tensors are split on load into ``q``/``k``/``v`` (rows ``q | k | v``) and ``gate``/``up``
(rows ``gate | up``): each part reads the stream, so the gauge acts on the shared input axis and
the split axis (the output rows) is never touched. Partial rotary (Phi-4-mini), a sliding window
(Phi-3-mini-4k) and ``longrope`` scaling (Phi-3-128k, Phi-3.5) are computed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.errors import CheckpointError
from gaugejax.models import dense as D
from gaugejax.models import layers as L
from gaugejax.models.config_keys import Keys, get_choice, get_float, get_int, refuse, rope_from_hf, rope_source
from gaugejax.models.table import GAIN, READ, WRITE, Param


@dataclass(frozen=True)
class Phi3Config(D.RMSNormConfig):
    """Phi-3 config; its RoPE scaling is ``linear``, ``dynamic``, ``llama3`` or ``longrope`` (with
    ``short_factor``, ``long_factor``, ``original_max_position_embeddings`` and ``attention_factor``).

    Attributes:
      rotary_pct: the rotated fraction of each head.
    """

    family: str = "phi3"
    model_type: str = "phi3"
    rotary_pct: float = 1.0
    max_positions: int = 4096

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_pct)


KEYS = Keys(
    computed={"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings",
              "original_max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "rope_parameters",
              "rope_scaling", "rope_theta", "partial_rotary_factor", "sliding_window"},
    inert={"resid_pdrop", "embd_pdrop"},
    fixed={"attention_bias": (False,), "mlp_bias": (False,), "lm_head_bias": (False,), "full_attn_mod": (1,),
           "interpolate_factor": (1,)},
)
"""The ``config.json`` keys computed or inert (everything else is refused).

``original_max_position_embeddings`` only matters to ``longrope``. The fixed keys come from the
Hub's remote-code Phi-3 / Phi-4-mini files (Phi-3.5-mini, Phi-4-mini-instruct publish them);
transformers' ``models/phi3`` never reads them (its projections and head are ``bias=False``, every
layer attends fully, no interpolation), so only the values it computes are accepted: no biases,
``full_attn_mod=1`` (full attention every layer), ``interpolate_factor=1``."""


def _longrope(cfg: dict, rope: dict, rotary_dim: int, max_positions: int) -> dict:
    """The ``longrope`` parameters with transformers' defaults filled in, checked (refusals name the
    key they were read from, ``rope_scaling`` or ``rope_parameters``)."""
    src = rope_source(cfg)
    known = {"rope_type", "type", "rope_theta", "partial_rotary_factor", "short_factor", "long_factor", "factor",
             "attention_factor", "original_max_position_embeddings"}
    unknown = sorted(set(rope) - known)
    if unknown:
        raise CheckpointError(f"phi3 RoPE key {unknown[0]!r} in {src} is not computed for rope_type 'longrope'")
    short, long = rope.get("short_factor"), rope.get("long_factor")
    for name, f in (("short_factor", short), ("long_factor", long)):
        if not isinstance(f, list) or len(f) != rotary_dim // 2 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in f):
            refuse(cfg, src, f"longrope {name} must list {rotary_dim // 2} positive numbers")
    original = get_int({**cfg, **rope}, "original_max_position_embeddings", max_positions)
    factor = rope.get("factor") or max_positions / original
    attn = rope.get("attention_factor")
    if attn is None:
        attn = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    return {"rope_type": "longrope", "short_factor": short, "long_factor": long,
            "original_max_position_embeddings": original, "attention_factor": float(attn),
            **({"factor": rope["factor"]} if "factor" in rope else {})}


def config_from_hf(cfg: dict) -> Phi3Config:
    """Builds the config from a Hugging Face Phi-3 ``config.json`` dict (closed world: :data:`KEYS`)."""
    KEYS.check(cfg)
    fields = D.gqa_fields(cfg, {"rms_norm_eps": 1e-5, "tie_word_embeddings": False, "max_position_embeddings": 4096},
                          even_head=False)  # an odd head may rotate an even part (refused below otherwise)
    head_dim, max_positions = fields["head_dim"], fields["max_positions"]
    rope = cfg.get(rope_source(cfg)) or {}
    if not isinstance(rope, dict):
        refuse(cfg, rope_source(cfg), "expected a JSON object")
    if rope.get("rope_type", rope.get("type")) in ("longrope", "su"):
        theta = get_float({**cfg, **rope}, "rope_theta", 10000.0)
        partial = get_float({**cfg, **rope}, "partial_rotary_factor", 1.0)
        scaling = _longrope(cfg, rope, int(head_dim * partial), max_positions)
    else:
        theta, scaling, partial = rope_from_hf(cfg, partial_key="partial_rotary_factor", kinds=("default",))
    if int(head_dim * partial) % 2 or not 0 < partial <= 1:
        refuse(cfg, "partial_rotary_factor", f"the rotated part of a {head_dim}-wide head must be even and non-empty")
    return Phi3Config(
        **fields,
        d_ff=get_int(cfg, "intermediate_size"),
        activation=get_choice(cfg, "hidden_act", "silu", L.ACTIVATIONS),
        rope_theta=theta,
        rotary_pct=partial,
        rope_scaling=None if scaling is None else json.dumps(scaling, sort_keys=True),
        sliding_window=get_int(cfg, "sliding_window", None, none_ok=True),
        hf_extra=KEYS.extra(cfg),
    )


def config_to_hf(c: Phi3Config) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = D.gqa_to_hf(c, "Phi3ForCausalLM")
    rope = {"rope_type": "default", **(c.rope_scaling_dict or {}), "rope_theta": c.rope_theta,
            "partial_rotary_factor": c.rotary_pct}
    cfg.pop("rope_scaling", None)
    cfg.update(intermediate_size=c.d_ff, hidden_act=c.activation, rope_parameters=rope, sliding_window=c.sliding_window)
    if "original_max_position_embeddings" in rope:
        cfg["original_max_position_embeddings"] = rope["original_max_position_embeddings"]
    return cfg


_L = "model.layers.{i}."


def params(c: Phi3Config) -> list[Param]:
    """The parameter table: ``q``/``k``/``v`` fused in ``qkv_proj``, ``gate``/``up`` in ``gate_up_proj``."""
    d, f = c.d_model, c.d_ff
    q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    qkv, gate_up = _L + "self_attn.qkv_proj.weight", _L + "mlp.gate_up_proj.weight"
    return [
        D.embed_row(c),
        Param("attn_norm", (d,), GAIN, _L + "input_layernorm.weight"),
        Param("q", (q, d), READ, qkv, shard=0),
        Param("k", (kv, d), READ, qkv, shard=0),
        Param("v", (kv, d), READ, qkv, shard=0),
        Param("o", (d, q), WRITE, _L + "self_attn.o_proj.weight", shard=1),
        Param("mlp_norm", (d,), GAIN, _L + "post_attention_layernorm.weight"),
        Param("gate", (f, d), READ, gate_up, shard=0),
        Param("up", (f, d), READ, gate_up, shard=0),
        Param("down", (d, f), WRITE, _L + "mlp.down_proj.weight", shard=1),
        *D.head_rows(c, GAIN),
    ]


def _cos_sin(c: Phi3Config, t: int) -> tuple[jax.Array, jax.Array]:
    """RoPE tables; ``longrope`` divides the frequencies by the short or long factors (long past
    the original context, as transformers decides from the sequence length) and scales cos/sin."""
    s = c.rope_scaling_dict
    if s is None or s["rope_type"] != "longrope":
        return L.rope_cos_sin(jnp.arange(t), c.rotary_dim, c.rope_theta, s)
    ext = jnp.asarray(s["long_factor"] if t > s["original_max_position_embeddings"] else s["short_factor"],
                      jnp.float32)
    inv = 1.0 / (ext * c.rope_theta ** (jnp.arange(0, c.rotary_dim, 2, dtype=jnp.float32) / c.rotary_dim))
    freqs = jnp.arange(t, dtype=jnp.float32)[:, None] * inv[None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb) * s["attention_factor"], jnp.sin(emb) * s["attention_factor"]


def context(c: Phi3Config, t: int) -> dict[str, jax.Array]:
    """RoPE ``cos``/``sin`` (partial, possibly ``longrope``) and the causal (sliding-window) mask."""
    cos, sin = _cos_sin(c, t)
    return {"cos": cos, "sin": sin, "mask": L.causal_mask(t, c.sliding_window)}


def embed(c: Phi3Config, p: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """Token embeddings ``(B, T, D)``."""
    return p["embed"][tokens]


def block(c: Phi3Config, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``x = x + attn(rms(x)); x = x + mlp(rms(x))``."""
    b, t, _ = x.shape
    h = L.rms_norm(x, p["attn_norm"], c.norm_eps)
    q = L.linear(h, p["q"]).reshape(b, t, c.n_heads, c.head_dim)
    k = L.linear(h, p["k"]).reshape(b, t, c.n_kv_heads, c.head_dim)
    v = L.linear(h, p["v"]).reshape(b, t, c.n_kv_heads, c.head_dim)
    q, k = L.apply_rope(q, ctx["cos"], ctx["sin"]), L.apply_rope(k, ctx["cos"], ctx["sin"])
    x = x + L.linear(L.attention(q, k, v, ctx["mask"]).reshape(b, t, -1), p["o"])
    h = L.rms_norm(x, p["mlp_norm"], c.norm_eps)
    act = L.activation(c.activation)
    return x + L.linear(act(L.linear(h, p["gate"])) * L.linear(h, p["up"]), p["down"])


def final_norm(c: Phi3Config, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final RMSNorm."""
    return L.rms_norm(x, p["final_norm"], c.norm_eps)
