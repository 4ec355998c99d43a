"""The valid files the fuzz harness mutates, one folder per seed, built once per session.

Each :class:`Seed` names the reader it exercises (the closing report counts per reader), the
entry path a target is given (a file or a folder), the one file in it that a case mutates and how
(:data:`KINDS`), and the targets (:mod:`worker`) that read it. The models are tiny (d = 16 or 32,
one layer) so that a case costs milliseconds.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("json", "safetensors", "npy", "npz", "gguf", "csv")
"""How a seed's mutable file is mutated (:mod:`mutate`, :mod:`gguf_codec`)."""


@dataclass(frozen=True)
class Seed:
    """One valid input: ``entry`` (relative to the seed folder) is what targets get; ``mutable``
    the file a case changes, mutated as ``kind``."""

    reader: str
    entry: str
    mutable: str
    kind: str
    targets: tuple[str, ...]


SEEDS: dict[str, Seed] = {
    "config": Seed("config.json", "hf", "hf/config.json", "json", ("info", "load", "apply")),
    "st_header": Seed("safetensors header", "hf", "hf/model.safetensors", "safetensors", ("info", "load", "apply")),
    "st_index": Seed("safetensors index", "sharded", "sharded/model.safetensors.index.json", "json",
                     ("info", "load", "apply")),
    "gguf": Seed("gguf header/metadata", "m.gguf", "m.gguf", "gguf", ("info", "summary", "tokenizer", "apply_gguf")),
    "gguf_tensors": Seed("gguf tensor info", "m.gguf", "m.gguf", "gguf", ("info", "summary", "apply_gguf")),
    "gauge": Seed("gauge .npz", "g.npz", "g.npz", "npz", ("gauge",)),
    "tokens": Seed("token file .npy", "t.npy", "t.npy", "npy", ("tokens",)),
    "vec_npy": Seed("vectors .npy", "v.npy", "v.npy", "npy", ("steering",)),
    "vec_npz": Seed("vectors .npz", "v.npz", "v.npz", "npz", ("steering",)),
    "vec_st": Seed("vectors .safetensors", "v.safetensors", "v.safetensors", "safetensors", ("steering",)),
    "vec_gguf": Seed("vectors .gguf (control)", "cv.gguf", "cv.gguf", "gguf", ("steering",)),
    "sae_st": Seed("SAE .safetensors", "sae.safetensors", "sae.safetensors", "safetensors", ("sae",)),
    "sae_npz": Seed("SAE .npz", "sae.npz", "sae.npz", "npz", ("sae",)),
    "sae_dir": Seed("SAE SAELens folder", "saelens", "saelens/sae_weights.safetensors", "safetensors", ("sae",)),
    "neurons_json": Seed("neuron list .json", "n.json", "n.json", "json", ("neurons",)),
    "neurons_csv": Seed("neuron list .csv", "n.csv", "n.csv", "csv", ("neurons",)),
}
"""Seed name → :class:`Seed`. Optimizer states are not here: no command reads them from a file
(``gaugejax.optim`` moves in-memory optax states; Orbax restores them with the caller's templates)."""


def _hf(root: Path) -> None:
    import gaugejax as gj

    cfg = gj.tiny_config("llama", d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, d_ff=32, vocab_size=32)
    model = gj.random_model(cfg, 0)
    gj.save_model(model, root / "hf")
    gj.save_model(model, root / "sharded", max_shard_bytes=4096)
    for d in ("hf", "sharded"):
        (root / d / ".gaugejax").unlink(missing_ok=True)


