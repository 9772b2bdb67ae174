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

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sadfast
from _common import (
    PROBLEMS,
    BenchProblem,
    fp64_peak_probe,
    jax_loss,
    machine,
    time_call,
    torch_loss,
    versions,
    write_json,
)


def bench_sadfast(p: BenchProblem, K: int, min_time: float) -> dict[str, Any]:
    model = p.model()
    X, Y = p.data()
    prob = model.bind(X, Y)
    theta = model.init(K, seed=0)
    v = np.random.default_rng(1).standard_normal(theta.shape)
    g = time_call(lambda: prob.loss_and_grad(theta), min_time=min_time)
    h = time_call(lambda: prob.hvp(theta, v), min_time=min_time)
    return {"grad": g, "hvp": h}


def bench_jax(p: BenchProblem, K: int, min_time: float) -> dict[str, Any] | str:
    try:
        import jax
    except ImportError:
        return "not installed (pip install 'sadfast[bench]')"
    loss = jax_loss(p)
    model = p.model()
    grad = jax.jit(jax.vmap(jax.grad(loss)))
    hvp = jax.jit(jax.vmap(lambda t, v: jax.jvp(jax.grad(loss), (t,), (v,))[1]))
    theta = jax.numpy.asarray(model.init(K, seed=0))
    v = jax.numpy.asarray(np.random.default_rng(1).standard_normal(theta.shape))
    import time

    t0 = time.perf_counter()
    grad(theta).block_until_ready()
    compile_g = time.perf_counter() - t0
    t0 = time.perf_counter()
    hvp(theta, v).block_until_ready()
    compile_h = time.perf_counter() - t0
    g = time_call(lambda: grad(theta).block_until_ready(), min_time=min_time)
    h = time_call(lambda: hvp(theta, v).block_until_ready(), min_time=min_time)
    return {"grad": g, "hvp": h, "compile_s": {"grad": compile_g, "hvp": compile_h}}


def bench_torch(p: BenchProblem, K: int, min_time: float) -> dict[str, Any] | str:
    try:
        import torch
        from torch.func import grad, jvp, vmap
    except ImportError:
        return "not installed (pip install 'sadfast[bench]')"
    torch.set_num_threads(sadfast.get_num_threads())
    loss = torch_loss(p)
    model = p.model()
    g_fn = vmap(grad(loss))
    h_fn = vmap(lambda t, v: jvp(grad(loss), (t,), (v,))[1])
    theta = torch.as_tensor(model.init(K, seed=0))
    v = torch.as_tensor(np.random.default_rng(1).standard_normal(theta.shape))
    g = time_call(lambda: g_fn(theta), min_time=min_time)
    h = time_call(lambda: h_fn(theta, v), min_time=min_time)
    return {"grad": g, "hvp": h, "threads": torch.get_num_threads()}


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
