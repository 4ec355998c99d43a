"""GPT-2: LayerNorm with bias, learned positions, GELU MLP, tied embeddings.

Block: ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``. HF stores GPT-2 matrices as ``Conv1D``
``(in, out)``; we keep ``(out, in)`` and transpose on load and save.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.models import layers as L
from gaugejax.models.base import GPT2Config, HFTensor, NeoXConfig, init_from_shapes
from gaugejax.spec import RESIDUAL, RESIDUAL_PERM, Axes

_HF_KNOWN = {
    "model_type", "vocab_size", "n_embd", "n_layer", "n_head", "n_inner", "layer_norm_epsilon",
    "activation_function", "n_positions", "n_ctx", "tie_word_embeddings", "architectures", "torch_dtype", "dtype",
}


def config_from_hf(cfg: dict) -> GPT2Config:
    """Builds the config from a Hugging Face GPT-2 ``config.json`` dict."""
    d = cfg["n_embd"]
    from gaugejax.errors import CheckpointError

    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if cfg.get(flag):
            raise CheckpointError(f"GPT-2 option {flag}=true is not supported")
    return GPT2Config(
        vocab_size=cfg["vocab_size"],
        d_model=d,
        n_layers=cfg["n_layer"],
        n_heads=cfg["n_head"],
        d_ff=cfg.get("n_inner") or 4 * d,
        norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
        activation=cfg.get("activation_function", "gelu_new"),
        max_positions=cfg.get("n_positions", 1024),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        hf_extra=json.dumps({k: v for k, v in cfg.items() if k not in _HF_KNOWN}),
    )


def config_to_hf(c: GPT2Config) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = json.loads(c.hf_extra)
    cfg.update(
        model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=c.vocab_size, n_embd=c.d_model,
        n_layer=c.n_layers, n_head=c.n_heads, n_inner=c.d_ff, layer_norm_epsilon=c.norm_eps,
        activation_function=c.activation, n_positions=c.max_positions, tie_word_embeddings=c.tie_embeddings,
    )
    return cfg


def param_shapes(c: GPT2Config | NeoXConfig) -> dict[str, Any]:
    """Shapes of every parameter (per layer inside ``"layers"``, without the layer axis)."""
    d, f = c.d_model, c.d_ff
    layer = {
        "attn_norm": (d,), "attn_norm_bias": (d,), "qkv": (3 * d, d), "qkv_bias": (3 * d,),
        "o": (d, d), "o_bias": (d,), "mlp_norm": (d,), "mlp_norm_bias": (d,),
        "fc_in": (f, d), "fc_in_bias": (f,), "fc_out": (d, f), "fc_out_bias": (d,),
    }
    shapes = {"embed": (c.vocab_size, d), "pos_embed": (c.max_positions, d), "layers": layer,
              "final_norm": (d,), "final_norm_bias": (d,)}
    if not c.tie_embeddings:
        shapes["lm_head"] = (c.vocab_size, d)
    return shapes


def param_axes(c: GPT2Config | NeoXConfig) -> dict[str, Any]:
    """The gauge spec (SPEC §3): LayerNorm gains permute, LayerNorm biases take the (global) sign."""
    read, write, gain, vec = Axes(None, RESIDUAL), Axes(RESIDUAL, None), Axes(RESIDUAL_PERM), Axes(RESIDUAL)
    layer = {
        "attn_norm": gain, "attn_norm_bias": vec, "qkv": read, "qkv_bias": Axes(None), "o": write,
        "o_bias": vec, "mlp_norm": gain, "mlp_norm_bias": vec, "fc_in": read, "fc_in_bias": Axes(None),
        "fc_out": write, "fc_out_bias": vec,
    }
    axes = {"embed": read, "pos_embed": read, "layers": layer, "final_norm": gain, "final_norm_bias": vec}
    if not c.tie_embeddings:
        axes["lm_head"] = read
    return axes


def hf_tensors(c: GPT2Config) -> list[HFTensor]:
    """Every safetensors key of the HF checkpoint and where it lives in ``params``."""
    out = [HFTensor("transformer.wte.weight", "embed", None), HFTensor("transformer.wpe.weight", "pos_embed", None)]
    names = {
        "attn_norm": ("ln_1.weight", False), "attn_norm_bias": ("ln_1.bias", False),
        "qkv": ("attn.c_attn.weight", True), "qkv_bias": ("attn.c_attn.bias", False),
        "o": ("attn.c_proj.weight", True), "o_bias": ("attn.c_proj.bias", False),
        "mlp_norm": ("ln_2.weight", False), "mlp_norm_bias": ("ln_2.bias", False),
        "fc_in": ("mlp.c_fc.weight", True), "fc_in_bias": ("mlp.c_fc.bias", False),
        "fc_out": ("mlp.c_proj.weight", True), "fc_out_bias": ("mlp.c_proj.bias", False),
    }
    for i in range(c.n_layers):
        out += [HFTensor(f"transformer.h.{i}.{n}", k, i, t) for k, (n, t) in names.items()]
    out += [HFTensor("transformer.ln_f.weight", "final_norm", None), HFTensor("transformer.ln_f.bias", "final_norm_bias", None)]
    if not c.tie_embeddings:
        out.append(HFTensor("lm_head.weight", "lm_head", None))
    return out


def init_params(c: GPT2Config, key: jax.Array, dtype=jnp.float32) -> dict[str, Any]:
    """Random parameters with generic gains (see :func:`init_from_shapes`)."""
    return init_from_shapes(param_shapes(c), c.n_layers, key, dtype)


def _block(c: GPT2Config, x: jax.Array, p: dict[str, jax.Array], mask: jax.Array) -> jax.Array:
    b, t, d = x.shape
    hd = d // c.n_heads
    h = L.layer_norm(x, p["attn_norm"], p["attn_norm_bias"], c.norm_eps)
    q, k, v = jnp.split(L.linear(h, p["qkv"], p["qkv_bias"]), 3, axis=-1)
    q, k, v = (z.reshape(b, t, c.n_heads, hd) for z in (q, k, v))
    a = L.attention(q, k, v, mask).reshape(b, t, d)
    x = x + L.linear(a, p["o"], p["o_bias"])
    h = L.layer_norm(x, p["mlp_norm"], p["mlp_norm_bias"], c.norm_eps)
    act = L.activation(c.activation)
    return x + L.linear(act(L.linear(h, p["fc_in"], p["fc_in_bias"])), p["fc_out"], p["fc_out_bias"])


def hidden_states(c: GPT2Config, params: dict[str, Any], tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """See :func:`gaugejax.models.llama.hidden_states`."""
    t = tokens.shape[1]
    x = params["embed"][tokens] + params["pos_embed"][jnp.arange(t)][None]
    mask = L.causal_mask(t)
    stream, x_last = L.run_blocks(lambda x, p: _block(c, x, p, mask), x, params["layers"])
    final = L.layer_norm(x_last, params["final_norm"], params["final_norm_bias"], c.norm_eps)
    return stream, final


def unembed(c: GPT2Config, params: dict[str, Any], final: jax.Array) -> jax.Array:
    """Logits ``(B, T, V)`` from the final-normed stream."""
    head = params["embed"] if c.tie_embeddings else params["lm_head"]
    return jnp.einsum("btd,vd->btv", final, head)
