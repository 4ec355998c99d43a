"""Whole transformer blocks, symbolically: the SPEC §3 rules carry the residual gauge through.

Tiny symbolic models (``d = 3`` residual channels, sequence length 2, every weight a free sympy
symbol, ``eps`` symbolic) are written as plain functions on numpy object arrays. Parameters move
from chart A to chart B by *rules* (SPEC §3) applied with the library's own
:meth:`gaugejax.gauge.SignedPermutation.apply`. A model is gauge-covariant under a rule set when,
for residual input ``h`` in A and ``h_B = h[..., perm] * signs`` in B,

* every residual sub-layer satisfies ``f_B(h_B) = f_A(h)[..., perm] * signs`` (exact identity),
* embeddings satisfy ``E_B[tok] = E_A[tok][perm] * signs``, and the head gives equal logits.

Attention is checked in two stages: the pre-softmax scores of A and B must be identical
polynomials (after expansion), and then the rest of the sub-layer (softmax as ``exp(s)/Σexp``,
causal mask, values, output projection, residual add) is a function of those scores; it is
expanded with the scores as shared symbols. Non-linearities (SiLU, GELU) are undefined sympy
functions, so the check covers any element-wise activation.

Architectures: ``llama`` (RMSNorm, RoPE, grouped-query attention with 2 query heads sharing 1 KV
head, SwiGLU MLP, untied head) and ``gpt2`` (LayerNorm with bias, learned positions, biased
projections, GELU MLP).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import sympy as sp

from gaugejax.gauge import SignedPermutation

D, T, VOCAB = 3, 2, 2  # residual width, sequence length, vocabulary
N_HEADS, N_KV, HEAD_DIM, HIDDEN = 2, 1, 2, 2
EPS = sp.Symbol("epsilon", positive=True)
OMEGA = sp.Symbol("omega", real=True)  # RoPE angle per position step

Rule = Callable[[SignedPermutation, np.ndarray], np.ndarray]

#: SPEC §3, by parameter kind.
SPEC_RULES: dict[str, Rule] = {
    "embed": lambda g, a: g.apply(a, axis=-1),                   # rows written into the stream
    "read": lambda g, a: g.apply(a, axis=1),                     # W (out, d): W[:, perm] * signs
    "write": lambda g, a: g.apply(a, axis=0),                    # W (d, in): W[perm] * signs[:, None]
    "write_bias": lambda g, a: g.apply(a, axis=0),               # b[perm] * signs
    "rms_gain": lambda g, a: g.apply(a, axis=0, signed=False),   # g[perm], never signed
    "ln_gain": lambda g, a: g.apply(a, axis=0, signed=False),    # g[perm]
    "ln_bias": lambda g, a: g.apply(a, axis=0),                  # b[perm] * signs
    "inner": lambda g, a: a,                                     # head / hidden space: untouched
}

#: Deliberately wrong rule sets (each must be rejected for a gauge with mixed signs).
WRONG_RULES: dict[str, dict[str, Rule]] = {
    "signed_rms_gain": {"rms_gain": lambda g, a: g.apply(a, axis=0)},
    "unsigned_reader": {"read": lambda g, a: g.apply(a, axis=1, signed=False)},
    "unsigned_writer": {"write": lambda g, a: g.apply(a, axis=0, signed=False)},
    "unsigned_ln_bias": {"ln_bias": lambda g, a: g.apply(a, axis=0, signed=False)},
    "signed_ln_gain": {"ln_gain": lambda g, a: g.apply(a, axis=0)},
}


# --------------------------------------------------------------------------- symbolic arrays
def _syms(name: str, shape: tuple[int, ...]) -> np.ndarray:
    flat = sp.symbols(f"{name}_0:{int(np.prod(shape))}", real=True)
    return np.array(flat, dtype=object).reshape(shape)


def _expand(a: np.ndarray) -> np.ndarray:
    return np.vectorize(sp.expand, otypes=[object])(a)


def _rms(h: np.ndarray, g: np.ndarray) -> np.ndarray:
    ms = [sp.expand(sum(v**2 for v in row) / len(row)) for row in h]
    return np.array([[g[i] * row[i] / sp.sqrt(m + EPS) for i in range(len(row))]
                     for row, m in zip(h, ms)], dtype=object)


def _layernorm(h: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = []
    for row in h:
        mu = sum(row) / len(row)
        c = [v - mu for v in row]
        var = sp.expand(sum(v**2 for v in c) / len(row))
        out.append([g[i] * c[i] / sp.sqrt(var + EPS) + b[i] for i in range(len(row))])
    return np.array(out, dtype=object)


def _rope(x: np.ndarray, pos: int) -> np.ndarray:
    """Half-split (``rotate_half``) RoPE on the last axis (head dim), angle ``pos·ω``."""
    half = x.shape[-1] // 2
    c, s = sp.cos(pos * OMEGA), sp.sin(pos * OMEGA)
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * c + rot * s


def _softmax(scores: list) -> list:
    e = [sp.exp(s) for s in scores]
    z = sum(e)
    return [v / z for v in e]


# --------------------------------------------------------------------------- architectures
@dataclass
class Arch:
    """A tiny symbolic architecture: parameter kinds and its sub-layers."""

    name: str
    kinds: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    norm: Callable
    attn_bias: bool
    rope: bool
    mlp: str
    extra: dict = field(default_factory=dict)


LLAMA = Arch(
    "llama",
    kinds={"embed": "embed", "attn_norm": "rms_gain", "q": "read", "k": "read", "v": "read",
           "o": "write", "mlp_norm": "rms_gain", "gate": "read", "up": "read", "down": "write",
           "final_norm": "rms_gain", "lm_head": "read"},
    shapes={"embed": (VOCAB, D), "attn_norm": (D,), "q": (N_HEADS * HEAD_DIM, D),
            "k": (N_KV * HEAD_DIM, D), "v": (N_KV * HEAD_DIM, D), "o": (D, N_HEADS * HEAD_DIM),
            "mlp_norm": (D,), "gate": (HIDDEN, D), "up": (HIDDEN, D), "down": (D, HIDDEN),
            "final_norm": (D,), "lm_head": (VOCAB, D)},
    norm=lambda p, h, which: _rms(h, p[which]),
    attn_bias=False, rope=True, mlp="swiglu")

GPT2 = Arch(
    "gpt2",
    kinds={"embed": "embed", "pos": "embed", "ln1_g": "ln_gain", "ln1_b": "ln_bias",
           "q": "read", "k": "read", "v": "read", "q_b": "inner", "k_b": "inner", "v_b": "inner",
           "o": "write", "o_b": "write_bias", "ln2_g": "ln_gain", "ln2_b": "ln_bias",
           "fc_in": "read", "fc_in_b": "inner", "fc_out": "write", "fc_out_b": "write_bias",
           "lnf_g": "ln_gain", "lnf_b": "ln_bias", "lm_head": "read"},
    shapes={"embed": (VOCAB, D), "pos": (T, D), "ln1_g": (D,), "ln1_b": (D,),
            "q": (N_HEADS * HEAD_DIM, D), "k": (N_HEADS * HEAD_DIM, D), "v": (N_HEADS * HEAD_DIM, D),
            "q_b": (N_HEADS * HEAD_DIM,), "k_b": (N_HEADS * HEAD_DIM,), "v_b": (N_HEADS * HEAD_DIM,),
            "o": (D, N_HEADS * HEAD_DIM), "o_b": (D,), "ln2_g": (D,), "ln2_b": (D,),
            "fc_in": (HIDDEN, D), "fc_in_b": (HIDDEN,), "fc_out": (D, HIDDEN), "fc_out_b": (D,),
            "lnf_g": (D,), "lnf_b": (D,), "lm_head": (VOCAB, D)},
    norm=lambda p, h, which: _layernorm(h, p[which + "_g"], p[which + "_b"]),
    attn_bias=True, rope=False, mlp="gelu", extra={"n_kv": N_HEADS})

ARCHS = {"llama": LLAMA, "gpt2": GPT2}


def symbolic_params(arch: Arch) -> dict[str, np.ndarray]:
    """Every parameter of ``arch`` as an array of free real symbols."""
    return {name: _syms(name, shape) for name, shape in arch.shapes.items()}


def transport(arch: Arch, params: dict, gauge: SignedPermutation, rules: dict[str, Rule]) -> dict:
    """Moves ``params`` from chart A to chart B with ``rules`` (kind → function)."""
    return {name: rules[arch.kinds[name]](gauge, a) for name, a in params.items()}


def _norm_name(arch: Arch, which: str) -> str:
    names = {"llama": {"attn": "attn_norm", "mlp": "mlp_norm", "final": "final_norm"},
             "gpt2": {"attn": "ln1", "mlp": "ln2", "final": "lnf"}}
    return names[arch.name][which]


def sublayer_norm(arch: Arch, p: dict, h: np.ndarray, which: str) -> np.ndarray:
    """The norm in front of sub-layer ``which`` (``"attn"``, ``"mlp"``, ``"final"``)."""
    return arch.norm(p, h, _norm_name(arch, which))


def _qkv(arch: Arch, p: dict, n: np.ndarray):
    n_kv = arch.extra.get("n_kv", N_KV)
    q = n.dot(p["q"].T)
    k = n.dot(p["k"].T)
    v = n.dot(p["v"].T)
    if arch.attn_bias:
        q, k, v = q + p["q_b"], k + p["k_b"], v + p["v_b"]
    q = q.reshape(T, N_HEADS, HEAD_DIM)
    k = k.reshape(T, n_kv, HEAD_DIM)
    v = v.reshape(T, n_kv, HEAD_DIM)
    if arch.rope:
        q = np.stack([_rope(q[t], t) for t in range(T)])
        k = np.stack([_rope(k[t], t) for t in range(T)])
    return q, k, v, N_HEADS // n_kv


def attention_scores(arch: Arch, p: dict, n: np.ndarray) -> dict:
    """Causal pre-softmax scores ``{(head, t, s): q_t·k_s/sqrt(H)}`` for ``s ≤ t`` (GQA-aware),
    from the normalised input ``n``."""
    q, k, _, rep = _qkv(arch, p, n)
    return {(hd, t, s): q[t, hd].dot(k[s, hd // rep]) / sp.sqrt(HEAD_DIM)
            for hd in range(N_HEADS) for t in range(T) for s in range(t + 1)}


def attention_sublayer(arch: Arch, p: dict, h: np.ndarray, n: np.ndarray, scores: dict) -> np.ndarray:
    """``h + o(softmax(scores) · v(n))`` with the given score expressions."""
    _, _, v, rep = _qkv(arch, p, n)
    heads = np.empty((T, N_HEADS, HEAD_DIM), dtype=object)
    for hd in range(N_HEADS):
        for t in range(T):
            probs = _softmax([scores[(hd, t, s)] for s in range(t + 1)])
            heads[t, hd] = sum(pr * v[s, hd // rep] for s, pr in enumerate(probs))
    out = heads.reshape(T, N_HEADS * HEAD_DIM).dot(p["o"].T)
    if arch.attn_bias:
        out = out + p["o_b"]
    return h + out


def mlp_sublayer(arch: Arch, p: dict, h: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``h + MLP(n)``: SwiGLU (``down(silu(gate n) * up n)``) or GELU with biases."""
    if arch.mlp == "swiglu":
        silu = sp.Function("silu")
        act = np.vectorize(silu, otypes=[object])(n.dot(p["gate"].T)) * n.dot(p["up"].T)
        return h + act.dot(p["down"].T)
    gelu = sp.Function("gelu")
    act = np.vectorize(gelu, otypes=[object])(n.dot(p["fc_in"].T) + p["fc_in_b"])
    return h + act.dot(p["fc_out"].T) + p["fc_out_b"]


