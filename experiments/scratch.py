"""Small Llama-style (RMSNorm) byte-level models trained from scratch here, and fine-tuning runs.

Shared by the trajectory, merge and optimizer experiments (cached per run). Text: the prose
splits of :mod:`experiments.data` as UTF-8 bytes (vocabulary 256). The base model is pre-trained
on split ``base``; run A fine-tunes it on more docstrings (``finetune_a``), run B on
standard-library source code without docstrings (``code``), with different data-order seeds, a
fresh AdamW state, gradient clipping and a high constant learning rate after a short warm-up
(residual charts barely move under short, gentle fine-tunes). Every saved checkpoint is stored in
its own hidden random chart."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from experiments.common import Context
from experiments.data import byte_tokens, windows

NAME = "scratch"


@dataclass(frozen=True)
class ScratchSizes:
    """Sizes of the from-scratch setting."""

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    batch: int
    seq: int
    base_steps: int
    base_lr: float
    ft_steps: int
    ft_lr: float
    every: int
    ft_warmup: int
    weight_decay: float = 0.1
    clip: float = 1.0

    def describe(self) -> str:
        return (f"Llama-style RMSNorm model, bytes (vocab 256), d = {self.d_model}, {self.n_layers} layers, "
                f"{self.n_heads} heads, SwiGLU d_ff = {self.d_ff}; batches of {self.batch}×{self.seq} bytes; "
                f"AdamW (weight decay {self.weight_decay}); base: {self.base_steps} steps, warm-up + cosine to peak lr "
                f"{self.base_lr:g}; fine-tunes: {self.ft_steps} steps, lr warm-up over {self.ft_warmup} steps to a "
                f"constant {self.ft_lr:g}, gradient clipping at global norm {self.clip:g}, a checkpoint every "
                f"{self.every} steps")


def sizes(ctx: Context) -> ScratchSizes:
    """Quick or full sizes."""
    if ctx.quick:
        return ScratchSizes(d_model=64, n_layers=2, n_heads=4, d_ff=192, batch=16, seq=64, base_steps=300,
                            base_lr=3e-3, ft_steps=500, ft_lr=3e-2, every=20, ft_warmup=50)
    return ScratchSizes(d_model=128, n_layers=2, n_heads=4, d_ff=384, batch=16, seq=64, base_steps=600,
                        base_lr=3e-3, ft_steps=3000, ft_lr=3e-2, every=50, ft_warmup=100)


def config(s: ScratchSizes):
    import gaugejax as gj

    return gj.tiny_config("llama", vocab_size=256, d_model=s.d_model, n_layers=s.n_layers, n_heads=s.n_heads,
                          n_kv_heads=s.n_heads, head_dim=s.d_model // s.n_heads, d_ff=s.d_ff, max_positions=1024)


def batches(ctx: Context, split: str, steps: int, s: ScratchSizes, name: str) -> np.ndarray:
    """``(steps, batch, seq)`` random windows of a split (seeded by ``name``)."""
    ids = byte_tokens(split)
    rng = ctx.rng(f"{NAME}/{name}")
    return np.stack([windows(ids, s.batch, s.seq, rng) for _ in range(steps)])


@dataclass
class BaseRun:
    """The pre-trained base: model (training chart), final AdamW state, losses, optimizer."""

    model: Any
    opt_state: Any
    losses: np.ndarray
    optimizer: Any
    sizes: ScratchSizes


@dataclass
class FineTuneRun:
    """A fine-tuning run: checkpoints (training chart), their hidden charts and stored copies."""

    steps: list[int]
    checkpoints: list[Any]
    hidden: list[Any]
    stored: list[Any]
    losses: np.ndarray
    split: str
    extra: dict = field(default_factory=dict)


def base_run(ctx: Context) -> BaseRun:
    """Pre-trains (once per run) the from-scratch base model."""

    def make():
        import optax

        import gaugejax as gj
        from gaugejax import train

        s = sizes(ctx)
        cfg = config(s)
        model = gj.random_model(cfg, seed=ctx.key(NAME, 0))
        sched = optax.warmup_cosine_decay_schedule(0.0, s.base_lr, max(s.base_steps // 20, 1), s.base_steps,
                                                   s.base_lr / 10)
        opt = train.adamw(sched, weight_decay=s.weight_decay)
        data = batches(ctx, "base", s.base_steps, s, "base")
        with ctx.task("from scratch: pre-training the base model", s.base_steps) as t:
            out = train.train(model, opt, data, callback=lambda *a: t.advance())
        return BaseRun(out.model, out.opt_state, out.losses, opt, s)

    return ctx.cached("scratch/base", make)


def finetune(ctx: Context, run: str, split: str, *, lr: float | None = None, steps: int | None = None,
             warmup: int | None = None) -> FineTuneRun:
    """Fine-tunes the base (once per run and setting) with checkpoints every ``every`` steps, each in a hidden chart.

    Args:
      run: run label (seeds the data order and the hidden charts).
      split: text split (:mod:`experiments.data`).
      lr, steps, warmup: override the sizes' fine-tuning learning rate, length and warm-up.
    """
    s = base_run(ctx).sizes
    lr = s.ft_lr if lr is None else lr
    steps = s.ft_steps if steps is None else steps
    warmup = s.ft_warmup if warmup is None else warmup

    def make():
        import optax

        import gaugejax as gj
        from gaugejax import train

        base = base_run(ctx)
        sched = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
        opt = optax.chain(optax.clip_by_global_norm(s.clip), train.adamw(sched, weight_decay=s.weight_decay))
        data = batches(ctx, split, steps, s, f"ft/{run}")
        ckpts, saved = [], []

        def keep(n, model, _state, _loss):
            t.advance()
            if (n + 1) % s.every == 0:
                ckpts.append(model)
                saved.append(n + 1)

        with ctx.task(f"from scratch: fine-tuning run {run}", steps) as t:
            out = train.train(base.model, opt, data, callback=keep)
        hidden = [gj.SignedPermutation.random(ctx.key(f"{NAME}/chart/{run}", i), s.d_model) for i in range(len(ckpts))]
        stored = [gj.apply_gauge(m, g) for m, g in zip(ckpts, hidden)]
        return FineTuneRun(saved, ckpts, hidden, stored, out.losses, split, {"lr": lr, "steps": steps})

    return ctx.cached(f"scratch/ft/{run}/{split}/{lr}/{steps}/{warmup}", make)


def runs_ab(ctx: Context) -> tuple[BaseRun, FineTuneRun, FineTuneRun]:
    """The base and its two fine-tuning runs of the trajectory and merge experiments: A on prose, B on code."""
    return base_run(ctx), finetune(ctx, "A", "finetune_a"), finetune(ctx, "B", "code")


def heldout_loss(model, tokens: np.ndarray, batch: int = 16) -> float:
    """Mean next-token cross-entropy (nats per byte) on ``tokens`` ``(rows, seq)``."""
    import jax.numpy as jnp

    vals = [float(_loss()(model.config, model.params, jnp.asarray(tokens[i:i + batch])))
            for i in range(0, len(tokens), batch)]
    return float(np.mean(vals))


@lru_cache(maxsize=1)
def _loss():
    """The jitted next-token loss (compiled once per config)."""
    import jax

    from gaugejax.train import next_token_loss

    return jax.jit(next_token_loss, static_argnums=0)
