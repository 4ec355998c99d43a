"""Model configs, the :class:`Model` pytree and the family registry.

A model is a frozen ``config`` (static, hashable) plus ``params``: a dict pytree in PyTorch
``nn.Linear`` layout ``(out, in)``, with per-layer parameters stacked on a leading layer axis under
``params["layers"]`` so blocks run under ``lax.scan``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


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
      hf_extra: the rest of ``config.json`` (JSON text), written back unchanged on save.
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
    hf_extra: str = field(default="{}", compare=False, repr=False)

    @property
    def norm(self) -> str:
        """``"rmsnorm"`` or ``"layernorm"``: decides the gauge group (B_d or S_d × {±1})."""
        raise NotImplementedError

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class LlamaConfig(ModelConfig):
    """Llama-family config (RMSNorm, RoPE, GQA, SwiGLU).

    Attributes:
      n_kv_heads: key/value heads (GQA when fewer than ``n_heads``).
      head_dim: per-head size (default ``d_model // n_heads``).
      rope_theta: RoPE base.
      rope_scaling: HF ``rope_scaling`` as JSON text (``linear``, ``dynamic``, ``llama3``) or ``None``.
      qkv_bias: q/k/v projections have biases (Qwen2).
      norm_offset: 1.0 for ``(1 + scale)`` gains (Gemma-style), else 0.0.
      sliding_window: attention window (Mistral), or ``None``.
    """

    n_kv_heads: int = 4
    head_dim: int = 16
    rope_theta: float = 10000.0
    rope_scaling: str | None = None
    qkv_bias: bool = False
    norm_offset: float = 0.0
    sliding_window: int | None = None
    max_positions: int = 2048

    @property
    def norm(self) -> str:
        return "rmsnorm"

    @property
    def rope_scaling_dict(self) -> dict | None:
        return None if self.rope_scaling is None else json.loads(self.rope_scaling)


@dataclass(frozen=True)
class GPT2Config(ModelConfig):
    """GPT-2 config (LayerNorm with bias, learned positions, GELU MLP, tied embeddings)."""

    family: str = "gpt2"
    model_type: str = "gpt2"
    max_positions: int = 1024
    activation: str = "gelu_new"
    tie_embeddings: bool = True

    @property
    def norm(self) -> str:
        return "layernorm"


@dataclass(frozen=True)
class NeoXConfig(ModelConfig):
    """GPT-NeoX config (LayerNorm, partial rotary, optional parallel residual)."""

    family: str = "neox"
    model_type: str = "gpt_neox"
    rotary_pct: float = 0.25
    rope_theta: float = 10000.0
    parallel_residual: bool = True
    max_positions: int = 2048
    activation: str = "gelu"

    @property
    def norm(self) -> str:
        return "layernorm"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_pct)


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


class HFTensor(NamedTuple):
    """Where one Hugging Face tensor lives in our params.

    Attributes:
      name: the safetensors key, e.g. ``model.layers.3.self_attn.q_proj.weight``.
      key: the key in ``params`` (``params["layers"][key]`` when ``layer`` is not None).
      layer: the layer index, or None for global tensors.
      transpose: the HF tensor is stored ``(in, out)`` (GPT-2 ``Conv1D``).
    """

    name: str
    key: str
    layer: int | None
    transpose: bool = False


def init_from_shapes(shapes: dict[str, Any], n_layers: int, key: jax.Array, dtype=jnp.float32, *,
                     gain_offset: float = 0.0) -> dict[str, Any]:
    """Random parameters for a shape dict (per-layer shapes under ``"layers"``).

    Names ending in ``norm`` are gains, drawn from ``U(0.5, 1.5)`` so that no two coincide (with
    tied gains the symmetry group is larger than ``B_d`` and equivariance tests would say nothing
    about the rule); names ending in ``bias`` are ``0.1·N(0, 1)``; matrices are ``N(0, 1/fan_in)``.
    """
    names = [("", n) for n in shapes if n != "layers"] + [("layers", n) for n in shapes.get("layers", {})]
    keys = jax.random.split(key, len(names))

    def make(name: str, shape: tuple[int, ...], k: jax.Array) -> jax.Array:
        if name.endswith("norm"):
            return jax.random.uniform(k, shape, dtype, 0.5, 1.5) - gain_offset
        if name.endswith("bias"):
            return 0.1 * jax.random.normal(k, shape, dtype)
        return jax.random.normal(k, shape, dtype) / jnp.sqrt(jnp.asarray(shape[-1], dtype))

    params: dict[str, Any] = {"layers": {}} if "layers" in shapes else {}
    for (group, name), k in zip(names, keys):
        if group:
            params["layers"][name] = make(name, (n_layers, *shapes["layers"][name]), k)
        else:
            params[name] = make(name, shapes[name], k)
    return params
