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

from theory.symbolic import ACT, TANH, apply, attention, layer_norm, linear, rms_norm, rope

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


# ----------------------------------------------------------------------------------------- llama
def llama(c) -> list[Stage]:
    """Llama / Mistral / Qwen2: ``x += attn(rms(x)); x += mlp(rms(x))``, RoPE, GQA, SwiGLU."""
    off = c.norm_offset

    def attn(c, g, l, x, n):
        q = _heads(linear(n, l["q"], l.get("q_bias")), c.n_heads, c.head_dim)
        k = _heads(linear(n, l["k"], l.get("k_bias")), c.n_kv_heads, c.head_dim)
        v = _heads(linear(n, l["v"], l.get("v_bias")), c.n_kv_heads, c.head_dim)
        a = attention(rope(q, c.head_dim), rope(k, c.head_dim), v, causal=True)
        return x + linear(a, l["o"])

    def mlp(c, g, l, x, n):
        return x + linear(apply(ACT, linear(n, l["gate"])) * linear(n, l["up"]), l["down"])

    return [
        Stage("embedding", (), "x", lambda c, g, l: g["embed"][list(TOKENS)]),
        Stage("attention norm", ("x",), "n", lambda c, g, l, x: rms_norm(x, l["attn_norm"], off)),
        Stage("attention", ("x", "n"), "x", attn),
        Stage("mlp norm", ("x",), "n", lambda c, g, l, x: rms_norm(x, l["mlp_norm"], off)),
        Stage("mlp", ("x", "n"), "x", mlp),
        Stage("final norm", ("x",), "n", lambda c, g, l, x: rms_norm(x, g["final_norm"], off)),
        Stage("logits", ("n",), None, lambda c, g, l, n: linear(n, _head_matrix(c, g))),
    ]


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


FAMILIES: dict[str, Callable] = {"llama": llama, "gpt2": gpt2, "neox": neox, "bert": bert}
"""family name (``config.family``) → its stages."""

CONFIGS: dict[str, list[tuple[str, str, dict]]] = {
    "llama": [
        ("llama: GQA 2:1, untied head", "llama",
         dict(vocab_size=2, d_model=3, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=2, d_ff=2)),
        ("qwen2: q/k/v biases, tied head, (1 + scale) gains", "qwen2",
         dict(vocab_size=2, d_model=3, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=2, d_ff=2,
              tie_embeddings=True, norm_offset=1.0)),
    ],
    "gpt2": [("gpt2: fused q/k/v, learned positions, tied head", "gpt2",
              dict(vocab_size=2, d_model=3, n_layers=1, n_heads=1, d_ff=2, max_positions=2))],
    "neox": [
        ("neox: parallel residual, partial RoPE, untied head", "neox",
         dict(vocab_size=2, d_model=3, n_layers=1, n_heads=1, d_ff=2, rotary_pct=0.7, max_positions=2)),
        ("neox: sequential residual", "neox",
         dict(vocab_size=2, d_model=3, n_layers=1, n_heads=1, d_ff=2, rotary_pct=0.7, max_positions=2,
              parallel_residual=False)),
    ],
    "bert": [("bert: post-LN, token types, pooler", "bert",
              dict(vocab_size=2, d_model=3, n_layers=1, n_heads=1, d_ff=2, max_positions=2, type_vocab_size=1))],
}
"""family → ``(label, tiny_config kind, overrides)``: the configs checked (``d = 3``, one block)."""
