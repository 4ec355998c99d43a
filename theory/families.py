"""Each model family's forward pass as symbolic stages, written against the library's parameter names.

A family is a function ``config -> list[Stage]``. A stage is one small piece of the forward pass
that maps residual-chart tensors to a residual-chart tensor (``output`` names it) or to something
no gauge acts on (``output=None``: logits, the pooler). Read in order, the stages are the model:
the embedding, then one block, then the head. Stages only say *how parameters are used*: how each
parameter moves between charts is never written here; :mod:`theory.blocks` takes it from the
library's ``gauge_spec``. A new family needs its stages here (a few lines) and nothing else.

Stage functions receive ``g`` (global parameters), ``l`` (the parameters of one block, layer axis
removed), the config, and their inputs, each a ``(T, d)`` object array (:mod:`theory.symbolic`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import sympy as sp

import gaugejax
from theory.symbolic import ACT, TANH, apply, attention, expand, layer_norm, linear, rms_norm, rope

TOKENS = (0, 1)
"""The symbolic models read this token sequence (every embedding row that matters appears)."""


@dataclass(frozen=True)
class Stage:
    """One piece of the forward pass.

    Attributes:
      name: what it computes (``"attention"``, ``"mlp"``, ...).
      inputs: names of residual-chart tensors it reads (``()`` for the embedding).
      output: name of the residual-chart tensor it writes, or ``None`` for an invariant output.
      fn: ``fn(c, g, l, **inputs) -> array``.
    """

    name: str
    inputs: tuple[str, ...]
    output: str | None
    fn: Callable


def _heads(x: np.ndarray, n: int, hd: int) -> np.ndarray:
    return x.reshape(x.shape[0], n, hd)


def _head_matrix(c, g):
    return g["embed"] if c.tie_embeddings else g["lm_head"]


def _rms_heads(x: np.ndarray, gain: np.ndarray, offset: float) -> np.ndarray:
    """RMSNorm over the last axis of ``x (T, heads, H)``, head by head."""
    return np.stack([rms_norm(x[:, h], gain, offset) for h in range(x.shape[1])], axis=1)


def decoder_attention(c, l, n, *, qk_norm: str | None = None, offset: float = 0.0) -> np.ndarray:
    """``o(attn(rope(q n), rope(k n), v n))`` with optional biases and q/k norms (``"head"``: over each
    head; ``"proj"``: over the whole projection); RoPE on the full head dimension, causal, GQA."""
    q = linear(n, l["q"], l.get("q_bias"))
    k = linear(n, l["k"], l.get("k_bias"))
    v = linear(n, l["v"], l.get("v_bias"))
    if qk_norm == "proj":
        q, k = rms_norm(q, l["q_norm"], offset), rms_norm(k, l["k_norm"], offset)
    q, k, v = _heads(q, c.n_heads, c.head_dim), _heads(k, c.n_kv_heads, c.head_dim), _heads(v, c.n_kv_heads, c.head_dim)
    if qk_norm == "head":
        q, k = _rms_heads(q, l["q_norm"], offset), _rms_heads(k, l["k_norm"], offset)
    a = attention(rope(q, c.head_dim), rope(k, c.head_dim), v, causal=True)
    return linear(a, l["o"], l.get("o_bias"))


def gated_mlp(l, n, prefix: str = "") -> np.ndarray:
    """``down(act(gate n) * up n)`` with optional biases (``prefix`` picks e.g. the shared expert)."""
    g = apply(ACT, linear(n, l[prefix + "gate"], l.get(prefix + "gate_bias")))
    return linear(g * linear(n, l[prefix + "up"], l.get(prefix + "up_bias")), l[prefix + "down"],
                  l.get(prefix + "down_bias"))


def _pre_norm_decoder(c, mlp: Callable, *, qk_norm: str | None = None, embed_scale: float = 1.0) -> list[Stage]:
    """``x += attn(rms(x)); x += mlp(rms(x))``; logits from the final RMSNorm."""
    off = getattr(c, "norm_offset", 0.0)
    return [
        Stage("embedding", (), "x", lambda c, g, l: g["embed"][list(TOKENS)] * sp.nsimplify(embed_scale)),
        Stage("attention norm", ("x",), "n", lambda c, g, l, x: rms_norm(x, l["attn_norm"], off)),
        Stage("attention", ("x", "n"), "x",
              lambda c, g, l, x, n: x + decoder_attention(c, l, n, qk_norm=qk_norm, offset=off)),
        Stage("mlp norm", ("x",), "n", lambda c, g, l, x: rms_norm(x, l["mlp_norm"], off)),
        Stage("mlp", ("x", "n"), "x", lambda c, g, l, x, n: x + mlp(c, l, n)),
        Stage("final norm", ("x",), "n", lambda c, g, l, x: rms_norm(x, g["final_norm"], off)),
        Stage("logits", ("n",), None, lambda c, g, l, n: linear(n, _head_matrix(c, g))),
    ]


# ----------------------------------------------------------------------------------------- llama
def llama(c) -> list[Stage]:
    """Llama / Mistral / Qwen2: ``x += attn(rms(x)); x += mlp(rms(x))``, RoPE, GQA, SwiGLU."""
    return _pre_norm_decoder(c, lambda c, l, n: gated_mlp(l, n))


def dense(c) -> list[Stage]:
    """Pre-norm dense decoders (Qwen3, Gemma 1): Llama's block with q/k norms, optional biases and an
    embedding scale. Score scales and soft-caps act on scores and logits only and are left out."""
    return _pre_norm_decoder(c, lambda c, l, n: gated_mlp(l, n), qk_norm=c.qk_norm, embed_scale=c.embed_scale)


def gemma(c) -> list[Stage]:
    """Gemma 1/2/3: ``(1 + w)`` gains, ``sqrt(d)``-scaled embeddings; Gemma 2/3 add sandwich norms
    (``x += rms(attn(rms(x))); x += rms(mlp(rms(x)))``), Gemma 3 per-head q/k norms."""
    if c.model_type == "gemma":
        return dense(c)
    off, qk = c.norm_offset, c.qk_norm
    return [
        Stage("embedding", (), "x", lambda c, g, l: g["embed"][list(TOKENS)] * sp.nsimplify(c.embed_scale)),
        Stage("attention norm", ("x",), "n", lambda c, g, l, x: rms_norm(x, l["attn_norm"], off)),
        Stage("attention branch", ("n",), "a", lambda c, g, l, n: decoder_attention(c, l, n, qk_norm=qk, offset=off)),
        Stage("post-attention norm", ("x", "a"), "x", lambda c, g, l, x, a: x + rms_norm(a, l["post_attn_norm"], off)),
        Stage("mlp norm", ("x",), "n", lambda c, g, l, x: rms_norm(x, l["mlp_norm"], off)),
        Stage("mlp branch", ("n",), "a", lambda c, g, l, n: gated_mlp(l, n)),
        Stage("post-mlp norm", ("x", "a"), "x", lambda c, g, l, x, a: x + rms_norm(a, l["post_mlp_norm"], off)),
        Stage("final norm", ("x",), "n", lambda c, g, l, x: rms_norm(x, g["final_norm"], off)),
        Stage("logits", ("n",), None, lambda c, g, l, n: linear(n, _head_matrix(c, g))),
    ]


def moe(c) -> list[Stage]:
    """Mixture of experts (Mixtral, Qwen2-MoE, Qwen3-MoE): routed SwiGLU experts, an optional shared
    expert with a sigmoid gate. The routing weights are arbitrary functions ``route_e`` of the router
    logits (covering top-k, softmax and renormalisation)."""

    def experts(c, l, n):
        logits = expand(linear(n, l["router"]))  # (T, E)
        n_exp = logits.shape[1]
        out = np.zeros(n.shape, dtype=object)
        for e in range(n_exp):
            route = sp.Function(f"route_{e}")
            w = np.array([[route(*logits[t])] for t in range(n.shape[0])], dtype=object)
            h = apply(ACT, linear(n, l["expert_gate"][e])) * linear(n, l["expert_up"][e])
            out = out + w * linear(h, l["expert_down"][e])
        if "shared_gate" in l:
            gate = apply(lambda z: 1 / (1 + sp.exp(-z)), linear(n, l["shared_expert_gate"]))
            out = out + gate * gated_mlp(l, n, "shared_")
        return out

    return _pre_norm_decoder(c, experts, qk_norm="head" if c.qk_norm else None)


# ----------------------------------------------------------------------------------- gpt2 / neox
def _ln(which: str, where: str = "l"):
    """A LayerNorm stage of parameters ``which`` / ``which_bias`` (per layer, or global with ``"g"``)."""
    def fn(c, g, l, **inputs):
        p = g if where == "g" else l
        (x,) = inputs.values()
        return layer_norm(x, p[which], p[which + "_bias"])
    return fn


def _gelu_mlp(c, g, l, n):
    return linear(apply(ACT, linear(n, l["fc_in"], l["fc_in_bias"])), l["fc_out"], l["fc_out_bias"])


def gpt2(c) -> list[Stage]:
    """GPT-2: LayerNorm with bias, learned positions, fused q/k/v with bias, GELU MLP."""
    hd = c.d_model // c.n_heads

    def attn(c, g, l, x, n):
        qkv = linear(n, l["qkv"], l["qkv_bias"])
        q, k, v = (_heads(z, c.n_heads, hd) for z in np.split(qkv, 3, axis=-1))
        return x + linear(attention(q, k, v, causal=True), l["o"], l["o_bias"])

    return [
        Stage("embedding", (), "x", lambda c, g, l: g["embed"][list(TOKENS)] + g["pos_embed"][: len(TOKENS)]),
        Stage("attention norm", ("x",), "n", _ln("attn_norm")),
        Stage("attention", ("x", "n"), "x", attn),
        Stage("mlp norm", ("x",), "n", _ln("mlp_norm")),
        Stage("mlp", ("x", "n"), "x", lambda c, g, l, x, n: x + _gelu_mlp(c, g, l, n)),
        Stage("final norm", ("x",), "n", _ln("final_norm", "g")),
        Stage("logits", ("n",), None, lambda c, g, l, n: linear(n, _head_matrix(c, g))),
    ]


def neox(c) -> list[Stage]:
    """GPT-NeoX: per-head interleaved q/k/v, partial RoPE, parallel (or sequential) residual."""
    hd = c.head_dim

    def attn_out(c, g, l, n):
        qkv = linear(n, l["qkv"], l["qkv_bias"]).reshape(n.shape[0], c.n_heads, 3, hd)
        q, k, v = (rope(qkv[:, :, 0], c.rotary_dim), rope(qkv[:, :, 1], c.rotary_dim), qkv[:, :, 2])
        return linear(attention(q, k, v, causal=True), l["o"], l["o_bias"])

    stages = [
        Stage("embedding", (), "x", lambda c, g, l: g["embed"][list(TOKENS)]),
        Stage("attention norm", ("x",), "n", _ln("attn_norm")),
    ]
    if c.parallel_residual:
        stages += [
            Stage("mlp norm", ("x",), "m", _ln("mlp_norm")),
            Stage("attention + mlp (parallel)", ("x", "n", "m"), "x",
                  lambda c, g, l, x, n, m: x + attn_out(c, g, l, n) + _gelu_mlp(c, g, l, m)),
        ]
    else:
        stages += [
            Stage("attention", ("x", "n"), "x", lambda c, g, l, x, n: x + attn_out(c, g, l, n)),
            Stage("mlp norm", ("x",), "n", _ln("mlp_norm")),
            Stage("mlp", ("x", "n"), "x", lambda c, g, l, x, n: x + _gelu_mlp(c, g, l, n)),
        ]
    return stages + [
        Stage("final norm", ("x",), "n", _ln("final_norm", "g")),
        Stage("logits", ("n",), None, lambda c, g, l, n: linear(n, _head_matrix(c, g))),
    ]


# ------------------------------------------------------------------------------------------ bert
def bert(c) -> list[Stage]:
    """BERT (post-LN): ``x = LN(word + pos + type 0)``; ``x = LN(x + attn(x)); x = LN(x + mlp(x))``; pooler."""
    hd = c.d_model // c.n_heads

    def attn(c, g, l, x):
        q, k, v = (_heads(linear(x, l[w], l[w + "_bias"]), c.n_heads, hd) for w in "qkv")
        return x + linear(attention(q, k, v, causal=False), l["o"], l["o_bias"])

    def embedding(c, g, l):
        return g["embed"][list(TOKENS)] + g["pos_embed"][: len(TOKENS)] + g["type_embed"][0]

    return [
        Stage("embedding sum", (), "e", embedding),
        Stage("embedding norm", ("e",), "x", _ln("embed_norm", "g")),
        Stage("attention residual", ("x",), "a", attn),
        Stage("attention norm", ("a",), "x", _ln("attn_norm")),
        Stage("mlp residual", ("x",), "a", lambda c, g, l, x: x + _gelu_mlp(c, g, l, x)),
        Stage("mlp norm", ("a",), "x", _ln("mlp_norm")),
        Stage("pooler", ("x",), None,
              lambda c, g, l, x: apply(TANH, linear(x[:1], g["pooler"], g["pooler_bias"]))),
    ]


FAMILIES: dict[str, Callable] = {"llama": llama, "gpt2": gpt2, "neox": neox, "bert": bert, "qwen3": dense,
                                  "gemma": gemma, "moe": moe}
"""family name (``config.family``) → its stages."""


def _tiny(kind: str, **overrides) -> Callable:
    return lambda: gaugejax.tiny_config(kind, **overrides)


def _hf(**cfg) -> Callable:
    base = dict(vocab_size=2, hidden_size=3, num_hidden_layers=1, max_position_embeddings=8)
    return lambda: gaugejax.models.config_from_hf({**base, **cfg})


_SMALL = dict(vocab_size=2, d_model=3, n_layers=1, d_ff=2)

CONFIGS: dict[str, list[tuple[str, Callable]]] = {
    "llama": [
        ("llama: GQA 2:1, untied head", _tiny("llama", n_heads=2, n_kv_heads=1, head_dim=2, **_SMALL)),
        ("qwen2: q/k/v biases, tied head, (1 + scale) gains",
         _tiny("qwen2", n_heads=1, n_kv_heads=1, head_dim=2, tie_embeddings=True, norm_offset=1.0, **_SMALL)),
    ],
    "gpt2": [("gpt2: fused q/k/v, learned positions, tied head", _tiny("gpt2", n_heads=1, max_positions=2, **_SMALL))],
    "neox": [
        ("neox: parallel residual, partial RoPE, untied head",
         _tiny("neox", n_heads=1, rotary_pct=0.7, max_positions=2, **_SMALL)),
        ("neox: sequential residual",
         _tiny("neox", n_heads=1, rotary_pct=0.7, max_positions=2, parallel_residual=False, **_SMALL)),
    ],
    "bert": [("bert: post-LN, token types, pooler",
              _tiny("bert", n_heads=1, max_positions=2, type_vocab_size=1, **_SMALL))],
    "qwen3": [("qwen3: per-head q/k RMSNorm, untied head",
               _hf(model_type="qwen3", intermediate_size=2, num_attention_heads=1, num_key_value_heads=1, head_dim=2,
                   tie_word_embeddings=False))],
    "gemma": [
        ("gemma: (1 + w) gains, sqrt(d) embeddings, tied head",
         _hf(model_type="gemma", intermediate_size=2, num_attention_heads=1, num_key_value_heads=1, head_dim=2)),
        ("gemma2: sandwich norms",
         _hf(model_type="gemma2", intermediate_size=2, num_attention_heads=1, num_key_value_heads=1, head_dim=2)),
        ("gemma3_text: sandwich norms, per-head q/k norms",
         _hf(model_type="gemma3_text", intermediate_size=2, num_attention_heads=1, num_key_value_heads=1, head_dim=2)),
    ],
    "moe": [
        ("mixtral: 2 routed experts, GQA 2:1",
         _hf(model_type="mixtral", intermediate_size=2, num_attention_heads=2, num_key_value_heads=1, head_dim=2,
             num_local_experts=2, num_experts_per_tok=1)),
        ("qwen2_moe: shared expert with sigmoid gate, q/k/v biases, tied head",
         _hf(model_type="qwen2_moe", intermediate_size=2, moe_intermediate_size=2, shared_expert_intermediate_size=2,
             num_attention_heads=1, num_key_value_heads=1, head_dim=2, num_experts=2, num_experts_per_tok=1,
             tie_word_embeddings=True)),
        ("qwen3_moe: per-head q/k RMSNorm, o_proj bias",
         _hf(model_type="qwen3_moe", moe_intermediate_size=2, num_attention_heads=1, num_key_value_heads=1,
             head_dim=2, num_experts=2, num_experts_per_tok=1, attention_bias=True)),
    ],
}
"""family → ``(label, make_config)``: the configs checked (``d = 3``, one block). Configs come from
``gaugejax.tiny_config`` or, for families it does not cover, from a Hugging Face ``config.json``
dict through ``gaugejax.models.config_from_hf``."""
