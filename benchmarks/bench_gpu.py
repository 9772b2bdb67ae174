"""GPU backend: gradient evaluations/s and flows/s on poly1d/poly2d/poly4d, float64 and float32,
against sadfast's own CPU backend and JAX diffrax on the same GPU.

    python benchmarks/bench_gpu.py [--sizes 10000 100000 1000000] [--problems poly1d poly2d poly4d]
                                   [--dtypes float64 float32] [--flow-k 100000] [--t-end 10]
                                   [--cpu-threads 2] [--cpu-k 512] [--diffrax-k 10000] [--out FILE]

kernels: loss+gradient of K flows at once on device arrays (no host copies timed); GFLOP/s count
the matrix products only (MLP.flops_per_grad), and the fraction is of the device's vector peak
(FP64 or FP32 FMA rate per SM x SMs x clock, vendor datasheet rates per SM).
flows: solve_flows(device="cuda") of K flows to t_end (rtol 1e-6, atol 1e-9; float32 with
rtol 1e-5, atol 1e-7), wall time including the host<->device copies of the state; the CPU row
is the same sadfast version with --cpu-threads threads (2 = this project's CI machine) on
--cpu-k flows, scaled to flows/s; diffrax is jit(vmap(diffeqsolve(Dopri5))) on the GPU
(--diffrax-methods dopri5 tsit5: also Tsit5, against sadfast's tsit5).
long: long horizons (--long-t-end, default 1000) on poly1d and poly2d, where Dormand-Prince's
steps sit at its stability edge: method="rkc" on the GPU against "rosw" (Lanczos rank 8 and the
GPU's default), "auto" (the three GPU kernels in turn, at the GPU's default rank) and "dopri5" on
the GPU and against the CPU's best method ("auto", at the GPU's rank: the same steps), its "rkc"
and its "rosw" on --cpu-k flows (same thread count as above).
layers: poly4d (whose 32 x 32 layer is wide enough) with sadfast.cuda.set_layer_kernel("lanes")
against "tiled" (register-tiled warp GEMMs): gradient evaluations/s at --sizes and flows/s of
--flow-k / 10 flows, float64 and float32.
wide: poly4d's data on [4, w, w, 1] gelu networks for --wide-widths (default 32 64 128): gradient
evaluations/s at K = --wide-k and flows/s of --wide-k / 10 flows to t = 10 against the CPU on 16
flows, float64 and float32; widths whose per-flow workspace exceeds a block's shared memory run
with it in global memory (the row's launch says which).
--sections picks parts (default: kernels flows diffrax long layers wide).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sadfast
from _common import PROBLEMS, BenchProblem, machine, versions, write_json
from sadfast import cuda
from sadfast.bench.peers import run_diffrax

# Vector FMA throughput per SM and clock, in FLOP (2 per FMA), from NVIDIA's datasheets.
PEAK_FLOP_PER_SM_CLK = {(8, 0): {"float64": 64, "float32": 128}, (9, 0): {"float64": 128, "float32": 256}}


SECTIONS = ("kernels", "flows", "diffrax", "long", "layers", "wide")


def peak_gflops(dev: dict[str, Any], dtype: str) -> float | None:
    rate = PEAK_FLOP_PER_SM_CLK.get(tuple(dev["compute_capability"]))
    if rate is None:
        return None
    return rate[dtype] * dev["multiprocessors"] * dev["clock_ghz"]


def bench_kernels(name: str | BenchProblem, K: int, dtype: str, dev: dict[str, Any]) -> dict[str, Any]:
    p = PROBLEMS[name] if isinstance(name, str) else name
    model = p.model()
    prob = model.bind(*p.data())
    dt = np.dtype(dtype)
    theta = cuda.DeviceArray.from_host(model.init(K, seed=0), dt)
    loss = cuda.DeviceArray.empty((K,), dt, use_cupy=False)
    grad = cuda.DeviceArray.empty((K, model.P), dt, use_cupy=False)
    native = cuda.native_problem(prob)
    code = cuda.dtype_code(dt)

    def call() -> None:
        cuda.native().cuda_loss_grad(native, code, theta.ptr, K, loss.ptr, grad.ptr)

    call()  # warm-up
    reps, times = 0, []
    t_all = time.perf_counter()
    while reps < 3 or time.perf_counter() - t_all < 1.0:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        reps += 1
    t = float(np.median(times))
    gflops = model.flops_per_grad(p.n_points) * K / t / 1e9
    peak = peak_gflops(dev, dtype)
    return {
        "problem": p.name,
        "widths": list(p.widths),
        "K": K,
        "dtype": dtype,
        "P": model.P,
        "N": p.n_points,
        "wall_s": t,
        "wall_s_repeats": times,
        "grad_evals_per_s": K / t,
        "gflops": gflops,
        "peak_gflops": peak,
        "fraction_of_peak": None if peak is None else gflops / peak,
        "smem_per_warp_bytes": int(native.warp_smem(code, False)),
        "launch": cuda.last_launch(),
    }


def bench_flows(
    name: str | BenchProblem, K: int, t_end: float, dtype: str, cpu_threads: int, cpu_k: int
) -> dict[str, Any]:
    p = PROBLEMS[name] if isinstance(name, str) else name
    model = p.model()
    prob = model.bind(*p.data())
    th = model.init(K, seed=0)
    tol = {"rtol": 1e-6, "atol": 1e-9} if dtype == "float64" else {"rtol": 1e-5, "atol": 1e-7}
    sadfast.solve_flows(prob, th[:256], min(t_end, 0.1), device="cuda", dtype=dtype, **tol)  # warm-up
    t0 = time.perf_counter()
    res = sadfast.solve_flows(prob, th, t_end, device="cuda", dtype=dtype, **tol)
    wall = time.perf_counter() - t0
    evals = int(res.n_grad_evals.sum() + res.n_output_evals.sum())
    row: dict[str, Any] = {
        "problem": p.name,
        "widths": list(p.widths),
        "K": K,
        "dtype": dtype,
        "t_end": t_end,
        **tol,
        "gpu_wall_s": wall,
        "gpu_flows_per_s": K / wall,
        "gpu_grad_evals_per_s": evals / wall,
        "gpu_gflops": evals * model.flops_per_grad(p.n_points) / wall / 1e9,
        "mean_steps": float((res.n_accepted + res.n_rejected).mean()),
        "status": res.status_counts(),
        "launch": cuda.last_launch(),
    }
    if dtype == "float64":
        old = sadfast.get_num_threads()
        sadfast.set_num_threads(cpu_threads)
        try:
            t0 = time.perf_counter()
            cpu = sadfast.solve_flows(prob, th[:cpu_k], t_end, method="dopri5", **tol)
            cwall = time.perf_counter() - t0
        finally:
            sadfast.set_num_threads(old)
        row.update(
            cpu_threads=cpu_threads,
            cpu_k=cpu_k,
            cpu_wall_s=cwall,
            cpu_flows_per_s=cpu_k / cwall,
            speedup_vs_cpu=(K / wall) / (cpu_k / cwall),
            max_rel_diff_vs_cpu=float(
                np.max(
                    np.linalg.norm(res.theta[:cpu_k] - cpu.theta, axis=1) / np.linalg.norm(cpu.theta, axis=1)
                )
            ),
            same_step_counts_vs_cpu=float(np.mean(res.n_accepted[:cpu_k] == cpu.n_accepted)),
        )
    return row


def bench_layers(
    name: str, sizes: list[int], flow_k: int, t_end: float, dtype: str, dev: dict[str, Any]
) -> dict[str, Any]:
    """The lanes and tiled layer kernels on the same problem: kernels at each K, then flows."""
    row: dict[str, Any] = {"problem": name, "dtype": dtype, "flow_k": flow_k, "t_end": t_end}
    p = PROBLEMS[name]
    model = p.model()
    prob = model.bind(*p.data())
    th = model.init(flow_k, seed=0)
    tol = {"rtol": 1e-6, "atol": 1e-9} if dtype == "float64" else {"rtol": 1e-5, "atol": 1e-7}
    for kernel in ("lanes", "tiled"):
        with cuda.layer_kernel(kernel):
            kern = [bench_kernels(name, K, dtype, dev) for K in sizes]
            sadfast.solve_flows(prob, th[:256], min(t_end, 0.1), device="cuda", dtype=dtype, **tol)  # warm-up
            t0 = time.perf_counter()
            res = sadfast.solve_flows(prob, th, t_end, device="cuda", dtype=dtype, **tol)
            wall = time.perf_counter() - t0
            launch = cuda.last_launch()
        row[kernel] = {
            "kernels": kern,
            "flows_wall_s": wall,
            "flows_per_s": flow_k / wall,
            "flow_grad_evals_per_s": int(res.n_grad_evals.sum() + res.n_output_evals.sum()) / wall,
            "theta": res.theta,
            "flows_launch": launch,
        }
    a, b = row["lanes"], row["tiled"]
    row["max_rel_diff_tiled_vs_lanes"] = float(
        np.max(np.linalg.norm(b["theta"] - a["theta"], axis=1) / np.linalg.norm(a["theta"], axis=1))
    )
    del a["theta"], b["theta"]
    row["kernel_speedup_tiled_vs_lanes"] = [
        t["grad_evals_per_s"] / s_["grad_evals_per_s"]
        for s_, t in zip(a["kernels"], b["kernels"], strict=True)
    ]
    row["flows_speedup_tiled_vs_lanes"] = b["flows_per_s"] / a["flows_per_s"]
    return row


def bench_wide(width: int, K: int, dtype: str, cpu_threads: int, dev: dict[str, Any]) -> dict[str, Any]:
    """poly4d's data on a [4, width, width, 1] network: kernels at K, flows of K / 10 to t = 10
    (against the CPU on 16 flows in float64)."""
    p = dataclasses.replace(PROBLEMS["poly4d"], widths=(4, width, width, 1))
    return {
        "widths": list(p.widths),
        "dtype": dtype,
        "kernels": bench_kernels(p, K, dtype, dev),
        "flows": bench_flows(p, max(K // 10, 64), 10.0, dtype, cpu_threads, 16),
    }


def bench_long(name: str, K: int, t_end: float, cpu_threads: int, cpu_k: int) -> dict[str, Any]:
    p = PROBLEMS[name]
    model = p.model()
    prob = model.bind(*p.data())
    th = model.init(K, seed=0)
    tol = {"rtol": 1e-6, "atol": 1e-9}
    sadfast.solve_flows(prob, th[:256], 1.0, device="cuda", method="rkc", **tol)  # warm-up
    row: dict[str, Any] = {
        "problem": name,
        "K": K,
        "t_end": t_end,
        **tol,
        "cpu_threads": cpu_threads,
        "cpu_k": cpu_k,
    }
    gpu: dict[str, Any] = {}
    # ROSW (cuda/rosw.cu) at rank 8 and at the GPU's default, min(P - 1, 32)
    for key, method, rank in (
        ("rkc", "rkc", None),
        ("rosw_r8", "rosw", 8),
        ("rosw", "rosw", None),
        ("auto", "auto", None),
        ("dopri5", "dopri5", None),
    ):
        t0 = time.perf_counter()
        res = sadfast.solve_flows(prob, th, t_end, device="cuda", method=method, hessian_rank=rank, **tol)
        wall = time.perf_counter() - t0
        gpu[key] = res
        grads = float(np.mean(res.n_grad_evals + res.n_output_evals))
        hvps = float(np.mean(res.n_hvp))
        row[f"gpu_{key}"] = {
            "wall_s": wall,
            "flows_per_s": K / wall,
            "hessian_rank": res.settings.hessian_rank if method in ("rosw", "auto") else None,
            "grad_evals_per_flow": grads,
            "hvp_per_flow": hvps,
            # the method's own cost beside its evaluations (ROSW: projections, Lanczos, eigensolver)
            "ns_per_grad_equivalent": wall / (K * (grads + 2 * hvps)) * 1e9,
            "status": res.status_counts(),
        }
    old = sadfast.get_num_threads()
    sadfast.set_num_threads(cpu_threads)
    try:
        # the CPU's auto and rosw at the GPU default's rank: the same steps, so the same numbers to
        # rounding (on poly1d/poly2d rank 8 already steps as the CPU's default rank)
        for method, rank in (
            ("auto", gpu["auto"].settings.hessian_rank),
            ("rkc", None),
            ("rosw", gpu["rosw"].settings.hessian_rank),
        ):
            t0 = time.perf_counter()
            cpu = sadfast.solve_flows(prob, th[:cpu_k], t_end, method=method, hessian_rank=rank, **tol)
            cwall = time.perf_counter() - t0
            row[f"cpu_{method}"] = {"wall_s": cwall, "flows_per_s": cpu_k / cwall}
            if method in gpu:
                ref = gpu[method]
                row[f"{method}_max_rel_diff_vs_cpu"] = float(
                    np.max(
                        np.linalg.norm(ref.theta[:cpu_k] - cpu.theta, axis=1)
                        / np.linalg.norm(cpu.theta, axis=1)
                    )
                )
                row[f"{method}_same_step_counts_vs_cpu"] = float(
                    np.mean(ref.n_accepted[:cpu_k] == cpu.n_accepted)
                )
    finally:
        sadfast.set_num_threads(old)
    rkc_rate = row["gpu_rkc"]["flows_per_s"]
    row["gpu_rkc_vs_gpu_dopri5"] = rkc_rate / row["gpu_dopri5"]["flows_per_s"]
    row["gpu_rkc_vs_cpu_auto"] = rkc_rate / row["cpu_auto"]["flows_per_s"]
    row["gpu_rkc_vs_cpu_rkc"] = rkc_rate / row["cpu_rkc"]["flows_per_s"]
    for key in ("rosw_r8", "rosw"):
        row[f"gpu_{key}_vs_gpu_rkc"] = row[f"gpu_{key}"]["flows_per_s"] / rkc_rate
    row["gpu_rosw_vs_cpu_auto"] = row["gpu_rosw"]["flows_per_s"] / row["cpu_auto"]["flows_per_s"]
    row["gpu_auto_vs_gpu_rosw"] = row["gpu_auto"]["flows_per_s"] / row["gpu_rosw"]["flows_per_s"]
    row["gpu_auto_vs_cpu_auto"] = row["gpu_auto"]["flows_per_s"] / row["cpu_auto"]["flows_per_s"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--problems", nargs="+", default=["poly1d", "poly2d", "poly4d"])
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    ap.add_argument("--flow-k", type=int, default=100_000)
    ap.add_argument("--t-end", type=float, default=10.0)
    ap.add_argument("--cpu-threads", type=int, default=2)
    ap.add_argument("--cpu-k", type=int, default=512)
    ap.add_argument("--diffrax-k", type=int, default=10_000)
    ap.add_argument(
        "--diffrax-methods",
        nargs="+",
        choices=["dopri5", "tsit5"],
        default=["dopri5"],
        help="solvers of the diffrax rows, each against sadfast's same method on the GPU",
    )
    ap.add_argument("--long-t-end", type=float, default=1000.0)
    ap.add_argument(
        "--long-k", type=int, default=10_000, help="poly1d flows of the long section (poly2d: a fifth)"
    )
    ap.add_argument("--wide-widths", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--wide-k", type=int, default=10_000)
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        ap.error(f"--sections: unknown {sorted(unknown)}; expected some of {list(SECTIONS)}")
    if not cuda.available():
        sys.exit(f"bench_gpu: no usable CUDA device ({cuda.why_unavailable()})")
    dev = cuda.devices()[0]
    print(f"device: {dev}; kernel options: {cuda.kernel_options()}", flush=True)
    kernels = []
    for name in args.problems if "kernels" in args.sections else []:
        for dtype in args.dtypes:
            for K in args.sizes:
                if name == "poly4d" and K * PROBLEMS[name].model().P * 8 * 2 > 0.5 * dev["total_memory"]:
                    continue
                r = bench_kernels(name, K, dtype, dev)
                print(
                    f"kernels {name} {dtype} K={K}: {r['grad_evals_per_s']:.3g} grads/s, "
                    f"{r['gflops']:.0f} GFLOP/s ({100 * (r['fraction_of_peak'] or 0):.1f}% of peak)",
                    flush=True,
                )
                kernels.append(r)
    flows = []
    for name in args.problems if "flows" in args.sections else []:
        for dtype in args.dtypes:
            K = args.flow_k if name != "poly4d" else max(args.flow_k // 10, 1000)
            r = bench_flows(
                name, K, args.t_end, dtype, args.cpu_threads, args.cpu_k if name != "poly4d" else 64
            )
            print(
                f"flows {name} {dtype} K={K}: {r['gpu_flows_per_s']:.3g} flows/s, "
                f"{r['gpu_grad_evals_per_s']:.3g} grads/s"
                + (
                    f", {r['speedup_vs_cpu']:.0f}x the {args.cpu_threads}-thread CPU"
                    if "speedup_vs_cpu" in r
                    else ""
                ),
                flush=True,
            )
            flows.append(r)
    diffrax_rows = []
    for name, method in (
        itertools.product(args.problems, args.diffrax_methods) if "diffrax" in args.sections else []
    ):
        p = PROBLEMS[name]
        model = p.model()
        Kd = args.diffrax_k if name != "poly4d" else max(args.diffrax_k // 10, 100)
        th = model.init(Kd, seed=0)
        d = run_diffrax(p, th, args.t_end, repeats=2, solver=method)
        if isinstance(d, str):
            diffrax_rows.append({"problem": name, "method": method, "skipped": d})
            continue
        prob = model.bind(*p.data())
        t0 = time.perf_counter()
        sadfast.solve_flows(prob, th, args.t_end, device="cuda", method=method)
        sw = time.perf_counter() - t0
        row = {
            "problem": name,
            "method": method,
            "K": Kd,
            "t_end": args.t_end,
            "diffrax_wall_s": d["wall_s"],
            "diffrax_compile_and_first_run_s": d["compile_and_first_run_s"],
            "diffrax_lockstep_waste": d["lockstep_waste"],
            "sadfast_cuda_wall_s": sw,
            "speedup_vs_diffrax": d["wall_s"] / sw,
        }
        print(
            f"diffrax {name} {method} K={Kd}: {d['wall_s']:.3g} s vs sadfast {sw:.3g} s: "
            f"{row['speedup_vs_diffrax']:.1f}x",
            flush=True,
        )
        diffrax_rows.append(row)
    long_rows = []
    for name in [n for n in args.problems if n in ("poly1d", "poly2d")] if "long" in args.sections else []:
        K = args.long_k if name == "poly1d" else max(args.long_k // 5, 256)
        r = bench_long(name, K, args.long_t_end, args.cpu_threads, min(args.cpu_k, 128))
        print(
            f"long {name} K={K} t_end={args.long_t_end:g}: rkc {r['gpu_rkc']['flows_per_s']:.3g} flows/s on the GPU, "
            f"{r['gpu_rkc_vs_gpu_dopri5']:.1f}x its dopri5, {r['gpu_rkc_vs_cpu_auto']:.1f}x the CPU's auto, "
            f"{r['gpu_rkc_vs_cpu_rkc']:.1f}x the CPU's rkc; rosw {r['gpu_rosw_vs_gpu_rkc']:.2f}x rkc "
            f"(rank 8: {r['gpu_rosw_r8_vs_gpu_rkc']:.2f}x); auto {r['gpu_auto_vs_gpu_rosw']:.2f}x rosw, "
            f"{r['gpu_auto_vs_cpu_auto']:.1f}x the CPU's auto; ns per gradient-equivalent "
            + ", ".join(
                f"{m} {r['gpu_' + m]['ns_per_grad_equivalent']:.3g}"
                for m in ("dopri5", "rkc", "rosw", "auto")
            ),
            flush=True,
        )
        long_rows.append(r)
    layer_rows = []
    for name in [n for n in args.problems if n == "poly4d"] if "layers" in args.sections else []:
        for dtype in args.dtypes:
            r = bench_layers(name, args.sizes, max(args.flow_k // 10, 1000), args.t_end, dtype, dev)
            speed = ", ".join(f"{x:.2f}x" for x in r["kernel_speedup_tiled_vs_lanes"])
            fr = ", ".join(f"{100 * (k['fraction_of_peak'] or 0):.1f}%" for k in r["tiled"]["kernels"])
            print(
                f"layers {name} {dtype}: tiled/lanes kernels {speed} (tiled at {fr} of peak), "
                f"flows {r['flows_speedup_tiled_vs_lanes']:.2f}x, states differ by {r['max_rel_diff_tiled_vs_lanes']:.1e}",
                flush=True,
            )
            layer_rows.append(r)
    wide_rows = []
    for width in args.wide_widths if "wide" in args.sections else []:
        for dtype in args.dtypes:
            r = bench_wide(width, args.wide_k, dtype, args.cpu_threads, dev)
            k, f = r["kernels"], r["flows"]
            print(
                f"wide [4, {width}, {width}, 1] {dtype} ({'global' if k['launch']['global_workspace'] else 'shared'} "
                f"workspace, {k['smem_per_warp_bytes']} B per flow): {k['grad_evals_per_s']:.3g} grads/s "
                f"({100 * (k['fraction_of_peak'] or 0):.1f}% of peak), {f['gpu_flows_per_s']:.3g} flows/s"
                + (
                    f", {f['speedup_vs_cpu']:.0f}x the {args.cpu_threads}-thread CPU"
                    if "speedup_vs_cpu" in f
                    else ""
                ),
                flush=True,
            )
            wide_rows.append(r)
    payload = {
        "benchmark": "bench_gpu",
        "device": dev,
        "machine": machine(),
        "versions": versions("sadfast", "numpy", "jax", "diffrax", "cupy"),
        "parameters": vars(args) | {"out": str(args.out) if args.out else None},
        "kernel_options": cuda.kernel_options(),  # the build-time knobs of cuda/warp_mlp.cuh
        "kernels": kernels,
        "flows": flows,
        "diffrax": diffrax_rows,
        "long_horizons": long_rows,
        "layers": layer_rows,
        "wide": wide_rows,
    }
    path = write_json("bench_gpu", payload, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
