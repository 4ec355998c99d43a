"""Safe, atomic writes: refuse anything that could lose data, build at a temporary path, rename.

Rules every gaugejax writer follows (the command line's ``--overwrite`` contract):

* An output path that exists and is not empty is refused unless ``overwrite=True``.
* ``overwrite=True`` replaces only a *previous gaugejax output*:

  - a directory is recognised by the manifest :data:`MANIFEST` (``.gaugejax``, JSON) that every
    directory write leaves inside it, listing the files and folders gaugejax wrote; a directory
    without it, or holding anything the manifest does not list, is never replaced;
  - a single file is recognised by its content: the caller's ``recognise(path)`` (e.g. "is a
    gauge file"), else a check that it already holds the format its extension names
    (:func:`looks_like`).

* An output that is, contains, or is an ancestor of an input is refused, with or without
  ``overwrite``.
* The body writes to a temporary path beside the target; on success it is renamed onto the target
  (a replaced directory is moved aside first and removed only after the rename). On failure the
  temporary path and any parent directories created for the write are removed, and the target is
  left as it was. Outputs get ordinary, umask-respecting permissions.
* SIGTERM and SIGHUP roll a write back as Ctrl-C does; what an uncatchable kill (SIGKILL) left is
  removed by the next write of the same output, where it is provably gaugejax's own and its
  process is gone (:mod:`gaugejax.leftovers`).
* Running out of space (or quota) is one line naming the output, not the file being read:
  :class:`WriteError`.

Example:
  >>> with atomic_path("/tmp/out.npz") as tmp:  # doctest: +SKIP
  ...     np.savez(tmp, x=np.zeros(3))
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from gaugejax.errors import GaugeJaxError, TransportError
from gaugejax.leftovers import OWNER, owner_tag, remove_stale, signals_blocked, signals_interrupt, write_owner
from gaugejax.sniff import MANIFEST, Recogniser, looks_like

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_ACTIVE: set[Path] = set()
"""Temporary paths of the writes under way in this process: a write whose outputs are all among
them (e.g. a library writer handed the temporary folder of a command's write) goes in place."""


class WriteError(GaugeJaxError, OSError):
    """Writing an output failed for lack of space or quota (``errno`` kept); nothing was written."""


@dataclass(frozen=True)
class Output:
    """One path to write.

    Attributes:
      path: the final file or directory path.
      directory: the output is a directory.
      overwrite: may replace a previous gaugejax output (never anything else).
      recognise: ``path -> bool``: "this existing file is a previous output of this kind"
        (default for files: :func:`looks_like` its extension); for a directory without a manifest,
        an optional fallback (e.g. the exact set of files an older gaugejax wrote).
    """

    path: Path
    directory: bool = False
    overwrite: bool = True
    recognise: Recogniser | None = None


# --------------------------------------------------------------------------- manifests
def read_manifest(directory: str | os.PathLike) -> set[str] | None:
    """The relative paths a previous gaugejax write put in ``directory``, or ``None`` if none did."""
    m = Path(directory) / MANIFEST
    try:
        doc = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("written_by") != "gaugejax":
        return None
    files = doc.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return set(files)


def _entries(directory: Path) -> list[str]:
    """Relative paths under ``directory`` (folders end in ``/``), the manifest left out."""
    out = []
    for root, dirs, files in os.walk(directory):
        rel = Path(root).relative_to(directory)
        out += [(rel / d).as_posix() + "/" for d in dirs]
        out += [(rel / f).as_posix() for f in files if not (rel == Path(".") and f == MANIFEST)]
    return sorted(out)


def write_manifest(directory: str | os.PathLike) -> None:
    """Records every entry of ``directory`` in its :data:`MANIFEST` (called on the temporary dir)."""
    from gaugejax import __version__

    d = Path(directory)
    doc = {"written_by": "gaugejax", "version": __version__, "files": _entries(d)}
    (d / MANIFEST).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def is_previous_output(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds only what a previous gaugejax write listed in its manifest."""
    listed = read_manifest(directory)
    return listed is not None and not (set(_entries(Path(directory))) - listed)


# --------------------------------------------------------------------------- checks
def _nonempty(p: Path) -> bool:
    if p.is_dir():
        return any(os.scandir(p))
    return p.stat().st_size > 0


def _resolved(p: str | os.PathLike) -> Path:
    return Path(os.path.abspath(p)).resolve()


def check_output(target: str | os.PathLike, *, directory: bool = False, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike] = (), recognise: Recogniser | None = None) -> None:
    """Raises a one-line :class:`GaugeJaxError` if writing ``target`` could lose data or cannot work.

    Touches nothing on disk. Checked: the nearest existing ancestor is a writable directory (not a
    file, not a read-only file system); ``target`` is not an input and does not hold one; an existing non-empty ``target`` is refused unless ``overwrite`` and it is a
    previous gaugejax output (see the module docstring).

    Example:
      >>> check_output("/tmp/new_dir", directory=True)  # doctest: +SKIP
    """
    if os.fspath(target) == "":
        raise GaugeJaxError("the output path is empty; name a file or folder")
    t = Path(target)
    rt = _resolved(t)
    for inp in inputs:
        if inp is None:
            continue
        ri = _resolved(inp)
        if ri == rt:
            raise GaugeJaxError(f"output {t} is the input {inp}; choose another output path")
        if rt in ri.parents:
            raise GaugeJaxError(f"output {t} contains the input {inp}; choose an output path outside it")
    anc = Path(os.path.abspath(t)).parent
    while not anc.exists() and not anc.is_symlink():
        anc = anc.parent
    if not anc.is_dir():
        raise GaugeJaxError(f"cannot write {t}: {anc} is a file, not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise GaugeJaxError(f"cannot write {t}: {anc} is not writable (read-only file system or no permission)")
    if t.is_symlink():
        raise GaugeJaxError(f"{t} is a symbolic link; gaugejax does not replace links: choose another output path")
    if not t.exists():
        return
    if not (t.is_dir() or t.is_file()):
        raise GaugeJaxError(f"{t} is not a regular file or directory; choose another output path")
    if directory and not t.is_dir():
        raise GaugeJaxError(f"{t} exists and is a file; the output is a directory: choose another path")
    if not directory and t.is_dir():
        raise GaugeJaxError(f"{t} is a directory; the output is a file: choose a file path")
    if not _nonempty(t):
        return
    if not overwrite:
        raise GaugeJaxError(f"{t} exists and is not empty; choose another path, or pass --overwrite to replace a "
                            "previous gaugejax output")
    if directory:
        listed = read_manifest(t)
        if listed is None and recognise is not None and recognise(t):
            return  # a previous output written before manifests, recognised by its exact set of files
        if listed is None:
            raise GaugeJaxError(f"{t} is not a gaugejax output (no {MANIFEST} manifest); --overwrite only replaces "
                                "what gaugejax wrote: choose another path")
        foreign = sorted(set(_entries(t)) - listed)
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise GaugeJaxError(f"{t} holds {foreign[0]}{more}, which gaugejax did not write; --overwrite never "
                                "removes such files: choose another path")
    elif not (recognise or looks_like)(t):
        raise GaugeJaxError(f"{t} does not hold a file of the kind gaugejax writes there; --overwrite only replaces "
                            "a previous gaugejax output: choose another path")


# --------------------------------------------------------------------------- writing
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _missing_parents(parent: Path) -> list[Path]:
    missing = []
    p = parent
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    return missing  # deepest first


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        with contextlib.suppress(OSError):
            p.unlink()


def _aside(target: Path) -> Path:
    """A fresh hidden name beside ``target`` to move its previous version to."""
    return target.parent / f".{target.name}.{owner_tag()}.{uuid.uuid4().hex[:8]}.old"


def _make_tmp(o: Output, parent: Path, mask: int) -> Path:
    """The temporary path of output ``o`` beside it, named for this process; a folder gets its owner
    record (:mod:`gaugejax.leftovers`)."""
    prefix = f".{o.path.name}.{owner_tag()}."
    if o.directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
        os.chmod(tmp, 0o777 & ~mask)
        write_owner(tmp)
        return tmp
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + o.path.suffix, dir=parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~mask)
    return Path(name)


def _named_for_output(e: OSError, outputs: Sequence[Output], tmps: Sequence[Path]) -> OSError:
    """A lack of space while writing, as a :class:`WriteError` naming the output (the OSError names
    the file read or the temporary path, or nothing); other errors unchanged."""
    if e.errno not in _NO_SPACE or isinstance(e, WriteError):
        return e
    names = {os.fspath(n) for n in (e.filename, e.filename2) if n is not None}
    hit = [o.path for o, t in zip(outputs, tmps)
           if any(n == os.fspath(t) or n.startswith(f"{t}{os.sep}") for n in names)]
    where = " and ".join(str(p) for p in hit or [o.path for o in outputs])
    err = WriteError(f"no space left writing {where} ({e.strerror or e}); free space on that disk or choose another "
                     "output path; nothing was written")
    err.errno = e.errno
    return err


@contextlib.contextmanager
def atomic_paths(outputs: Sequence[Output], *, inputs: Iterable[str | os.PathLike] = ()) -> Iterator[list[Path]]:
    """Several outputs written as one: every path is checked before anything is written, and the
    renames happen in order at the end; if one fails, the ones before it are rolled back.

    Args:
      outputs: what to write (:class:`Output`), in commit order (e.g. a gauge file before the
        checkpoint written in its chart).
      inputs: paths the writes read; an output may not be one, or a folder holding one.

    Yields:
      One temporary path per output (an empty directory for directory outputs).

    Example:
      >>> with atomic_paths([Output(Path("g.npz")), Output(Path("out"), directory=True)]) as (g, d):
      ...     ...  # doctest: +SKIP
    """
    outputs = [o if isinstance(o.path, Path) else Output(Path(o.path), o.directory, o.overwrite, o.recognise)
               for o in outputs]
    if outputs and all(_resolved(o.path) in _ACTIVE for o in outputs):
        yield [o.path for o in outputs]  # the temporary paths of a write under way: written in place
        return
    inputs = [i for i in inputs if i is not None]
    seen: set[Path] = set()
    for o in outputs:
        check_output(o.path, directory=o.directory, overwrite=o.overwrite, inputs=inputs, recognise=o.recognise)
        r = _resolved(o.path)
        if r in seen or any(r in s.parents or s in r.parents for s in seen):
            raise GaugeJaxError(f"two outputs overlap at {o.path}; choose distinct paths")
        seen.add(r)
    mask = _umask()
    created: list[Path] = []
    tmps: list[Path] = []
    done: list[tuple[Output, Path | None]] = []  # committed outputs and where their previous version went
    with signals_interrupt():
        try:
            for o in outputs:
                remove_stale(o.path)
                parent = Path(os.path.abspath(o.path)).parent
                missing = _missing_parents(parent)
                parent.mkdir(parents=True, exist_ok=True)
                created += missing
                tmps.append(_make_tmp(o, parent, mask))
                _ACTIVE.add(_resolved(tmps[-1]))
            try:
                yield list(tmps)
            except OSError as e:
                raise _named_for_output(e, outputs, tmps) from None
            _commit(outputs, tmps, inputs, done)
        except BaseException:
            with signals_blocked():
                _roll_back(done, tmps, created)
            raise
        finally:
            _ACTIVE.difference_update(_resolved(t) for t in tmps)
    for _, old in done:
        if old is not None:
            _remove(old)


def _commit(outputs: Sequence[Output], tmps: Sequence[Path], inputs: list, done: list) -> None:
    """Renames every temporary path onto its output, in order, recording each in ``done``."""
    for o, tmp in zip(outputs, tmps):
        # re-checked: a long write may have raced with the user adding files
        check_output(o.path, directory=o.directory, overwrite=o.overwrite, inputs=inputs, recognise=o.recognise)
        if o.directory:
            (tmp / OWNER).unlink()
            write_manifest(tmp)
        old = None
        if o.path.exists() and (o.directory or len(outputs) > 1):
            old = _aside(o.path)
            os.replace(o.path, old)
        try:
            os.replace(tmp, o.path)
        except BaseException:
            if old is not None:
                os.replace(old, o.path)
            raise
        done.append((o, old))


def _roll_back(done: list, tmps: Sequence[Path], created: Sequence[Path]) -> None:
    """Undoes a failed write: committed outputs back to their previous versions, temporary paths and
    the parent folders made for the write removed."""
    for o, old in reversed(done):  # roll back what was already renamed into place
        _remove(o.path)
        if old is not None:
            with contextlib.suppress(OSError):
                os.replace(old, o.path)
    for tmp in tmps:
        _remove(tmp)
    for p in created:  # deepest first; only if still empty
        with contextlib.suppress(OSError):
            p.rmdir()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, directory: bool = False, overwrite: bool = True,
                inputs: Iterable[str | os.PathLike] = (), recognise: Recogniser | None = None) -> Iterator[Path]:
    """Yields a temporary path; on success it is renamed onto ``target`` (see the module rules).

    Args:
      target: the final file or directory path.
      directory: create the temporary path as an (empty) directory; a manifest is added on success.
      overwrite: may replace a previous gaugejax output at ``target`` (never anything else). The
        command line passes its ``--overwrite`` flag; library writers default to ``True``.
      inputs: paths the write reads (the output may not be one, or a folder holding one).
      recognise: for a file, recognises a previous output (default: :func:`looks_like`).

    Raises:
      GaugeJaxError: the write could lose data or cannot succeed; nothing was written.

    Example:
      >>> with atomic_path("/tmp/out.npz") as tmp:  # doctest: +SKIP
      ...     np.savez(tmp, x=np.zeros(3))
    """
    with atomic_paths([Output(Path(target), directory, overwrite, recognise)], inputs=inputs) as (tmp,):
        yield tmp


def atomic_file_as(target: str | os.PathLike, fmt: str, named: str, what: str, *, overwrite: bool = True,
                   inputs: Iterable[str | os.PathLike] = (), recognise: Recogniser | None = None):
    """:func:`atomic_path` for a file of format ``fmt`` whose extension names format ``named``.

    Raises:
      TransportError: the extension names another format than the ``what`` (data, list) holds.

    Example:
      >>> atomic_file_as("/tmp/list.csv", "json", "csv", "list")
      Traceback (most recent call last):
      gaugejax.errors.TransportError: list.csv: extension says csv but the list is json
    """
    if named != fmt:
        raise TransportError(f"{Path(target).name}: extension says {named} but the {what} is {fmt}")
    return atomic_path(target, overwrite=overwrite, inputs=inputs, recognise=recognise)
