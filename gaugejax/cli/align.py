"""``gaugejax align SRC DST -o GAUGE``: recover the gauge between two checkpoints.

Run SRC and DST on the same tokens, accumulate the cross-correlation of their residual streams at a
few layers, and match coordinates (docs/conventions.md §4). Streams tokens until every coordinate is
certified at --confidence (or --max-tokens), then writes the gauge file with per-coordinate
diagnostics. Token source: --tokens, else --text tokenized with the checkpoint's tokenizer, else a
built-in corpus (standard-library docstrings) with that tokenizer, else random ids.
"""

from __future__ import annotations

import argparse
import contextlib
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from gaugejax.cli._args import about, add_checkpoint_args, add_output_args, check_gauge_path, command
from gaugejax.errors import GaugeJaxError


def register(sub) -> argparse.ArgumentParser:
    from gaugejax.align import DEFAULT_MAX_TOKENS, DEFAULT_MIN_TOKENS
    from gaugejax.matching import METHODS

    p = command(
        sub, "align", run, help="recover the gauge (signed permutation) from SRC to DST",
        description=about(__doc__))
    add_checkpoint_args(p, "src", "dst")
    add_output_args(p, "gauge file to write (.npz), A→B")
    p.add_argument("--method", choices=METHODS, default="sign_marginalized",
                   help="matching method (default sign_marginalized: the B_d / S_d×{±1} group of the model)")
    p.add_argument("--layers", default=None,
                   help="residual-stream indices, comma separated (0 = embeddings, i = after block i) or 'all'; "
                   "default: 6 spread over the depth")
    g = p.add_argument_group("probe tokens")
    g.add_argument("--tokens", metavar="FILE.npy", help="token ids (int array, (n,) or (rows, seq))")
    g.add_argument("--text", metavar="FILE", help="text file, tokenized with the checkpoint's tokenizer")
    g.add_argument("--min-tokens", type=int, default=DEFAULT_MIN_TOKENS,
                   help=f"tokens before the first certificate check (default {DEFAULT_MIN_TOKENS})")
    g.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                   help=f"stop after this many tokens even if not certified (default {DEFAULT_MAX_TOKENS})")
    g.add_argument("--seq-len", type=int, default=128, help="tokens per row (default 128)")
    g.add_argument("--batch-rows", type=int, default=2, help="rows per forward pass (default 2)")
    g.add_argument("--seed", type=int, default=0, help="seed of random ids (last-resort token source)")
    p.add_argument("--confidence", type=float, default=0.99, help="level of the certificate (default 0.99)")
    p.add_argument("--solver", default="auto", choices=("auto", "scipy", "lapjv", "optax"),
                   help="assignment solver (default auto: certified fast path, then the fastest exact solver)")
    add_scale_args(p)
    p.add_argument("--state", metavar="FILE.npz",
                   help="checkpoint the statistics to FILE every --checkpoint-tokens tokens (atomically) and "
                   "resume from it after a kill; the resumed run ends bit for bit as an uninterrupted one")
    p.add_argument("--checkpoint-tokens", type=int, default=4096,
                   help="tokens between two --state checkpoints (default 4096)")
    return p


def add_scale_args(p: argparse.ArgumentParser) -> None:
    """``--dtype``, ``--stream``, ``--max-memory``, ``--mesh``: how large checkpoints are run."""
    g = p.add_argument_group("models of any size")
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="compute dtype of the matmuls (default float32); norms, softmax and statistics stay float32")
    g.add_argument("--stream", action="store_true",
                   help="run block by block from the safetensors files (one block of each model in memory)")
    g.add_argument("--max-memory", metavar="SIZE",
                   help="weights budget such as 400MB or 16GB; checkpoints larger than it are streamed block by "
                   "block (default: half the free device memory)")
    g.add_argument("--mesh", metavar="data=N,model=M",
                   help="run on a device mesh: token rows over data, parameters split over model "
                   "(multi-host: one process per host, see the README)")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first (one process per host; the coordinator comes from "
                   "the environment: TPU pods, SLURM, or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                   "JAX_PROCESS_ID); process 0 writes the output")


def use_streaming(args, paths) -> bool:
    """Whether to stream: ``--stream``, or the checkpoints' weights exceed the ``--max-memory`` budget."""
    from gaugejax.memory import default_budget, parse_size

    budget = parse_size(args.max_memory) if args.max_memory else None
    if args.stream:
        return True
    if args.mesh:
        return False
    need = sum(checkpoint_bytes(p) for p in paths)
    return need > (budget if budget is not None else default_budget())


def checkpoint_bytes(path) -> int:
    """Bytes of a checkpoint's weights (safetensors headers; a file's size otherwise)."""
    import os

    if Path(path).is_dir():
        from gaugejax.streaming import CheckpointBlocks

        return CheckpointBlocks(path).weight_bytes()
    return os.path.getsize(path)