def embed(arch: Arch, p: dict, tokens) -> np.ndarray:
    """Residual stream at index 0: token rows (plus learned positions)."""
    h = p["embed"][np.asarray(tokens)]
    if "pos" in p:
        h = h + p["pos"][: len(tokens)]
    return h


def head(arch: Arch, p: dict, n: np.ndarray) -> np.ndarray:
    """Logits ``lm_head(n)`` from the final-normed stream ``n``."""
    return n.dot(p["lm_head"].T)


# --------------------------------------------------------------------------- checks
@dataclass
class BlockCheck:
    """Result of :func:`check_model`.

    Attributes:
      arch: architecture name.
      gauge: the gauge used (``perm``, ``signs`` lists).
      passed: every stage held exactly.
      stages: stage name → bool (``embedding``, ``attention scores``, ``attention output``,
        ``mlp``, ``logits``). A failed scores stage skips the attention-output stage.
    """

    arch: str
    gauge: dict
    passed: bool
    stages: dict


_CONCRETE = {"silu": lambda z: z / (1 + sp.exp(-z)), "gelu": lambda z: z * (1 + sp.tanh(z)) / 2}


def _certainly_nonzero(a: np.ndarray, seed: int = 0) -> bool:
    """A quick certificate of *failure*: some entry is far from 0 at a random rational point.

    Undefined activations are replaced by concrete ones first (an identity that fails for one
    activation is not an identity for all). Evaluated with 30 significant digits; only
    ``|value| > 1e-10`` counts, so rounding never produces a false failure.
    """
    rng = np.random.default_rng(seed)
    free = set().union(*(sp.sympify(v).free_symbols for v in a.ravel()))
    point = {s: sp.Rational(int(rng.integers(5, 20)), int(rng.integers(7, 11))) for s in free}
    for v in a.ravel():
        v = sp.sympify(v)
        for name, fn in _CONCRETE.items():
            v = v.replace(sp.Function(name), fn)
        if abs(sp.N(v.xreplace(point), 30)) > 1e-10:
            return True
    return False


