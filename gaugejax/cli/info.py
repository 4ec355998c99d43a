"""``gaugejax info MODEL``: architecture, sizes and gauge group of a checkpoint.

Print the architecture, sizes, storage dtype and gauge group of a checkpoint (Hugging Face directory
or .gguf file).
"""

from __future__ import annotations

import argparse

from gaugejax.cli._args import about, command


def register(sub) -> argparse.ArgumentParser:
    p = command(sub, "info", run, help="describe a checkpoint and its gauge group",
                description=about(__doc__))
    p.add_argument("model", help="Hugging Face directory or .gguf file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def run(args) -> int:
    from gaugejax.info import describe

    info = describe(args.model)
    if args.json:
        import json

        print(json.dumps(info, indent=2))
        return 0
    from gaugejax.cli.common import table

    table(f"{info['path']}", ["field", "value"], [[k, str(v)] for k, v in info.items() if k != "path"])
    return 0
