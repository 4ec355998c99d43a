"""Hypothesis strategies for fuzz cases, and how a case is made from a seed.

A case is ``(target, ops)``: the reader entry point to run (:mod:`worker`) and one to three
mutations of the seed's mutable file, drawn per file kind (:data:`seeds.KINDS`). Structural
mutations are applied first, byte-level ones (truncate, splice) last; ``("grow", size)`` then
extends the file sparsely (its length claims ``size`` bytes that take no disk space).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st

import gguf_codec
import mutate
from seeds import Seed, copy_seed

SIZE = st.sampled_from(mutate.SIZES) | st.integers(0, 300)
FRACTION = st.integers(0, 100).map(lambda x: x / 100)
BLOB = (st.sampled_from([b"\xff", b"\xff\xfe\x00", b"\x00" * 8, b"\x80", b'"', b"{", b"\xc3\x28"])
        | st.binary(max_size=16))
EVIL_JSON = st.sampled_from([0, -1, 2**31, 2**40, 2**63, 10**30, 1e308, -1.5, "16", "", [], {}, None, True,
                             [16, 16, 16], {"a": 1}, float("nan"), "\u2028x"])
JSON_KEYS = st.sampled_from(["num_hidden_layers", "vocab_size", "hidden_size", "intermediate_size",
                             "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
                             "model_type", "weight_map", "metadata", "neurons", "__metadata__", "v", "W_dec"])
NPY_DESCR = st.sampled_from(["|O", "<U1000000000", "|V0", "<f4", "<i8", "|S0", ">f8", "<c16", "|b1", "|V2", "|V7",
                             [("a", "<f4")], [("a", "|O")], ("<f4", (3,)), "M8[s]"])
CSV_CELL = st.sampled_from(["", "nan", "1e309", "-1", "99999999999999999999999", "0x10", "\udcff", "3.5", '"', "16"])

_GENERIC = st.tuples(st.just("truncate"), FRACTION) | st.tuples(st.just("splice"), FRACTION, BLOB)
_JSON = (st.tuples(st.just("json_set"), st.integers(0, 200), EVIL_JSON)
         | st.tuples(st.just("json_key"), JSON_KEYS, EVIL_JSON | SIZE)
         | st.tuples(st.just("json_nest"), st.sampled_from([50, 1000, 100_000]))
         | st.tuples(st.just("json_dup"), st.integers(0, 50))
         | st.tuples(st.just("json_bytes"), st.sampled_from([b"\xff\xfe", b"\xc3", b"\xed\xa0\x80"])))
_NPY = (st.tuples(st.just("npy_shape"), st.integers(0, 3), SIZE) | st.tuples(st.just("npy_descr"), NPY_DESCR)
        | st.tuples(st.just("npy_fortran")) | st.tuples(st.just("npy_hlen"), SIZE))
_NPZ = (st.tuples(st.just("zip_field"), st.sampled_from(mutate.ZIP_FIELDS), st.integers(0, 8),
                  SIZE | st.sampled_from([8, 12, 14, 99]))
        | st.tuples(st.just("zip_member"), st.integers(0, 8), _NPY)
        | st.tuples(st.just("zip_bomb"), st.sampled_from(["junk.npy", "perm.npy", "signs.npy", "a.npy", "W_dec.npy"]),
                    st.sampled_from([2**20 + 1, 2**26, 2**31]))
        | st.tuples(st.just("zip_rename"), st.integers(0, 8), st.sampled_from(["perm", "signs.npy", "x/../a.npy", ""])))
_GGUF_META = (st.tuples(st.just("set"), st.sampled_from(["count", "type", "version"]), st.integers(0, 400),
                        SIZE | st.integers(0, 13))
              | st.tuples(st.just("array_count"), st.integers(0, 8), SIZE)
              | st.tuples(st.just("claim"), st.sampled_from([0, 4, 8, 12]), SIZE)
              | st.tuples(st.just("dup_kv"), st.integers(0, 40))
              | st.tuples(st.just("nest"), st.sampled_from([1, 3, 100]))
              | st.tuples(st.just("strings"), st.sampled_from([0, 1000, 2**16]))
              | st.tuples(st.just("bad_key"), st.integers(0, 40)))
_GGUF_TENSORS = st.tuples(st.just("set"), st.sampled_from(["dims", "dim", "ttype", "offset"]), st.integers(0, 60),
                          SIZE | st.integers(0, 40))
_CSV = (st.tuples(st.just("csv_cell"), st.integers(0, 3), st.integers(0, 2), CSV_CELL)
        | st.tuples(st.just("csv_ragged"), st.integers(0, 3))
        | st.tuples(st.just("csv_wide"), st.sampled_from([1, 1000])))
_GROW = st.tuples(st.just("grow"), st.sampled_from([2**31, 3 * 2**30]))

OPS = {
    "json": _JSON | _GENERIC, "npy": _NPY | _GENERIC, "npz": _NPZ | _GENERIC, "csv": _CSV | _GENERIC,
    "safetensors": _JSON | st.tuples(st.just("st_hlen"), SIZE) | _GENERIC | _GROW,
}


def ops_for(name: str, seed: Seed):
    """The mutation strategy of a seed (GGUF seeds: metadata or tensor-info fields by name)."""
    if seed.kind == "gguf":
        return (_GGUF_TENSORS if name == "gguf_tensors" else _GGUF_META) | _GENERIC
    return OPS[seed.kind]


def cases(name: str, seed: Seed):
    """``(target, ops)`` for one seed."""
    return st.tuples(st.sampled_from(seed.targets), st.lists(ops_for(name, seed), min_size=1, max_size=3))


def _apply_structural(kind: str, data: bytes, ops: list[tuple]) -> bytes:
    if kind == "gguf":
        segs = gguf_codec.decode(data)
        for op in sorted(ops, key=lambda op: op[0] in ("set", "array_count")):  # inserts before field changes
            segs = gguf_codec.mutate(segs, op)
        return gguf_codec.encode(segs)
    if kind == "npz":  # bombs after the member edits (which re-read every member), byte patches last
        ops = sorted(ops, key=lambda op: {"zip_bomb": 1, "zip_field": 2}.get(op[0], 0))
    fn = {"json": mutate.mutate_json, "safetensors": mutate.mutate_safetensors, "npy": mutate.mutate_npy,
          "npz": mutate.mutate_npz, "csv": mutate.mutate_csv}[kind]
    for op in ops:
        try:
            data = fn(data, op)
        except Exception:  # noqa: BLE001 - a mutation that no longer fits the (already mutated) file is skipped
            pass
    return data


def make_case(root: Path, seed: Seed, ops: list[tuple], dest: Path) -> Path:
    """Copies the seed into ``dest``, mutates its file and returns the entry path to read."""
    entry = copy_seed(root, seed, dest)
    path = dest / seed.mutable
    generic = [op for op in ops if op[0] in ("truncate", "splice")]
    grow = [op for op in ops if op[0] == "grow"]
    data = _apply_structural(seed.kind, path.read_bytes(), [op for op in ops if op not in generic + grow])
    for op in generic:
        data = mutate.generic(data, op)
    path.write_bytes(data)
    for _, size in grow:
        with open(path, "r+b") as fh:
            fh.truncate(max(size, len(data)))
    return entry
