"""Temporary paths of atomic writes: who owns them, signals, and removing what a dead run left.

:mod:`gaugejax.atomic` builds every output at a hidden temporary path beside it. This module makes
those paths safe to leave and safe to clean:

* **Signals.** While a write is under way, SIGTERM (``timeout``, ``docker stop``, SLURM) and SIGHUP
  (a closed terminal) raise :class:`Interrupted`, a :class:`KeyboardInterrupt`, so the write rolls
  back exactly as on Ctrl-C (:func:`signals_interrupt`). A signal the process ignores (``nohup``)
  or handles itself is left alone. Rollback runs with these signals blocked (:func:`signals_blocked`).
* **Ownership.** A temporary path is named ``.OUT.gjPID-START-HOST.XXXXXXXX.tmp`` (``PID`` the
  writer's process id, ``START`` its start time in clock ticks since boot, ``HOST`` a hash of the
  host name); a temporary folder also holds :data:`OWNER`, a JSON record of the same
  (:func:`write_owner`).
* **Stale leftovers.** A SIGKILL, a power cut or an out-of-memory kill cannot be caught. The next
  write of the same output removes what such a run left (:func:`remove_stale`), but only what it
  can prove is gaugejax's own and dead: the naming, the owner record (folders), the same host,
  and a process that is gone (no such pid, or a pid reused by a process that started at another
  time). A previous output moved aside (``.OUT.gj....old``, holding its manifest) is removed only
  when OUT exists again. Anything else, including the leftovers of a live writer, is kept.

Example:
  >>> tag = owner_tag()
  >>> tag.startswith(f"gj{os.getpid()}-")
  True
  >>> is_stale(Path("/tmp") / f".out.{tag}.abcd1234.tmp", Path("/tmp/out"))  # our own, alive
  False
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import threading
import zlib
from pathlib import Path
from typing import Iterator

from gaugejax.sniff import MANIFEST

__all__ = ["Interrupted", "signals_interrupt", "signals_blocked", "OWNER", "owner_tag", "write_owner", "is_stale",
           "remove_stale"]

OWNER = ".gaugejax-owner"
"""Name of the owner record inside a temporary folder (removed before the folder is committed)."""

TERMINATING = tuple(getattr(signal, s) for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s))
"""Signals that stop a run and, during a write, roll it back like Ctrl-C."""


# --------------------------------------------------------------------------- signals
class Interrupted(KeyboardInterrupt):
    """A terminating signal (SIGTERM, SIGHUP) received during a run; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        """``"SIGTERM"`` or ``"SIGHUP"``."""
        return signal.Signals(self.signum).name


def _raise_interrupted(signum: int, _frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While active, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread.

    Only signals at their default action are taken over (an ignored SIGHUP under ``nohup``, or a
    handler the application installed, stays); the previous handlers come back on exit. Outside
    the main thread (where Python cannot set handlers) nothing changes.

    Example:
      >>> try:
      ...     with signals_interrupt():
      ...         signal.raise_signal(signal.SIGTERM)
      ... except Interrupted as e:
      ...     print(e.name)
      SIGTERM
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_interrupted) for s in TERMINATING if signal.getsignal(s) == signal.SIG_DFL}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Defers SIGINT, SIGTERM and SIGHUP until the block ends (e.g. while a failed write is rolled
    back, so that a second Ctrl-C cannot leave it half removed). No-op where unsupported."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, *TERMINATING})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# --------------------------------------------------------------------------- ownership
def _start_time(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), else ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])  # field 22; the command name may hold spaces


def _host() -> str:
    return socket.gethostname()


def _host_tag(host: str) -> str:
    return f"{zlib.crc32(host.encode()):08x}"


def owner_tag() -> str:
    """``gjPID-START-HOST``: this process, as temporary names record it (``START`` 0 without ``/proc``)."""
    return f"gj{os.getpid()}-{_start_time(os.getpid()) or 0}-{_host_tag(_host())}"


def write_owner(folder: Path) -> None:
    """Writes the :data:`OWNER` record of this process into a fresh temporary folder."""
    pid = os.getpid()
    doc = {"written_by": "gaugejax", "pid": pid, "started": _start_time(pid) or 0, "host": _host()}
    (folder / OWNER).write_text(json.dumps(doc) + "\n", encoding="utf-8")


def _gone(pid: int, started: int) -> bool:
    """True when process ``pid`` that started at ``started`` no longer runs (on this host)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows: never assume gone
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, under another user
    now = _start_time(pid)
    return started != 0 and now is not None and now != started  # the pid now belongs to another process


def _pattern(target: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(target.name)}\.gj(\d+)-(\d+)-([0-9a-f]{{8}})\.\w+\.(tmp(?:\..*)?|old)")


def _owner_matches(folder: Path, pid: int, started: int) -> bool:
    try:
        doc = json.loads((folder / OWNER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(doc, dict) and doc.get("written_by") == "gaugejax" and doc.get("pid") == pid
            and doc.get("started") == started and doc.get("host") == _host())


def is_stale(path: Path, target: Path) -> bool:
    """True when ``path`` provably is what a dead gaugejax run left while writing ``target``.

    See the module docstring for the proof required; a link is never stale.
    """
    m = _pattern(target).fullmatch(path.name)
    if m is None or path.is_symlink() or m.group(3) != _host_tag(_host()):
        return False
    pid, started, kind = int(m.group(1)), int(m.group(2)), m.group(4)
    if kind == "old":
        proof = target.exists() and (path.is_file() or (path / MANIFEST).is_file())
    elif path.is_dir():
        proof = _owner_matches(path, pid, started)
    else:
        proof = path.is_file()
    return proof and _gone(pid, started)


def remove_stale(target: str | os.PathLike) -> list[Path]:
    """Removes the provably stale leftovers of earlier writes of ``target`` beside it; returns them.

    Example:
      >>> remove_stale("/tmp/some/new/output")
      []
    """
    t = Path(os.path.abspath(target))
    try:
        candidates = [p for p in t.parent.iterdir() if p.name.startswith(f".{t.name}.gj")]
    except OSError:
        return []
    removed = []
    for p in sorted(candidates):
        if is_stale(p, t):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
            removed.append(p)
    return removed
