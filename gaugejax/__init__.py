"""gaugejax: residual-stream gauges of transformer checkpoints.

RMSNorm models (Llama, Qwen2, Mistral, SmolLM, ...) have the signed-permutation gauge group
``B_d``; LayerNorm models (GPT-2, GPT-NeoX, BERT) have ``S_d × {±1}``. gaugejax recovers the gauge
between two checkpoints, applies it exactly, and transports coordinate-indexed objects by their
correct rule. Convention (SPEC §3): a gauge A→B means ``h_B = h_A[..., perm] * signs``.

Example:
  >>> import gaugejax as gj
  >>> m = gj.random_model("llama", seed=0)
  >>> g = gj.SignedPermutation.random(1, m.d)
  >>> m2 = gj.apply_gauge(m, g)
  >>> bool(abs(gj.forward(m2, [1, 2, 3]) - gj.forward(m, [1, 2, 3])).max() < 1e-4)
  True
"""

from gaugejax.errors import CheckpointError, GaugeError, GaugeJaxError, TransportError
from gaugejax.gauge import SignedPermutation, load_gauge_metadata
from gaugejax.models import (
    GPT2Config,
    LlamaConfig,
    Model,
    NeoXConfig,
    apply_gauge,
    forward,
    gauge_spec,
    random_model,
    residual_stream,
    tiny_config,
)
from gaugejax.spec import RESIDUAL, RESIDUAL_PERM, AxisAction, Axes, apply_spec

__version__ = "0.1.0"


def __getattr__(name):
    # Lazily imported parts (keep `import gaugejax` light: no scipy/safetensors at import time).
    lazy = {
        "load_model": ("gaugejax.io", "load_model"),
        "save_model": ("gaugejax.io", "save_model"),
        "load_tokenizer": ("gaugejax.io", "load_tokenizer"),
        "match": ("gaugejax.matching", "match"),
        "MatchResult": ("gaugejax.matching", "MatchResult"),
    }
    if name in lazy:
        import importlib

        mod, attr = lazy[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'gaugejax' has no attribute {name!r}")
