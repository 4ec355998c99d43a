"""Every command against hostile input: one stderr line, non-zero exit, nothing written, nothing lost.

``CASES`` is the table: ``(command line, text the one-line reason must contain)``. ``{w}`` is the
shared workspace built once by :func:`world` (tiny checkpoints, broken files, gauges, vectors and
neuron lists). Each case runs in-process through :func:`gaugejax.cli.main`; the workspace is
hashed before and after, so a case fails if any file or folder appears (outputs, temporary files,
parent folders), disappears or changes. Adding a case is one line. A few cases also run through
the real entry points (``python -m gaugejax``, the ``gaugejax`` script) in subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shlex
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import gaugejax as gj
from gaugejax.cli import build_parser, main

# --------------------------------------------------------------------------- the table
# (command line, substring of the reason); "{w}" is the workspace. Paths named new* never exist.
CASES = [
    # demo
    ("demo --d-model 0", "--d-model"),
    ("demo --d-model 1", "--d-model"),
    ("demo --d-model 2", "--d-model"),
    ("demo --d-model -5", "--d-model"),
    ("demo --d-model 24", "multiple of 16"),
    ("demo --d-model abc", "invalid int"),
    ("demo --seed -1", "--seed"),
    # info: unreadable checkpoints (config.json problems are parsed by the models code)
    ("info {w}/missing", "does not exist"),
    ("info {w}/model.bin", "pickle"),
    ("info {w}/ck_pickle", "pickle"),
    ("info {w}/afile", "unknown checkpoint format"),
    ("info {w}/ck_listhdr", "header is a JSON list"),
    ("info {w}/ck_nooff", "data_offsets"),
    ("info {w}/ck_noshape", "shape"),
    ("info {w}/ck_truncated", "offsets"),
    ("info {w}/ck_hdrlen", "header length"),
    ("info {w}/ck_garbage", "not JSON"),
    ("info {w}/ck_emptyidx", "not valid JSON"),
    ("info {w}/ck_badidx", "not valid JSON"),
    ("info {w}/ck_idx_list", "weight_map"),
    ("info {w}/ck_idx_escape", "beside the index"),
    ("info {w}/ck_missing_tensor", "missing tensors"),
    ("info {w}/ck_extra_tensor", "unexpected tensors"),
    ("info {w}/ck_noconfig", "config.json"),
    ("info {w}/ck_unknown_arch", "mamba"),
    ("info {w}/ck_cfg_notjson", "config.json"),
    ("info {w}/ck_cfg_list", "config.json"),
    ("info {w}/ck_cfg_nohidden", "hidden_size"),
    ("info {w}/ck_cfg_heads0", "num_attention_heads"),
    ("info {w}/ck_cfg_hidden_str", "hidden_size"),
    # apply: outputs that would lose data or cannot be written
    ("apply {w}/models/rms --gauge {w}/g.npz -o {w}/models", "contains the input"),
    ("apply {w}/models/rms --gauge {w}/g.npz -o {w}/models --overwrite", "contains the input"),
    ("apply {w}/models/rms --gauge {w}/g.npz -o {w}", "contains the input"),
    ("apply {w}/models/rms --gauge {w}/g.npz -o {w}/models/rms", "differ"),
    ("apply {w}/models/rms --gauge {w}/g.npz -o {w}/afile", "is a file"),
    ("apply {w}/models/rms --gauge {w}/g.npz -o {w}/afile/new", "is a file"),
    ("apply {w}/models/rms --gauge {w}/g.npz -o {w}/user_dir", "not empty"),
    ("apply {w}/models/rms --gauge {w}/g.npz -o {w}/user_dir --overwrite", "not a gaugejax output"),
    ("apply {w}/models/rms --gauge {w}/g.npz -o {w}/prev_plus_user --overwrite", "did not write"),
    ("apply {w}/models/rms --gauge {w}/g.npz -o {w}/link_dir --overwrite", "symbolic link"),
    ("apply {w}/models/rms --gauge {w}/g.npz -o /dev/null --overwrite", "regular file"),
    ("apply {w}/models/rms --gauge {w}/g.npz -o ''", "--output is empty"),
    ("reproduce --out ''", "--out is empty"),
    ("apply {w}/models/rms --random-gauge 1 --save-gauge {w}/afile/g.npz -o {w}/new", "is a file"),
    ("apply {w}/models/rms --random-gauge 1 --save-gauge {w}/afile.npz -o {w}/new", "not empty"),
    ("apply {w}/models/rms --random-gauge 1 --save-gauge {w}/afile.npz -o {w}/new --overwrite", "kind gaugejax"),
    ("apply {w}/models/rms --random-gauge 1 --save-gauge {w}/g.txt -o {w}/new", ".npz"),
    ("apply {w}/models/rms --random-gauge 1 --save-gauge {w}/new/g.npz -o {w}/new", "overlap"),
    ("apply {w}/models/rms --random-gauge -1 -o {w}/new", "--random-gauge"),
    ("apply {w}/models/rms --gauge {w}/g.npz --save-gauge {w}/new.npz -o {w}/new", "--random-gauge"),
    ("apply {w}/ck_missing_tensor --random-gauge 1 --save-gauge {w}/new1/g.npz -o {w}/new2/new", "missing tensors"),
    # apply: broken gauges, wrong model, failures after the write began (parents must vanish)
    ("apply {w}/models/rms --gauge {w}/strperm.npz -o {w}/new", "real numbers"),
    ("apply {w}/models/rms --gauge {w}/cplxperm.npz -o {w}/new", "real numbers"),
    ("apply {w}/models/rms --gauge {w}/nansigns.npz -o {w}/new", "+1 or -1"),
    ("apply {w}/models/rms --gauge {w}/sign2.npz -o {w}/new", "+1 or -1"),
    ("apply {w}/models/rms --gauge {w}/strsigns.npz -o {w}/new", "real numbers"),
    ("apply {w}/models/rms --gauge {w}/notperm.npz -o {w}/new", "not a permutation"),
    ("apply {w}/models/rms --gauge {w}/hugeperm.npz -o {w}/new", "not a permutation"),
    ("apply {w}/models/rms --gauge {w}/nosigns.npz -o {w}/new", "lacks signs"),
    ("apply {w}/models/rms --gauge {w}/pickled.npz -o {w}/new", "not a plain"),
    ("apply {w}/models/rms --gauge {w}/notzip.npz -o {w}/new", "not an .npz"),
    ("apply {w}/models/rms --gauge {w}/missing.npz -o {w}/new", "does not exist"),
    ("apply {w}/models/rms --gauge {w}/g8.npz -o {w}/new1/new2/new", "d=8"),
    ("apply {w}/ck_missing_tensor --gauge {w}/g.npz -o {w}/new1/new2/new", "missing tensors"),
    ("apply {w}/models/ln --gauge {w}/g.npz -o {w}/new1/new2/new", "global sign"),
    ("apply {w}/missing --gauge {w}/g.npz -o {w}/new", "does not exist"),
    ("apply {w}/model.bin --gauge {w}/g.npz -o {w}/new", "pickle"),
    ("apply {w}/ck_unknown_arch --gauge {w}/g.npz -o {w}/new", "mamba"),
    ("apply {w}/ck_listhdr --gauge {w}/g.npz -o {w}/new", "header is a JSON list"),
    # verify
    ("verify {w}/models/rms {w}/models/rms --gauge {w}/g8.npz --n-tokens 16", "d=8"),
    ("verify {w}/models/rms {w}/models/ln --gauge {w}/g.npz --n-tokens 16", "differ"),
    ("verify {w}/models/rms {w}/models/rms --gauge {w}/strperm.npz", "real numbers"),
    ("verify {w}/models/rms {w}/models/rms --gauge {w}/g.npz --tokens {w}/empty.npy", "not a plain .npy"),
    ("verify {w}/models/rms {w}/models/rms --gauge {w}/g.npz --tokens {w}/empty_arr.npy", "no token ids"),
    ("verify {w}/models/rms {w}/models/rms --gauge {w}/g.npz --tokens {w}/float_tokens.npy", "integer ids"),
    ("verify {w}/models/rms {w}/models/rms --gauge {w}/g.npz --tokens {w}/oob_tokens.npy", "must lie in"),
    ("verify {w}/models/rms {w}/models/rms --gauge {w}/g.npz --tokens {w}/pickle_tokens.npy", "not a plain .npy"),
    ("verify {w}/models/rms {w}/models/rms --gauge {w}/g.npz --n-tokens 0", "positive"),
    ("verify {w}/models/rms {w}/models/rms --gauge {w}/g.npz --seed -1", "--seed"),
    ("verify {w}/models/rms {w}/models/rms --gauge {w}/g.npz --tol nan", "--tol"),
    ("verify {w}/models/rms {w}/models/rms --gauge {w}/g.npz --tol -1", "--tol"),
    ("verify {w}/models/rms {w}/models/rms --gauge {w}/g.npz --n-tokens 1000000000000", "held in memory"),
    # align
    ("align {w}/models/rms {w}/models/rms -o {w}/new.txt", ".npz"),
    ("align {w}/models/rms {w}/models/rms -o {w}/afile/new.npz", "is a file"),
    ("align {w}/models/rms {w}/models/rms -o {w}/g.npz", "not empty"),
    ("align {w}/models/rms {w}/models/rms -o {w}/afile.npz --overwrite", "kind gaugejax"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --max-tokens 0", "positive"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --confidence 2", "--confidence"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --layers 99", "--layers"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --layers x", "--layers"),
    ("align {w}/models/rms {w}/models/ln -o {w}/new.npz", "different architectures"),
    ("align {w}/models/rms {w}/missing -o {w}/new.npz", "does not exist"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --tokens {w}/empty.npy", "not a plain .npy"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --text {w}/latin1.txt", "tokenizer"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --seed -1", "--seed"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --max-tokens 1000000000000", "held in memory"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --confidence nan", "--confidence"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --state {w}/afile/s.npz", "is a file"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --state {w}/user_dir", "is a directory"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --state {w}/new.npz", "must differ from -o"),
    # align-path
    ("align-path {w}/models/rms {w}/models/rms -o {w}/new.npz --max-tokens 0", "--max-tokens"),
    ("align-path {w}/models/rms -o {w}/new.npz", "two checkpoints"),
    ("align-path {w}/models/rms {w}/models/rms -o {w}/new.npz --via-base {w}/models/rms", "go together"),
    ("align-path {w}/models/rms {w}/models/rms -o {w}/afile/new.npz", "is a file"),
    ("align-path {w}/models/rms {w}/models/rms -o {w}/g.npz", "not empty"),
    ("align-path {w}/models/rms {w}/missing -o {w}/new.npz", "does not exist"),
    ("align-path {w}/models/rms {w}/models/rms -o {w}/new.txt", ".npz"),
    ("align-path {w}/models/rms {w}/models/rms -o {w}/new.npz --tokens {w}/oob_tokens.npy", "must lie in"),
    # compose
    ("compose {w}/strperm.npz -o {w}/new.npz", "real numbers"),
    ("compose {w}/cplxperm.npz -o {w}/new.npz", "real numbers"),
    ("compose {w}/nansigns.npz -o {w}/new.npz", "+1 or -1"),
    ("compose {w}/g.npz {w}/g8.npz -o {w}/new.npz", "d=8"),
    ("compose {w}/g.npz -o {w}/g.npz --overwrite", "is the input"),
    ("compose {w}/g.npz -o {w}/new.txt", ".npz"),
    ("compose {w}/g.npz -o {w}/afile.npz", "not empty"),
    ("compose {w}/g.npz -o {w}/afile.npz --overwrite", "kind gaugejax"),
    ("compose {w}/g.npz -o {w}/user_dir", ".npz"),
    ("compose {w}/g.npz -o {w}/dir.npz", "is a directory"),
    ("compose {w}/missing.npz -o {w}/new.npz", "does not exist"),
    # transport: vectors
    ("transport --kind steering {w}/v_u8.npy --gauge {w}/g.npz -o {w}/new.npy", "integer dtype uint8"),
    ("transport --kind steering {w}/v_int.npz --gauge {w}/g.npz -o {w}/new.npz", "integer dtype"),
    ("transport --kind steering {w}/v_bool.npy --gauge {w}/g.npz -o {w}/new.npy", "integer dtype bool"),
    ("transport --kind steering {w}/v_complex.npy --gauge {w}/g.npz -o {w}/new.npy", "complex"),
    ("transport --kind steering {w}/v_V1.npy --gauge {w}/g.npz -o {w}/new.npy", "raw dtype"),
    ("transport --kind steering {w}/empty.npy --gauge {w}/g.npz -o {w}/new.npy", "not a plain .npy"),
    ("transport --kind steering {w}/empty_float.npy --gauge {w}/g.npz -o {w}/new.npy", "shape (0,)"),
    ("transport --kind steering {w}/v8.npy --gauge {w}/g.npz -o {w}/new.npy", "d is 16"),
    ("transport --kind steering {w}/pickle_tokens.npy --gauge {w}/g.npz -o {w}/new.npy", "not a plain .npy"),
    ("transport --kind steering {w}/v16.npy --gauge {w}/g.npz -o {w}/v16.npy --overwrite", "input"),
    ("transport --kind steering {w}/v16.npy --gauge {w}/g.npz -o {w}/new.npz", "keeps the format"),
    ("transport --kind steering {w}/v16.npy --gauge {w}/g.npz -o {w}/v16_other.npy", "not empty"),
    ("transport --kind steering {w}/v16.npy --gauge {w}/g.npz -o {w}/afile.npy --overwrite", "kind gaugejax"),
    ("transport --kind steering {w}/v16.npy --gauge {w}/g.npz -o {w}/user_dir", "is a directory"),
    ("transport --kind steering {w}/v16.npy --gauge {w}/strperm.npz -o {w}/new.npy", "real numbers"),
    ("transport --kind steering {w}/v16.npy --gauge {w}/g.npz -o {w}/new.txt", "unknown tensor format"),
    # transport: neuron lists
    ("transport --kind neurons {w}/nonutf8.json --gauge {w}/g.npz -o {w}/new.json", "UTF-8"),
    ("transport --kind neurons {w}/nonutf8.csv --gauge {w}/g.npz -o {w}/new.csv", "UTF-8"),
    ("transport --kind neurons {w}/big.json --gauge {w}/g.npz -o {w}/new.json", "outside"),
    ("transport --kind neurons {w}/hugeint.json --gauge {w}/g.npz -o {w}/new.json", "outside"),
    ("transport --kind neurons {w}/nan.json --gauge {w}/g.npz -o {w}/new.json", "not an integer"),
    ("transport --kind neurons {w}/neg.json --gauge {w}/g.npz -o {w}/new.json", "outside [0, 16)"),
    ("transport --kind neurons {w}/oob.json --gauge {w}/g.npz -o {w}/new.json", "outside [0, 16)"),
    ("transport --kind neurons {w}/deep.json --gauge {w}/g.npz -o {w}/new.json", "nested"),
    ("transport --kind neurons {w}/notjson.json --gauge {w}/g.npz -o {w}/new.json", "not valid JSON"),
    ("transport --kind neurons {w}/features.json --gauge {w}/g.npz -o {w}/new.json", "SAE latents"),
    ("transport --kind neurons {w}/feature_records.json --gauge {w}/g.npz -o {w}/new.json", "SAE latents"),
    ("transport --kind neurons {w}/features.csv --gauge {w}/g.npz -o {w}/new.csv", "SAE latents"),
    ("transport --kind neurons {w}/noindex.csv --gauge {w}/g.npz -o {w}/new.csv", "index column"),
    ("transport --kind neurons {w}/ragged.csv --gauge {w}/g.npz -o {w}/new.csv", "fields"),
    ("transport --kind neurons {w}/badscore.json --gauge {w}/g.npz -o {w}/new.json", "not a number"),
    ("transport --kind neurons {w}/good.json --gauge {w}/g.npz -o {w}/new.csv", "keeps the format"),
    # transport: SAEs and checkpoints
    ("transport --kind sae {w}/sae_nodec.safetensors --gauge {w}/g.npz -o {w}/new.safetensors", "lacks W_dec"),
    ("transport --kind sae {w}/sae_d8.safetensors --gauge {w}/g.npz -o {w}/new.safetensors", "d=16"),
    ("transport --kind sae {w}/sae_int.npz --gauge {w}/g.npz -o {w}/new.npz", "integer dtype"),
    ("transport --kind sae {w}/sae_dir --gauge {w}/g.npz -o {w}/user_dir", "not empty"),
    ("transport --kind sae {w}/sae_dir --gauge {w}/g.npz -o {w} --overwrite", "contains the input"),
    ("transport --kind sae {w}/user_dir --gauge {w}/g.npz -o {w}/new", "not a SAELens directory"),
    ("transport --kind checkpoint {w}/models/rms --gauge {w}/g.npz -o {w}/models --overwrite", "contains the input"),
    ("transport --kind checkpoint {w}/ck_pickle --gauge {w}/g.npz -o {w}/new", "pickle"),
    ("transport --kind checkpoint {w}/models/ln --gauge {w}/g.npz -o {w}/new1/new", "global sign"),
    ("transport --kind probe {w}/v16.npy --gauge {w}/g.npz -o {w}/new.npy --group X", "invalid choice"),
    # merge
    ("merge {w}/models/rms {w}/models/rms2 -o {w}/models", "contains the input"),
    ("merge {w}/models/rms {w}/models/rms2 -o {w}/models/rms", "differ"),
    ("merge {w}/models/rms {w}/models/rms2 -o {w}/user_dir --overwrite", "not a gaugejax output"),
    ("merge {w}/models/rms {w}/models/rms2 -o {w}/afile/new", "is a file"),
    ("merge {w}/models/rms -o {w}/new", "at least two"),
    ("merge {w}/models/rms {w}/models/rms2 --gauge {w}/g.npz {w}/g.npz -o {w}/new", "gauge(s)"),
    ("merge {w}/models/rms {w}/models/rms2 --alpha nan -o {w}/new", "finite"),
    ("merge {w}/models/rms {w}/models/rms2 --lambdas 0.5 -o {w}/new", "task arithmetic"),
    ("merge {w}/models/rms {w}/models/ln -o {w}/new", "different configs"),
    ("merge {w}/models/rms {w}/missing -o {w}/new", "does not exist"),
    ("merge {w}/models/rms {w}/models/rms2 --gauge {w}/g8.npz -o {w}/new1/new", "d=8"),
    # audit
    ("audit {w}/models/rms --plot {w}/afile/new.png -k 1", "is a file"),
    ("audit {w}/models/rms --json {w}/afile/new.json -k 1", "is a file"),
    ("audit {w}/models/rms --plot {w}/afile.png --overwrite -k 1", "kind gaugejax"),
    ("audit {w}/models/rms --json {w}/afile.json --overwrite -k 1", "kind gaugejax"),
    ("audit {w}/models/rms --plot {w}/new.png --json {w}/new.png -k 1", "overlap"),
    ("audit {w}/models/rms --plot {w}/new.pdf -k 1", ".png"),
    ("audit {w}/models/rms --top-k 99 -k 1", "exceeds the residual width"),
    ("audit {w}/models/rms -k 0", "at least 1"),
    ("audit {w}/models/rms --layer 99 -k 1", "--layer"),
    ("audit {w}/models/ln --groups B_d -k 1", "LayerNorm"),
    ("audit {w}/models/rms -k 1 --seed -1", "--seed"),
    ("audit {w}/ck_nooff -k 1", "data_offsets"),
    # canon
    ("canon {w}/models/bert -o {w}/new.npz", "no final norm"),
    ("canon {w}/models/rms -o {w}/new.npz --layer 99 --order-by act_rms", "--layer"),
    ("canon {w}/models/rms -o {w}/new.npz --layer -99 --order-by act_rms", "--layer"),
    ("canon {w}/models/rms -o {w}/new.npz --stability -3", "--stability"),
    ("canon {w}/models/rms -o {w}/new.txt", ".npz"),
    ("canon {w}/models/rms -o {w}/afile/new.npz", "is a file"),
    ("canon {w}/models/rms -o {w}/g.npz", "not empty"),
    ("canon {w}/models/rms -o {w}/new.npz --order-by nonsense", "cannot order"),
    ("canon {w}/missing -o {w}/new.npz", "does not exist"),
    # reproduce (every case is refused before any experiment runs)
    ("reproduce nonsense --out {w}/new", "unknown experiment"),
    ("reproduce --out {w}/afile", "is a file"),
    ("reproduce --out {w}/afile/new", "is a file"),
    ("reproduce --out {w}/user_dir", "not empty"),
    ("reproduce --out {w}/user_dir --overwrite", "not a gaugejax output"),
    ("reproduce --out {w} --overwrite", "not a gaugejax output"),
    ("reproduce --seed -1 --out {w}/new", "--seed"),
    # simulate (every case is refused before the Monte Carlo runs)
    ("simulate --out {w}/afile", "is a file"),
    ("simulate --out {w}/afile/new", "is a file"),
    ("simulate --out {w}/user_dir", "not empty"),
    ("simulate --out {w}/user_dir --overwrite", "not a gaugejax output"),
    ("simulate --out {w}/new --d 1", "--d"),
    ("simulate --out {w}/new --n 4", "--n"),
    ("simulate --out {w}/new --trials 0", "--trials"),
    ("simulate --out {w}/new --n 100000000000", "--n <="),
    ("simulate --out {w}/new --rho 2", "--rho"),
    ("simulate --out {w}/new --structures nonsense", "unknown structure"),
]

# --------------------------------------------------------------------------- the workspace
def _header(path: Path, header) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)


def _variant(w: Path, name: str, mutate) -> None:
    d = w / name
    shutil.copytree(w / "models" / "rms", d)
    (d / ".gaugejax").unlink()
    mutate(d)


def _edit_config(**changes):
    def mutate(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        for k, v in changes.items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        (d / "config.json").write_text(json.dumps(cfg))
    return mutate


def _resave(w: Path, name: str, drop: str | None = None, add: str | None = None) -> None:
    from gaugejax.io.safetensors_stream import SafetensorsFile, TensorInfo, write_safetensors

    def mutate(d: Path) -> None:
        sf = SafetensorsFile(w / "models" / "rms" / "model.safetensors")
        items = [(sf.info(k), (lambda k=k: np.array(sf[k]))) for k in sf.keys() if k != drop]
        if add:
            items.append((TensorInfo(add, np.dtype("float32"), (2,)), lambda: np.zeros(2, np.float32)))
        (d / "model.safetensors").unlink()
        write_safetensors(d / "model.safetensors", items)
    _variant(w, name, mutate)


@pytest.fixture(scope="session")
def world(tmp_path_factory, tiny_checkpoint):
    """The shared workspace of inputs, good and broken (built once, never changed by a case)."""
    w = tmp_path_factory.mktemp("world")
    models = w / "models"
    models.mkdir()
    shutil.copytree(tiny_checkpoint, models / "rms")
    cfg = gj.load_model(tiny_checkpoint).config
    gj.save_model(gj.random_model(cfg, 1), models / "rms2")
    small = dict(d_model=16, n_layers=1, n_heads=2, d_ff=32, vocab_size=64)
    gj.save_model(gj.random_model(gj.tiny_config("gpt2", **small), 0), models / "ln")
    gj.save_model(gj.random_model(gj.tiny_config("bert", **small), 0), models / "bert")
    d = 16
    # gauges
    g = gj.SignedPermutation.random(1, d)
    g.save(w / "g.npz")
    gj.SignedPermutation.identity(8).save(w / "g8.npz")
    ar, ones = np.arange(d), np.ones(d, np.int8)
    np.savez(w / "strperm.npz", perm=np.array([str(i) for i in ar]), signs=ones)
    np.savez(w / "cplxperm.npz", perm=ar + 0j, signs=ones)
    np.savez(w / "nansigns.npz", perm=ar, signs=np.where(ar == 3, np.nan, 1.0))
    np.savez(w / "sign2.npz", perm=ar, signs=np.where(ar == 3, 2, 1))
    np.savez(w / "strsigns.npz", perm=ar, signs=np.array(["+"] * d))
    np.savez(w / "notperm.npz", perm=np.zeros(d, np.int64), signs=ones)
    np.savez(w / "hugeperm.npz", perm=np.where(ar == 0, 1e300, ar), signs=ones)
    np.savez(w / "nosigns.npz", perm=ar)
    with open(w / "pickled.npz", "wb") as f:
        np.savez(f, perm=np.array([object()] * d, dtype=object), signs=ones)
    (w / "notzip.npz").write_text("not a zip archive")
    # plain files, user folders, links
    (w / "afile").write_bytes(b"user data\n")
    for ext in ("npz", "npy", "png", "json"):
        (w / f"afile.{ext}").write_bytes(b"user data, not a gaugejax output\n")
    (w / "model.bin").write_bytes(pickle.dumps({"w": 1}))
    (w / "user_dir").mkdir()
    (w / "dir.npz").mkdir()
    (w / "user_dir" / "thesis.tex").write_text("precious")
    shutil.copytree(models / "rms", w / "prev_plus_user")
    (w / "prev_plus_user" / "notes.txt").write_text("added by the user after gaugejax wrote the folder")
    (w / "link_dir").symlink_to(models / "rms2", target_is_directory=True)
    (w / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    # token files
    (w / "empty.npy").write_bytes(b"")
    np.save(w / "empty_arr.npy", np.zeros(0, np.int64))
    np.save(w / "empty_float.npy", np.zeros(0, np.float32))
    np.save(w / "float_tokens.npy", np.arange(32, dtype=np.float32))
    np.save(w / "oob_tokens.npy", np.arange(32) + 1000)
    np.save(w / "pickle_tokens.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    # vectors
    np.save(w / "v16.npy", np.linspace(-1, 1, d).astype(np.float32))
    np.save(w / "v16_other.npy", np.zeros(d, np.float32))
    np.save(w / "v8.npy", np.zeros(8, np.float32))
    np.save(w / "v_u8.npy", np.arange(d, dtype=np.uint8))
    np.savez(w / "v_int.npz", layer_3=np.arange(d, dtype=np.int32))
    np.save(w / "v_bool.npy", ar % 2 == 0)
    np.save(w / "v_complex.npy", ar + 1j)
    np.save(w / "v_V1.npy", np.zeros(d, np.float32).astype(ml_dtypes.float8_e4m3fn))
    # neuron lists
    (w / "nonutf8.json").write_bytes(b'[1, 2, "\xff"]')
    (w / "nonutf8.csv").write_bytes(b"index,score\n1,0.5\n2,\xff\n")
    (w / "big.json").write_text("[1e300]")
    (w / "hugeint.json").write_text("[" + "9" * 400 + "]")
    (w / "nan.json").write_text('[{"index": NaN}]')
    (w / "neg.json").write_text("[-1]")
    (w / "oob.json").write_text("[16]")
    (w / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (w / "notjson.json").write_text("{index: 3")
    (w / "features.json").write_text(json.dumps({"features": [3, 5]}))
    (w / "feature_records.json").write_text(json.dumps([{"feature": 3, "score": 1.5}]))
    (w / "features.csv").write_text("feature,activation\n3,1.5\n")
    (w / "noindex.csv").write_text("name,score\na,1\n")
    (w / "ragged.csv").write_text("index,score\n1,0.5,extra\n")
    (w / "badscore.json").write_text(json.dumps([{"index": 1, "score": "high"}]))
    (w / "good.json").write_text(json.dumps([1, 2]))
    # SAEs
    from gaugejax.io.safetensors_stream import TensorInfo, write_safetensors

    def sae_file(path, tensors):
        write_safetensors(path, [(TensorInfo(k, v.dtype, v.shape), (lambda v=v: v)) for k, v in tensors.items()])
    k = 6
    sae_file(w / "sae_nodec.safetensors", {"W_enc": np.zeros((d, k), np.float32)})
    sae_file(w / "sae_d8.safetensors", {"W_enc": np.zeros((8, k), np.float32), "W_dec": np.zeros((k, 8), np.float32)})
    np.savez(w / "sae_int.npz", W_enc=np.zeros((d, k), np.int8), W_dec=np.zeros((k, d), np.int8))
    (w / "sae_dir").mkdir()
    sae_file(w / "sae_dir" / "sae_weights.safetensors",
             {"W_enc": np.zeros((d, k), np.float32), "W_dec": np.zeros((k, d), np.float32)})
    (w / "sae_dir" / "cfg.json").write_text("{}")
    # broken checkpoints
    _variant(w, "ck_pickle", lambda c: ((c / "model.safetensors").unlink(),
                                         (c / "pytorch_model.bin").write_bytes(pickle.dumps({}))))
    _variant(w, "ck_listhdr", lambda c: _header(c / "model.safetensors", [1, 2]))
    _variant(w, "ck_nooff", lambda c: _header(c / "model.safetensors", {"x": {"dtype": "F32", "shape": [1]}}))
    _variant(w, "ck_noshape", lambda c: _header(c / "model.safetensors", {"x": {"dtype": "F32",
                                                                                 "data_offsets": [0, 4]}}))
    _variant(w, "ck_truncated", lambda c: (c / "model.safetensors").write_bytes(
        (c / "model.safetensors").read_bytes()[:-64]))
    _variant(w, "ck_hdrlen", lambda c: (c / "model.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}"))
    _variant(w, "ck_garbage", lambda c: (c / "model.safetensors").write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{["))
    _variant(w, "ck_emptyidx", lambda c: (c / "model.safetensors.index.json").write_text(""))
    _variant(w, "ck_badidx", lambda c: (c / "model.safetensors.index.json").write_text("{not json"))
    _variant(w, "ck_idx_list", lambda c: (c / "model.safetensors.index.json").write_text("[1, 2]"))
    _variant(w, "ck_idx_escape", lambda c: (c / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"model.embed_tokens.weight": "../models/rms/model.safetensors"}})))
    _resave(w, "ck_missing_tensor", drop="model.norm.weight")
    _resave(w, "ck_extra_tensor", add="model.mystery.weight")
    _variant(w, "ck_noconfig", lambda c: (c / "config.json").unlink())
    _variant(w, "ck_unknown_arch", _edit_config(model_type="mamba", architectures=["MambaForCausalLM"]))
    _variant(w, "ck_cfg_notjson", lambda c: (c / "config.json").write_text("{hidden_size: 16"))
    _variant(w, "ck_cfg_list", lambda c: (c / "config.json").write_text("[16, 1]"))
    _variant(w, "ck_cfg_nohidden", _edit_config(hidden_size=None))
    _variant(w, "ck_cfg_heads0", _edit_config(num_attention_heads=0))
    _variant(w, "ck_cfg_hidden_str", _edit_config(hidden_size="16"))
    return w


def tree(root: Path) -> dict[str, str]:
    """Relative path → content hash (files), link target (links) or "dir": the whole state of ``root``."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of an in-process run (argparse exits count as exit codes)."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _case_id(case) -> str:
    return case[0].replace("{w}/", "").replace("{w}", "W")[:70]


