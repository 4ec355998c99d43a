"""Structure-aware mutations of the files gaugejax reads (GGUF lives in :mod:`gguf_codec`).

Each ``mutate_*`` takes a valid file's bytes and one operation tuple and returns new bytes:

* every format: ``("truncate", fraction)``, ``("splice", fraction, blob)``;
* JSON (``config.json``, the shard index, neuron lists, safetensors headers): ``("json_set", k,
  value)`` replaces the ``k``-th node, ``("json_key", key, value)`` sets a top-level key,
  ``("json_nest", depth)``, ``("json_dup", k)`` (a duplicated
  key), ``("json_bytes", blob)`` (e.g. non-UTF-8 inside a string);
* safetensors: ``("st_hlen", value)`` for the header length, JSON operations on the header;
* ``.npy``: ``("npy_shape", k, value)``, ``("npy_descr", descr)``, ``("npy_fortran",)``,
  ``("npy_hlen", value)``;
* ``.npz``: ``("zip_field", field, k, value)`` patches a size, offset, count or method in the
  local headers, central directory or end record; ``("zip_member", k, op)`` mutates one member
  as ``.npy``; ``("zip_bomb", name, size)`` adds a deflated member of ``size`` zeros;
  ``("zip_rename", k, name)``;
* CSV: ``("csv_cell", row, col, text)``, ``("csv_ragged", row)``, ``("csv_wide", n)``.

Values wider than a field wrap (``-1`` → all ones), as a hostile writer would make them.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import struct
import zipfile
import zlib

SIZES = (0, -1, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1)
"""Size-field values every mutation tries (0, -1, 2^31, 2^40, 2^63 and the all-ones words)."""


def _wrap(value: int, fmt: str) -> int:
    bits = 8 * struct.calcsize(fmt)
    return int(value) & ((1 << bits) - 1)


def generic(data: bytes, op: tuple) -> bytes:
    if op[0] == "truncate":
        return data[:int(len(data) * op[1])]
    if op[0] == "splice":
        at = int(len(data) * op[1])
        return data[:at] + op[2] + data[at + len(op[2]):]
    raise ValueError(f"unknown mutation {op!r}")


# ------------------------------------------------------------------------------------------- JSON

def _nodes(doc, out=None):
    """Every (container, key) pair of a JSON document, depth first."""
    out = [] if out is None else out
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        out.append((doc, k))
        _nodes(v, out)
    return out


def mutate_json(data: bytes, op: tuple) -> bytes:
    kind = op[0]
    if kind == "json_nest":
        return b"[" * op[1] + data + b"]" * op[1]
    if kind == "json_bytes":
        text = data.rstrip()
        at = text.find(b'"', 1)
        return text[:at + 1] + op[1] + text[at + 1:] if at > 0 else op[1] + text
    try:
        doc = json.loads(data)
    except ValueError:
        return generic(data, ("splice", 0.5, b"\xff"))
    if kind == "json_key":
        if isinstance(doc, dict):
            doc[op[1]] = op[2]
        return json.dumps(doc).encode()
    if kind == "json_set":
        nodes = _nodes(doc)
        if not nodes:
            return json.dumps(op[2]).encode()
        parent, key = nodes[op[1] % len(nodes)]
        parent[key] = op[2]
        return json.dumps(doc).encode()
    if kind == "json_dup":
        nodes = [(p, k) for p, k in _nodes(doc) if isinstance(p, dict)]
        if not nodes:
            return data
        parent, key = nodes[op[1] % len(nodes)]
        text = json.dumps(doc)
        entry = f"{json.dumps(key)}: {json.dumps(parent[key])}"
        return text.replace(entry, f"{entry}, {entry}", 1).encode()
    raise ValueError(f"unknown JSON mutation {op!r}")


# ------------------------------------------------------------------------------------ safetensors

def mutate_safetensors(data: bytes, op: tuple) -> bytes:
    (n,) = struct.unpack_from("<Q", data)
    header, rest = data[8:8 + n], data[8 + n:]
    if op[0] == "st_hlen":
        return struct.pack("<Q", _wrap(op[1], "<Q")) + data[8:]
    if op[0].startswith("json"):
        header = mutate_json(header.rstrip(), op)
        return struct.pack("<Q", len(header)) + header + rest
    return generic(data, op)


# -------------------------------------------------------------------------------------------- npy

def _npy_parts(data: bytes) -> tuple[bytes, dict, bytes, str]:
    major = data[6]
    fmt = "<H" if major == 1 else "<I"
    size = struct.calcsize(fmt)
    (hlen,) = struct.unpack_from(fmt, data, 8)
    header = ast.literal_eval(data[8 + size:8 + size + hlen].decode("latin1"))
    return data[:8], header, data[8 + size + hlen:], fmt


def mutate_npy(data: bytes, op: tuple) -> bytes:
    if not op[0].startswith("npy"):
        return generic(data, op)
    magic, header, body, fmt = _npy_parts(data)
    if op[0] == "npy_shape":
        shape = list(header["shape"]) or [1]
        shape[op[1] % len(shape)] = op[2]
        header["shape"] = tuple(shape)
    elif op[0] == "npy_descr":
        header["descr"] = op[1]
    elif op[0] == "npy_fortran":
        header["fortran_order"] = not header["fortran_order"]
    text = repr(header).encode("latin1")
    text += b" " * (-(len(magic) + struct.calcsize(fmt) + len(text) + 1) % 64) + b"\n"
    hlen = _wrap(op[1], fmt) if op[0] == "npy_hlen" else len(text)
    return magic + struct.pack(fmt, hlen) + text + body


# -------------------------------------------------------------------------------------------- zip

_ZIP_FIELDS = {  # name → (record signature, offset in the record, struct format)
    "local_method": (b"PK\x03\x04", 8, "<H"), "local_csize": (b"PK\x03\x04", 18, "<I"),
    "local_usize": (b"PK\x03\x04", 22, "<I"), "local_namelen": (b"PK\x03\x04", 26, "<H"),
    "cd_method": (b"PK\x01\x02", 10, "<H"), "cd_csize": (b"PK\x01\x02", 20, "<I"),
    "cd_usize": (b"PK\x01\x02", 24, "<I"), "cd_offset": (b"PK\x01\x02", 42, "<I"),
    "end_count": (b"PK\x05\x06", 10, "<H"), "end_cdsize": (b"PK\x05\x06", 12, "<I"),
    "end_cdoffset": (b"PK\x05\x06", 16, "<I"),
}
ZIP_FIELDS = tuple(_ZIP_FIELDS)


def _members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i, z.read(i)) for i in z.infolist()]


def _zip(members: list[tuple[str, bytes, int]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, blob, method in members:
            z.writestr(zipfile.ZipInfo(name), blob, compress_type=method)
    return out.getvalue()


def _gf2_times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec, i = vec >> 1, i + 1
    return out


def crc32_of_zeros(n: int) -> int:
    """CRC-32 of ``n`` zero bytes without reading them (the zero-byte step of the register is a
    32x32 matrix over GF(2), raised to the ``n``-th power as zlib's ``crc32_combine`` does)."""
    op = [0xEDB88320] + [1 << i for i in range(31)]  # one zero bit
    for _ in range(3):
        op = [_gf2_times(op, m) for m in op]  # 2, 4, 8 bits: one zero byte
    state = 0xFFFFFFFF
    while n:
        if n & 1:
            state = _gf2_times(op, state)
        n, op = n >> 1, [_gf2_times(op, m) for m in op]
    return state ^ 0xFFFFFFFF


@functools.lru_cache(maxsize=None)
def deflated_zeros(size: int) -> tuple[bytes, int]:
    """``size`` zero bytes deflated, and their CRC-32, at no cost: each 1 MiB is compressed after a
    full flush (a reset), so every piece is the same ~1 KiB block."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = c.compress(b"\0" * 2**20) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.compress(b"\0" * (size % 2**20)) + c.flush()
    return piece * (size // 2**20) + tail, crc32_of_zeros(size)


def _patch(data: bytes, field: str, k: int, value: int) -> bytes:
    sig, offset, fmt = _ZIP_FIELDS[field]
    hits, at = [], data.find(sig)
    while at >= 0:
        hits.append(at)
        at = data.find(sig, at + 1)
    if not hits:
        return data
    at = hits[k % len(hits)] + offset
    return data[:at] + struct.pack(fmt, _wrap(value, fmt)) + data[at + struct.calcsize(fmt):]


def mutate_npz(data: bytes, op: tuple) -> bytes:
    kind = op[0]
    if kind == "zip_field":
        return _patch(data, op[1], op[2], op[3])
    if kind == "zip_bomb":
        return _zip_with_raw_deflate(data, op[1], op[2], *deflated_zeros(op[2]))
    members = [(i.filename, blob, i.compress_type) for i, blob in _members(data)]
    if kind == "zip_member" and members:
        name, blob, method = members[op[1] % len(members)]
        members[op[1] % len(members)] = (name, mutate_npy(blob, op[2]), method)
        return _zip(members)
    if kind == "zip_rename" and members:
        name, blob, method = members[op[1] % len(members)]
        members[op[1] % len(members)] = (op[2], blob, method)
        return _zip(members)
    return generic(data, op)


def _zip_with_raw_deflate(data: bytes, name: str, size: int, deflated: bytes, crc: int) -> bytes:
    """``data`` with one more deflated member spliced in before its central directory (nothing is
    decompressed: earlier bombs stay as they are)."""
    end = data.rfind(b"PK\x05\x06")
    count, cd_size, cd_offset = struct.unpack_from("<HII", data, end + 10)
    size32 = min(size, 2**32 - 1)  # a member over 4 GiB would need zip64 records; the harness stays below
    fname = name.encode()
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(deflated), size32, len(fname), 0)
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(deflated), size32,
                          len(fname), 0, 0, 0, 0, 0, cd_offset)
    head = data[:cd_offset] + local + fname + deflated
    cd = data[cd_offset:cd_offset + cd_size] + central + fname
    return head + cd + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count + 1, count + 1, len(cd), len(head), 0)


# -------------------------------------------------------------------------------------------- CSV

def mutate_csv(data: bytes, op: tuple) -> bytes:
    lines = data.decode("utf-8", errors="surrogateescape").splitlines()
    sep = "\t" if lines and "\t" in lines[0] else ","
    if op[0] == "csv_cell" and lines:
        row = lines[op[1] % len(lines)].split(sep)
        row[op[2] % len(row)] = op[3]
        lines[op[1] % len(lines)] = sep.join(row)
    elif op[0] == "csv_ragged" and lines:
        lines[op[1] % len(lines)] += sep + "1" + sep + "2"
    elif op[0] == "csv_wide":
        lines = [line + (sep + "x") * op[1] for line in lines]
    else:
        return generic(data, op)
    return "\n".join(lines).encode("utf-8", errors="surrogateescape") + b"\n"
