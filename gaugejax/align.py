"""Aligning two checkpoints: stream tokens through both, accumulate statistics, match, stop early.

:func:`align_activations` is model-independent: it consumes ``(X, Y)`` activation batches,
accumulates :mod:`gaugejax.stats` and, from ``min_tokens`` on, re-matches at geometrically spaced
token counts; it stops as soon as every coordinate is certified (:mod:`gaugejax.matching`: the
smallest margin exceeds the Fisher-z error bound with a union bound over all ``L·d²``
correlations), or when ``max_tokens`` is reached. Exact copies certify at ``min_tokens`` (their
matched correlations are 1, whose interval has zero width); drifted fine-tunes use more tokens.

:func:`align` runs two :class:`~gaugejax.models.Model` s on the same token rows and feeds their
residual streams (pre-final-norm, the stream the gauge acts on) at the chosen layers.

Example:
  >>> import gaugejax as gj
  >>> m = gj.random_model("llama", seed=0)
  >>> g = gj.SignedPermutation.random(1, m.config.d_model)
  >>> tokens = np.random.default_rng(0).integers(0, 256, (16, 64))
  >>> r = align(m, gj.apply_gauge(m, g), tokens)
  >>> r.gauge == g, r.certified, r.n_tokens
  (True, True, 256)
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from gaugejax import stats
from gaugejax.errors import CheckpointError, GaugeError
from gaugejax.match_result import MatchResult, warn_uncertain
from gaugejax.matching import match_stats
from gaugejax.runstate import DEFAULT_CHECKPOINT_TOKENS, RunState, fingerprint, load_state, save_state
from gaugejax.verify import Progress, as_token_rows, check_finite

__all__ = ["align", "align_activations", "default_layers", "check_pair", "DEFAULT_MIN_TOKENS",
           "DEFAULT_MAX_TOKENS"]

DEFAULT_MIN_TOKENS = 256
"""No certificate is issued on fewer tokens (guards the independence assumption of the bound)."""

DEFAULT_MAX_TOKENS = 16384
"""Streaming stops here even if some coordinates stay ambiguous (they are flagged)."""

_CHECK_GROWTH = 1.25


def default_layers(n_layers: int, k: int = 6) -> tuple[int, ...]:
    """``k`` residual-stream indices spread evenly over ``1..n_layers`` (after each block).

    Example:
      >>> default_layers(30)
      (1, 7, 13, 18, 24, 30)
      >>> default_layers(2)
      (1, 2)
    """
    k = max(1, min(k, n_layers))
    return tuple(int(round(x)) for x in np.linspace(1, n_layers, k))


def align_activations(
    batches: Iterable[tuple[Any, Any]],
    *,
    method: str = "sign_marginalized",
    min_tokens: int = DEFAULT_MIN_TOKENS,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    confidence: float = 0.99,
    layers: Sequence[int] | None = None,
    progress: Progress | None = None,
    total_tokens: int | None = None,
    names: tuple[str, str] = ("model A", "model B"),
    warn: bool = True,
    resume: RunState | None = None,
    checkpoint: Callable[[RunState], None] | None = None,
    checkpoint_tokens: int = DEFAULT_CHECKPOINT_TOKENS,
    **match_kwargs: Any,
) -> MatchResult:
    """Streams activation batches until the gauge is certified (or ``max_tokens``).

    Args:
      batches: iterable of ``(X, Y)``, each ``(L, n, d)`` (or ``(n, d)``) on the same tokens.
      method: matching method.
      min_tokens: tokens before the first check.
      max_tokens: stop after at least this many tokens (``None``: consume all batches).
      confidence: level of the certificate.
      layers: residual-stream index of each of the ``L`` layers (recorded in the result, named in
        errors).
      progress: ``progress(tokens done, tokens total)`` after every batch; the total is
        ``min(total_tokens, max_tokens)`` (``0`` when neither is known). Stopping early (certified)
        leaves ``done < total``.
      total_tokens: tokens the batches hold, if known (for ``progress`` only).
      names: what to call the sources of ``X`` and ``Y`` in errors.
      warn: warn about ambiguous coordinates of the final result.
      resume: a saved :class:`~gaugejax.runstate.RunState`; ``batches`` must start right after its
        ``n_tokens`` (the run then ends as the uninterrupted one would, bit for bit).
      checkpoint: ``checkpoint(state)`` every ``checkpoint_tokens`` tokens and at the end.
      checkpoint_tokens: tokens between checkpoints.
      **match_kwargs: ``group``, ``norm``, ``solver`` (see :func:`gaugejax.matching.match_correlation`).

    Returns:
      The final :class:`~gaugejax.matching.MatchResult`; ``n_tokens`` is the number used.

    Raises:
      NonFiniteError: a batch holds NaN or infinite activations (the message names the layer).
      GaugeError: no batches, or the two streams differ in width.

    Example:
      >>> X = np.random.default_rng(0).normal(size=(4096, 8)).astype(np.float32)
      >>> r = align_activations((X[i:i + 64], -X[i:i + 64]) for i in range(0, 4096, 64))
      >>> r.certified, r.n_tokens
      (True, 256)
    """
    budget = [x for x in (total_tokens, max_tokens) if x is not None]
    total = int(min(budget)) if budget else 0
    state = None
    n = 0
    next_check = max(int(min_tokens), 4)
    result: MatchResult | None = None
    if resume is not None:
        state, n, next_check = resume.stats, resume.n_tokens, resume.next_check
        if resume.finished:
            batches = ()
    saved = n
    owned = False  # the state is this loop's own: not the caller's resume state, not given to checkpoint()
    for x, y in batches:
        x = np.asarray(x) if not hasattr(x, "shape") else x
        y = np.asarray(y) if not hasattr(y, "shape") else y
        if state is None:
            if x.shape[-1] != y.shape[-1]:
                raise GaugeError(f"cannot align residual streams of different widths ({x.shape[-1]} vs {y.shape[-1]})")
            state = stats.init(x.shape[-1], n_layers=None if x.ndim == 2 else x.shape[0])
        for what, h in zip(names, (x, y)):
            check_finite(h[None] if h.ndim == 2 else h, labels=layers, what=what)
        state, owned = (stats.update_inplace if owned else stats.update)(state, x, y), True
        n += int(x.shape[-2])
        done = max_tokens is not None and n >= max_tokens
        if n >= next_check or done:
            result = match_stats(state, method, layer_labels=layers, confidence=confidence, warn=False,
                                           **match_kwargs)
            next_check = max(next_check + 1, int(n * _CHECK_GROWTH))
            done = done or result.certified
        if progress is not None:
            progress(min(n, total) if total else n, total)
        if checkpoint is not None and not done and n - saved >= checkpoint_tokens:
            checkpoint(RunState(state, n, next_check, False))
            saved, owned = n, False
        if done:
            break
    if state is None:
        raise GaugeError("no activations to align (empty token source)")
    if checkpoint is not None:
        checkpoint(RunState(state, n, next_check, True))
    if result is None or result.n_tokens != n:
        result = match_stats(state, method, layer_labels=layers, confidence=confidence, warn=False, **match_kwargs)
    if warn:
        warn_uncertain(result, stacklevel=2)
    return result


def check_pair(config_a: Any, config_b: Any) -> None:
    """Raises :class:`~gaugejax.errors.CheckpointError` unless two configs can share a gauge (same
    family, width, depth and vocabulary)."""
    fa = (config_a.family, config_a.d_model, config_a.n_layers)
    fb = (config_b.family, config_b.d_model, config_b.n_layers)
    if config_a.family != config_b.family:
        raise CheckpointError(f"different architectures: {config_a.family} vs {config_b.family}")
    if fa != fb:
        raise CheckpointError(f"the checkpoints differ in shape: d={fa[1]}, {fa[2]} layers vs d={fb[1]}, {fb[2]} layers")
    if config_a.vocab_size != config_b.vocab_size:
        raise CheckpointError(f"different vocabularies: {config_a.vocab_size} vs {config_b.vocab_size} tokens")


def align(
    model_a: Any,
    model_b: Any,
    tokens: Any,
    *,
    layers: Sequence[int] | None = None,
    method: str = "sign_marginalized",
    batch_rows: int = 2,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    confidence: float = 0.99,
    progress: Progress | None = None,
    names: tuple[str, str] = ("model A", "model B"),
    warn: bool = True,
    mesh: Any = None,
    compute_dtype: Any = None,
    stream: bool = False,
    state_file: str | os.PathLike | None = None,
    state_key: str = "",
    checkpoint_tokens: int = DEFAULT_CHECKPOINT_TOKENS,
    **match_kwargs: Any,
) -> MatchResult:
    """Recovers the gauge A→B of two checkpoints from their residual streams on ``tokens``.

    Args:
      model_a, model_b: :class:`gaugejax.models.Model` of the same family and shape.
      tokens: ``(rows, seq)`` integer ids (``(seq,)`` is one row).
      layers: residual-stream indices (0 = embeddings, i = after block i; default
        :func:`default_layers`). The last index is taken before the final norm.
      method: matching method; the gauge group follows the models' norm (LayerNorm: ``S_d × {±1}``).
      batch_rows: token rows per forward pass.
      progress: ``progress(tokens done, tokens total)`` after every batch (total:
        ``min(tokens.size, max_tokens)``).
      min_tokens, max_tokens, confidence, names, warn: see :func:`align_activations`.
      mesh: a :class:`jax.sharding.Mesh` with a ``data`` and/or ``model`` axis, of either axis type
        (e.g. ``jax.make_mesh((2, 4), ("data", "model"))``), or ``"data=N,model=M"``: token rows run
        over ``data``, parameters are split over ``model`` (:mod:`gaugejax.sharding`, which runs it
        with every axis ``Auto``; other axis names are refused).
      compute_dtype: dtype of the models' matmuls and streams (``bfloat16`` or float32, the
        default); norms, softmax and the statistics stay float32.
      stream: run block by block (:func:`gaugejax.streaming.align_streamed`, one block of each
        model in memory); the models may then also be checkpoint paths. Uses the first
        ``max_tokens`` tokens, without early stop.
      state_file: ``.npz`` checkpoint of the statistics (:mod:`gaugejax.runstate`): resumed when it
        exists, updated every ``checkpoint_tokens`` tokens.
      state_key: extra text for the state fingerprint (e.g. checkpoint fingerprints).
      **match_kwargs: ``group``, ``solver``.

    Raises:
      CheckpointError: the models differ in family, width, depth or vocabulary.
      NonFiniteError: a model's activations are NaN or infinite (the message names the layer).
      GaugeError: bad ``layers`` or no tokens.
    """
    from gaugejax.models import residual_stream

    if stream:
        if state_file is not None or mesh is not None:
            raise GaugeError("state_file and mesh are not supported with stream=True yet; drop one of them")
        return _align_streamed(model_a, model_b, tokens, layers=layers, method=method, batch_rows=batch_rows,
                               max_tokens=max_tokens, confidence=confidence, progress=progress, names=names,
                               warn=warn, compute_dtype=compute_dtype, **match_kwargs)
    ca, cb = model_a.config, model_b.config
    check_pair(ca, cb)
    tok = as_token_rows(tokens)
    layers = tuple(default_layers(ca.n_layers) if layers is None else (int(i) for i in layers))
    bad = [i for i in layers if not 0 <= i <= ca.n_layers]
    if bad or not layers:
        raise GaugeError(f"layers must lie in 0..{ca.n_layers} (0 = embeddings), got {list(layers)}")
    idx = np.asarray(layers)
    match_kwargs.setdefault("norm", ca.norm)
    batch_rows = max(1, int(batch_rows))

    if tok.min() < 0 or tok.max() >= ca.vocab_size:
        raise GaugeError(f"token ids must lie in [0, {ca.vocab_size}), got [{tok.min()}, {tok.max()}]")
    run, on_mesh = _placed(model_a, model_b, mesh)
    resume, checkpoint = None, None
    if state_file is not None:
        key = fingerprint(tok, layers, method, batch_rows, min_tokens, max_tokens, confidence, ca, cb,
                          None if compute_dtype is None else np.dtype(compute_dtype).name, state_key)
        resume = load_state(state_file, key)
        checkpoint = lambda st: save_state(state_file, st, key)  # noqa: E731
    start = 0 if resume is None else resume.n_tokens // tok.shape[1]

    def batches():
        for i in range(start, tok.shape[0], batch_rows):
            ha, hb = run(tok[i:i + batch_rows], idx, compute_dtype)
            L, b, s, d = ha.shape
            yield ha.reshape(L, b * s, d), hb.reshape(L, b * s, d)

    with on_mesh:
        return align_activations(batches(), method=method, min_tokens=min_tokens, max_tokens=max_tokens,
                                 confidence=confidence, layers=layers, progress=progress, total_tokens=int(tok.size),
                                 names=names, warn=warn, resume=resume, checkpoint=checkpoint,
                                 checkpoint_tokens=checkpoint_tokens, **match_kwargs)


def _placed(model_a: Any, model_b: Any, mesh: Any):
    """``(run, context)``: ``run(rows, idx, compute_dtype) -> (ha, hb)``, both models' pre-norm
    streams at ``idx``, on ``mesh`` when given (parameters split over ``model``, rows over ``data``);
    run it and use its outputs inside ``with context:`` (sets aside a mesh the caller made current
    with ``jax.set_mesh``: JAX would refuse to trace the mesh's arrays under it)."""
    import contextlib

    from gaugejax.models import residual_stream

    if mesh is None:
        def run(t, idx, dt):
            return (residual_stream(model_a, t, final_norm=False, compute_dtype=dt)[idx],
                    residual_stream(model_b, t, final_norm=False, compute_dtype=dt)[idx])
        return run, contextlib.nullcontext()
    from gaugejax import sharding
    from gaugejax.models import _dtype_key, _stream_and_final

    mesh = sharding.make_mesh(mesh)  # a Mesh, or "data=N,model=M"
    ma, mb = sharding.shard_model(model_a, mesh), sharding.shard_model(model_b, mesh)
    gather = sharding.replicated(mesh)  # every process gets the selected layers (statistics as today)

    def run_sharded(t, idx, dt):
        t = sharding.shard_rows(np.asarray(t, np.int32), mesh)  # ids were checked by as_token_rows / align
        out = []
        for m in (ma, mb):
            stream, _ = _stream_and_final(m.config, m.params, t, None, _dtype_key(dt))
            out.append(gather(stream[idx]))
        return tuple(out)
    return run_sharded, sharding.without_current_mesh()


def _align_streamed(model_a, model_b, tokens, *, layers, batch_rows, max_tokens, **kwargs) -> MatchResult:
    """:func:`align` with ``stream=True``: the first ``max_tokens`` tokens, block by block."""
    from gaugejax.streaming import align_streamed, block_source

    a, b = block_source(model_a), block_source(model_b)
    check_pair(a.config, b.config)
    tok = as_token_rows(tokens)
    if max_tokens is not None:
        tok = tok[:max(1, -(-int(max_tokens) // tok.shape[1]))]
    layers = tuple(default_layers(a.config.n_layers) if layers is None else (int(i) for i in layers))
    return align_streamed(a, b, tok, layers=layers, chunk_rows=max(1, int(batch_rows)), **kwargs)
