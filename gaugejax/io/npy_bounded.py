"""``.npy`` and ``.npz`` reading whose memory is bounded by the bytes the file really holds.

``np.load`` trusts the shape in an ``.npy`` header and the sizes in a zip directory: a small
``.npz`` whose member claims 2 GiB (deflate compresses zeros 1000-fold) costs 2 GiB. Here:

* an ``.npy`` header's shape times its itemsize must fit in the bytes after the header (object
  dtypes are refused: they need pickle);
* only the named ``.npz`` members are read, and each one's declared size is checked in the zip
  directory first: stored members must fit in the archive, deflated ones may expand at most
  :data:`MAX_RATIO`-fold (or to :data:`SMALL_MEMBER` bytes), other compressions are refused;
* data is read into the final array in chunks (no second copy).

Errors are one line of the caller's :class:`~gaugejax.errors.GaugeJaxError` subclass.

Example:
  >>> import tempfile, os
  >>> d = tempfile.mkdtemp()
  >>> np.savez(os.path.join(d, "g.npz"), perm=np.arange(3), note=np.zeros(5))
  >>> sorted(read_npz(os.path.join(d, "g.npz"), ["perm"]))
  ['perm']
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
from typing import IO, Iterable

import numpy as np

from gaugejax.errors import GaugeJaxError

__all__ = ["read_npy", "read_npz", "npz_members", "is_zip", "MAX_RATIO", "SMALL_MEMBER", "MAX_DIMS"]

MAX_RATIO = 64
"""A deflated ``.npz`` member may declare at most this many times its compressed size..."""
SMALL_MEMBER = 1 << 20
"""...or this many bytes, whichever is larger (a compressed gauge of d = 100k fits either way)."""
MAX_DIMS = 32
"""Arrays of more dimensions are refused (numpy's own limit is 64)."""
_CHUNK = 1 << 22
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError,
               RuntimeError, struct.error)
"""What ``zipfile`` raises on a damaged archive (bad records, unknown versions, encryption...)."""


class _Refused(Exception):
    """Internal: why an array is refused (turned into the caller's error class)."""


def _header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise _Refused(f".npy format version {version[0]}.{version[1]} (supported: 1.0, 2.0)")
    except Exception as e:  # numpy's header parser raises ValueError, SyntaxError, tokenize.TokenError...
        raise _Refused(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    if dtype.hasobject:
        raise _Refused("it holds Python objects, which need pickle (refused: loading pickles can run code)")
    if dtype.subdtype is not None:
        raise _Refused(f"dtype {dtype} is a sub-array dtype, which numpy does not write")
    if dtype.itemsize == 0:
        raise _Refused(f"dtype {dtype} has zero-sized items")
    if len(shape) > MAX_DIMS or any(not isinstance(n, int) or n < 0 for n in shape):
        raise _Refused(f"shape {shape} is not a valid array shape")
    return shape, fortran, dtype


def _read_array(fh: IO[bytes], available: int) -> np.ndarray:
    """Reads one ``.npy`` stream of which at most ``available`` bytes remain after ``fh``'s position."""
    start = fh.tell()
    shape, fortran, dtype = _header(fh)
    available -= fh.tell() - start
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > available:
        raise _Refused(f"its header describes {dtype}{list(shape)} ({nbytes} bytes) but only {available} bytes follow")
    out = np.empty(math.prod(shape), dtype)
    view, pos = memoryview(out.reshape(-1).view(np.uint8)), 0
    while pos < nbytes:
        got = fh.readinto(view[pos:pos + _CHUNK])
        if not got:
            raise _Refused(f"it ends after {pos} of {nbytes} data bytes")
        pos += got
    return out.reshape(shape[::-1]).T if fortran else out.reshape(shape)


def is_zip(path: str | os.PathLike) -> bool:
    """True when the file starts as a zip archive does (what ``np.load`` takes for an ``.npz``)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    except OSError:
        return False  # the reader that follows says why the file cannot be read


def read_npy(path: str | os.PathLike, *, error: type[GaugeJaxError], label: str) -> np.ndarray:
    """One array from an ``.npy`` file; ``error(f"{label} ...")`` with one line when refused.

    Example:
      >>> import tempfile
      >>> p = os.path.join(tempfile.mkdtemp(), "t.npy")
      >>> np.save(p, np.arange(4))
      >>> read_npy(p, error=GaugeJaxError, label=p).tolist()
      [0, 1, 2, 3]
    """
    try:
        with open(path, "rb") as fh:
            return _read_array(fh, os.fstat(fh.fileno()).st_size)
    except _Refused as e:
        raise error(f"{label} is not a plain .npy array ({e})") from None
    except OSError as e:
        raise error(f"cannot read {label} ({e.strerror or e})") from None


def _check_member(info: zipfile.ZipInfo, archive_bytes: int) -> None:
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _Refused(f"member {info.filename!r} uses zip compression method {info.compress_type} "
                       "(numpy writes stored or deflated members)")
    if info.header_offset + info.compress_size > archive_bytes:
        raise _Refused(f"member {info.filename!r} claims {info.compress_size} bytes past the end of the archive")
    limit = info.compress_size if info.compress_type == zipfile.ZIP_STORED else \
        max(SMALL_MEMBER, MAX_RATIO * info.compress_size)
    if info.file_size > limit:
        raise _Refused(f"member {info.filename!r} declares {info.file_size} bytes from {info.compress_size} "
                       f"compressed (over the {limit}-byte bound)")


def npz_members(path: str | os.PathLike, *, error: type[GaugeJaxError], label: str) -> list[str]:
    """The member names of an ``.npz`` (zip) archive, as stored (arrays end in ``.npy``)."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except _ZIP_ERRORS as e:
        raise error(f"{label}: not a plain .npz archive ({str(e).splitlines()[0] or type(e).__name__})") from None


def read_npz(path: str | os.PathLike, names: Iterable[str] | None = None, *,
             error: type[Exception] = GaugeJaxError, label: str | None = None) -> dict[str, np.ndarray]:
    """The arrays ``names`` of an ``.npz`` archive (absent names are left out), or all of them
    (``names=None``: then a member that is not ``NAME.npy`` is refused). Each member's declared size
    is checked before it is read."""
    label = label or os.fspath(path)
    try:
        archive_bytes = os.path.getsize(path)
        with zipfile.ZipFile(path) as z:
            infos = {i.filename[:-4]: i for i in z.infolist() if i.filename.endswith(".npy")}
            raw = [i.filename for i in z.infolist() if not i.filename.endswith(".npy")]
            if names is None and raw:
                raise _Refused(f"member {raw[0]!r} is not .npy array data")
            wanted = list(infos) if names is None else [n for n in names if n in infos]
            out = {}
            for name in wanted:
                info = infos[name]
                _check_member(info, archive_bytes)
                with z.open(info) as fh:
                    out[name] = _read_array(fh, info.file_size)
            return out
    except _Refused as e:
        raise error(f"{label} is not a plain .npz archive ({e})") from None
    except _ZIP_ERRORS as e:
        raise error(f"{label}: not a plain .npz archive ({str(e).splitlines()[0] or type(e).__name__})") from None