def _gguf_model(path: Path) -> None:
    """A tiny llama GGUF as llama.cpp writes one: F32 vectors, Q8_0 and F16 matrices, a byte-level
    BPE vocabulary with merges, token types and BOS."""
    import gguf

    rng = np.random.default_rng(0)
    d, ff, vocab = 32, 64, 48
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("fuzz seed")
    for add, v in ((w.add_context_length, 64), (w.add_embedding_length, d), (w.add_block_count, 1),
                   (w.add_feed_forward_length, ff), (w.add_head_count, 2), (w.add_head_count_kv, 1),
                   (w.add_rope_dimension_count, 16), (w.add_vocab_size, vocab)):
        add(v)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    tokens = [chr(ord("a") + i % 26) * (1 + i // 26) for i in range(vocab)]
    w.add_token_list(tokens)
    w.add_token_types([1] * (vocab - 1) + [3])
    w.add_token_merges(["a a", "b b"])
    w.add_bos_token_id(vocab - 1)
    w.add_add_bos_token(True)
    shapes = {"token_embd.weight": (vocab, d), "output_norm.weight": (d,), "output.weight": (vocab, d),
              "blk.0.attn_norm.weight": (d,), "blk.0.attn_q.weight": (d, d), "blk.0.attn_k.weight": (16, d),
              "blk.0.attn_v.weight": (16, d), "blk.0.attn_output.weight": (d, d), "blk.0.ffn_norm.weight": (d,),
              "blk.0.ffn_gate.weight": (ff, d), "blk.0.ffn_up.weight": (ff, d), "blk.0.ffn_down.weight": (d, ff)}
    for i, (name, shape) in enumerate(shapes.items()):
        a = rng.normal(size=shape).astype(np.float32)
        if len(shape) == 2 and i % 2:
            w.add_tensor(name, gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, a.astype(np.float16) if len(shape) == 2 else a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _artefacts(root: Path) -> None:
    import gaugejax as gj
    from gaugejax import formats

    rng = np.random.default_rng(1)
    gj.SignedPermutation.random(0, 16).save(root / "g.npz", source="seed", fingerprint=np.arange(4))
    np.save(root / "t.npy", rng.integers(0, 32, (2, 8)).astype(np.int32))
    np.save(root / "v.npy", rng.normal(size=16).astype(np.float32))
    np.savez(root / "v.npz", a=rng.normal(size=(3, 16)).astype(np.float32), b=np.ones(16, np.float16))
    formats.write_tensors(root / "v.safetensors", formats.TensorFile({"v": np.ones(16, np.float32)}, "safetensors",
                                                                    {"note": "seed"}))
    formats.write_tensors(root / "cv.gguf", formats.control_vector({1: np.ones(16), 2: -np.ones(16)}))
    sae = {"W_enc": rng.normal(size=(16, 8)).astype(np.float32), "b_enc": np.zeros(8, np.float32),
           "W_dec": rng.normal(size=(8, 16)).astype(np.float32), "b_dec": np.zeros(16, np.float32)}
    formats.write_sae(root / "sae.safetensors", formats.SAEFile(sae, "safetensors"))
    np.savez(root / "sae.npz", **sae)
    (root / "saelens").mkdir()
    formats.write_tensors(root / "saelens" / formats.SAELENS_WEIGHTS, formats.TensorFile(sae, "safetensors"))
    (root / "saelens" / "cfg.json").write_text(json.dumps({"d_in": 16, "d_sae": 8, "hook_name": "blocks.0"}))
    (root / "n.json").write_text(json.dumps({"neurons": [{"index": 3, "score": 0.5}, {"index": 7, "score": -1.0}]}))
    (root / "n.csv").write_text("index,score\n3,0.5\n7,-1.0\n")


def build(root: Path) -> Path:
    """Writes every seed under ``root`` and returns it."""
    root.mkdir(parents=True, exist_ok=True)
    _hf(root)
    _gguf_model(root / "m.gguf")
    _artefacts(root)
    for p in root.rglob(".gaugejax"):
        p.unlink()
    return root


def copy_seed(root: Path, seed: Seed, dest: Path) -> Path:
    """A fresh copy of a seed's entry in ``dest``; returns the copied entry."""
    src = root / seed.entry
    out = dest / seed.entry
    if src.is_dir():
        shutil.copytree(src, out)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
    return out
