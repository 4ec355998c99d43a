"""Which files of an input gaugejax reads or copies: the containment rule, in one place.

Every input is untrusted (docs/security.md). A checkpoint or SAELens folder may hold symbolic links
and special files; these rules keep what gaugejax reads, and what it copies into an output,
inside the folder the user named:

* **Links.** A file of an input folder is read only if, with every link resolved, it lies inside
  that folder. One exception: a folder inside a Hugging Face cache snapshot
  (``models--ORG--NAME/snapshots/REV/...``) may link to the files of the cache's own blob store
  (``models--ORG--NAME/blobs/HASH``), which is how ``huggingface_hub`` lays out every download.
* **Special files.** Only regular files are opened: a FIFO, socket or device is refused after an
  ``os.stat`` (which never blocks), before anything opens it.
* **Modes.** A file copied from an input keeps its permission bits, narrowed by the umask, never
  widened: a ``0600`` file stays ``0600``.

Every refusal is one line (:class:`UnsafeInputError`) naming the file and the fix.

Example:
  >>> import os, tempfile
  >>> root = tempfile.mkdtemp()
  >>> os.symlink("/etc/hostname", os.path.join(root, "notes.txt"))
  >>> input_file(os.path.join(root, "notes.txt"), root)  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  ...
  gaugejax.io.containment.UnsafeInputError: ... links outside the input folder ...
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from gaugejax.errors import CheckpointError

__all__ = ["UnsafeInputError", "input_file", "regular_file", "copy_input_file", "hf_cache_blobs"]

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


class UnsafeInputError(CheckpointError):
    """A file of an input links outside its folder, or is not a regular file (FIFO, device, ...)."""


def hf_cache_blobs(folder: str | os.PathLike) -> Path | None:
    """The blob store a folder inside a Hugging Face cache snapshot may link into, else ``None``.

    ``folder`` is resolved; it is inside a snapshot when one of its ancestors (or itself) is
    ``.../models--*/snapshots/REV``.

    Example:
      >>> hf_cache_blobs("/c/hub/models--gpt2/snapshots/abc123/sub").as_posix()
      '/c/hub/models--gpt2/blobs'
      >>> hf_cache_blobs("/data/my_model") is None
      True
    """
    real = Path(os.path.realpath(folder))
    for rev in (real, *real.parents):
        snapshots = rev.parent
        if snapshots.name == "snapshots" and snapshots.parent.name.startswith("models--") and rev != snapshots:
            return snapshots.parent / "blobs"
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def regular_file(path: str | os.PathLike, shown: str | os.PathLike | None = None) -> os.stat_result:
    """``os.stat`` of ``path`` (links followed), refusing anything but a regular file.

    ``os.stat`` never opens the file, so a FIFO is refused instead of blocking the reader.

    Raises:
      UnsafeInputError: missing (or a broken link), or a FIFO, socket, device or directory.

    Example:
      >>> regular_file("/dev/null")
      Traceback (most recent call last):
      ...
      gaugejax.io.containment.UnsafeInputError: /dev/null is a character device, not a regular file; gaugejax reads only regular files: replace it with the file itself
    """
    shown = os.fspath(shown if shown is not None else path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UnsafeInputError(f"{shown} does not exist (or is a link to nothing)") from None
    except OSError as e:
        raise UnsafeInputError(f"cannot read {shown}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a plain file")
        raise UnsafeInputError(f"{shown} is {kind}, not a regular file; gaugejax reads only regular files: replace "
                               "it with the file itself")
    return st


def input_file(path: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """``path``, a file of the input folder ``folder``, checked for reading; returns ``path``.

    The file must be regular and, every link resolved, lie inside ``folder`` (or, for a folder
    in a Hugging Face cache snapshot, be one of the cache's blobs).

    Raises:
      UnsafeInputError: a link out of the folder, a special file, or a missing file.
    """
    p = Path(path)
    real, root = Path(os.path.realpath(p)), Path(os.path.realpath(folder))
    if not _inside(real, root) and real.parent != hf_cache_blobs(root):
        raise UnsafeInputError(f"{p} links outside the input folder (to {real}); gaugejax reads only files inside "
                               f"{folder}: copy the file into the folder, or remove the link")
    regular_file(p)
    return p


def copy_input_file(src: str | os.PathLike, dst: str | os.PathLike, folder: str | os.PathLike | None) -> None:
    """Copies ``src`` (a file of the input ``folder``; ``None``: a file named on its own) to the new
    file ``dst`` without widening its mode.

    The source is checked (:func:`input_file`, or :func:`regular_file` when ``folder`` is
    ``None``), opened without blocking and checked again on the open descriptor (it may have been
    swapped for a FIFO in between). ``dst`` gets the source's permission bits narrowed by the umask.

    Raises:
      UnsafeInputError: the source breaks the containment rule.
      OSError: reading or writing failed (e.g. the disk is full); ``dst`` may be partial (the
        caller writes into a temporary folder that is removed on failure).
    """
    if folder is None:
        regular_file(src)
    else:
        input_file(src, folder)
    fd = os.open(src, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fin:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeInputError(f"{src} changed into a special file while being read; replace it with the file "
                                   "itself")
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IMODE(mode) & 0o666)  # the umask narrows it
        with os.fdopen(out, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
