"""GGUF as a list of typed segments, so a mutation can change one field and re-encode the rest.

:func:`decode` splits a valid GGUF file into :class:`Seg` values (each count, length, type code,
dimension and offset is its own segment, tagged with its role); :func:`encode` joins them back
(byte for byte the same file). Mutations then work on meaning, not on byte positions:

* ``("set", role, k, value)``: the ``k``-th segment of a role (``count``: string lengths, array
  counts, the tensor and key/value counts; ``type``: value type codes; ``dims``: tensor ranks;
  ``dim``: dimensions; ``ttype``: ggml types; ``offset``: data offsets; ``version``) takes
  ``value`` (wrapped to the field's width: -1 becomes all ones);
* ``("array_count", k, value)``: the element count of the ``k``-th array;
* ``("claim", element_type, count)``: an array that claims ``count`` elements and holds none;
* ``("dup_kv", k)``, ``("nest", depth)``, ``("strings", n)``, ``("bad_key", k)``: a duplicated
  key, arrays of arrays, ``n`` empty strings, a key that is not UTF-8 (the key/value count follows).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

STRING, ARRAY = 8, 9
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
ROLES = ("count", "type", "dims", "dim", "ttype", "offset", "version")


@dataclass
class Seg:
    """One field: ``fmt`` a struct format (``""`` for raw bytes in ``value``), ``role`` its meaning."""

    role: str
    fmt: str
    value: object

    def pack(self) -> bytes:
        if not self.fmt:
            return self.value
        if self.fmt[-1] in "fd?":
            return struct.pack(self.fmt, self.value)
        bits = 8 * struct.calcsize(self.fmt)
        v = int(self.value) & ((1 << bits) - 1)
        if self.fmt[-1].islower() and v >= 1 << (bits - 1):
            v -= 1 << bits
        return struct.pack(self.fmt, v)


def encode(segs: list[Seg]) -> bytes:
    return b"".join(s.pack() for s in segs)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, role: str, fmt: str) -> Seg:
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return Seg(role, fmt, v)

    def raw(self, n: int) -> Seg:
        self.pos += n
        return Seg("raw", "", self.data[self.pos - n:self.pos])

    def string(self) -> list[Seg]:
        n = self.take("count", "<Q")
        return [n, self.raw(n.value)]

    def value(self, code: int) -> list[Seg]:
        if code == STRING:
            return self.string()
        if code != ARRAY:
            return [self.take("raw", _SCALAR[code])]
        sub, n = self.take("type", "<I"), self.take("count", "<Q")
        return [sub, n] + [s for _ in range(n.value) for s in self.value(sub.value)]


def decode(data: bytes) -> list[Seg]:
    """Segments of a valid little-endian GGUF file (v2/v3); the last is the padding and tensor data."""
    r = _Reader(data)
    segs = [r.raw(4), r.take("version", "<I"), r.take("count", "<Q"), r.take("count", "<Q")]
    n_tensors, n_kv = segs[2].value, segs[3].value
    for _ in range(n_kv):
        segs += r.string()
        code = r.take("type", "<I")
        segs += [code] + r.value(code.value)
    for _ in range(n_tensors):
        segs += r.string()
        rank = r.take("dims", "<I")
        segs += [rank] + [r.take("dim", "<Q") for _ in range(rank.value)]
        segs += [r.take("ttype", "<I"), r.take("offset", "<Q")]
    return segs + [Seg("raw", "", data[r.pos:])]


def _kv_bounds(segs: list[Seg]) -> list[tuple[int, int]]:
    """``(start, end)`` segment indices of each key/value pair, re-walked from the counts; the walk
    stops where a mutated count or type no longer matches the segments."""
    out, i = [], 4
    try:
        for _ in range(min(segs[3].value, len(segs))):
            start = i
            code = segs[i + 2].value  # after the key length and key bytes
            i = _skip_value(segs, i + 3, code)
            out.append((start, i))
    except (IndexError, TypeError, RecursionError):
        pass
    return out


def _skip_value(segs: list[Seg], i: int, code: int) -> int:
    if code == STRING:
        return i + 2
    if code != ARRAY:
        return i + 1
    sub, n = segs[i].value, segs[i + 1].value
    i += 2
    for _ in range(min(n, len(segs))):
        i = _skip_value(segs, i, sub)
    return i


def _insert_kv(segs: list[Seg], kv: list[Seg]) -> list[Seg]:
    bounds = _kv_bounds(segs)
    at = bounds[-1][1] if bounds else 4
    segs = segs[:at] + kv + segs[at:]
    segs[3] = Seg("count", "<Q", segs[3].value + 1)
    return segs


def _key(name: bytes) -> list[Seg]:
    return [Seg("count", "<Q", len(name)), Seg("raw", "", name)]


def mutate(segs: list[Seg], op: tuple) -> list[Seg]:
    """``segs`` after one structural mutation (see the module docstring); the input is not changed."""
    segs = [Seg(s.role, s.fmt, s.value) for s in segs]
    kind = op[0]
    if kind == "set":
        _, role, k, value = op
        picks = [i for i, s in enumerate(segs) if s.role == role]
        if picks:
            segs[picks[k % len(picks)]].value = value
        return segs
    if kind == "array_count":
        arrays = [start + 3 for start, _ in _kv_bounds(segs) if segs[start + 2].value == ARRAY]
        if arrays:
            segs[arrays[op[1] % len(arrays)] + 1].value = op[2]
        return segs
    if kind == "dup_kv":
        bounds = _kv_bounds(segs)
        if not bounds:
            return segs
        start, end = bounds[op[1] % len(bounds)]
        return _insert_kv(segs, segs[start:end])
    if kind == "nest":
        depth = op[1]
        kv = _key(b"fuzz.nested") + [Seg("type", "<I", ARRAY)]
        kv += [s for _ in range(depth) for s in (Seg("type", "<I", ARRAY), Seg("count", "<Q", 1))]
        kv += [Seg("type", "<I", 0), Seg("count", "<Q", 1), Seg("raw", "<B", 7)]
        return _insert_kv(segs, kv)
    if kind == "claim":
        kv = _key(b"fuzz.claim") + [Seg("type", "<I", ARRAY), Seg("type", "<I", op[1]), Seg("count", "<Q", op[2])]
        return _insert_kv(segs, kv)
    if kind == "strings":
        n = op[1]
        kv = _key(b"fuzz.strings") + [Seg("type", "<I", ARRAY), Seg("type", "<I", STRING), Seg("count", "<Q", n)]
        return _insert_kv(segs, kv + [Seg("raw", "", b"\0" * 8 * n)])
    if kind == "bad_key":
        bounds = _kv_bounds(segs)
        if bounds:
            start = bounds[op[1] % len(bounds)][0]
            segs[start + 1].value = b"\xff\xfe" + segs[start + 1].value[2:]
        return segs
    raise ValueError(f"unknown GGUF mutation {op!r}")
