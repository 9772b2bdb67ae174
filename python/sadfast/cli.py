"""The ``sadfast`` command line."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import __version__, _core, cuda
from ._runtime import get_num_threads, kernel_isa
from .flows import CUDA_METHODS


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
        "cuda_built": cuda.built(),
        "cuda_devices": [
            f"{d['name']} (sm_{d['compute_capability'][0]}{d['compute_capability'][1]})"
            for d in cuda.devices()
        ]
        or cuda.why_unavailable(),
    }
    if cuda.built():
        info["cuda_kernels"] = cuda.kernel_options()  # the lanes path's build-time knobs
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>15}: {', '.join(map(str, v)) if isinstance(v, list) else v}")
    return 0


def _int_at_least(minimum: int, expected: str) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum, else the message 'expected <expected>, got ...'."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = minimum - 1
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return v

    return parse


_nonneg_int = _int_at_least(0, "an integer >= 0")
_positive_int = _int_at_least(1, "a positive integer")


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (0 < v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


_EXPERIMENT_DEVICE_HELP = (
    "cpu, cuda or auto (the GPU when there is one); on the GPU the flows use --gpu-method (ReLU: dopri5) "
    "and GD/Adam run there too (default cpu)"
)
_GPU_METHOD_HELP = (
    "the smooth networks' integrator on the GPU (the CPU runs auto): dopri5 (default), tsit5, "
    "or for long horizons rkc (Runge-Kutta-Chebyshev, 2nd order, stabilized), rosw (Rosenbrock W-method "
    "on a rank-min(P - 1, 32) Lanczos Hessian: 4 gradients per step whatever the stiffness) or auto "
    "(the CPU's per-flow switching between the three, on the same rank)"
)


def _demo(args: argparse.Namespace) -> int:
    from .experiments import demo

    progress = sys.stderr.isatty() and not args.no_progress
    experiments = (
        None if args.experiments is None else [n.strip() for n in args.experiments.split(",") if n.strip()]
    )
    summary = demo(
        args.out,
        flows=args.flows,
        t_end=args.t_end,
        steps=args.steps,
        seed=args.seed,
        experiments=experiments,
        progress=progress,
        device=args.device,
        gpu_method=args.gpu_method,
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


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers), got {text!r}") from None
    if not lo < hi:
        raise argparse.ArgumentTypeError(f"expected LO < HI, got {text!r}")
    return lo, hi


def _grid(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        n = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or NAxNB, got {text!r}") from None
    if len(n) not in (1, 2) or min(n) < 1:
        raise argparse.ArgumentTypeError(f"expected N or NAxNB with positive sizes, got {text!r}")
    return (n[0], n[-1])


def _widths(text: str) -> list[int]:
    try:
        return [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths like 1,16,1, got {text!r}"
        ) from None


# Command-line options of `basins run` -> (section, key) of the spec.
_BASIN_OPTIONS = {
    "widths": ("model", "widths"),
    "activation": ("model", "activation"),
    "loss": ("model", "loss"),
    "weight_decay": ("model", "weight_decay"),
    "target": ("data", "target"),
    "n_points": ("data", "n_points"),
    "data_seed": ("data", "seed"),
    "t_end": ("solver", "t_end"),
    "rtol": ("solver", "rtol"),
    "atol": ("solver", "atol"),
    "method": ("solver", "method"),
    "max_steps": ("solver", "max_steps"),
    "device": ("solver", "device"),
    "dtype": ("solver", "dtype"),
    "hessian_rank": ("solver", "hessian_rank"),
    "loss_below": ("solver", "loss_below"),
    "grad_norm_below": ("solver", "grad_norm_below"),
    "theta_norm_above": ("solver", "theta_norm_above"),
}


def _basin_spec_dict(args: argparse.Namespace) -> dict[str, Any] | None:
    """The spec: a JSON file, updated by the options given; None when neither is given."""
    spec: dict[str, Any] = {}
    if args.spec is not None:
        with open(args.spec) as f:
            try:
                spec = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"spec: {args.spec} is not valid JSON ({e})") from None
        if not isinstance(spec, dict):
            raise SystemExit(f"sadfast basins run: {args.spec}: expected a JSON object")
    given = False
    for opt, (section, key) in _BASIN_OPTIONS.items():
        v = getattr(args, opt)
        if v is not None:
            spec.setdefault(section, {})[key] = v
            given = True
    points: dict[str, object] = spec.setdefault("points", {})
    if args.sample is not None:
        points.update(kind="sample", M=args.sample)
        given = True
    if args.grid is not None or args.range is not None or args.range_b is not None:
        na, nb = args.grid or (64, 64)
        lo, hi = args.range or (-1.0, 1.0)
        lob, hib = args.range_b or (lo, hi)
        points.update(kind="slice", a=[lo, hi, na], b=[lob, hib, nb])
        given = True
    for opt in ("seed", "normalization", "bias", "scale"):
        if getattr(args, opt) is not None:
            points[opt] = getattr(args, opt)
            given = True
    if args.points_file is not None:
        points["file"] = args.points_file
        given = True
    if args.critical_points:
        spec["critical_points"] = True
        given = True
    if not points:
        del spec["points"]
    return spec if (given or args.spec is not None) else None


def _basins_run(args: argparse.Namespace) -> int:
    from . import basins

    d = _basin_spec_dict(args)
    spec = None if d is None else basins.spec_from_dict(d)
    progress = sys.stderr.isatty() and not args.no_progress
    client = None
    cluster = None
    if args.local_cluster is not None:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=args.local_cluster, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    try:
        rep = basins.run(
            spec,
            args.store,
            chunk_flows=args.chunk_flows,
            client=client,
            scheduler=args.scheduler,
            workers=args.workers,
            verify=args.verify,
            progress=progress,
            log_every=args.log_every if args.log_every is not None else (None if progress else 60.0),
        )
    except KeyboardInterrupt:
        inf = basins.info(args.store)
        print(
            f"interrupted: {int(inf.done.sum())} of {inf.layout.n_chunks} chunks are done and kept; "
            "run the same command again to compute the rest",
            file=sys.stderr,
        )
        return 130
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    print(
        f"{rep.path}: computed {len(rep.computed)} chunks ({rep.flows} flows, {rep.flows_per_s:.0f} flows/s, "
        f"{rep.wall_s:.1f} s, {rep.scheduler}); {rep.skipped} of {rep.n_chunks} were done already"
    )
    return 0


def _basins_info(args: argparse.Namespace) -> int:
    from . import basins

    inf = basins.info(args.store, verify=args.verify)
    print(json.dumps(inf.to_dict(), indent=2) if args.json else inf)
    return 1 if inf.corrupted else 0


def _basins_plot(args: argparse.Namespace) -> int:
    from . import basins

    print(f"wrote {basins.plot(args.store, args.out)}")
    return 0


def _add_basins(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    b = sub.add_parser(
        "basins",
        help="map basins of initialization: where the flow from every point of a weight-space slice goes",
        description="Chunked, resumable basin maps in a Zarr store, computed locally or on a Dask cluster.",
    )
    bs = b.add_subparsers(dest="basins_command", required=True, metavar="ACTION")
    r = bs.add_parser(
        "run",
        help="compute the missing chunks of a map (creates the store; re-running resumes)",
        description="Integrate one gradient flow per point of a 2-D slice theta = center + a d1 + b d2 (or of a "
        "sample of initializations) and store where each goes. The map is given by a JSON spec file and/or the "
        "options below (options override the file); with neither, an existing store is continued.",
    )
    r.add_argument(
        "spec", nargs="?", help="JSON spec file (keys: model, data, points, solver, n_save, critical_points)"
    )
    r.add_argument("--store", required=True, help="Zarr store directory (created, or resumed)")
    g = r.add_argument_group("model and data")
    g.add_argument("--widths", type=_widths, help="layer widths, e.g. 1,16,1 (default)")
    g.add_argument("--activation", help="activation (default tanh)")
    g.add_argument("--loss", help="loss (default mse)")
    g.add_argument("--weight-decay", type=float, help="L2 weight decay (default 0)")
    g.add_argument("--target", help="polynomial target: x^2 (default) or x1^2+x1x2-x2^2")
    g.add_argument("--n-points", type=_positive_int, help="data points (default 32)")
    g.add_argument("--data-seed", type=int, help="seed of the data (default 0)")
    g = r.add_argument_group("initial points")
    g.add_argument("--grid", type=_grid, help="slice grid N or NAxNB (default 64)")
    g.add_argument("--range", type=_pair, help="range of a (and b) as LO,HI (default -1,1)")
    g.add_argument("--range-b", type=_pair, help="range of b when it differs from a's")
    g.add_argument("--seed", type=int, help="seed of the centre and the directions (default 0)")
    g.add_argument(
        "--normalization", choices=["filter", "none"], help="direction normalization (default filter)"
    )
    g.add_argument(
        "--bias", choices=["zero", "copy", "random"], help="bias part of the directions (default zero)"
    )
    g.add_argument(
        "--scale", choices=["lecun", "xavier_uniform"], help="initialization of the centre (default lecun)"
    )
    g.add_argument(
        "--points-file",
        metavar="NPZ",
        help="your own centre and directions (arrays center, d1, d2; with --sample: theta0) instead of random",
    )
    g.add_argument(
        "--sample",
        type=_positive_int,
        metavar="M",
        help="instead of a slice: M initializations model.init(M, seed)",
    )
    g = r.add_argument_group("solver")
    g.add_argument("--t-end", type=_positive_float, help="flow horizon (default 100)")
    g.add_argument("--rtol", type=_positive_float, help="relative tolerance (default 1e-6)")
    g.add_argument("--atol", type=_positive_float, help="absolute tolerance (default 1e-9)")
    g.add_argument(
        "--method", choices=["dopri5", "tsit5", "rkc", "auto", "rosw"], help="integrator (default dopri5)"
    )
    g.add_argument(
        "--hessian-rank",
        type=_nonneg_int,
        metavar="M",
        help="rosw/auto: Lanczos rank of the Hessian approximation, 0 = exact (default: exact for P <= 32, else "
        "min(P - 1, 256, max(32, 2^18 / (P + 1))); maps on a GPU need 1..min(P - 1, 64))",
    )
    g.add_argument("--max-steps", type=_positive_int, help="attempted steps per flow (default 1e6)")
    g.add_argument(
        "--device",
        choices=["cpu", "cuda", "auto"],
        help="where chunks are integrated; auto: each worker's GPU when it has one (default cpu)",
    )
    g.add_argument(
        "--dtype", choices=["float64", "float32"], help="float32 needs --device cuda (default float64)"
    )
    g.add_argument(
        "--loss-below", type=_positive_float, help="event: stop a flow at this loss (outcome optimum)"
    )
    g.add_argument(
        "--grad-norm-below", type=_positive_float, help="event: stop at this gradient norm (converged)"
    )
    g.add_argument(
        "--theta-norm-above", type=_positive_float, help="event: stop at this parameter norm (diverging)"
    )
    g.add_argument(
        "--critical-points",
        action="store_true",
        default=None,
        help="also classify where converged flows stop: minimum, saddle, degenerate or unresolved (the "
        "residual gradient too large for the sign), from the extreme Hessian eigenvalues (Lanczos, <= 62 "
        "Hessian-vector products per converged flow)",
    )
    g = r.add_argument_group("execution")
    g.add_argument("--chunk-flows", type=_positive_int, help="flows per chunk of a new store (default 4096)")
    g.add_argument(
        "--workers",
        type=_positive_int,
        help="local threads running chunks (default: one per core when chunks allow)",
    )
    g.add_argument("--scheduler", help="Dask scheduler address: run the chunks on that cluster")
    g.add_argument(
        "--local-cluster", type=_positive_int, metavar="N", help="run on a Dask LocalCluster of N processes"
    )
    g.add_argument(
        "--verify", action="store_true", help="check done chunks' checksums and recompute bad ones"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument(
        "--log-every",
        type=_positive_float,
        metavar="SECONDS",
        help="progress lines on stderr at most this often (default: every 60 s when there is no progress bar)",
    )
    r.set_defaults(func=_basins_run)
    i = bs.add_parser("info", help="what is done and what is missing in a store")
    i.add_argument("store")
    i.add_argument("--verify", action="store_true", help="check every done chunk against its checksum")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_basins_info)
    p = bs.add_parser("plot", help="PNG of a map: outcome classes shaded by final loss, and the limit loss")
    p.add_argument("store")
    p.add_argument("-o", "--out", help="PNG path (default: the store path with .png)")
    p.set_defaults(func=_basins_plot)


def _experiment(args: argparse.Namespace) -> int:
    from .experiments import run_suite

    progress = sys.stderr.isatty() and not args.no_progress
    out = args.out or f"sadfast-{args.suite}"
    s = run_suite(
        args.suite,
        out,
        flows=args.flows,
        t_end=args.t_end,
        steps=args.steps,
        n_points=args.n_points,
        seed=args.seed,
        only=args.only,
        progress=progress,
        device=args.device,
        gpu_method=args.gpu_method,
    )
    print(f"wrote {out}/report.md, summary.json and {len(s['figures'])} figures")
    for r in s["experiments"]:
        o = r["outcomes"]
        print(
            f"  {r['description']:44s} converged {o['converged']:4d}  diverging {o['diverging']:4d}  "
            f"undecided {o['undecided']:4d}  final loss median {r['final_loss'].get('median', float('nan')):.2e}"
        )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run

    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    run(args.suite, backends=backends, device=args.device, out=args.out, max_k=args.max_k)
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
    d.add_argument(
        "--experiments",
        help="comma-separated subset of sad_tanh,sad_softplus,contrast_weight_decay,contrast_relu (default all)",
    )
    d.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help=_EXPERIMENT_DEVICE_HELP)
    d.add_argument("--gpu-method", choices=list(CUDA_METHODS), default="dopri5", help=_GPU_METHOD_HELP)
    d.add_argument("--out", default="sadfast-demo", help="output folder (default ./sadfast-demo)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)
    _add_basins(sub)
    from .experiments import SUITES as EXPERIMENTS

    e = sub.add_parser(
        "experiment",
        help="run an experiment suite (every SAD activation, the contrasts, or the published study's settings)",
        description="Gradient flows and GD/Adam from the same initializations for every experiment of a suite; "
        "writes report.md, summary.json and figures. Suites: "
        + "; ".join(f"{k}: {v.description}" for k, v in EXPERIMENTS.items()),
    )
    e.add_argument("suite", choices=list(EXPERIMENTS), help="which suite")
    e.add_argument(
        "--flows", type=_positive_int, help="initializations per experiment (default: the suite's)"
    )
    e.add_argument("--t-end", type=_positive_float, help="flow horizon (default: the suite's)")
    e.add_argument("--steps", type=int, help="GD/Adam steps, 0 for none (default: the suite's)")
    e.add_argument("--n-points", type=_positive_int, help="data points (default: each experiment's)")
    e.add_argument("--seed", type=int, default=0, help="seed of data and initializations (default 0)")
    e.add_argument("--only", help="run only the experiments whose name contains this (e.g. 1d, tanh)")
    e.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help=_EXPERIMENT_DEVICE_HELP)
    e.add_argument("--gpu-method", choices=list(CUDA_METHODS), default="dopri5", help=_GPU_METHOD_HELP)
    e.add_argument("--out", help="output folder (default ./sadfast-SUITE)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=_experiment)
    from .bench import BACKENDS, SUITES

    b = sub.add_parser(
        "bench",
        help="measure sadfast against JAX, diffrax, torch, torchdiffeq and scipy in one run",
        description="Kernels (gradient/HVP evaluations per second), whole flows (wall time, evaluations per flow, "
        "lockstep waste), accuracy against a tight DOP853 reference, scaling with K, N, P and threads, and a "
        "roofline against the measured FP64 peak. Writes bench.json, report.md and PNG plots. Peers that are not "
        "installed are skipped with the reason (pip install 'sadfast[bench]').",
    )
    b.add_argument(
        "--suite", choices=list(SUITES), default="quick", help="smoke (seconds), quick (minutes), full"
    )
    b.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated subset of {','.join(BACKENDS)} (default all)",
    )
    b.add_argument(
        "--device",
        default="cpu",
        help="cpu (this suite compares CPU libraries; GPU runs: benchmarks/bench_gpu.py in the source tree)",
    )
    b.add_argument(
        "--max-k", type=_positive_int, help="size budget: at most this many flows in any measurement"
    )
    b.add_argument("--out", default="sadfast-bench", help="output folder (default ./sadfast-bench)")
    b.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, OSError) as exc:
        # Bad input (a spec, a store, a path) is the user's to fix: say what, without a traceback.
        parser.exit(2, f"sadfast {args.command}: error: {exc}\n")
    except RuntimeError as exc:
        if "no usable CUDA device" not in str(exc):
            raise
        parser.exit(2, f"sadfast {args.command}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
