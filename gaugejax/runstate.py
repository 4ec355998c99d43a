"""Resumable alignment runs: atomic checkpoints of the streaming statistics and the token position.

``gaugejax align --state FILE`` (``align(..., state_file=FILE)``) saves the
:class:`~gaugejax.stats.CorrStats`, the number of tokens consumed and the next certificate check to
an ``.npz`` every few thousand tokens. A run killed mid-way (a preempted TPU VM) resumes from the
last checkpoint: it skips the tokens already counted and, because the statistics are updated batch
by batch in the same order, ends with the same statistics and gauge bit for bit. A checkpoint
records a fingerprint of everything that determines the run (tokens, layers, batching, models);
resuming with a different setup is refused rather than silently mixed.

Example:
  >>> import tempfile, os
  >>> from gaugejax import stats
  >>> path = os.path.join(tempfile.mkdtemp(), "run.npz")
  >>> save_state(path, RunState(stats.init(4), 128, 160, False), "abc")
  >>> load_state(path, "abc").n_tokens
  128
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from gaugejax import stats
from gaugejax.errors import GaugeJaxError

__all__ = ["RunState", "save_state", "load_state", "fingerprint", "DEFAULT_CHECKPOINT_TOKENS"]

DEFAULT_CHECKPOINT_TOKENS = 4096
"""Tokens between two checkpoints of a ``--state`` run."""

_FORMAT = "gaugejax-align-state-1"


class RunState(NamedTuple):
    """Where a streaming alignment stands.

    Attributes:
      stats: the accumulated :class:`~gaugejax.stats.CorrStats`.
      n_tokens: tokens consumed (always a batch boundary).
      next_check: token count of the next certificate check.
      finished: the run ended (certified or out of tokens); resuming only re-matches.
    """

    stats: stats.CorrStats
    n_tokens: int
    next_check: int
    finished: bool


def fingerprint(*parts: Any) -> str:
    """A SHA-256 digest of the run's setup: arrays by dtype, shape and bytes, anything else by ``repr``.

    Example:
      >>> fingerprint(np.arange(3), "llama") == fingerprint(np.arange(3), "llama")
      True
    """
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def save_state(path: str | os.PathLike, state: RunState, key: str) -> None:
    """Writes ``state`` atomically (a temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    arrays = {f"stats_{k}": np.asarray(v) for k, v in state.stats._asdict().items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, format=np.array(_FORMAT), key=np.array(key), n_tokens=np.int64(state.n_tokens),
                     next_check=np.int64(state.next_check), finished=np.bool_(state.finished), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_state(path: str | os.PathLike, key: str) -> RunState | None:
    """The saved state, or ``None`` when ``path`` does not exist yet.

    Raises:
      GaugeJaxError: the file is not a state file, or belongs to a different run (fingerprint).
    """
    path = Path(path)
    if not path.exists():
        return None
    from gaugejax.io.npy_bounded import read_npz

    names = ["format", "key", "n_tokens", "next_check", "finished", *(f"stats_{k}" for k in stats.CorrStats._fields)]
    try:
        z = read_npz(path, names, error=ValueError, label=str(path))  # no pickles; member sizes checked first
        if str(z["format"]) != _FORMAT:
            raise _not_a_state_file(path)
        if str(z["key"]) != key:
            raise GaugeJaxError(f"{path} is the state of a different run (other tokens, layers, batching or "
                                "models); delete it or pass another --state file")
        fields = {k: jnp.asarray(z[f"stats_{k}"]) for k in stats.CorrStats._fields}
        return RunState(stats.CorrStats(**fields), int(z["n_tokens"]), int(z["next_check"]), bool(z["finished"]))
    except (KeyError, ValueError, OSError, EOFError):
        raise _not_a_state_file(path) from None


def _not_a_state_file(path: Path) -> GaugeJaxError:
    return GaugeJaxError(f"{path} is not a gaugejax align state file; delete it or pass another --state file")
