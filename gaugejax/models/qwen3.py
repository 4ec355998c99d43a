"""Qwen3: Llama-style blocks with an RMSNorm over each query and key head (``q_norm``, ``k_norm``).

Block: ``x = x + attn(rms(x)); x = x + mlp(rms(x))`` where attention normalises every q/k head
(over ``head_dim``) before RoPE. The q/k norm gains act on ``head_dim``, not on the residual
stream: gauge role NONE. Layers listed as ``sliding_attention`` use a sliding window.
"""

from __future__ import annotations

from typing import Any

from gaugejax.models import dense as D
from gaugejax.models.config_keys import Keys, get_bool, get_int
from gaugejax.models.dense import DenseConfig, context, embed, final_norm  # noqa: F401  (the runner's pieces)
from gaugejax.models.dense import pre_norm_block as block, pre_norm_params as params  # noqa: F401  (its table, block)

KEYS = Keys(computed=D.COMMON_KEYS | {"hidden_act", "use_sliding_window", "sliding_window", "max_window_layers",
                                      "layer_types"})
"""The ``config.json`` keys computed (everything else but the common inert keys is refused)."""
_DEFAULTS = dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, head_dim=128, max_position_embeddings=32768,
                 rms_norm_eps=1e-6, tie_word_embeddings=False)
"""transformers' ``Qwen3Config`` defaults."""


def config_from_hf(cfg: dict) -> DenseConfig:
    """The config of a ``qwen3`` ``config.json`` (closed world: see :data:`KEYS`)."""
    fields = D.common_fields(cfg, KEYS, _DEFAULTS, "qwen3")
    n = fields["n_layers"]
    window = get_int(cfg, "sliding_window", 4096, none_ok=True) if get_bool(cfg, "use_sliding_window", False) else None
    start = get_int(cfg, "max_window_layers", 28, low=0)
    sliding = D.layer_flags(cfg, "layer_types", n, "sliding_attention",
                            [window is not None and i >= start for i in range(n)])
    theta, scaling = D.rope(cfg)
    return D.check_sliding(DenseConfig(
        **fields, activation=D.activation(cfg, "hidden_act", "silu"), rope_theta=theta, rope_scaling=scaling,
        sliding_window=window, sliding_layers=sliding if any(sliding) else (), qk_norm="head"))


def config_to_hf(c: DenseConfig) -> dict[str, Any]:
    """The ``config.json`` dict of a config."""
    cfg = D.common_to_hf(c, "Qwen3ForCausalLM")
    cfg.update(hidden_act=c.activation, use_sliding_window=c.sliding_window is not None,
               sliding_window=c.sliding_window, layer_types=D.layer_types_to_hf(c))
    return cfg
