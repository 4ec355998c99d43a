"""SmolLM3: Llama-style blocks where some layers use no rotary embedding ("NoPE" layers).

Block: ``x = x + attn(rms(x)); x = x + mlp(rms(x))``; ``no_rope_layers[i]`` (1: RoPE, 0: none)
says whether layer ``i`` rotates q and k (by default every fourth layer does not); layers listed
as ``sliding_attention`` use a sliding window. The gauge acts as on Llama (optional ``o``/``down``
biases are written into the stream).
"""

from __future__ import annotations

from typing import Any

from gaugejax.models import dense as D
from gaugejax.models.config_keys import Keys, get_bool, get_int
from gaugejax.models.dense import DenseConfig, context, embed, final_norm  # noqa: F401  (the runner's pieces)
from gaugejax.models.dense import pre_norm_block as block, pre_norm_params as params  # noqa: F401  (its table, block)

KEYS = Keys(computed=D.COMMON_KEYS | {"hidden_act", "mlp_bias", "use_sliding_window", "sliding_window", "layer_types",
                                      "no_rope_layers", "no_rope_layer_interval"},
            inert={"max_window_layers", "pretraining_tp"})
"""The ``config.json`` keys computed and inert (``SmolLM3Config`` has no ``max_window_layers``, and
``pretraining_tp`` only split matmuls in old transformers); everything else is refused."""
_DEFAULTS = dict(vocab_size=128256, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                 num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=32768, rms_norm_eps=1e-6,
                 tie_word_embeddings=True)
"""transformers' ``SmolLM3Config`` defaults (no ``head_dim``: ``hidden_size // num_attention_heads``)."""


def config_from_hf(cfg: dict) -> DenseConfig:
    """The config of a ``smollm3`` ``config.json`` (closed world: see :data:`KEYS`)."""
    fields = D.common_fields(cfg, KEYS, _DEFAULTS, "smollm3")
    n = fields["n_layers"]
    every = get_int(cfg, "no_rope_layer_interval", 4)
    rope_on = D.layer_flags(cfg, "no_rope_layers", n, 1, [(i + 1) % every != 0 for i in range(n)])
    window = get_int(cfg, "sliding_window", None, none_ok=True)
    slide = get_bool(cfg, "use_sliding_window", False) and window is not None
    sliding = D.layer_flags(cfg, "layer_types", n, "sliding_attention", [slide and not r for r in rope_on])
    theta, scaling = D.rope(cfg, default_theta=2e6)
    return D.check_sliding(DenseConfig(
        **fields, activation=D.activation(cfg, "hidden_act", "silu"), rope_theta=theta, rope_scaling=scaling,
        mlp_bias=get_bool(cfg, "mlp_bias", False), rope_layers=() if all(rope_on) else rope_on,
        sliding_window=window, sliding_layers=sliding if any(sliding) else ()))


def config_to_hf(c: DenseConfig) -> dict[str, Any]:
    """The ``config.json`` dict of a config."""
    cfg = D.common_to_hf(c, "SmolLM3ForCausalLM")
    cfg.update(hidden_act=c.activation, mlp_bias=c.mlp_bias, use_sliding_window=any(c.sliding_layers),
               sliding_window=c.sliding_window, layer_types=D.layer_types_to_hf(c),
               no_rope_layers=[int(r) for r in (c.rope_layers or (True,) * c.n_layers)])
    return cfg
