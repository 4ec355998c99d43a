"""The ``gaugejax`` command line.

Each sub-command lives in its own module of this package and exposes
``register(subparsers) -> argparse.ArgumentParser`` whose parser sets ``func=run`` where
``run(args) -> int`` is the exit code. Library errors (:class:`gaugejax.errors.GaugeJaxError`) are
printed as one line ``error: ...`` with exit code 2; nothing is written on failure. Ctrl-C (exit
130), SIGTERM (143) and SIGHUP (129) roll back any write under way and print one line too. JAX's
persistent compilation cache is on (:mod:`gaugejax.cache`: ``~/.cache/gaugejax/jax``; set
``GAUGEJAX_CACHE_DIR`` to move it, ``GAUGEJAX_NO_CACHE=1`` to turn it off).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "demo",
    "info",
    "apply",
    "verify",
    "align",
    "align_path",
    "compose",
    "transport",
    "merge",
    "audit",
    "canon",
    "reproduce",
    "simulate",
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``error: ...``), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command."""
    parser = _Parser(
        prog="gaugejax",
        description="Recover and apply residual-stream gauges (signed permutations) between "
        "transformer checkpoints, and transport coordinate-indexed objects by the right rule.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"gaugejax.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"gaugejax.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gaugejax`` console script; returns the exit code."""
    from gaugejax.errors import GaugeJaxError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from gaugejax import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    for name in ("output", "out", "save_gauge", "plot", "json"):  # Path("") would silently mean "."
        if getattr(args, name, None) == "":
            print(f"error: --{name.replace('_', '-')} is empty; name a file or folder", file=sys.stderr)
            return 2
    for name in ("seed", "random_gauge"):  # jax.random.key takes a signed 64-bit seed (an OverflowError above)
        value = getattr(args, name, None)
        if value is not None and not 0 <= value < 1 << 63:
            print(f"error: --{name.replace('_', '-')} must lie in [0, 2**63), got {value}; pick a smaller seed",
                  file=sys.stderr)
            return 2
    from gaugejax.cache import enable_compilation_cache
    from gaugejax.leftovers import Interrupted, signals_interrupt

    enable_compilation_cache()  # a second run of a command reuses its compiled code (GAUGEJAX_NO_CACHE=1: off)

    try:
        with signals_interrupt():  # SIGTERM / SIGHUP roll back a write as Ctrl-C does
            return int(args.func(args) or 0)
    except GaugeJaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"error: stopped by {e.name}; nothing was written", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; use smaller inputs (fewer tokens, smaller batches); nothing was written",
              file=sys.stderr)
        return 2
    except RuntimeError as e:  # XLA's out of memory (jax.errors.JaxRuntimeError) on inputs too large for the device
        if not _out_of_memory(e):
            raise
        print("error: out of memory on the JAX device; use shorter rows (--seq-len), fewer --batch-rows or "
              "--stream; nothing was written", file=sys.stderr)
        return 2
    except OSError as e:  # read-only file system, disk full, permissions, ...: one line, nothing half-written
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or str(e).splitlines()[0]}{where}", file=sys.stderr)
        return 2


def _out_of_memory(e: RuntimeError) -> bool:
    """Whether ``e`` is XLA's out-of-memory error (``RESOURCE_EXHAUSTED`` on GPU, "Out of memory" on CPU)."""
    text = str(e).lower()
    return "resource_exhausted" in text or "out of memory" in text
