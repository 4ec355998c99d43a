"""SmolLM3 against transformers: parity, gauge round trip, group, alignment, and its traps.

Traps: layers without RoPE (default every ``no_rope_layer_interval``-th, or an explicit
``no_rope_layers`` list), sliding windows on the no-RoPE layers, q/k/v/o and MLP biases, tied
embeddings (SmolLM3's default); the per-layer choices change the logits, so parity covers them.
Tolerances: see family_checks.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from gaugejax.errors import CheckpointError  # noqa: E402
from gaugejax.io import load_model  # noqa: E402
from gaugejax.models import smollm3  # noqa: E402
import family_checks as F  # noqa: E402

VOCAB = 101
_IDS = dict(pad_token_id=None, bos_token_id=None, eos_token_id=None)  # SmolLM3's defaults lie outside a tiny vocabulary
CASES = {
    # layers 1 and 3 without RoPE, and (default layer_types) sliding with a window of 5 < 12 tokens; untied
    "nope_sliding": dict(vocab_size=VOCAB, hidden_size=60, intermediate_size=97, num_hidden_layers=4,
                         num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=64,
                         no_rope_layer_interval=2, use_sliding_window=True, sliding_window=5,
                         tie_word_embeddings=False, initializer_range=0.1, **_IDS),
    # explicit no_rope_layers, biases everywhere, tied
    "tied_bias": dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=75, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      no_rope_layers=[0, 1], attention_bias=True, mlp_bias=True, initializer_range=0.1, **_IDS),
}


ckpts, test_parity, test_gauge_round_trip, test_group_info_and_align = F.standard_tests(
    "smollm3", "SmolLM3Config", "SmolLM3ForCausalLM", CASES, VOCAB, align_case="nope_sliding")


def test_config_read(ckpts):
    c = load_model(ckpts["nope_sliding"][0]).config
    assert c.rope_layers == (True, False, True, False) and c.sliding_layers == (False, True, False, True)
    assert c.sliding_window == 5 and not c.tie_embeddings
    t = load_model(ckpts["tied_bias"][0])
    assert t.config.rope_layers == (False, True) and t.config.sliding_layers == () and t.config.tie_embeddings
    assert "lm_head" not in t.params and {"o_bias", "down_bias"} <= set(t.params["layers"])
    for m in (c, t.config):
        assert smollm3.config_from_hf(smollm3.config_to_hf(m)) == m


@pytest.mark.parametrize("case,change", [("nope_sliding", dict(rope_layers=())),
                                         ("nope_sliding", dict(sliding_layers=())),
                                         ("tied_bias", dict(rope_layers=()))])
def test_per_layer_choices_matter(ckpts, case, change):
    d, toks, logits, _ = ckpts[case]
    F.assert_changes_logits(load_model(d), toks, logits, **change)


def test_hub_style_config():
    """SmolLM3-3B's config.json layout (legacy rope_theta, pretraining_tp, max_window_layers)."""
    cfg = dict(model_type="smollm3", vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=4,
               num_attention_heads=4, num_key_value_heads=2, rope_theta=5e6, rope_scaling=None, pretraining_tp=2,
               max_window_layers=28, use_sliding_window=False, sliding_window=None, no_rope_layer_interval=4,
               no_rope_layers=[1, 1, 1, 0], layer_types=["full_attention"] * 4, torch_dtype="bfloat16")
    c = smollm3.config_from_hf(cfg)
    assert (c.rope_theta, c.rope_layers, c.sliding_layers, c.tie_embeddings) == (5e6, (True, True, True, False), (),
                                                                                 True)
    assert smollm3.config_from_hf({k: v for k, v in cfg.items() if k != "rope_theta"}).rope_theta == 2e6
    with pytest.raises(CheckpointError, match="no_rope_layers"):
        smollm3.config_from_hf(dict(cfg, no_rope_layers=[1, 1, 1]))
