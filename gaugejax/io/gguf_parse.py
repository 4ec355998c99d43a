"""A bounded GGUF header parser: every count and length is checked against the file before use.

GGUF (llama.cpp) is ``magic "GGUF"``, ``u32 version`` (2 or 3), ``u64 tensor_count``, ``u64
kv_count``, then ``kv_count`` typed key/value pairs, ``tensor_count`` tensor infos, padding to
``general.alignment`` and the tensor data. Strings are ``u64 length`` + bytes; an array is ``u32
element type`` + ``u64 count`` + the elements. Everything is little-endian here.

Reading a hostile file must not cost more than the file holds. So this parser, unlike
``gguf.GGUFReader`` (which builds a numpy view per array element and trusts every count):

* checks each count against the bytes left *before* walking it (an element takes at least its
  minimum encoded size), and refuses nested arrays, duplicate keys and tensor names;
* keeps only offsets while walking: metadata values are decoded when asked for
  (:meth:`GGUFHeader.value`), numeric arrays as numpy arrays (never Python lists of numbers);
* checks each tensor's type, rank and byte extent against the file, and returns its data as a
  read-only memory map (dequantize with ``gguf.quants.dequantize``).

Errors are :class:`~gaugejax.errors.CheckpointError` with one line.

Example:
  >>> import struct, tempfile, os
  >>> s = lambda t: struct.pack("<Q", len(t)) + t.encode()
  >>> blob = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("general.architecture") + struct.pack("<I", 8)
  ...         + s("llama"))
  >>> path = os.path.join(tempfile.mkdtemp(), "m.gguf")
  >>> _ = open(path, "wb").write(blob)
  >>> read_header(path).value("general.architecture")
  'llama'
  >>> _ = open(path, "wb").write(blob[:24] + s("a") + struct.pack("<IIQ", 9, 0, 2**40))
  >>> read_header(path)
  Traceback (most recent call last):
  ...
  gaugejax.errors.CheckpointError: ...: metadata 'a' claims 1099511627776 array elements of at least 1 byte but 0 bytes remain (corrupt or crafted GGUF)
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from gaugejax.errors import CheckpointError

__all__ = ["GGUFHeader", "Field", "TensorEntry", "read_header", "VALUE_TYPES", "MAX_DIMS", "STRING", "ARRAY"]

STRING, ARRAY = 8, 9
VALUE_TYPES: dict[int, tuple[str, str]] = {
    0: ("UINT8", "<u1"), 1: ("INT8", "<i1"), 2: ("UINT16", "<u2"), 3: ("INT16", "<i2"), 4: ("UINT32", "<u4"),
    5: ("INT32", "<i4"), 6: ("FLOAT32", "<f4"), 7: ("BOOL", "?"), 8: ("STRING", ""), 9: ("ARRAY", ""),
    10: ("UINT64", "<u8"), 11: ("INT64", "<i8"), 12: ("FLOAT64", "<f8"),
}
"""GGUF value type code → (``gguf.GGUFValueType`` name, numpy dtype of a scalar; empty for strings/arrays)."""
MAX_DIMS = 4
"""GGML_MAX_DIMS: llama.cpp's tensors have at most four dimensions."""
_TYPED = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8"}
"""ggml types the ``gguf`` reader exposes as typed arrays; every other type is handed over as raw bytes."""


@dataclass(frozen=True)
class Field:
    """One metadata key/value pair, located but not decoded.

    Attributes:
      name: the key.
      type: value type code (:data:`VALUE_TYPES`).
      subtype: element type code of an array, else ``None``.
      count: number of array elements (1 for a scalar).
      start: offset of the value (of the first element for arrays).
      end: offset just past the value.
    """

    name: str
    type: int
    subtype: int | None
    count: int
    start: int
    end: int

    @property
    def type_names(self) -> tuple[str, str | None]:
        """``(type name, element type name or None)`` as ``gguf.GGUFValueType`` spells them."""
        return VALUE_TYPES[self.type][0], None if self.subtype is None else VALUE_TYPES[self.subtype][0]


