"""The fuzz worker: a long-lived process that runs one reader per request and reports how it ended.

Protocol (one JSON object per line): the parent writes ``{"target": T, "path": P, "out": O}`` to
stdin; the worker answers on stdout with a line starting ``@@`` followed by ``{"outcome":
"accepted" | "refused" | "traceback", "message", "seconds", "peak"}``. ``peak`` is the growth of
the resident set during the case: the kernel's high-water mark (``VmHWM``) is reset before each case
through ``/proc/self/clear_refs`` and read after it.

Every module a reader needs is imported, and every target run once on a valid file, before the
address-space limit (``RLIMIT_AS``) is set, so a case is measured against a warm process. A case
that hangs is the parent's to kill; an allocation past the limit ends as a ``MemoryError``, which
is reported as a traceback.

Run as ``python tests/fuzz/worker.py WARMUP.json``.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
import traceback
import warnings

AS_HEADROOM = 3 * 2**30
"""Address space granted beyond what the warm worker already maps."""
CPU_SECONDS = 3600
"""A backstop on the worker's total CPU time (the parent times each case)."""


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _targets():
    import gaugejax as gj
    from gaugejax.cli.common import load_token_file
    from gaugejax.gauge import load_gauge_metadata
    from gaugejax.info import describe
    from gaugejax.io import apply_gauge_to_checkpoint, load_tokenizer
    from gaugejax.io.gguf import gguf_metadata
    from gaugejax.transport import transport_file

    from gaugejax.io.gguf_apply import apply_gauge_to_gguf

    gauge = gj.SignedPermutation.random(0, 16)  # the width of every seed but the GGUF model's
    gguf_gauge = gj.SignedPermutation.random(0, 32)

    def transport(kind):
        def run(path, out):
            src = os.path.basename(path.rstrip("/"))
            return transport_file(kind, path, os.path.join(out, src), gauge)
        return run

    def tokenizer(path, out):
        tok = load_tokenizer(path)
        return tok("Hello, world") if tok is not None else None

    return {
        **_selftests(),
        "info": lambda path, out: describe(path),
        "load": lambda path, out: gj.load_model(path),
        "summary": lambda path, out: gguf_metadata(path),
        "apply": lambda path, out: apply_gauge_to_checkpoint(path, os.path.join(out, "applied"), gauge),
        "apply_gguf": lambda path, out: apply_gauge_to_gguf(path, os.path.join(out, "applied"), gguf_gauge),
        "gauge": lambda path, out: (gj.SignedPermutation.load(path), load_gauge_metadata(path)),
        "tokens": lambda path, out: load_token_file(path),
        "tokenizer": tokenizer,
        "steering": transport("steering"),
        "sae": transport("sae"),
        "neurons": transport("neurons"),
    }


def _selftests():
    """Readers that break the rule on purpose: the harness must report each (test_harness_catches_each_breach)."""
    from gaugejax.errors import GaugeJaxError

    def alloc(path, out):  # trusts a size field, as the GGUF reader once did
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
        bytearray(n)[::4096] = b"\1" * len(range(0, n, 4096))  # touch every page

    def crash(path, out):
        raise KeyError(path)

    def multiline(path, out):
        raise GaugeJaxError("first line\nsecond line")

    return {"selftest_alloc": alloc, "selftest_crash": crash, "selftest_multiline": multiline,
            "selftest_hang": lambda path, out: time.sleep(3600)}


def run_case(fn, path: str, out: str) -> dict:
    """Runs one case and classifies how it ended."""
    from gaugejax.errors import GaugeJaxError

    gc.collect()
    _reset_peak()
    base = _status("VmRSS")
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(path, out)
        outcome, message = "accepted", ""
    except GaugeJaxError as e:
        message = str(e)
        outcome = "refused" if message and "\n" not in message else "traceback"
    except BaseException as e:  # noqa: BLE001 - every other exception is what the harness looks for
        outcome = "traceback"
        message = f"{type(e).__name__}: {e}".splitlines()[0][:300] + " | " + \
            " < ".join(f"{f.name}@{os.path.basename(f.filename)}:{f.lineno}"
                       for f in traceback.extract_tb(e.__traceback__)[-4:])
    seconds = time.perf_counter() - start
    peak = max(0, _status("VmHWM") - base)
    return {"outcome": outcome, "message": message[:500], "seconds": seconds, "peak": peak}


def main(warmup_file: str) -> None:
    targets = _targets()
    with open(warmup_file) as fh:
        warmup = json.load(fh)
    for case in warmup:  # imports, JAX backend start-up, first-call caches: not charged to any case
        run_case(targets[case["target"]], case["path"], case["out"])
    gc.collect()
    gc.freeze()  # the warm process's objects leave the collector's view: a collection per case then costs ~1 ms
    resource.setrlimit(resource.RLIMIT_AS, (_status("VmSize") + AS_HEADROOM,) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    print("@@" + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        result = run_case(targets[case["target"]], case["path"], case["out"])
        print("@@" + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    main(sys.argv[1])