def _zero(a: np.ndarray) -> bool:
    """Exact decision: every entry expands to 0 (a numeric witness short-cuts a failure)."""
    if _certainly_nonzero(a):
        return False
    return all(v == 0 for v in _expand(a).ravel())


def check_model(arch_name: str, gauge: SignedPermutation, rules: dict[str, Rule] | None = None,
                wrong: str | None = None) -> BlockCheck:
    """Checks, symbolically, that ``rules`` carry ``gauge`` through every part of a tiny model.

    Each norm is checked first (``norm_B(h_B) = norm_A(h)[..., perm] * signs``); when it holds, what
    follows is computed from free symbols ``m`` for the normalised stream (``m`` in A,
    ``m[..., perm] * signs`` in B), which is exact and much cheaper. When a norm stage fails the
    following stages are computed from the actual norm outputs instead, so every stage is always
    decided honestly.

    Args:
      arch_name: ``"llama"`` or ``"gpt2"``.
      gauge: a residual gauge with ``d = 3``.
      rules: parameter rules by kind (default SPEC §3).
      wrong: name of a rule override from :data:`WRONG_RULES` applied on top of ``rules``.

    Returns:
      A :class:`BlockCheck`; ``passed`` is True iff every identity expands to exactly 0.
    """
    arch = ARCHS[arch_name]
    rules = dict(SPEC_RULES if rules is None else rules)
    if wrong is not None:
        rules.update(WRONG_RULES[wrong])
    pa = symbolic_params(arch)
    pb = transport(arch, pa, gauge, rules)
    stages = {}
    # embeddings (and positions) are written into the stream
    stages["embedding"] = _zero(embed(arch, pb, [0, 1]) - gauge.apply(embed(arch, pa, [0, 1])))
    h = _syms("h", (T, D))
    hb = gauge.apply(h)

    def normed(which):
        na, nb = sublayer_norm(arch, pa, h, which), sublayer_norm(arch, pb, hb, which)
        ok = _zero(nb - gauge.apply(na))
        stages[f"{which} norm"] = ok
        if ok:
            m = _syms(f"m_{which}", (T, D))
            return m, gauge.apply(m)
        return na, nb

    # attention: identical scores, then identical outputs as functions of the scores
    na, nb = normed("attn")
    sa = attention_scores(arch, pa, na)
    sb = attention_scores(arch, pb, nb)
    diff = np.array([sa[k] - sb[k] for k in sa], dtype=object)
    stages["attention scores"] = _zero(diff)
    if stages["attention scores"]:
        shared = {k: sp.Symbol(f"s_{k[0]}{k[1]}{k[2]}", real=True) for k in sa}
        out_a = attention_sublayer(arch, pa, h, na, shared)
        out_b = attention_sublayer(arch, pb, hb, nb, shared)
        stages["attention output"] = _zero(out_b - gauge.apply(out_a))
    na, nb = normed("mlp")
    stages["mlp output"] = _zero(mlp_sublayer(arch, pb, hb, nb) - gauge.apply(mlp_sublayer(arch, pa, h, na)))
    na, nb = normed("final")
    stages["logits"] = _zero(head(arch, pb, nb) - head(arch, pa, na))
    return BlockCheck(arch_name, {"perm": gauge.perm.tolist(), "signs": gauge.signs.tolist()},
                      all(stages.values()), stages)


#: Gauges used by the report: a mixed-sign gauge (B_3 but not a LayerNorm symmetry) and a
#: global-sign gauge (S_3 × {±1}).
MIXED = SignedPermutation(np.array([2, 0, 1]), np.array([1, -1, -1]))
GLOBAL = SignedPermutation(np.array([1, 2, 0]), np.array([-1, -1, -1]))