def vocabulary_axes(config) -> dict[str, int]:
    """Top-level parameters with a vocabulary axis (the embedding, an untied head and its bias): name → axis.

    Example:
      >>> import gaugejax as gj
      >>> vocabulary_axes(gj.tiny_config("llama", tie_embeddings=False))
      {'embed': 0, 'lm_head': 0}
    """
    import dataclasses

    from gaugejax.models import family_module

    fam = family_module(config)
    now = fam.param_shapes(config)
    wider = fam.param_shapes(dataclasses.replace(config, vocab_size=config.vocab_size + 1))
    return {k: next(i for i, (x, y) in enumerate(zip(s, wider[k])) if x != y)
            for k, s in now.items() if k != "layers" and tuple(s) != tuple(wider[k])}


def probe_vocabulary(model, rows: np.ndarray):
    """``(model, kept)``: ``model`` with only the vocabulary rows ``rows`` use (``kept``, sorted,
    padded to a power of two with repeats of the last so the compiled forward pass is reused
    across probe sets); token ``t`` becomes ``np.searchsorted(kept, t)``.

    Residual streams on the renumbered tokens are bit-for-bit those of the full model (the same
    embedding rows are gathered); logits are not (the head keeps the kept rows only). What it
    saves: Gemma 3 270M's 262144 × 640 float32 embedding is 0.67 GB of its 1.07 GB.

    Example:
      >>> import gaugejax as gj
      >>> m = gj.random_model("llama", seed=0)
      >>> rows = np.array([[5, 9, 5, 7]])
      >>> small, kept = probe_vocabulary(m, rows)
      >>> small.config.vocab_size, kept.tolist(), np.searchsorted(kept, rows).tolist()
      (4, [5, 7, 9, 9], [[0, 2, 0, 1]])
      >>> h = gj.residual_stream(m, rows)[:-1]
      >>> bool((h == gj.residual_stream(small, np.searchsorted(kept, rows))[:-1]).all())
      True
    """
    import dataclasses

    import jax

    from gaugejax.models.base import Model

    used = np.unique(rows)
    size = 1 << int(len(used) - 1).bit_length()
    if size >= model.config.vocab_size:
        return model, np.arange(model.config.vocab_size)
    kept = np.concatenate([used, np.full(size - len(used), used[-1])])
    axes = vocabulary_axes(model.config)  # rows gathered on the host: no device program to compile
    params = {k: (jax.device_put(np.take(np.asarray(v), kept, axis=axes[k])) if k in axes else v)
              for k, v in model.params.items()}
    return Model(dataclasses.replace(model.config, vocab_size=size), params), kept


def _parse_layers(spec: str | None, n_layers: int):
    if spec is None:
        return None
    if spec.strip().lower() == "all":
        return tuple(range(n_layers + 1))
    try:
        layers = tuple(int(s) for s in spec.split(",") if s.strip())
    except ValueError:
        raise GaugeJaxError(f"--layers must be comma-separated integers or 'all', got {spec!r}") from None
    bad = [i for i in layers if not 0 <= i <= n_layers]
    if bad or not layers:
        raise GaugeJaxError(f"--layers must lie in 0..{n_layers} (0 = embeddings), got {spec!r}")
    return layers


