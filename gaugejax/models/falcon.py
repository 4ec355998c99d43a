"""Falcon (``FalconForCausalLM``): LayerNorm, rotary, a fused ``query_key_value`` in three layouts.

Blocks, as transformers runs them:

* parallel (Falcon-7B: ``parallel_attn``): ``h = ln(x); x = x + attn(h) + mlp(h)``;
* new decoder architecture (Falcon-40B/180B): ``x = x + attn(ln_attn(x)) + mlp(ln_mlp(x))``
  (one shared LayerNorm when ``num_ln_in_parallel_attn == 1``);
* sequential: ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``.

The fused ``query_key_value`` rows are, per layout: grouped ``(kv_heads, heads/kv_heads + 2,
head_dim)`` (new architecture: each group's queries, then its key and value), ``(heads + 2,
head_dim)`` (multi-query: all queries, one key, one value) or ``(heads, 3, head_dim)``. The whole
matrix reads the stream, so it is one ``READ`` parameter and the block splits its output. Gauge
group ``S_d × {±1}``. ALiBi checkpoints (Falcon-RW) are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jax

from gaugejax.errors import CheckpointError
from gaugejax.models import layers as L
from gaugejax.models import lnshared as S
from gaugejax.models import table as T
from gaugejax.models.config_keys import Keys, get_bool, get_choice, get_float, get_int, refuse, rope_from_hf
from gaugejax.models.lnshared import embed, final_norm  # noqa: F401  (this family's forward pieces)
from gaugejax.models.table import NONE, READ, VECTOR, WRITE, Param


@dataclass(frozen=True)
class FalconConfig(S.LayerNormConfig):
    """Falcon config.

    Attributes:
      layout: ``"grouped"`` (new decoder architecture), ``"multi_query"`` or ``"per_head"`` (the
        fused ``query_key_value`` rows, see the module docstring).
      n_kv_heads: key/value heads (1 for multi-query).
      parallel: attention and MLP add in parallel.
      two_norms: separate ``ln_attn`` / ``ln_mlp`` (new architecture).
      bias: every linear layer has a bias.
      rope_theta: RoPE base.
    """

    family: str = "falcon"
    model_type: str = "falcon"
    activation: str = "gelu"
    tie_embeddings: bool = True
    layout: str = "multi_query"
    n_kv_heads: int = 1
    parallel: bool = True
    two_norms: bool = False
    bias: bool = False
    rope_theta: float = 10000.0

    def __post_init__(self):
        if error := layout_error(self.layout, self.n_heads, self.n_kv_heads, self.parallel, self.two_norms):
            raise CheckpointError(f"FalconConfig: {error}")


LAYOUTS = ("multi_query", "grouped", "per_head")
"""The fused ``query_key_value`` layouts (see the module docstring)."""


def layout_error(layout: str, n_heads: int, n_kv_heads: int, parallel: bool, two_norms: bool) -> str | None:
    """Why a layout cannot hold these heads and blocks, as transformers builds them (``None`` if it can).

    Multi-query has one key/value head and per-head one per query head (transformers' modeling uses
    ``num_kv_heads`` only in the new decoder architecture, or to group per-head keys, where any
    other value fails); only the grouped layout (new architecture) has ``n_kv_heads`` groups, always
    in parallel blocks, and only it has two LayerNorms.

    Example:
      >>> layout_error("multi_query", 4, 2, True, False)
      "layout 'multi_query' has exactly 1 key/value head (got n_kv_heads=2); layout 'grouped' (the new decoder architecture) has 2"
      >>> layout_error("grouped", 4, 2, True, True) is None
      True
    """
    if layout not in LAYOUTS:
        return f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})"
    want = {"multi_query": 1, "per_head": n_heads}.get(layout)
    if want is not None and n_kv_heads != want:
        return (f"layout {layout!r} has exactly {want} key/value head{'s' if want > 1 else ''} (got n_kv_heads="
                f"{n_kv_heads}); layout 'grouped' (the new decoder architecture) has {n_kv_heads}")
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        return f"{n_heads} query heads are not a multiple of {n_kv_heads} key/value heads"
    if layout != "grouped" and two_norms:
        return "two LayerNorms (ln_attn, ln_mlp) exist only in the grouped layout (the new decoder architecture)"
    if layout == "grouped" and not parallel:
        return "the grouped layout (the new decoder architecture) runs attention and MLP in parallel"
    return None


KEYS = Keys(
    computed={"vocab_size", "hidden_size", "n_embed", "num_hidden_layers", "num_attention_heads", "num_kv_heads",
              "num_ln_in_parallel_attn", "layer_norm_epsilon", "new_decoder_architecture", "multi_query",
              "parallel_attn", "bias", "max_position_embeddings", "rope_parameters", "rope_scaling", "rope_theta",
              "ffn_hidden_size", "activation", "tie_word_embeddings"},
    inert={"hidden_dropout", "num_key_value_heads"},
    fixed={"alibi": (False,), "apply_residual_connection_post_layernorm": (False,)},
)
"""The ``config.json`` keys computed, inert or fixed (everything else is refused).

