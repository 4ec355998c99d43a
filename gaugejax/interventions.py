"""Forward passes with interventions on the residual stream (steering).

Layer convention: ``layer`` indexes :func:`gaugejax.residual_stream`: 0 adds to the embeddings,
``i`` adds to the stream after block ``i`` (before block ``i + 1``), ``n_layers`` adds just before
the final norm. (llama.cpp's ``direction.{il}`` is added after its block ``il``, i.e. ``layer =
il + 1`` here when blocks are counted from 0.)

The edit goes through the block runner's residual hook (:func:`gaugejax.models.runner.hidden_states`):
the blocks before ``layer`` run, the vector is added, the remaining blocks continue from the edited
stream. Every family works the same way (BERT included: its embedding LayerNorm is applied once,
before index 0), and the computation is pure and ``jit``-compiled.

Example:
  >>> import numpy as np, gaugejax as gj
  >>> from gaugejax.interventions import forward_with_steering
  >>> m = gj.random_model("llama", seed=0)
  >>> t = np.array([[1, 2, 3, 4]])
  >>> same = forward_with_steering(m, t, 1, np.zeros(m.d), 4.0)
  >>> bool(np.allclose(same, gj.forward(m, t), atol=1e-5))
  True
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gaugejax.errors import GaugeError
from gaugejax.models import Model, family_module, runner
from gaugejax.models.base import ModelConfig


@partial(jax.jit, static_argnums=(0, 3))
def _steered(config: ModelConfig, params: Any, tokens: jax.Array, layer: int, vector: jax.Array,
             scale: jax.Array) -> jax.Array:
    params = runner.upcast(params)
    fam = family_module(config)
    _, final = fam.hidden_states(config, params, tokens,
                                 hook=(layer, lambda x: x + scale.astype(x.dtype) * vector.astype(x.dtype)))
    return fam.unembed(config, params, final)


def _check(model: Model, tokens: Any, layer: int, vector: Any):
    tokens = np.asarray(tokens)
    squeeze = tokens.ndim == 1
    if squeeze:
        tokens = tokens[None]
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise GaugeError(f"tokens must be integer (batch, seq) or (seq,), got {tokens.dtype}{tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= model.config.vocab_size):
        raise GaugeError(f"token ids must lie in [0, {model.config.vocab_size})")
    n = model.config.n_layers
    if not 0 <= int(layer) <= n:
        raise GaugeError(f"layer {layer} is outside [0, {n}] (0 = embeddings, {n} = before the final norm)")
    v = np.asarray(vector)
    if v.shape != (model.d,):
        raise GaugeError(f"steering vector has shape {v.shape}, the model's residual width is {model.d}")
    return jnp.asarray(tokens, jnp.int32), squeeze, jnp.asarray(v)


def forward_with_steering(model: Model, tokens: Any, layer: int, vector: Any, scale: float = 1.0) -> jax.Array:
    """Logits with ``scale * vector`` added to the residual stream at ``layer`` (every position).

    Args:
      model: a :class:`~gaugejax.models.Model`.
      tokens: integer ids ``(batch, seq)`` or ``(seq,)``.
      layer: residual-stream index in ``[0, n_layers]`` (see the module docstring).
      vector: ``(d,)`` direction in the model's chart.
      scale: multiplier.

    Returns:
      float32 logits ``(batch, seq, vocab)`` (no batch axis for 1-D tokens).

    Example:
      >>> import gaugejax as gj
      >>> m = gj.random_model("gpt2", seed=0)
      >>> forward_with_steering(m, [1, 2, 3], 2, np.ones(m.d), 2.0).shape
      (3, 256)
    """
    t, squeeze, v = _check(model, tokens, layer, vector)
    out = _steered(model.config, model.params, t, int(layer), v, jnp.asarray(scale, jnp.float32))
    return out[0] if squeeze else out


def steering_effect(model: Model, tokens: Any, layer: int, vector: Any, scale: float = 1.0) -> jax.Array:
    """Change of the next-token log-probabilities caused by the steering, ``(batch, seq, vocab)``."""
    base = jax.nn.log_softmax(_plain_logits(model, tokens), axis=-1)
    steered = jax.nn.log_softmax(forward_with_steering(model, tokens, layer, vector, scale), axis=-1)
    return steered - base


def _plain_logits(model: Model, tokens: Any) -> jax.Array:
    from gaugejax.models import forward

    return forward(model, tokens)


def effect_kept(reference: Any, other: Any) -> float:
    """Fraction of a steering effect kept: ``<other, ref> / <ref, ref>`` (1 = identical effect).

    Negative values mean the effect is reversed. Used to compare a transported vector's effect on
    the gauged model with the original vector's effect on the original model.

    Example:
      >>> effect_kept(np.array([1.0, 2.0]), np.array([0.5, 1.0]))
      0.5
    """
    r = np.asarray(reference, np.float64).ravel()
    o = np.asarray(other, np.float64).ravel()
    denom = float(r @ r)
    if denom == 0.0:
        raise GaugeError("the reference effect is zero: nothing to compare")
    return float(r @ o / denom)