def _argv(line: str, w: Path) -> list[str]:
    return shlex.split(line.format(w=w))


# --------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input(case, world, capsys, monkeypatch):
    line, reason = case
    monkeypatch.chdir(world)  # a relative default (reproduce --out results) would land in the workspace
    before = tree(world)
    code, out, err = run_cli(_argv(line, world), capsys)
    after = tree(world)
    lines = err.strip().splitlines()
    assert code not in (0, None), f"exit {code}: {out[-400:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert reason in lines[0], lines[0]
    assert after == before, {"new": sorted(set(after) - set(before)), "lost": sorted(set(before) - set(after)),
                             "changed": sorted(k for k in before if k in after and before[k] != after[k])}


def _subcommands() -> list[str]:
    action = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return list(action.choices)


def test_every_command_has_cases():
    covered = {shlex.split(line)[0] for line, _ in CASES}
    missing = [c for c in _subcommands() if c not in covered]
    assert not missing, f"commands without bad-input cases: {missing}"


def test_every_writing_command_takes_overwrite(capsys):
    """The public contract: every command with an output path has --overwrite."""
    writers = {"apply", "align", "align-path", "compose", "transport", "merge", "audit", "canon", "reproduce"}
    assert writers <= set(_subcommands())
    for name in writers:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "--overwrite" in capsys.readouterr().out, name


