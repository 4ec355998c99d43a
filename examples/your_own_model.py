"""Verify the gauge symmetry of your own model: a Flax transformer that gaugejax does not know.

The model below is written here, in plain Flax linen (not gaugejax's): token embedding, pre-norm
blocks (causal multi-head attention with ``n_heads * head_dim == d``, so the query matrix is
``d × d`` and only testing can tell which of its axes is residual; a biased MLP), a final norm
and an LM head. The script

1. infers its gauge spec from invariance tests alone (``gaugejax.testing.infer``) and prints the
   evidence, leaf by leaf;
2. verifies it over ``B_d`` with Hypothesis (``assert_invariant``);
3. breaks one rule on purpose (signs a norm gain), shows the shrunk counterexample and lets
   ``diagnose_spec`` name the leaf and the rule that restores invariance;
4. repeats with LayerNorm in place of RMSNorm: only permutations with a global sign survive.

Usage:
  python examples/your_own_model.py [--d 32] [--layers 2] [--seed 0]
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import gaugejax.testing as gt
from gaugejax.spec import RESIDUAL, Axes


class Block(nn.Module):
    """``x + attn(norm(x))`` then ``x + mlp(norm(x))``; ``norm`` is RMSNorm or LayerNorm."""

    d: int
    n_heads: int
    d_ff: int
    norm: str = "rms"

    def _norm(self, name: str):
        return nn.RMSNorm(name=name) if self.norm == "rms" else nn.LayerNorm(name=name)

    @nn.compact
    def __call__(self, x):  # x: (B, T, D)
        b, t, _ = x.shape
        hd = self.d // self.n_heads
        h = self._norm("attn_norm")(x)
        q, k, v = (nn.Dense(self.d, use_bias=False, name=n)(h).reshape(b, t, self.n_heads, hd) for n in "qkv")
        scores = jnp.einsum("bqnh,bknh->bnqk", q, k) / np.sqrt(hd)
        scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, -jnp.inf)
        a = jnp.einsum("bnqk,bknh->bqnh", jax.nn.softmax(scores, axis=-1), v).reshape(b, t, self.d)
        x = x + nn.Dense(self.d, use_bias=False, name="o")(a)
        h = self._norm("mlp_norm")(x)
        return x + nn.Dense(self.d, name="down")(jax.nn.gelu(nn.Dense(self.d_ff, name="up")(h)))


class Transformer(nn.Module):
    """A small decoder: embedding, ``n_layers`` blocks, final norm, LM head with a bias."""

    vocab: int = 64
    d: int = 32
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 48
    norm: str = "rms"

    @nn.compact
    def __call__(self, tokens):  # tokens: (B, T) int → logits (B, T, V)
        x = nn.Embed(self.vocab, self.d, name="embed")(tokens)
        for i in range(self.n_layers):
            x = Block(self.d, self.n_heads, self.d_ff, self.norm, name=f"block_{i}")(x)
        x = (nn.RMSNorm if self.norm == "rms" else nn.LayerNorm)(name="final_norm")(x)
        return nn.Dense(self.vocab, name="lm_head")(x)


def build(norm: str = "rms", *, d: int = 32, n_layers: int = 2, seed: int = 0):
    """The model, generic parameters (distinct gains, non-zero biases), tokens and ``fn``."""
    model = Transformer(d=d, n_layers=n_layers, norm=norm)
    tokens = jax.random.randint(jax.random.key(seed), (2, 8), 0, model.vocab)
    params = gt.generic(jax.jit(model.init)(jax.random.key(seed), tokens), seed + 1)
    return model, params, tokens, lambda p, t: model.apply(p, t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    model, params, tokens, fn = build("rms", d=args.d, n_layers=args.layers, seed=args.seed)
    found = gt.infer(fn, params, tokens, args.d)
    print(f"== RMSNorm model: inferred spec\n{found}\n")
    gt.assert_invariant(fn, params, found.spec, group="B_d", inputs=tokens)
    print("assert_invariant over B_d: passed\n")

    wrong = jax.tree.map(lambda a: a, found.spec, is_leaf=lambda a: isinstance(a, Axes))
    wrong["params"]["block_0"]["mlp_norm"]["scale"] = Axes(RESIDUAL)  # a signed gain: the classic mistake
    try:
        gt.assert_invariant(fn, params, wrong, group="B_d", inputs=tokens)
    except AssertionError as e:
        print(f"== a signed gain\nassert_invariant: {e}\n")
    for finding in gt.diagnose_spec(fn, params, wrong, tokens, group="B_d"):
        print(f"diagnose_spec: {finding}")

    model, params, tokens, fn = build("layer", d=args.d, n_layers=args.layers, seed=args.seed)
    found = gt.infer(fn, params, tokens, args.d)
    print(f"\n== LayerNorm model: the group is {found.group}")
    gt.assert_invariant(fn, params, found.spec, group="S_d x ±1", inputs=tokens)
    print("assert_invariant over S_d x ±1: passed")
    try:
        gt.assert_invariant(fn, params, found.spec, group="B_d", inputs=tokens)
    except AssertionError as e:
        print(f"assert_invariant over B_d: {e}")


if __name__ == "__main__":
    main()
