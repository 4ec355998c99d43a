"""Argument builders and checks the sub-commands share: the parser, checkpoints, gauges, outputs, groups.

Each sub-command module builds its parser from these: its ``--help`` description is the second
paragraph of its module docstring (:func:`about`); a flag the commands have in common
(``-o/--output`` with ``--overwrite``, ``--gauge``, ``--group``, the checkpoint positionals) has one
spelling and one help text, and a check they share (``.npz`` gauge names, the ``--layer`` range)
one error line.

Example:
  >>> import argparse
  >>> sub = argparse.ArgumentParser(prog="gaugejax").add_subparsers()
  >>> p = command(sub, "x", lambda args: 0, help="h", description="d")
  >>> add_checkpoint_args(p, "model")
  >>> add_output_args(p, "gauge file to write (.npz)")
  >>> sorted(vars(p.parse_args(["m", "-o", "g.npz"])))
  ['func', 'model', 'output', 'overwrite']
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable

from gaugejax.errors import GaugeError, GaugeJaxError

_CHECKPOINT_HELP = {
    "model": "checkpoint (Hugging Face directory or .gguf)",
    "src": "checkpoint A (Hugging Face directory or .gguf)",
    "dst": "checkpoint B",
}


def about(doc: str) -> str:
    r"""A command's ``--help`` description: the second paragraph of its module docstring, as one line.

    Example:
      >>> about("``gaugejax x``: summary.\n\nWhat x does,\non two lines.\n\nNotes for developers.")
      'What x does, on two lines.'
    """
    return " ".join(doc.split("\n\n")[1].split())


def command(sub, name: str, run: Callable[[argparse.Namespace], int], *, help: str,
            description: str) -> argparse.ArgumentParser:
    """The parser of sub-command ``name``, whose ``func`` is ``run`` (``run(args) -> exit code``)."""
    p = sub.add_parser(name, help=help, description=description)
    p.set_defaults(func=run)
    return p


def add_checkpoint_args(p: argparse.ArgumentParser, *names: str) -> None:
    """Checkpoint positionals: ``model`` (one checkpoint) or ``src dst`` (checkpoints A and B)."""
    for name in names:
        p.add_argument(name, help=_CHECKPOINT_HELP[name])


def add_output_args(p: argparse.ArgumentParser, help: str) -> None:
    """``-o/--output`` (required, described by ``help``) and ``--overwrite``."""
    from gaugejax.cli.common import add_overwrite_arg

    p.add_argument("-o", "--output", required=True, help=help)
    add_overwrite_arg(p)


def add_gauge_arg(p: argparse.ArgumentParser) -> None:
    """``--gauge G.npz`` (required): the gauge file A→B."""
    p.add_argument("--gauge", required=True, help="gauge file A→B (.npz)")


def add_group_arg(p: argparse.ArgumentParser, gauges: str = "the signed gauge",
                  part: str = "its permutation part only") -> None:
    """``--group B_d|S_d`` (default ``B_d``): the signed ``gauges``, or their permutation ``part`` (for comparison)."""
    p.add_argument("--group", default="B_d", choices=["B_d", "S_d"],
                   help=f"B_d: {gauges} (correct for RMSNorm); S_d: {part} (comparison)")


def check_gauge_path(path: str | os.PathLike, flag: str = "") -> None:
    """Refuses a gauge file name that does not end in ``.npz`` (``flag`` names the option in the error)."""
    if Path(path).suffix != ".npz":
        raise GaugeError(f"gauge files end in .npz, got {flag + ' ' if flag else ''}{str(path)!r}")


def check_layer(layer: int | None, n_layers: int) -> None:
    """Refuses a ``--layer`` outside ``0..n_layers`` (``None``, the default, passes)."""
    if layer is not None and not 0 <= layer <= n_layers:
        raise GaugeJaxError(f"--layer must lie in 0..{n_layers} (0 = embeddings, i = after block i), got {layer}")
