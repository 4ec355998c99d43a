"""The config fields every family shares and the :class:`Model` pytree.

A model is a frozen ``config`` (static, hashable) plus ``params``: a dict pytree in PyTorch
``nn.Linear`` layout ``(out, in)``, with per-layer parameters stacked on a leading layer axis under
``params["layers"]`` so blocks run under ``lax.scan``. Each family's config subclass lives in its
module (:mod:`gaugejax.models.llama`, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import jax


@dataclass(frozen=True)
class ModelConfig:
    """Fields every family shares.

    Attributes:
      family: ``"llama"`` (RMSNorm: Llama, Mistral, Qwen2, SmolLM, TinyLlama), ``"gpt2"`` or
        ``"neox"`` (LayerNorm).
      model_type: the Hugging Face ``model_type`` written back on save.
      vocab_size, d_model, n_layers, n_heads, d_ff: sizes.
      norm_eps: epsilon of every norm.
      tie_embeddings: the output head is the token embedding.
      activation: MLP non-linearity (HF ``hidden_act`` / ``activation_function``).
      logit_scale: logits are multiplied by it (1.0: no scaling).
      logit_softcap: logits are soft-capped as ``cap · tanh(logits / cap)`` (``None``: no cap).
      max_positions: the context length (HF ``max_position_embeddings``, GPT-2's ``n_positions``):
        learned position rows, or where RoPE scaling starts.
      hf_extra: ``config.json`` keys that do not affect the computation (JSON text), written back
        unchanged on save.
    """

    family: str = "llama"
    model_type: str = "llama"
    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    activation: str = "silu"
    logit_scale: float = 1.0
    logit_softcap: float | None = None
    max_positions: int = 2048
    hf_extra: str = field(default="{}", compare=False, repr=False)

    @property
    def norm(self) -> str:
        """``"rmsnorm"`` or ``"layernorm"``: decides the gauge group (B_d or S_d × {±1})."""
        raise NotImplementedError

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class Model:
    """A checkpoint in memory: a static config and a parameter pytree.

    Example:
      >>> import gaugejax as gj
      >>> m = gj.random_model("llama", seed=0)
      >>> m.config.d_model, m.params["embed"].shape
      (64, (256, 64))
    """

    config: ModelConfig
    params: Any

    def tree_flatten(self):
        return (self.params,), self.config

    @classmethod
    def tree_unflatten(cls, config, children):
        return cls(config, children[0])

    @property
    def d(self) -> int:
        return self.config.d_model


from gaugejax.models.table import HFTensor  # noqa: E402,F401  (re-exported: its historical home)
