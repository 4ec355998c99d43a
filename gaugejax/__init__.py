"""gaugejax: residual-stream gauges of transformer checkpoints.

RMSNorm models (Llama, Qwen2, Mistral, SmolLM, ...) have the signed-permutation gauge group
``B_d``; LayerNorm models (GPT-2, GPT-NeoX, BERT) have ``S_d × {±1}``. gaugejax recovers the gauge
between two checkpoints, applies it exactly, and transports coordinate-indexed objects by their
correct rule. Convention (fixed; docs/conventions.md): a gauge A→B means ``h_B = h_A[..., perm] * signs``.

Example:
  >>> import gaugejax as gj
  >>> m = gj.random_model("llama", seed=0)
  >>> g = gj.SignedPermutation.random(1, m.d)
  >>> m2 = gj.apply_gauge(m, g)
  >>> bool(abs(gj.forward(m2, [1, 2, 3]) - gj.forward(m, [1, 2, 3])).max() < 1e-4)
  True
"""

from gaugejax.errors import (CheckpointError, GaugeError, GaugeJaxError, InputError, InputTypeError, NonFiniteError,
                             TransportError)
from gaugejax.gauge import SignedPermutation, load_gauge_metadata
from gaugejax.group import Group
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

# Functions named like their modules are imported eagerly: a lazy attribute would be shadowed by
# the submodule as soon as anything imports ``gaugejax.align`` (``.merge``, ``.audit``).
from gaugejax.align import align, align_activations  # noqa: E402
from gaugejax.audit import AuditResult, Claim, audit  # noqa: E402
from gaugejax.merge import interpolate, merge, merge_checkpoints, task_arithmetic  # noqa: E402
from gaugejax.verify import VerifyResult, verify  # noqa: E402

__version__ = "0.1.0"


_LAZY = {
    "load_model": "gaugejax.io", "save_model": "gaugejax.io", "load_tokenizer": "gaugejax.io",
    "apply_gauge_to_checkpoint": "gaugejax.io",
    "match": "gaugejax.matching", "match_correlation": "gaugejax.matching", "match_stats": "gaugejax.matching",
    "MatchResult": "gaugejax.matching", "AmbiguousMatchWarning": "gaugejax.matching",
    "transport_vector": "gaugejax.transport", "transport_vectors": "gaugejax.transport",
    "transport_sae": "gaugejax.transport", "transport_neurons": "gaugejax.transport",
    "transport_file": "gaugejax.transport",
    "transport_opt_state": "gaugejax.optim", "register_state_rule": "gaugejax.optim",
    "align_path": "gaugejax.trajectory", "cross_run": "gaugejax.trajectory", "PathAlignment": "gaugejax.trajectory",
    "compose_files": "gaugejax.trajectory", "describe": "gaugejax.info",
    "canonical_gauge": "gaugejax.canonical", "CanonicalGauge": "gaugejax.canonical",
    "forward_with_steering": "gaugejax.interventions",
}

_SUBMODULES = ("simulate",)


def __getattr__(name):
    # Lazily imported parts (keep `import gaugejax` light: no scipy/safetensors at import time).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:  # gj.simulate.ceiling(...)
        import importlib

        return importlib.import_module(f"gaugejax.{name}")
    raise AttributeError(f"module 'gaugejax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
