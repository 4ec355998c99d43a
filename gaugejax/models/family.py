"""The family registry: each architecture family's declarations and what is derived from them.

A family module declares, once:

* a frozen config dataclass, ``config_from_hf(dict)`` and ``config_to_hf(config)``;
* ``params(config) -> list[Param]``: its parameter table (:mod:`gaugejax.models.table`);
* ``context``, ``embed``, ``block``, ``final_norm``: its pieces of the forward pass
  (:mod:`gaugejax.models.runner`).

:class:`Family` derives the rest (shapes, gauge spec, HF tensors, GGUF names, sharding axes,
initial values, the forward pass, the shared unembedding). Adding a family is one module plus an
entry in :data:`FAMILIES` and :data:`MODEL_TYPES`.

Example:
  >>> from gaugejax.models import tiny_config
  >>> fam = family_module(tiny_config("gpt2"))
  >>> fam.param_shapes(tiny_config("gpt2"))["layers"]["qkv"]
  (192, 64)
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.errors import CheckpointError
from gaugejax.models import bert, gemma, gpt2, granite, llama, neox, olmo2, qwen3, runner, smollm3, table
from gaugejax.models import cohere, falcon, gptj, moe, opt, phi, phi3, stablelm
from gaugejax.models.base import ModelConfig


@dataclass(frozen=True)
class Family:
    """One architecture family: its module and everything derived from its parameter table.

    Attributes:
      name: the family name (``llama``, ``gpt2``, ``neox``, ``bert``).
      module: the module with the family's declarations.
    """

    name: str
    module: types.ModuleType

    def params(self, c: ModelConfig) -> list[table.Param]:
        """The parameter table of a config."""
        return self.module.params(c)

    def config_from_hf(self, cfg: dict) -> ModelConfig:
        return self.module.config_from_hf(cfg)

    def config_to_hf(self, c: ModelConfig) -> dict:
        return self.module.config_to_hf(c)

    def param_shapes(self, c: ModelConfig) -> dict[str, Any]:
        """Shapes (per layer inside ``"layers"``, without the layer axis)."""
        return table.param_shapes(self.params(c))

    def param_axes(self, c: ModelConfig) -> dict[str, Any]:
        """The gauge spec, per layer inside ``"layers"`` without the layer axis."""
        return table.param_axes(self.params(c))

    def hf_tensors(self, c: ModelConfig) -> list[table.HFTensor]:
        """Every safetensors key of the HF checkpoint and where it lives in ``params``."""
        return table.hf_tensors(self.params(c), c.n_layers)

    def hf_axes(self, c: ModelConfig) -> dict[str, Any]:
        """HF tensor name → gauge axes in the stored layout."""
        tbl = self.params(c)
        per_key = table.hf_axes(tbl)
        template = {p.name: p.hf for p in tbl}
        return {t.name: per_key[template[t.key]] for t in table.hf_tensors(tbl, c.n_layers)}

    def gguf_names(self, c: ModelConfig) -> dict[str, str]:
        """HF tensor name → llama.cpp GGUF tensor name."""
        return table.gguf_names(self.params(c), c.n_layers)

    def shard_axes(self, c: ModelConfig) -> dict[str, Any]:
        """The axis a ``model`` mesh axis may split, per stored parameter array (or ``None``)."""
        return table.shard_axes(self.params(c))

    def init_params(self, c: ModelConfig, key: jax.Array, dtype=jnp.float32) -> dict[str, Any]:
        """Random parameters with generic (pairwise distinct) norm gains."""
        return table.init_params(self.params(c), c.n_layers, key, dtype,
                                 gain_offset=getattr(c, "norm_offset", 0.0))

    def hidden_states(self, c: ModelConfig, params: Any, tokens: jax.Array, *,
                      hook: runner.Hook | None = None) -> tuple[jax.Array, jax.Array]:
        """See :func:`gaugejax.models.runner.hidden_states` (params already upcast)."""
        return runner.hidden_states(self.module, c, params, tokens, hook=hook)

    def unembed(self, c: ModelConfig, params: Any, final: jax.Array) -> jax.Array:
        """See :func:`gaugejax.models.runner.unembed`."""
        return runner.unembed(c, params, final)


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", llama), "gpt2": Family("gpt2", gpt2), "neox": Family("neox", neox),
    "bert": Family("bert", bert),
    "moe": Family("moe", moe), "phi3": Family("phi3", phi3), "gptj": Family("gptj", gptj),
    "phi": Family("phi", phi), "cohere": Family("cohere", cohere), "opt": Family("opt", opt),
    "stablelm": Family("stablelm", stablelm), "falcon": Family("falcon", falcon),
    "qwen3": Family("qwen3", qwen3), "gemma": Family("gemma", gemma), "olmo2": Family("olmo2", olmo2),
    "granite": Family("granite", granite), "smollm3": Family("smollm3", smollm3),
}
"""family name → :class:`Family`."""

MODEL_TYPES: dict[str, str] = {
    "llama": "llama", "mistral": "llama", "qwen2": "llama", "gpt2": "gpt2", "gpt_neox": "neox", "bert": "bert",
    "mixtral": "moe", "qwen2_moe": "moe", "qwen3_moe": "moe", "phi3": "phi3", "gptj": "gptj", "phi": "phi",
    "cohere": "cohere", "opt": "opt", "stablelm": "stablelm", "falcon": "falcon",
    "qwen3": "qwen3", "gemma": "gemma", "gemma2": "gemma", "gemma3_text": "gemma", "olmo2": "olmo2",
    "granite": "granite", "smollm3": "smollm3",
}
"""Hugging Face ``model_type`` → family."""

REFUSED_MODEL_TYPES: dict[str, str] = {
    "gemma3": "the multimodal Gemma 3 wraps a text_config beside a vision tower; gaugejax reads text-only "
              "Gemma3ForCausalLM checkpoints (model_type gemma3_text)",
}
"""Hugging Face ``model_type`` → why it is refused, where a more precise reason than "unsupported" helps."""


def family_module(config: ModelConfig) -> Family:
    """The :class:`Family` implementing ``config.family``."""
    try:
        return FAMILIES[config.family]
    except KeyError:
        raise CheckpointError(f"unknown model family {config.family!r} (known: {', '.join(FAMILIES)})") from None


def config_from_hf(cfg: dict) -> ModelConfig:
    """Config from a Hugging Face ``config.json`` dict; unknown architectures are refused."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f"config.json must hold a JSON object, got a {type(cfg).__name__}")
    mt = cfg.get("model_type")
    if not isinstance(mt, str):
        raise CheckpointError(f"config.json has no model_type string (got {mt!r})")
    if mt in REFUSED_MODEL_TYPES:
        raise CheckpointError(f"unsupported architecture model_type={mt!r}: {REFUSED_MODEL_TYPES[mt]}")
    if mt not in MODEL_TYPES:
        raise CheckpointError(
            f"unsupported architecture model_type={mt!r}; supported: {', '.join(sorted(MODEL_TYPES))}")
    return FAMILIES[MODEL_TYPES[mt]].config_from_hf(cfg)
