"""Each model family's forward pass as symbolic stages, written against the library's parameter names.

A family is a function ``config -> list[Stage]`` (:class:`theory.stages.Stage`); read in order, the
stages are the model: the embedding, one block, the head. Stages only say *how parameters are
used*. How each parameter moves between charts is never written here: :mod:`theory.blocks` takes
it from the library's ``gauge_spec``. A new family of the library needs its stages here (a few
lines, mostly shared pieces) and a tiny config in :data:`CONFIGS`; until then the proof fails.

Scalars that never meet a parameter's gauge axis (attention score scales, soft-caps, logit
scales, which layers skip RoPE or use a sliding window) are left out: they act on head space,
scores or logits only.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import sympy as sp

import gaugejax
from theory.stages import (TOKENS, Stage, gated_mlp, heads, ln_stage, logits, plain_mlp, rms_stage, self_attention,
                           token_rows)
from theory.symbolic import ACT, TANH, apply, attention, expand, linear, rms_norm, rope


# ------------------------------------------------------------------------------------ RMSNorm decoders
def _pre_norm(c, mlp: Callable, *, qk_norm: str | None = None, embed_scale: float = 1.0,
              residual_scale: float = 1.0) -> list[Stage]:
    """``x += r·attn(rms(x)); x += r·mlp(rms(x))``; logits from the final RMSNorm."""
    off, r, e = getattr(c, "norm_offset", 0.0), sp.nsimplify(residual_scale), sp.nsimplify(embed_scale)
    return [
        Stage("embedding", (), "x", lambda c, g, l: token_rows(c, g, l) * e),
        Stage("attention norm", ("x",), "n", rms_stage("attn_norm", offset=off)),
        Stage("attention", ("x", "n"), "x",
              lambda c, g, l, x, n: x + r * self_attention(c, l, n, qk_norm=qk_norm, offset=off)),
        Stage("mlp norm", ("x",), "n", rms_stage("mlp_norm", offset=off)),
        Stage("mlp", ("x", "n"), "x", lambda c, g, l, x, n: x + r * mlp(l, n)),
        Stage("final norm", ("x",), "n", rms_stage("final_norm", "g", off)),
        Stage("logits", ("n",), None, logits),
    ]


def llama(c) -> list[Stage]:
    """Llama / Mistral / Qwen2 / Phi-3: ``x += attn(rms(x)); x += mlp(rms(x))``, RoPE, GQA, SwiGLU."""
    return _pre_norm(c, gated_mlp)


def dense(c) -> list[Stage]:
    """Pre-norm dense decoders (Qwen3, Gemma 1, Granite, SmolLM3): Llama's block with q/k norms,
    optional biases, embedding and residual scales."""
    return _pre_norm(c, gated_mlp, qk_norm=c.qk_norm, embed_scale=c.embed_scale, residual_scale=c.residual_scale)


def _output_normed(c, pre_norms: bool) -> list[Stage]:
    """``x += rms(attn(·)); x += rms(mlp(·))`` with (Gemma 2/3) or without (OLMo 2) pre-norms."""
    off = c.norm_offset
    first = [Stage("attention norm", ("x",), "n", rms_stage("attn_norm", offset=off))] if pre_norms else []
    mid = [Stage("mlp norm", ("x",), "n", rms_stage("mlp_norm", offset=off))] if pre_norms else []
    src = "n" if pre_norms else "x"
    return [
        Stage("embedding", (), "x", lambda c, g, l: token_rows(c, g, l) * sp.nsimplify(c.embed_scale)),
        *first,
        Stage("attention branch", (src,), "a",
              lambda c, g, l, **h: self_attention(c, l, h[src], qk_norm=c.qk_norm, offset=off)),
        Stage("post-attention norm", ("x", "a"), "x", lambda c, g, l, x, a: x + rms_norm(a, l["post_attn_norm"], off)),
        *mid,
        Stage("mlp branch", (src,), "a", lambda c, g, l, **h: gated_mlp(l, h[src])),
        Stage("post-mlp norm", ("x", "a"), "x", lambda c, g, l, x, a: x + rms_norm(a, l["post_mlp_norm"], off)),
        Stage("final norm", ("x",), "n", rms_stage("final_norm", "g", off)),
        Stage("logits", ("n",), None, logits),
    ]


def gemma(c) -> list[Stage]:
    """Gemma 1 (pre-norm), Gemma 2/3 (sandwich norms; Gemma 3 per-head q/k norms); ``(1 + w)`` gains."""
    return dense(c) if c.model_type == "gemma" else _output_normed(c, pre_norms=True)


def olmo2(c) -> list[Stage]:
    """OLMo 2: no pre-norms, an RMSNorm on each branch output, q/k normed over the whole projection."""
    return _output_normed(c, pre_norms=False)


def moe(c) -> list[Stage]:
    """Mixtral / Qwen2-MoE / Qwen3-MoE: routed SwiGLU experts whose weights are arbitrary functions
    ``route_e`` of the router logits (covering top-k, softmax, renormalisation), and an optional
    shared expert with a sigmoid gate."""

    def experts(l, n):
        router = expand(linear(n, l["router"]))  # (T, E)
        out = np.zeros(n.shape, dtype=object)
        for e in range(router.shape[1]):
            route = sp.Function(f"route_{e}")
            w = np.array([[route(*router[t])] for t in range(n.shape[0])], dtype=object)
            h = apply(ACT, linear(n, l["expert_gate"][e])) * linear(n, l["expert_up"][e])
            out = out + w * linear(h, l["expert_down"][e])
        if "shared_gate" in l:
            gate = apply(lambda z: 1 / (1 + sp.exp(-z)), linear(n, l["shared_expert_gate"]))
            out = out + gate * gated_mlp(l, n, "shared_")
        return out

    return _pre_norm(c, experts, qk_norm="head" if c.qk_norm else None)


# ---------------------------------------------------------------------------------- LayerNorm models
def _final(norm: str = "final_norm") -> list[Stage]:
    return [Stage("final norm", ("x",), "n", ln_stage(norm, "g")), Stage("logits", ("n",), None, logits)]


def _sequential(attn: Callable, mlp: Callable) -> list[Stage]:
    """Pre-norm: ``x += attn(ln1(x)); x += mlp(ln2(x))`` (norms ``attn_norm``, ``mlp_norm``)."""
    return [Stage("attention norm", ("x",), "n", ln_stage("attn_norm")),
            Stage("attention", ("x", "n"), "x", lambda c, g, l, x, n: x + attn(c, l, n)),
            Stage("mlp norm", ("x",), "n", ln_stage("mlp_norm")),
            Stage("mlp", ("x", "n"), "x", lambda c, g, l, x, n: x + mlp(l, n))]


def _parallel(attn: Callable, mlp: Callable, norm: str = "norm", mlp_norm: str | None = None) -> list[Stage]:
    """``x += attn(ln(x)) + mlp(ln(x))``, one shared norm or a separate ``mlp_norm`` (NeoX)."""
    m = "m" if mlp_norm else "n"
    return [Stage("attention norm" if mlp_norm else "norm", ("x",), "n", ln_stage(norm)),
            *([Stage("mlp norm", ("x",), "m", ln_stage(mlp_norm))] if mlp_norm else []),
            Stage("attention + mlp (parallel)", ("x", "n", m) if mlp_norm else ("x", "n"), "x",
                  lambda c, g, l, x, n, **h: x + attn(c, l, n) + mlp(l, h.get(m, n)))]


def _post_norm(attn: Callable, mlp: Callable, last: str = "n") -> list[Stage]:
    """Post-norm: ``x = ln1(x + attn(x)); x = ln2(x + mlp(x))`` (BERT, OPT-350m style)."""
    return [Stage("attention residual", ("x",), "a", lambda c, g, l, x: x + attn(c, l, x)),
            Stage("attention norm", ("a",), "x", ln_stage("attn_norm")),
            Stage("mlp residual", ("x",), "a", lambda c, g, l, x: x + mlp(l, x)),
            Stage("mlp norm", ("a",), last, ln_stage("mlp_norm"))]


def gpt2(c) -> list[Stage]:
    """GPT-2: LayerNorm with bias, learned positions, fused q/k/v with bias, GELU MLP."""
    hd = c.d_model // c.n_heads

    def attn(c, l, n):
        q, k, v = (heads(z, c.n_heads, hd) for z in np.split(linear(n, l["qkv"], l["qkv_bias"]), 3, axis=-1))
        return linear(attention(q, k, v, causal=True), l["o"], l["o_bias"])

    return [Stage("embedding", (), "x", lambda c, g, l: token_rows(c, g, l) + g["pos_embed"][: len(TOKENS)]),
            *_sequential(attn, plain_mlp), *_final()]


def neox(c) -> list[Stage]:
    """GPT-NeoX: per-head interleaved q/k/v, partial RoPE, parallel (two norms) or sequential residual."""

    def attn(c, l, n):
        qkv = linear(n, l["qkv"], l["qkv_bias"]).reshape(n.shape[0], c.n_heads, 3, c.head_dim)
        q, k = rope(qkv[:, :, 0], c.rotary_dim), rope(qkv[:, :, 1], c.rotary_dim)
        return linear(attention(q, k, qkv[:, :, 2], causal=True), l["o"], l["o_bias"])

    block = _parallel(attn, plain_mlp, "attn_norm", "mlp_norm") if c.parallel_residual else _sequential(attn, plain_mlp)
    return [Stage("embedding", (), "x", token_rows), *block, *_final()]


def parallel_ln(c) -> list[Stage]:
    """GPT-J, Phi-1/1.5/2 and Cohere: ``h = ln(x); x += attn(h) + mlp(h)``, partial RoPE, biases
    (Phi, Cohere: optional LayerNorms over each q/k head; Cohere: SwiGLU MLP, bias-free norms)."""
    if c.family == "cohere":
        mlp = gated_mlp
    else:
        mlp = (lambda l, n: plain_mlp(l, n, "fc1", "fc2")) if c.family == "phi" else plain_mlp
    attn = lambda c, l, n: self_attention(c, l, n, layer_norm_qk="q_norm" in l)  # noqa: E731
    return [Stage("embedding", (), "x", token_rows), *_parallel(attn, mlp), *_final()]


def stablelm(c) -> list[Stage]:
    """StableLM: LayerNorm, partial RoPE, SwiGLU, per-head q/k LayerNorms; sequential or parallel."""
    attn = lambda c, l, n: self_attention(c, l, n, layer_norm_qk="q_norm" in l)  # noqa: E731
    block = _parallel(attn, gated_mlp, "attn_norm") if c.parallel_residual else _sequential(attn, gated_mlp)
    return [Stage("embedding", (), "x", token_rows), *block, *_final()]


def falcon(c) -> list[Stage]:
    """Falcon: LayerNorm with bias, rotary, one fused ``query_key_value`` split per layout (grouped,
    multi-query or per head), GELU MLP; parallel with one or two norms, or sequential."""

    def attn(c, l, n):
        t, hd, nh, nkv = n.shape[0], c.head_dim, c.n_heads, c.n_kv_heads
        fused = linear(n, l["qkv"], l.get("qkv_bias"))
        if c.layout == "grouped":  # per key/value group: its queries, then its key and value
            g = fused.reshape(t, nkv, nh // nkv + 2, hd)
            q, k, v = g[:, :, :-2].reshape(t, nh, hd), g[:, :, -2], g[:, :, -1]
        elif c.layout == "multi_query":  # all queries, one key, one value
            g = fused.reshape(t, nh + 2, hd)
            q, k, v = g[:, :nh], g[:, nh:nh + 1], g[:, nh + 1:]
        else:  # (heads, 3, head_dim)
            g = fused.reshape(t, nh, 3, hd)
            q, k, v = g[:, :, 0], g[:, :, 1], g[:, :, 2]
        rd = hd - hd % 2  # the whole head (the d = 3 configs have a head of 3: rotary acts on head space only)
        return linear(attention(rope(q, rd), rope(k, rd), v, causal=True), l["o"], l.get("o_bias"))

    if c.two_norms:
        block = _parallel(attn, plain_mlp, "attn_norm", "mlp_norm")
    elif c.parallel:
        block = _parallel(attn, plain_mlp, "attn_norm")
    else:
        block = _sequential(attn, plain_mlp)
    return [Stage("embedding", (), "x", token_rows), *block, *_final()]


def opt(c) -> list[Stage]:
    """OPT: learned positions (plus two offset rows, which transformers reads for padded positions),
    no RoPE, ReLU MLP; pre-norm with a final LayerNorm, or post-norm without one."""
    attn = lambda c, l, n: self_attention(c, l, n, rotary=0)  # noqa: E731
    mlp = lambda l, n: plain_mlp(l, n, "fc1", "fc2")  # noqa: E731

    def embedding(c, g, l):
        rows = token_rows(c, g, l) + g["pos_embed"][: len(TOKENS)]
        return np.concatenate([rows, g["embed"][:1] + g["pos_offset"]])

    block = [*_sequential(attn, mlp), *_final()] if c.pre_norm else \
        [*_post_norm(attn, mlp), Stage("logits", ("n",), None, logits)]
    return [Stage("embedding", (), "x", embedding), *block]


def bert(c) -> list[Stage]:
    """BERT (post-LN): ``x = LN(word + pos + type 0)``; ``x = LN(x + attn(x)); x = LN(x + mlp(x))``; pooler."""
    hd = c.d_model // c.n_heads

    def attn(c, l, x):
        q, k, v = (heads(linear(x, l[w], l[w + "_bias"]), c.n_heads, hd) for w in "qkv")
        return linear(attention(q, k, v, causal=False), l["o"], l["o_bias"])

    def embedding(c, g, l):
        return token_rows(c, g, l) + g["pos_embed"][: len(TOKENS)] + g["type_embed"][0]

    return [
        Stage("embedding sum", (), "e", embedding),
        Stage("embedding norm", ("e",), "x", ln_stage("embed_norm", "g")),
        *_post_norm(attn, plain_mlp, last="x"),
        Stage("pooler", ("x",), None, lambda c, g, l, x: apply(TANH, linear(x[:1], g["pooler"], g["pooler_bias"]))),
    ]


FAMILIES: dict[str, Callable] = {
    "llama": llama, "phi3": llama, "qwen3": dense, "granite": dense, "smollm3": dense, "gemma": gemma,
    "olmo2": olmo2, "moe": moe, "gpt2": gpt2, "neox": neox, "gptj": parallel_ln, "phi": parallel_ln,
    "cohere": parallel_ln, "stablelm": stablelm, "falcon": falcon, "opt": opt, "bert": bert,
}
"""family name (``config.family``) → its stages."""


# --------------------------------------------------------------------------------------------- configs
def _tiny(kind: str, **overrides) -> Callable:
    return lambda: gaugejax.tiny_config(kind, **overrides)


def _hf(**cfg) -> Callable:
    base = dict(vocab_size=2, hidden_size=3, num_hidden_layers=1, max_position_embeddings=8)
    return lambda: gaugejax.models.config_from_hf({**base, **cfg})


_SMALL = dict(vocab_size=2, d_model=3, n_layers=1, d_ff=2)
_HEAD = dict(num_attention_heads=1, num_key_value_heads=1, head_dim=2)  # d = 3, one head of 2

CONFIGS: dict[str, list[tuple[str, Callable]]] = {
    "llama": [
        ("llama: GQA 2:1, untied head", _tiny("llama", n_heads=2, n_kv_heads=1, head_dim=2, **_SMALL)),
        ("llama: attention_bias and mlp_bias (q/k/v/o and gate/up/down biases)",
         _tiny("llama", n_heads=1, n_kv_heads=1, head_dim=2, qkv_bias=True, o_bias=True, mlp_bias=True, **_SMALL)),
        ("qwen2: q/k/v biases, tied head, (1 + scale) gains",
         _tiny("qwen2", n_heads=1, n_kv_heads=1, head_dim=2, tie_embeddings=True, norm_offset=1.0, **_SMALL)),
    ],
    "phi3": [("phi3: fused qkv / gate_up in the checkpoint", _hf(model_type="phi3", intermediate_size=2, **_HEAD))],
    "qwen3": [("qwen3: per-head q/k RMSNorm", _hf(model_type="qwen3", intermediate_size=2, **_HEAD))],
    "granite": [("granite: embedding and residual multipliers",
                 _hf(model_type="granite", intermediate_size=2, residual_multiplier=0.5, embedding_multiplier=2.0,
                     **_HEAD))],
    "smollm3": [("smollm3: tied head", _hf(model_type="smollm3", intermediate_size=2, **_HEAD))],
    "gemma": [
        ("gemma: (1 + w) gains, sqrt(d) embeddings, tied head", _hf(model_type="gemma", intermediate_size=2, **_HEAD)),
        ("gemma2: sandwich norms", _hf(model_type="gemma2", intermediate_size=2, **_HEAD)),
        ("gemma3_text: sandwich norms, per-head q/k norms", _hf(model_type="gemma3_text", intermediate_size=2, **_HEAD)),
    ],
    "olmo2": [("olmo2: output norms only, q/k normed over the whole projection",
               _hf(model_type="olmo2", intermediate_size=2, **_HEAD))],
    "moe": [
        ("mixtral: 2 routed experts, GQA 2:1",
         _hf(model_type="mixtral", intermediate_size=2, num_attention_heads=2, num_key_value_heads=1, head_dim=2,
             num_local_experts=2, num_experts_per_tok=1)),
        ("qwen2_moe: shared expert with sigmoid gate, q/k/v biases, tied head",
         _hf(model_type="qwen2_moe", intermediate_size=2, moe_intermediate_size=2, shared_expert_intermediate_size=2,
             num_experts=2, num_experts_per_tok=1, tie_word_embeddings=True, **_HEAD)),
        ("qwen3_moe: per-head q/k RMSNorm, o_proj bias",
         _hf(model_type="qwen3_moe", moe_intermediate_size=2, num_experts=2, num_experts_per_tok=1,
             attention_bias=True, **_HEAD)),
    ],
    "gpt2": [("gpt2: fused q/k/v, learned positions, tied head", _tiny("gpt2", n_heads=1, max_positions=2, **_SMALL))],
    "neox": [
        ("neox: parallel residual, partial RoPE", _tiny("neox", n_heads=1, rotary_pct=0.7, max_positions=2, **_SMALL)),
        ("neox: sequential residual",
         _tiny("neox", n_heads=1, rotary_pct=0.7, max_positions=2, parallel_residual=False, **_SMALL)),
    ],
    "gptj": [("gptj: parallel block, partial rotary, biased head",
              lambda: gaugejax.models.config_from_hf(dict(model_type="gptj", vocab_size=2, n_embd=3, n_layer=1, n_head=1,
                                                          n_positions=8, rotary_dim=2, n_inner=2)))],
    "phi": [("phi: parallel block, biases everywhere, q/k LayerNorms",
             _hf(model_type="phi", intermediate_size=2, num_attention_heads=1, num_key_value_heads=1,
                 partial_rotary_factor=0.67, qk_layernorm=True))],
    "cohere": [("cohere: bias-free LayerNorm, parallel SwiGLU block, q/k LayerNorms, biases",
                _hf(model_type="cohere", intermediate_size=2, use_qk_norm=True, attention_bias=True, **_HEAD))],
    "stablelm": [
        ("stablelm: sequential, partial RoPE, q/k LayerNorms, q/k/v biases",
         _hf(model_type="stablelm", intermediate_size=2, num_attention_heads=1, num_key_value_heads=1,
             partial_rotary_factor=0.67, qk_layernorm=True, use_qkv_bias=True)),
        ("stablelm: parallel residual",
         _hf(model_type="stablelm", intermediate_size=2, num_attention_heads=1, num_key_value_heads=1,
             partial_rotary_factor=0.67, use_parallel_residual=True)),
    ],
    "falcon": [  # d = 3 has no even head size, which Falcon's config.json requires: sizes set on the config
        ("falcon: multi-query fused qkv, parallel block with one norm, biases, untied head",
         _tiny("falcon", bias=True, tie_embeddings=False, n_heads=1, **_SMALL)),
        ("falcon: new decoder architecture, grouped fused qkv (3 heads, 1 key/value group), two norms",
         _tiny("falcon", layout="grouped", n_heads=3, n_kv_heads=1, two_norms=True, **_SMALL)),
        ("falcon: per-head fused qkv, sequential block, biases",
         _tiny("falcon", layout="per_head", n_heads=1, parallel=False, bias=True, **_SMALL)),
    ],
    "opt": [
        ("opt: pre-norm, learned positions with offset rows",
         _hf(model_type="opt", ffn_dim=2, num_attention_heads=1, do_layer_norm_before=True, word_embed_proj_dim=3)),
        ("opt: post-norm (no final norm)",
         _hf(model_type="opt", ffn_dim=2, num_attention_heads=1, do_layer_norm_before=False, word_embed_proj_dim=3)),
    ],
    "bert": [("bert: post-LN, token types, pooler",
              _tiny("bert", n_heads=1, max_positions=2, type_vocab_size=1, **_SMALL))],
}
"""family → ``(label, make_config)``: the configs checked (``d = 3``, one block). Configs come from
``gaugejax.tiny_config`` or, for families it does not cover, from a Hugging Face ``config.json``
dict through ``gaugejax.models.config_from_hf``."""
