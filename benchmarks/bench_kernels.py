"""Gradient and HVP throughput of sadfast's batched kernels on the benchmark problems, beside
JAX (jit(vmap(grad))) and PyTorch (torch.func.vmap(grad)) when installed, in one run.

    python benchmarks/bench_kernels.py [--ks 256 1024] [--problems poly1d poly2d poly4d]
                                       [--min-time 0.3] [--out FILE]

Every backend gets the same data, the same initializations (sadfast's reproducible init) and
the same number of threads. Writes JSON (machine, versions, parameters, raw timings) to
benchmarks/results/kernels.json unless --out is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PROBLEMS, fp64_peak_probe, machine, versions, write_json
from sadfast.bench.peers import bench_jax, bench_sadfast, bench_torch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument("--backends", nargs="+", default=["sadfast", "jax", "torch"])
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    peak = fp64_peak_probe()
    rows = []
    for name in args.problems:
        p = PROBLEMS[name]
        flops = p.model().flops_per_grad(p.n_points)
        for K in args.ks:
            row: dict[str, Any] = {"problem": name, "K": K, "flops_per_grad": flops}
            for be, fn in (("sadfast", bench_sadfast), ("jax", bench_jax), ("torch", bench_torch)):
                if be in args.backends:
                    row[be] = fn(p, K, args.min_time)
            s = row["sadfast"]
            us = s["grad"]["median_s"] / K * 1e6
            line = (
                f"{name:7s} K={K:5d}  sadfast grad {us:8.3f} us  hvp {s['hvp']['median_s'] / K * 1e6:8.3f} us"
            )
            line += f"  {flops / (us * 1e3):6.2f} GFLOP/s ({100 * flops / (us * 1e3) / peak:4.1f}% of peak)"
            for be in ("jax", "torch"):
                r = row.get(be)
                if isinstance(r, dict):
                    ratio = r["grad"]["median_s"] / s["grad"]["median_s"]
                    hr = r["hvp"]["median_s"] / s["hvp"]["median_s"]
                    row[f"speedup_vs_{be}"] = {"grad": ratio, "hvp": hr}
                    line += (
                        f"  | {be} {r['grad']['median_s'] / K * 1e6:8.3f} us (x{ratio:5.1f}, hvp x{hr:5.1f})"
                    )
                elif r is not None:
                    line += f"  | {be}: {r}"
            print(line, flush=True)
            rows.append(row)
    payload = {
        "benchmark": "kernels",
        "machine": machine(),
        "versions": versions("jax", "jaxlib", "torch"),
        "fp64_peak_gflops_measured": peak,
        "peak_method": "numpy float64 matmul 2048x2048 (OpenBLAS), best of 5, all threads",
        "parameters": {"ks": args.ks, "min_time": args.min_time, "dtype": "float64", "loss": "mse"},
        "results": rows,
    }
    path = write_json("kernels", payload, None if args.out is None else __import__("pathlib").Path(args.out))
    print(f"peak {peak:.1f} GFLOP/s; wrote {path}")


if __name__ == "__main__":
    main()