def run(args) -> int:
    from gaugejax.align import align
    from gaugejax.cli.common import console, table, token_source
    from gaugejax.cli.preflight import pair_configs
    from gaugejax.io import checkpoint_fingerprint, load_model
    from gaugejax.matching import AmbiguousMatchWarning

    out = Path(args.output)
    check_gauge_path(out)
    if args.min_tokens <= 0 or args.max_tokens <= 0 or args.seq_len <= 0 or args.batch_rows <= 0:
        raise GaugeJaxError("--min-tokens, --max-tokens, --seq-len and --batch-rows must be positive")
    if not 0 < args.confidence < 1:
        raise GaugeJaxError("--confidence must lie in (0, 1)")
    if args.seed < 0:
        raise GaugeJaxError(f"--seed must be non-negative, got {args.seed}")
    for p in (args.src, args.dst):
        if not Path(p).exists():
            raise GaugeJaxError(f"{p} does not exist")
    from gaugejax.cli.common import check_outputs, is_gauge_file, output

    check_outputs(args, [output(out, recognise=is_gauge_file)], inputs=[args.src, args.dst, args.tokens, args.text])
    if args.state:  # written during the run and read back on resume: its path must work before any work
        from gaugejax.atomic import check_output

        if Path(args.state).resolve() == out.resolve():
            raise GaugeJaxError("--state must differ from -o (the state file is not the gauge file)")
        check_output(args.state, overwrite=True, recognise=lambda p: True,
                     inputs=[args.src, args.dst, args.tokens, args.text, out])
    if args.checkpoint_tokens <= 0:
        raise GaugeJaxError("--checkpoint-tokens must be positive")
    # every input is checked before a weight is read: configs, layers, tokenizer, token ids
    config, _ = pair_configs(args.src, args.dst)
    layers = _parse_layers(args.layers, config.n_layers)
    rows, source = token_source(args, config.vocab_size, args.max_tokens + args.seq_len, [args.src, args.dst])
    mesh = None
    if getattr(args, "distributed", False):
        import jax

        jax.distributed.initialize()
    if args.mesh:
        from gaugejax.sharding import make_mesh

        mesh = make_mesh(args.mesh)
    stream = use_streaming(args, [args.src, args.dst])
    if stream and (args.state or mesh is not None):
        raise GaugeJaxError("--state and --mesh do not combine with layer streaming yet; drop --stream or raise "
                            "--max-memory")
    if stream:
        from gaugejax.streaming import block_source

        a, b = block_source(args.src), block_source(args.dst)
    elif mesh is not None:
        a = load_model(args.src, mesh=mesh)
        b = load_model(args.dst, mesh=mesh)
    else:  # each model keeps only the embedding rows of the probe tokens before the next one loads
        a, kept = probe_vocabulary(load_model(args.src), rows)
        b, _ = probe_vocabulary(load_model(args.dst), rows)
        rows = np.searchsorted(kept, rows).astype(np.int32)
    n_avail = rows.size
    total = min(n_avail, args.max_tokens)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AmbiguousMatchWarning)
        what = f"{'streaming' if stream else 'aligning'} ({a.config.norm}, d={a.config.d_model})"
        with rate_progress(what, a.config.n_layers if stream else total, "blocks" if stream else "tokens") as report:
            key = f"{checkpoint_fingerprint(args.src)}|{checkpoint_fingerprint(args.dst)}" if args.state else ""
            r = align(a, b, rows, layers=layers, method=args.method, batch_rows=args.batch_rows,
                      min_tokens=args.min_tokens, max_tokens=args.max_tokens, confidence=args.confidence,
                      solver=args.solver, progress=report, names=(str(args.src), str(args.dst)),
                      mesh=mesh, compute_dtype=args.dtype, stream=stream, state_file=args.state, state_key=key,
                      checkpoint_tokens=args.checkpoint_tokens)
    if getattr(args, "distributed", False):
        import jax

        if jax.process_index() != 0:
            return 0
    r.save(out, src=str(args.src), dst=str(args.dst), src_fingerprint=checkpoint_fingerprint(args.src),
           dst_fingerprint=checkpoint_fingerprint(args.dst), token_source=source, norm=a.config.norm,
           family=a.config.family)

    s = r.summary()
    c = console()
    for w in caught:
        if issubclass(w.category, AmbiguousMatchWarning):
            console(stderr=True).print(f"warning: {w.message}")
    table(f"gauge {args.src} → {args.dst}", ["", "value"], [
        ["method / group", f"{s['method']} / {s['group']}"],
        ["tokens used", f"{s['n_tokens']} ({source}{'' if s['n_tokens'] < n_avail else ', all available'})"],
        ["layers", ",".join(str(i) for i in s["layers"])],
        ["certified", f"{s['certified']} at {s['confidence']:.0%} (error bound ±{s['error_bound']:.3f})"],
        ["confident coordinates", f"{s['d'] - s['n_ambiguous']}/{s['d']} ({s['confident_fraction']:.1%})"],
        ["signs +/−", f"{s['positive_signs']}/{s['negative_signs']}"],
        ["mean |matched corr|", s["mean_abs_matched_corr"]],
        ["weakest margins (j: margin, corr)",
         "; ".join(f"{j}: {m:.3f}, {v:+.3f}" for j, m, v in s["weakest"])],
        ["solver", s["solver"]],
        ["run", f"{'streamed block by block' if stream else 'in memory'}, {args.dtype or 'float32'} compute"
                f"{', mesh ' + args.mesh if args.mesh else ''}"],
    ])
    c.print(f"wrote {out}")
    return 0


@contextlib.contextmanager
def rate_progress(description: str, total: int, unit: str) -> Iterator:
    """A rich progress bar on stderr with rate, what is left and resident memory; yields
    ``report(done, total)``. Silent when stderr is not a terminal."""
    import os
    import sys

    from gaugejax.memory import format_size, rss_bytes

    if not sys.stderr.isatty() or os.environ.get("CI"):
        yield lambda done, _total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gaugejax.cli.common import console

    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn(f"{{task.fields[rate]}} {unit}/s"), TimeRemainingColumn(), TextColumn("RSS {task.fields[rss]}")]
    with Progress(*cols, console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total or None, rate="–", rss=format_size(rss_bytes() or 0))

        def report(done, _total):
            t = bar.tasks[0]
            speed = t.speed
            bar.update(task, completed=done, rss=format_size(rss_bytes() or 0),
                       rate=f"{speed:,.0f}" if speed else "–")

        yield report