``n_embed`` is the old name of ``hidden_size``. ``num_key_value_heads`` is what transformers 5
derives from ``num_kv_heads`` and the layout and writes on save; its Falcon modeling never reads it
(inert), but a value that contradicts the key/value heads the attention has is refused."""


def config_from_hf(cfg: dict) -> FalconConfig:
    """Builds the config from a Hugging Face Falcon ``config.json`` dict (closed world: :data:`KEYS`)."""
    KEYS.check(cfg)
    d = get_int(cfg, "n_embed") if cfg.get("n_embed") is not None else get_int(cfg, "hidden_size", 4544)
    nh = get_int(cfg, "num_attention_heads", 71)
    if d % nh or (d // nh) % 2:
        refuse(cfg, "num_attention_heads", f"{nh} heads must split the width {d} into even head sizes")
    new = get_bool(cfg, "new_decoder_architecture", False)
    parallel = get_bool(cfg, "parallel_attn", True)
    n_ln = get_int(cfg, "num_ln_in_parallel_attn", None, none_ok=True)
    if new and not parallel:
        refuse(cfg, "parallel_attn", "the new decoder architecture runs attention and MLP in parallel")
    if not new and n_ln not in (None, 1):
        refuse(cfg, "num_ln_in_parallel_attn", "two parallel LayerNorms exist only in the new decoder architecture")
    layout, nkv = _kv_layout(cfg, nh, new)
    theta, _, partial = rope_from_hf(cfg, kinds=("default",))
    if partial != 1.0:
        refuse(cfg, "rope_parameters", "partial_rotary_factor != 1 is not computed for Falcon")
    return FalconConfig(
        vocab_size=get_int(cfg, "vocab_size"),
        d_model=d,
        n_layers=get_int(cfg, "num_hidden_layers", 32),
        n_heads=nh,
        d_ff=get_int(cfg, "ffn_hidden_size", None, none_ok=True) or 4 * d,
        norm_eps=get_float(cfg, "layer_norm_epsilon", 1e-5),
        tie_embeddings=get_bool(cfg, "tie_word_embeddings", True),
        activation=get_choice(cfg, "activation", "gelu", L.ACTIVATIONS),
        layout=layout,
        n_kv_heads=nkv,
        parallel=parallel,
        two_norms=new and n_ln in (None, 2),
        bias=get_bool(cfg, "bias", False),
        rope_theta=theta,
        max_positions=get_int(cfg, "max_position_embeddings", 2048),
        hf_extra=KEYS.extra(cfg),
    )


def _kv_layout(cfg: dict, nh: int, new: bool) -> tuple[str, int]:
    """The layout and key/value heads, as transformers' Falcon attention reads them:
    ``num_kv_heads if (new_decoder_architecture or not multi_query) else 1`` (``num_kv_heads``
    defaults to the query heads), checked against ``num_key_value_heads`` when the file has it."""
    multi_query = get_bool(cfg, "multi_query", True)
    nkv = get_int(cfg, "num_kv_heads", None, none_ok=True) or nh
    layout = "grouped" if new else "multi_query" if multi_query else "per_head"
    if layout == "multi_query":
        nkv = 1
    elif layout == "per_head" and nkv != nh:
        refuse(cfg, "num_kv_heads", f"the per-head layout (multi_query=false) has one key/value head per query head "
                                    f"({nh}); transformers cannot run other values: remove the key")
    if nh % nkv:
        refuse(cfg, "num_kv_heads", f"{nh} query heads are not a multiple of {nkv} key/value heads")
    written = get_int(cfg, "num_key_value_heads", None, none_ok=True)
    if written is not None and written != nkv:
        refuse(cfg, "num_key_value_heads", f"it contradicts num_kv_heads/multi_query/new_decoder_architecture, which "
                                           f"give {nkv} key/value heads; remove it (transformers derives it)")
    return layout, nkv


def config_to_hf(c: FalconConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = json.loads(c.hf_extra)
    for k in ("n_embed", "rope_scaling"):
        cfg.pop(k, None)
    new = c.layout == "grouped"
    cfg.update(
        model_type="falcon", architectures=["FalconForCausalLM"], vocab_size=c.vocab_size, hidden_size=c.d_model,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_kv_heads=c.n_kv_heads if new else c.n_heads,
        num_key_value_heads=c.n_kv_heads,
        layer_norm_epsilon=c.norm_eps, new_decoder_architecture=new, multi_query=c.layout == "multi_query",
        parallel_attn=c.parallel, num_ln_in_parallel_attn=(2 if c.two_norms else 1) if new else None, bias=c.bias,
        max_position_embeddings=c.max_positions, rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        ffn_hidden_size=c.d_ff, activation=c.activation, tie_word_embeddings=c.tie_embeddings,
    )
    return cfg


_H = "transformer.h.{i}."


def params(c: FalconConfig) -> list[Param]:
    """The parameter table (the fused ``query_key_value`` is one reading matrix)."""
    d, f = c.d_model, c.d_ff
    qkv = (c.n_heads + 2 * c.n_kv_heads) * c.head_dim
    table = T.embed_rows(c, "transformer.word_embeddings.weight")
    if c.two_norms:
        table += S.ln_rows("attn_norm", d, _H + "ln_attn") + S.ln_rows("mlp_norm", d, _H + "ln_mlp")
    else:
        table += S.ln_rows("attn_norm", d, _H + "input_layernorm")
        if not c.parallel:
            table += S.ln_rows("mlp_norm", d, _H + "post_attention_layernorm")
    table += [Param("qkv", (qkv, d), READ, _H + "self_attention.query_key_value.weight"),
              Param("o", (d, d), WRITE, _H + "self_attention.dense.weight", shard=1),
              Param("fc_in", (f, d), READ, _H + "mlp.dense_h_to_4h.weight", shard=0),
              Param("fc_out", (d, f), WRITE, _H + "mlp.dense_4h_to_h.weight", shard=1)]
    if c.bias:
        table += [Param("qkv_bias", (qkv,), NONE, _H + "self_attention.query_key_value.bias"),
                  Param("o_bias", (d,), VECTOR, _H + "self_attention.dense.bias"),
                  Param("fc_in_bias", (f,), NONE, _H + "mlp.dense_h_to_4h.bias", shard=0),
                  Param("fc_out_bias", (d,), VECTOR, _H + "mlp.dense_4h_to_h.bias")]
    return table + S.ln_rows("final_norm", d, "transformer.ln_f") + S.head_rows(c)


def context(c: FalconConfig, t: int) -> dict[str, jax.Array]:
    """Rotary ``cos``/``sin`` and the causal mask for ``t`` positions."""
    return S.rope_context(t, c.head_dim, c.rope_theta)


def split_qkv(c: FalconConfig, fused: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Queries ``(B, T, heads, H)`` and keys, values ``(B, T, kv_heads, H)`` from the fused projection."""
    b, t, _ = fused.shape
    hd, nh, nkv = c.head_dim, c.n_heads, c.n_kv_heads
    if c.layout == "grouped":
        g = fused.reshape(b, t, nkv, nh // nkv + 2, hd)
        return g[:, :, :, :-2].reshape(b, t, nh, hd), g[:, :, :, -2], g[:, :, :, -1]
    if c.layout == "multi_query":
        g = fused.reshape(b, t, nh + 2, hd)
        return g[:, :, :nh], g[:, :, nh:nh + 1], g[:, :, nh + 1:]
    g = fused.reshape(b, t, nh, 3, hd)
    return g[..., 0, :], g[..., 1, :], g[..., 2, :]


def block(c: FalconConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """Parallel ``x + attn(ln_a(x)) + mlp(ln_m(x))`` (``ln_m = ln_a`` unless two norms), or sequential."""
    h = S.ln(c, p, "attn_norm", x)
    attn = S.rotary_attention(p, *split_qkv(c, L.linear(h, p["qkv"], p.get("qkv_bias"))), ctx)
    if c.two_norms:
        return x + attn + S.biased_mlp(c, p, S.ln(c, p, "mlp_norm", x))
    if c.parallel:
        return x + attn + S.biased_mlp(c, p, h)
    x = x + attn
    return x + S.biased_mlp(c, p, S.ln(c, p, "mlp_norm", x))
