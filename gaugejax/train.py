"""A small optax training loop for gaugejax models (next-token cross-entropy).

Optimises ``model.params`` (the plain dict pytree), so optimizer states are built over the same
structure as :func:`gaugejax.gauge_spec` and can be transported with
:func:`gaugejax.optim.transport_opt_state`.

Example:
  >>> import gaugejax as gj
  >>> from gaugejax import train
  >>> m = gj.random_model("llama", seed=0)
  >>> batches = train.markov_batches(0, m.config.vocab_size, steps=3, batch=2, seq=16)
  >>> run = train.train(m, train.adamw(1e-3), batches)
  >>> len(run.losses), run.model.d
  (3, 64)
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gaugejax.errors import GaugeError
from gaugejax.models import Model, family_module
from gaugejax.models.base import ModelConfig


class TrainResult(NamedTuple):
    """Outcome of :func:`train`.

    Attributes:
      model: the trained model (same config).
      opt_state: the optimizer state after the last step (over ``model.params``).
      losses: ``(steps,)`` float32 training losses (before each step's update).
    """

    model: Model
    opt_state: Any
    losses: np.ndarray


def adamw(learning_rate: float | optax.Schedule = 1e-3, weight_decay: float = 0.01, *, b1: float = 0.9,
          b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """``optax.adamw`` with our defaults (weight decay on every parameter)."""
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def next_token_loss(config: ModelConfig, params: Any, tokens: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy of ``tokens`` ``(B, T)`` (predict ``t+1`` from ``≤ t``)."""
    mod = family_module(config)
    dt = jnp.float64 if any(x.dtype == jnp.float64 for x in jax.tree.leaves(params)) else jnp.float32
    p = jax.tree.map(lambda x: x.astype(dt) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
    _, final = mod.hidden_states(config, p, tokens)
    logits = mod.unembed(config, p, final)[:, :-1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def make_step(config: ModelConfig, optimizer: optax.GradientTransformation) -> Callable:
    """A jitted ``step(params, opt_state, tokens) -> (params, opt_state, loss)``.

    Example:
      >>> import gaugejax as gj
      >>> m = gj.random_model("llama")
      >>> opt = adamw(1e-3)
      >>> step = make_step(m.config, opt)
      >>> p, s, loss = step(m.params, opt.init(m.params), jnp.ones((2, 8), jnp.int32))
      >>> bool(loss > 0)
      True
    """

    @jax.jit
    def step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(partial(next_token_loss, config))(params, tokens)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def train(model: Model, optimizer: optax.GradientTransformation, batches: Iterable[Any], *,
          opt_state: Any = None, callback: Callable[[int, Model, Any, float], None] | None = None) -> TrainResult:
    """Trains ``model`` for one step per batch.

    Args:
      model: the starting model.
      optimizer: an optax transformation.
      batches: iterable of integer token arrays ``(B, T)`` (e.g. :func:`markov_batches`).
      opt_state: a state to resume from (default: ``optimizer.init(model.params)``).
      callback: called after every step as ``callback(step, model, opt_state, loss)``.

    Returns:
      :class:`TrainResult`.
    """
    step = make_step(model.config, optimizer)
    params = model.params
    state = optimizer.init(params) if opt_state is None else opt_state
    losses = []
    for n, tokens in enumerate(batches):
        tokens = jnp.asarray(tokens, jnp.int32)
        if tokens.ndim != 2:
            raise GaugeError(f"batch {n} has shape {tuple(tokens.shape)}; expected (batch, seq)")
        params, state, loss = step(params, state, tokens)
        losses.append(loss)
        if callback is not None:
            callback(n, Model(model.config, params), state, float(loss))
    return TrainResult(Model(model.config, params), state, np.asarray(jnp.stack(losses)) if losses else np.zeros(0))


def markov_batches(seed: int, vocab_size: int, *, steps: int, batch: int = 8, seq: int = 32,
                   order_seed: int | None = None, concentration: float = 0.1) -> np.ndarray:
    """Token batches from a random sparse bigram Markov chain: structured, learnable, offline.

    Args:
      seed: seed of the sampled sequences.
      vocab_size: number of token ids.
      steps, batch, seq: output shape ``(steps, batch, seq)``.
      order_seed: seed of the chain's transition table (default ``seed``); runs on "different
        text" share a table and differ in ``seed``, or differ in both.
      concentration: Dirichlet concentration of each row (small = peaked, easy to learn).

    Returns:
      int32 ``(steps, batch, seq)``.

    Example:
      >>> markov_batches(0, 32, steps=2, batch=3, seq=5).shape
      (2, 3, 5)
    """
    table_rng = np.random.default_rng(seed if order_seed is None else order_seed)
    trans = table_rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size)
    cdf = np.cumsum(trans, axis=1)
    cdf[:, -1] = 1.0
    rng = np.random.default_rng([seed, 1])
    n = steps * batch
    out = np.empty((n, seq), np.int32)
    out[:, 0] = rng.integers(0, vocab_size, n)
    u = rng.random((n, seq))
    for t in range(1, seq):
        rows = cdf[out[:, t - 1]]
        out[:, t] = np.minimum((rows < u[:, t:t + 1]).sum(axis=1), vocab_size - 1)
    return out.reshape(steps, batch, seq)
