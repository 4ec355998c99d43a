"""GPT-2: LayerNorm with bias, learned positions, GELU MLP, tied embeddings.

Block: ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``. HF stores GPT-2 matrices as ``Conv1D``
``(in, out)``; we keep ``(out, in)`` and transpose on load and save.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from gaugejax.models import layers as L
from gaugejax.models import lnshared as S
from gaugejax.models import table as T
from gaugejax.models.config_keys import Keys, get_bool, get_choice, get_int, refuse
from gaugejax.models.lnshared import embed_learned as embed, final_norm  # noqa: F401  (this family's pieces)
from gaugejax.models.table import Param


@dataclass(frozen=True)
class GPT2Config(S.LayerNormConfig):
    """GPT-2 config (LayerNorm with bias, learned positions, GELU MLP, tied embeddings).

    Attributes:
      max_positions: learned absolute positions (``n_positions``).
      scale_attn: attention scores are divided by ``sqrt(head_dim)`` (``scale_attn_weights``).
      scale_by_layer: block ``i``'s scores are also divided by ``i + 1``
        (``scale_attn_by_inverse_layer_idx``).
    """

    family: str = "gpt2"
    model_type: str = "gpt2"
    max_positions: int = 1024
    activation: str = "gelu_new"
    tie_embeddings: bool = True
    scale_attn: bool = True
    scale_by_layer: bool = False


KEYS = Keys(
    computed={"vocab_size", "n_embd", "n_layer", "n_head", "n_inner", "layer_norm_epsilon", "activation_function",
              "n_positions", "tie_word_embeddings", "scale_attn_weights", "scale_attn_by_inverse_layer_idx"},
    inert={"n_ctx", "resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_type", "summary_use_proj",
           "summary_activation", "summary_proj_to_labels", "summary_first_dropout", "reorder_and_upcast_attn",
           "n_special", "predict_special_tokens"},
)
"""The GPT-2 ``config.json`` keys (everything else is refused). ``reorder_and_upcast_attn`` only
changes the order and precision of a float16 product: the same function at float32. ``n_ctx`` is
not read by transformers; ``summary_*`` configure the double-heads model's extra head.
``n_special`` / ``predict_special_tokens`` (OpenAI GPT leftovers in gpt2-medium/large/xl's published
files) are read nowhere in transformers' ``models/gpt2`` (neither configuration nor modeling)."""
_ALIASES = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions", "num_attention_heads": "n_head",
            "num_hidden_layers": "n_layer"}


def _canonical(cfg: dict) -> dict:
    """Resolves transformers' ``attribute_map`` aliases (``hidden_size`` is ``n_embd``, ...)."""
    cfg = dict(cfg)
    for alias, key in _ALIASES.items():
        if alias in cfg:
            value = cfg.pop(alias)
            if key in cfg and cfg[key] != value:
                refuse({**cfg, alias: value}, alias, f"contradicts {key}={cfg[key]!r}")
            cfg[key] = value
    return cfg


def config_from_hf(cfg: dict) -> GPT2Config:
    """Builds the config from a Hugging Face GPT-2 ``config.json`` dict (closed world: see :data:`KEYS`)."""
    cfg = _canonical(cfg)
    KEYS.check(cfg)
    d, nh = S.heads(cfg, "n_embd", "n_head", "n_embd={d} is not a multiple of the head count")
    return GPT2Config(
        **S.gpt_sizes(cfg, d, nh),
        activation=get_choice(cfg, "activation_function", "gelu_new", L.ACTIVATIONS),
        max_positions=get_int(cfg, "n_positions", 1024),
        tie_embeddings=get_bool(cfg, "tie_word_embeddings", True),
        scale_attn=get_bool(cfg, "scale_attn_weights", True),
        scale_by_layer=get_bool(cfg, "scale_attn_by_inverse_layer_idx", False),
        hf_extra=KEYS.extra(cfg),
    )


def config_to_hf(c: GPT2Config) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    return S.to_hf(c, "GPT2LMHeadModel", **S.gpt_sizes_to_hf(c),
                   activation_function=c.activation, n_positions=c.max_positions, tie_word_embeddings=c.tie_embeddings,
                   scale_attn_weights=c.scale_attn, scale_attn_by_inverse_layer_idx=c.scale_by_layer)


_H = "transformer.h.{i}."


def params(c: GPT2Config) -> list[Param]:
    """The parameter table. HF ``Conv1D`` matrices are stored ``(in, out)`` (``transpose=True``)."""
    keys = {n: _H + k for n, k in (("attn_norm", "ln_1"), ("qkv", "attn.c_attn"), ("o", "attn.c_proj"),
                                  ("mlp_norm", "ln_2"), ("fc_in", "mlp.c_fc"), ("fc_out", "mlp.c_proj"))}
    return [*T.embed_rows(c, "transformer.wte.weight", "transformer.wpe.weight"),
            *S.fused_block_rows(c, {**keys, "final_norm": "transformer.ln_f"}, transpose=True), *S.head_rows(c)]


def context(c: GPT2Config, t: int) -> dict[str, jax.Array]:
    """The causal mask for ``t`` positions."""
    return {"mask": L.causal_mask(t)}


def block(c: GPT2Config, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``."""
    b, t, d = x.shape
    hd = d // c.n_heads
    q, k, v = jnp.split(L.linear(S.ln(c, p, "attn_norm", x), p["qkv"], p["qkv_bias"]), 3, axis=-1)
    q, k, v = (z.reshape(b, t, c.n_heads, hd) for z in (q, k, v))
    if not c.scale_attn:  # attention() divides by sqrt(hd): undo it on q
        q = q * jnp.sqrt(jnp.asarray(hd, q.dtype))
    if c.scale_by_layer:
        q = q / (ctx["layer"] + 1).astype(q.dtype)
    x = x + S.attend(p, q, k, v, ctx["mask"])
    return x + S.biased_mlp(c, p, S.ln(c, p, "mlp_norm", x))
