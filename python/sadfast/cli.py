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


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (0 < v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _demo(args: argparse.Namespace) -> int:
    from .experiments import demo

    progress = sys.stderr.isatty() and not args.no_progress
    summary = demo(
        args.out, flows=args.flows, t_end=args.t_end, steps=args.steps, seed=args.seed, progress=progress
    )
    print(f"wrote {args.out}/report.md, summary.json and {len(summary['figures'])} figures")
    for r in summary["flow_experiments"]:
        o = r["outcomes"]
        print(
            f"  {r['description']:48s} converged {o['converged']:4d}  diverging {o['diverging']:4d}  "
            f"undecided {o['undecided']:4d}  final loss median {r['final_loss']['median']:.2e}"
        )
    for m, r in summary["optimizers"]["runs"].items():
        print(
            f"  {m:5s} lr {r['lr']:g}: final |theta| median {r['final_theta_norm']['median']:.3f}, "
            f"loss median {r['final_loss']['median']:.2e}"
        )
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
    d = sub.add_parser(
        "demo",
        help="run the SAD-network experiments at a small size and write a report with figures",
        description="Gradient flows of SAD networks on a polynomial target (they diverge slowly while the loss "
        "falls), the contrasts (weight decay, ReLU) and GD against Adam; writes report.md, summary.json and PNG "
        "figures. The default size takes about a minute on 2 cores.",
    )
    d.add_argument(
        "--flows", type=_positive_int, default=128, help="initializations per experiment (default 128)"
    )
    d.add_argument("--t-end", type=_positive_float, default=10000.0, help="flow horizon (default 10000)")
    d.add_argument("--steps", type=_positive_int, default=20000, help="GD/Adam steps (default 20000)")
    d.add_argument("--seed", type=int, default=0, help="seed of data and initializations (default 0)")
    d.add_argument("--out", default="sadfast-demo", help="output folder (default ./sadfast-demo)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