@dataclass(frozen=True)
class TensorEntry:
    """One tensor info: ``dims`` innermost first (GGUF order), ``type`` a ggml type code."""

    name: str
    dims: tuple[int, ...]
    type: int
    offset: int
    n_elements: int
    n_bytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy order (outermost first)."""
        return self.dims[::-1]


class _Cursor:
    """Reads little-endian values from a buffer, refusing any read past its end."""

    def __init__(self, buf, size: int, where: str):
        self.buf, self.size, self.where, self.pos = buf, size, where, 0

    def fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.where}: {what} (corrupt or crafted GGUF)")

    def left(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> int:
        if n > self.left():
            raise self.fail(f"{what} needs {n} bytes but {self.left()} remain")
        start, self.pos = self.pos, self.pos + n
        return start

    def unpack(self, fmt: str, what: str) -> Any:
        start = self.need(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.buf, start)[0]

    def skip_string(self, what: str) -> tuple[int, int]:
        n = self.unpack("<Q", f"the length of {what}")
        return self.need(n, what), n

    def string(self, what: str) -> str:
        start, n = self.skip_string(what)
        return bytes(self.buf[start:start + n]).decode("utf-8", errors="replace")


def _min_size(code: int) -> int:
    """Fewest bytes one value of type ``code`` takes (a string: its 8-byte length)."""
    return 8 if code == STRING else np.dtype(VALUE_TYPES[code][1]).itemsize


def _read_field(cur: _Cursor) -> Field:
    name = cur.string("a metadata key")
    code = cur.unpack("<I", f"the type of metadata {name!r}")
    if code not in VALUE_TYPES:
        raise cur.fail(f"metadata {name!r} has unknown value type {code}")
    if code == STRING:
        start, n = cur.skip_string(f"metadata {name!r}")
        return Field(name, code, None, 1, start - 8, start + n)
    if code != ARRAY:
        start = cur.need(_min_size(code), f"metadata {name!r}")
        return Field(name, code, None, 1, start, cur.pos)
    sub = cur.unpack("<I", f"the element type of metadata {name!r}")
    if sub not in VALUE_TYPES:
        raise cur.fail(f"metadata {name!r} is an array of unknown value type {sub}")
    if sub == ARRAY:
        raise cur.fail(f"metadata {name!r} is an array of arrays, which GGUF readers do not support")
    count = cur.unpack("<Q", f"the element count of metadata {name!r}")
    least = _min_size(sub)
    if count > cur.left() // least:
        raise cur.fail(f"metadata {name!r} claims {count} array elements of at least {least} byte"
                       f"{'s' if least > 1 else ''} but {cur.left()} bytes remain")
    start = cur.pos
    if sub == STRING:
        _skip_strings(cur, count, f"metadata {name!r}")
    else:
        cur.need(count * least, f"metadata {name!r}")
    return Field(name, code, sub, count, start, cur.pos)


def _skip_strings(cur: _Cursor, count: int, what: str) -> None:
    """Walks ``count`` strings (a tight loop: vocabularies hold hundreds of thousands)."""
    pos, end, buf, length = cur.pos, cur.size, cur.buf, struct.Struct("<Q").unpack_from
    for i in range(count):
        if pos + 8 > end:
            raise cur.fail(f"element {i} of {what} is cut off")
        pos += 8 + length(buf, pos)[0]
        if pos > end:
            raise cur.fail(f"element {i} of {what} runs past the end of the file")
    cur.pos = pos


def _read_tensor(cur: _Cursor, quant_sizes: Mapping[int, tuple[str, int, int]]) -> tuple[str, tuple, int, int]:
    name = cur.string("a tensor name")
    n_dims = cur.unpack("<I", f"the rank of tensor {name!r}")
    if n_dims > MAX_DIMS:
        raise cur.fail(f"tensor {name!r} claims {n_dims} dimensions (GGUF allows at most {MAX_DIMS})")
    dims = tuple(cur.unpack("<Q", f"the dimensions of tensor {name!r}") for _ in range(n_dims))
    code = cur.unpack("<I", f"the type of tensor {name!r}")
    if code not in quant_sizes:
        raise cur.fail(f"tensor {name!r} has unknown ggml type {code}")
    return name, dims, code, cur.unpack("<Q", f"the data offset of tensor {name!r}")


def _quant_sizes() -> dict[int, tuple[str, int, int]]:
    """ggml type code → (name, block size, bytes per block), from the ``gguf`` package."""
    try:
        from gguf.constants import GGML_QUANT_SIZES
    except ImportError:
        raise CheckpointError("reading .gguf files needs the `gguf` package: pip install gguf") from None
    return {int(t): (t.name, b, s) for t, (b, s) in GGML_QUANT_SIZES.items()}


class GGUFHeader:
    """A GGUF file's metadata and tensor infos, read and checked; values decoded on demand.

    Attributes:
      path: the file.
      size: its size in bytes.
      version: GGUF version (2 or 3).
      fields: key → :class:`Field`, in file order.
      tensors: name → :class:`TensorEntry`, in file order.
      data_offset: where tensor data starts.
    """

    def __init__(self, path: str, buf, size: int, version: int, fields: dict[str, Field],
                 tensors: dict[str, TensorEntry], data_offset: int):
        self.path, self._buf, self.size, self.version = path, buf, size, version
        self.fields, self.tensors, self.data_offset = fields, tensors, data_offset

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def value(self, key: str, default: Any = None) -> Any:
        """The decoded value of ``key``: a number, a ``str``, a list of ``str`` for string arrays,
        a 1-D numpy array for numeric arrays; ``default`` when absent."""
        f = self.fields.get(key)
        if f is None:
            return default
        if f.type == STRING:
            return self._str(f.start)
        if f.type != ARRAY:
            return np.frombuffer(self._buf, VALUE_TYPES[f.type][1], 1, f.start)[0].item()
        if f.subtype == STRING:
            return self._strings(f)
        return np.frombuffer(self._buf, VALUE_TYPES[f.subtype][1], f.count, f.start).copy()

    def values(self, keys=None) -> "LazyMetadata":
        """A read-only mapping over the metadata (all keys, or ``keys``) that decodes a value when read."""
        return LazyMetadata(self, list(self.fields) if keys is None else [k for k in keys if k in self.fields])

    def _str(self, start: int) -> str:
        (n,) = struct.unpack_from("<Q", self._buf, start)
        return bytes(self._buf[start + 8:start + 8 + n]).decode("utf-8", errors="replace")

    def _strings(self, f: Field) -> list[str]:
        buf, pos, length, out = self._buf, f.start, struct.Struct("<Q").unpack_from, []
        for _ in range(f.count):
            n = length(buf, pos)[0]
            out.append(str(buf[pos + 8:pos + 8 + n], "utf-8", "replace"))
            pos += 8 + n
        return out

    def tensor_data(self, name: str) -> np.ndarray:
        """A tensor's stored data as a read-only view: typed for float/int types, else raw bytes
        shaped as ``gguf.quants.dequantize`` expects (the last axis in bytes)."""
        t = self.tensors[name]
        qname, block, type_size = _quant_sizes()[t.type]
        start = self.data_offset + t.offset
        raw = np.frombuffer(self._buf, np.uint8, t.n_bytes, start)
        if qname in _TYPED:
            return raw.view(_TYPED[qname]).reshape(t.shape)
        shape = t.shape or (1,)
        return raw.reshape(*shape[:-1], shape[-1] // block * type_size)

    def type_name(self, name: str) -> str:
        """The ggml type name of a tensor (``"F32"``, ``"Q4_K"``...)."""
        return _quant_sizes()[self.tensors[name].type][0]


class LazyMetadata(Mapping):
    """Metadata key → value, decoded when a value is read (see :meth:`GGUFHeader.value`)."""

    def __init__(self, header: GGUFHeader, keys: list[str]):
        self._header, self._keys = header, keys

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(key)
        return self._header.value(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _map(path: str) -> tuple[Any, int]:
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 24:
                raise CheckpointError(f"{path} is not a readable GGUF file (only {size} bytes)")
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ), size
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Parses and checks a GGUF file's header (no tensor data is read).

    Raises:
      CheckpointError: not a GGUF file, an unsupported version or byte order, or any count,
        length, type or offset the file cannot hold.
    """
    path = os.fspath(path)
    buf, size = _map(path)
    cur = _Cursor(buf, size, path)
    if bytes(buf[:4]) != b"GGUF":
        raise CheckpointError(f"{path} is not a readable GGUF file (bad magic {bytes(buf[:4])!r})")
    cur.pos = 4
    version = cur.unpack("<I", "the version")
    if version & 0xFFFF == 0 and version:
        raise CheckpointError(f"{path}: big-endian GGUF files are not supported")
    if version not in (2, 3):
        raise CheckpointError(f"{path} is not a readable GGUF file (version {version}; supported: 2, 3)")
    n_tensors, n_kv = cur.unpack("<Q", "the tensor count"), cur.unpack("<Q", "the key/value count")
    if n_kv > cur.left() // 13:  # key length 8 + type 4 + at least one byte of value
        raise cur.fail(f"the header claims {n_kv} metadata entries but {cur.left()} bytes remain")
    fields: dict[str, Field] = {}
    for _ in range(n_kv):
        f = _read_field(cur)
        if f.name in fields:
            raise cur.fail(f"metadata key {f.name!r} appears twice")
        fields[f.name] = f
    if n_tensors > cur.left() // 24:  # name length 8 + rank 4 + type 4 + offset 8
        raise cur.fail(f"the header claims {n_tensors} tensors but {cur.left()} bytes remain")
    quant = _quant_sizes()
    infos = [_read_tensor(cur, quant) for _ in range(n_tensors)]
    align = _alignment(fields, buf, cur)
    data_offset = -(-cur.pos // align) * align
    tensors: dict[str, TensorEntry] = {}
    for name, dims, code, offset in infos:
        if name in tensors:
            raise cur.fail(f"tensor {name!r} appears twice")
        tensors[name] = _check_tensor(cur, name, dims, code, offset, quant[code], size - data_offset)
    return GGUFHeader(path, buf, size, version, fields, tensors, data_offset)


def _alignment(fields: dict[str, Field], buf, cur: _Cursor) -> int:
    f = fields.get("general.alignment")
    if f is None:
        return 32
    if f.type != 4:
        raise cur.fail("general.alignment must be a UINT32")
    (align,) = struct.unpack_from("<I", buf, f.start)
    if align == 0 or align & (align - 1):
        raise cur.fail(f"general.alignment={align} is not a power of two")
    return align


def _check_tensor(cur: _Cursor, name: str, dims: tuple, code: int, offset: int, quant: tuple[str, int, int],
                  data_bytes: int) -> TensorEntry:
    qname, block, type_size = quant
    n = math.prod(dims)
    if not dims and block > 1:
        raise cur.fail(f"tensor {name!r} ({qname}) has no dimensions")
    if dims and dims[0] % block:
        raise cur.fail(f"tensor {name!r} ({qname}) has {dims[0]} values per row, not a multiple of {block}")
    n_bytes = n // block * type_size
    if offset > data_bytes or n_bytes > data_bytes - offset:
        raise cur.fail(f"tensor {name!r} ({qname}, shape {list(dims[::-1])}) needs {n_bytes} bytes at data offset "
                       f"{offset}, but the data section holds {data_bytes}")
    return TensorEntry(name, dims, code, offset, n, n_bytes)
