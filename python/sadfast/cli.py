"""The ``sadfast`` command line."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence

import numpy as np

from . import __version__, _core
from ._runtime import get_num_threads, kernel_isa


def _info(args: argparse.Namespace) -> int:
    info = {
        "sadfast": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": get_num_threads(),
        "kernel_isa": kernel_isa(),
        "available_isas": list(_core.available_isas()),
        "activations": list(_core.activation_names()),
        "losses": list(_core.loss_names()),
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>15}: {', '.join(map(str, v)) if isinstance(v, list) else v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sadfast", description="Fast batched gradient flows of small neural networks."
    )
    parser.add_argument("--version", action="version", version=f"sadfast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="show the build: version, kernel variant, threads, activations, losses")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