SUBPROCESS_CASES = [
    ([sys.executable, "-m", "gaugejax", "compose", "{w}/strperm.npz", "-o", "{w}/new.npz"], "real numbers"),
    (["gaugejax", "apply", "{w}/models/rms", "--gauge", "{w}/g.npz", "-o", "{w}/models"], "contains the input"),
    (["gaugejax", "transport", "--kind", "neurons", "{w}/nonutf8.json", "--gauge", "{w}/g.npz", "-o",
      "{w}/new.json"], "UTF-8"),
    (["gaugejax", "demo", "--d-model", "x"], "invalid int"),
]


def test_real_entry_points(world):
    """The installed script and ``python -m gaugejax``: one stderr line, exit 2, nothing written."""
    before = tree(world)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [(subprocess.Popen([a.format(w=world) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env), reason) for argv, reason in SUBPROCESS_CASES]
    for p, reason in procs:
        out, err = p.communicate(timeout=120)
        lines = err.strip().splitlines()
        assert p.returncode == 2, (p.args, out, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and reason in lines[0], err
    assert tree(world) == before


# =========================================================================== issue 25 items 3, 5, 6, 7
# Broken or crafted files that gave a traceback, or were written through, now get one line and
# leave nothing behind; checked by test_bad_input itself on a workspace of their own ({w} below).
HOSTILE_CASES = [
    # item 3: a config.json that is not UTF-8 or nested very deep; a malformed tokenizer.json
    ("info {w}/ck_cfg_latin1", "not UTF-8"),
    ("apply {w}/ck_cfg_latin1 --gauge {w}/g.npz -o {w}/new", "not UTF-8"),
    ("info {w}/ck_cfg_deep", "nested too deeply"),
    ("apply {w}/ck_cfg_deep --gauge {w}/g.npz -o {w}/new", "nested too deeply"),
    ("verify {w}/ck_badtok {w}/ck_badtok --gauge {w}/g.npz --n-tokens 16", "tokenizer.json is not a tokenizer"),
    ("align {w}/ck_badtok {w}/ck_badtok -o {w}/new.npz --max-tokens 64", "tokenizer.json is not a tokenizer"),
    # items 3 and 5: one layer's up_proj cut short (apply wrote it; verify crashed in np.stack)
    ("apply {w}/ck_short_up --gauge {w}/g.npz -o {w}/new", "model.layers.1.mlp.up_proj.weight has shape (31, 16)"),
    ("verify {w}/ck_short_up {w}/ck_short_up --gauge {w}/g.npz --n-tokens 16", "up_proj.weight has shape"),
    ("merge {w}/two {w}/ck_short_up -o {w}/new", "up_proj.weight has shape"),
    # item 5: NaN / Inf weights and an impossible vocab_size are refused before anything is kept
    ("apply {w}/ck_nan --gauge {w}/g.npz -o {w}/new1/new2/new", "q_proj.weight holds NaN"),
    ("apply {w}/ck_inf --gauge {w}/g.npz -o {w}/new", "down_proj.weight holds NaN or infinite"),
    ("merge {w}/two {w}/ck_nan -o {w}/new", "q_proj.weight holds NaN"),
    ("merge {w}/two {w}/ck_inf --task-arithmetic -o {w}/new", "down_proj.weight holds NaN or infinite"),
    ("merge {w}/two_f16 {w}/two2_f16 --task-arithmetic --lambdas 1e6 -o {w}/new", "overflows"),
    ("merge {w}/two {w}/two2 --task-arithmetic --lambdas 1e39 -o {w}/new", "finite float32"),
    ("apply {w}/ck_vocab --gauge {w}/g.npz -o {w}/new", "config.json"),
    ("merge {w}/two {w}/ck_vocab -o {w}/new", "config.json"),
    # item 6: token arrays of rank 0 or 3
    ("verify {w}/two {w}/two --gauge {w}/g.npz --tokens {w}/tok_rank0.npy", "(n,) or (batch, seq)"),
    ("verify {w}/two {w}/two --gauge {w}/g.npz --tokens {w}/tok_rank3.npy", "(n,) or (batch, seq)"),
    ("align {w}/two {w}/two -o {w}/new.npz --tokens {w}/tok_rank3.npy", "(n,) or (batch, seq)"),
    # item 7: a gauge archive whose members are not .npy data
    ("apply {w}/two --gauge {w}/raw_members.npz -o {w}/new", "is not .npy array data"),
    ("compose {w}/raw_members.npz -o {w}/new.npz", "is not .npy array data"),
]


def _retensor(w: Path, name: str, tensor: str, change) -> None:
    """A copy of the two-layer checkpoint ``w/two`` whose ``tensor`` is replaced by ``change(array)``."""
    from gaugejax.io.safetensors_stream import SafetensorsFile, TensorInfo, write_safetensors

    d = w / name
    shutil.copytree(w / "two", d)
    (d / ".gaugejax").unlink()
    sf = SafetensorsFile(w / "two" / "model.safetensors")
    arrays = {k: (change(np.array(sf[k])) if k == tensor else np.array(sf[k])) for k in sf.keys()}
    (d / "model.safetensors").unlink()
    write_safetensors(d / "model.safetensors", [(TensorInfo(k, a.dtype, a.shape), (lambda a=a: a))
                                                for k, a in arrays.items()])


def _poke(value):
    def change(a):
        a = a.copy()
        a.flat[0] = value
        return a
    return change


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    """Workspace of HOSTILE_CASES: a two-layer checkpoint (``two``, ``two2``) and its broken variants."""
    w = tmp_path_factory.mktemp("hostile")
    cfg = gj.tiny_config("llama", d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=8, d_ff=32, vocab_size=64)
    gj.save_model(gj.random_model(cfg, 0), w / "two")
    gj.save_model(gj.random_model(cfg, 1), w / "two2")
    for name in ("two", "two2"):
        gj.save_model(gj.load_model(w / name), w / f"{name}_f16", dtype=np.float16)
    gj.SignedPermutation.random(1, 16).save(w / "g.npz")
    up = "model.layers.1.mlp.up_proj.weight"
    _retensor(w, "ck_short_up", up, lambda a: a[:-1])
    _retensor(w, "ck_nan", "model.layers.0.self_attn.q_proj.weight", _poke(np.nan))
    _retensor(w, "ck_inf", "model.layers.1.mlp.down_proj.weight", _poke(np.inf))
    _retensor(w, "ck_badtok", up, lambda a: a)
    (w / "ck_badtok" / "tokenizer.json").write_text('{"model": 3}')
    _retensor(w, "ck_cfg_latin1", up, lambda a: a)
    (w / "ck_cfg_latin1" / "config.json").write_bytes((w / "two" / "config.json").read_bytes()[:-1].rstrip()
                                                      + b', "name": "caf\xe9"}')
    _retensor(w, "ck_cfg_deep", up, lambda a: a)
    (w / "ck_cfg_deep" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    _retensor(w, "ck_vocab", up, lambda a: a)
    _edit_config(vocab_size=10**12)(w / "ck_vocab")
    np.save(w / "tok_rank0.npy", np.int64(3))
    np.save(w / "tok_rank3.npy", (np.arange(64) % 64).reshape(2, 4, 8))
    import zipfile

    with zipfile.ZipFile(w / "raw_members.npz", "w") as z:
        z.writestr("perm", b"0123456789abcdef")
        z.writestr("signs", b"++++++++++++++++")
    return w


@pytest.mark.parametrize("case", HOSTILE_CASES, ids=[_case_id(c) for c in HOSTILE_CASES])
def test_hostile_input(case, hostile, capsys, monkeypatch):
    test_bad_input(case, hostile, capsys, monkeypatch)


def test_inf_in_verify_is_one_line_without_numpy_warnings(hostile, capsys):
    """Inf weights: verify fails naming the layer, and no RuntimeWarning (here: an exception) escapes."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, err = run_cli(_argv("verify {w}/ck_inf {w}/ck_inf --gauge {w}/g.npz --n-tokens 16", hostile), capsys)
    assert code == 1 and "NOT verified: non-finite values" in out
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: NaN or infinite values at h[2]"), err


def test_gguf_tokenizer_metadata_out_of_range_is_one_line(tmp_path):
    """A GGUF whose bos_token_id lies outside the vocabulary (with add_bos), or whose merge has no space."""
    gguf = pytest.importorskip("gguf")
    from gaugejax.errors import GaugeJaxError
    from gaugejax.io import load_tokenizer

    def write(path, merges, bos):
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_string("tokenizer.ggml.model", "gpt2")
        w.add_array("tokenizer.ggml.tokens", ["a", "b", "ab"])
        w.add_array("tokenizer.ggml.merges", merges)
        w.add_bos_token_id(bos)
        w.add_add_bos_token(True)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    write(tmp_path / "ok.gguf", ["a b"], 0)
    assert load_tokenizer(tmp_path / "ok.gguf")("abab").tolist() == [0, 2, 2]
    for name, merges, bos in (("bos.gguf", ["a b"], 99), ("merge.gguf", ["ab"], 0)):
        write(tmp_path / name, merges, bos)
        with pytest.raises(GaugeJaxError) as e:
            load_tokenizer(tmp_path / name)("abab")
        assert "\n" not in str(e.value), name


def test_disk_full_during_overwrite_names_the_output(tmp_path, hostile):
    """A real full disk (a 5 MiB tmpfs in a private mount namespace): the one line names the output
    being replaced, not the source file whose copy failed; the previous output stays intact."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-r", "-m", "true"]).returncode != 0:
        pytest.skip("needs unshare -r -m (user and mount namespaces) for a private tmpfs")
    src = tmp_path / "src"
    shutil.copytree(hostile / "two", src)
    (src / ".gaugejax").unlink()
    (src / "tokenizer_config.json").write_text(json.dumps({"pad": "x" * 3_000_000}))  # fits once, not twice
    disk = tmp_path / "disk"
    disk.mkdir()
    apply = f"{shlex.quote(sys.executable)} -m gaugejax apply {src} --gauge {hostile}/g.npz -o {disk}/out"
    script = (f"mount -t tmpfs -o size=5m tmpfs {disk} && {apply} >/dev/null && {apply} --overwrite; echo rc=$?; "
              f"ls -A {disk}; cmp {src}/tokenizer_config.json {disk}/out/tokenizer_config.json && echo intact")
    p = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert p.stdout.split() == ["rc=2", "out", "intact"], (p.stdout, p.stderr)
    assert p.stderr.strip() == (f"error: no space left writing {disk}/out (No space left on device); free space on "
                                "that disk or choose another output path; nothing was written")


# =========================================================================== issue 18 item 7
# Bad input that ended in a traceback before: seeds beyond jax.random.key's signed 64 bits (an
# OverflowError deep in jax) and rows too long for the device (XLA's out-of-memory RuntimeError).
TRACEBACK_CASES = [
    ("apply {w}/models/rms --random-gauge 99999999999999999999 -o {w}/new", "--random-gauge must lie in [0, 2**63)"),
    ("verify {w}/models/rms {w}/models/rms --gauge {w}/g.npz --n-tokens 16 --seed 9223372036854775808",
     "--seed must lie in [0, 2**63)"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --seed 9223372036854775808", "--seed must lie in"),
    ("audit {w}/models/rms -k 1 --seed 9223372036854775808", "--seed must lie in"),
    ("simulate --out {w}/new --quick --seed 9223372036854775808", "--seed must lie in"),
    ("align {w}/models/rms {w}/models/rms -o {w}/new.npz --seq-len 1000000 --max-tokens 1000000",
     "out of memory on the JAX device"),
]


@pytest.mark.parametrize("case", TRACEBACK_CASES, ids=[_case_id(c) for c in TRACEBACK_CASES])
def test_former_traceback_is_one_line(case, world, capsys, monkeypatch):
    test_bad_input(case, world, capsys, monkeypatch)


def test_only_out_of_memory_runtime_errors_become_one_line():
    """A real XLA allocation failure is recognised; any other RuntimeError (a bug) keeps its traceback."""
    import jax.numpy as jnp

    from gaugejax.cli import _out_of_memory

    with pytest.raises(RuntimeError) as e:
        jnp.zeros((10**7, 10**7)).block_until_ready()  # 400 TB: refused by every backend
    assert _out_of_memory(e.value)
    assert not _out_of_memory(RuntimeError("dictionary changed size during iteration"))


def test_apply_of_a_gguf_with_nan_weights_is_refused(tmp_path, capsys):
    """A GGUF source is loaded whole, then checked: the NaN tensor is named and nothing is written."""
    pytest.importorskip("gguf")
    from test_gguf import _tiny, write_llama_gguf

    m = _tiny(n_layers=2)
    up = m.params["layers"]["up"]
    bad = gj.Model(m.config, {**m.params, "layers": {**m.params["layers"], "up": up.at[1, 3, 5].set(np.nan)}})
    src = write_llama_gguf(tmp_path / "m.gguf", bad)
    before = tree(tmp_path)
    code, _, err = run_cli(["apply", str(src), "--random-gauge", "1", "-o", str(tmp_path / "new")], capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {src}: tensor model.layers.1.mlp.up_proj.weight holds NaN or infinite values; gaugejax does not "
        "write broken weights: repair or re-download the checkpoint"]
    assert tree(tmp_path) == before
