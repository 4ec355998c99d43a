"""The fast GGUF read path: chunked dequantization and SentencePiece merges, against their references.

Oracles: ``gguf.quants.dequantize`` (the values bit for bit: the same per-type float32 block
formulas run on other chunkings of the rows) and transformers' own ``generate_merges`` (what its
GGUF tokenizer builder calls; the same merges in the same order). The speed itself is measured,
not asserted (benchmarks and the commit messages give the figures): a timing test on the shared
2-core machine would be flaky.
"""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

_DEQUANTIZABLE = [t for t in Q if t.name not in ("F32", "F16", "F64", "I8", "I16", "I32", "I64", "Q8_1", "Q8_K")
                  and hasattr(getattr(gguf.quants, t.name, None), "dequantize_rows")]


@pytest.mark.parametrize("qtype", _DEQUANTIZABLE, ids=[t.name for t in _DEQUANTIZABLE])
def test_chunked_dequantization_is_gguf_quants_bit_for_bit(qtype):
    """Random blocks of every type ``gguf`` decodes, over several chunks (the last one short):
    the same float32 values, NaN and Inf included, as ``gguf.quants.dequantize``."""
    import warnings

    from gaugejax.io.gguf_dequant import CHUNK_VALUES, dequantize_array

    block, size = gguf.constants.GGML_QUANT_SIZES[qtype]
    width = block * max(1, 256 // block)
    rows = 2 * CHUNK_VALUES // width + 7  # three chunks, the last one short
    raw = np.random.default_rng(int(qtype)).integers(0, 256, (rows, width // block * size), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # random scales hold NaN/Inf bit patterns
        ours, ref = dequantize_array(raw, qtype, (rows, width)), gguf.quants.dequantize(raw, qtype)
    assert ours.dtype == np.float32 and ours.flags.writeable
    np.testing.assert_array_equal(ours, ref)


def test_generate_merges_is_transformers_order():
    """Our lexsort of the merges against transformers' own ``generate_merges`` (what its GGUF
    tokenizer builder calls), on a vocabulary with many tied scores and splits."""
    pytest.importorskip("transformers")
    from transformers.convert_slow_tokenizer import generate_merges as reference  # every transformers version

    from gaugejax.io.tokenizer import generate_merges

    rng = np.random.default_rng(0)
    tokens = list(dict.fromkeys("".join(rng.choice(list("abcd▁"), rng.integers(1, 7))) for _ in range(3000)))
    vocab = {t: i for i, t in enumerate(tokens)}
    for scores in ({t: float(rng.choice([-1.0, -2.0, 0.0])) for t in tokens}, {t: -i for i, t in enumerate(tokens)}):
        assert generate_merges(vocab, scores) == reference(vocab, scores)
