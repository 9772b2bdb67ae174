"""``sadfast bench``: sadfast against the libraries people would otherwise use, in one run.

Every selected backend gets the same problems, the same initial points (the reproducible init),
the same tolerances and horizons, one after another in this process. Levels:

- kernels: batched gradient and Hessian-vector product evaluations per second (sadfast, JAX
  ``jit(vmap(grad))``, ``torch.func.vmap(grad)``), with JAX's compile time shown apart;
- flows: wall time to t_end, gradient evaluations per flow and lockstep waste (sadfast, diffrax,
  torchdiffeq, scipy), final-loss agreement between backends and with a tight DOP853 reference;
- scaling of sadfast's gradient with the number of flows K, data points N, parameters P (width
  and depth) and threads; a roofline view: achieved GFLOP/s against the measured FP64 peak.

Timing: warm-ups run first and are excluded (compile times reported apart), every timing is a
median over repeats with min and max kept, and every raw sample is in the JSON.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._runtime import get_num_threads, set_num_threads
from ..mlp import MLP
from ._machine import fp64_peak_probe, machine, time_call, versions
from .peers import (
    INSTALL_HINT,
    bench_jax,
    bench_sadfast,
    bench_torch,
    reference_dop853,
    run_diffrax,
    run_sadfast,
    run_sadfast_auto,
    run_scipy,
    run_torchdiffeq,
)
from .problems import PROBLEMS, BenchProblem

SCHEMA = "sadfast.bench/1"
BACKENDS = ("sadfast", "jax", "torch", "diffrax", "torchdiffeq", "scipy")
KERNEL_BACKENDS = ("sadfast", "jax", "torch")
FLOW_BACKENDS = ("sadfast", "diffrax", "torchdiffeq", "scipy")
PEER_PACKAGES = {
    "jax": ("jax",),
    "torch": ("torch",),
    "diffrax": ("jax", "diffrax"),
    "torchdiffeq": ("torch", "torchdiffeq"),
    "scipy": ("scipy",),
}


@dataclass(frozen=True)
class Suite:
    """Sizes of one benchmark suite."""

    name: str
    kernel_problems: tuple[str, ...]
    kernel_ks: tuple[int, ...]
    min_time: float
    repeats: int
    flows: tuple[tuple[str, float, int], ...]  # (problem, t_end, K)
    scipy_flows: int
    torch_flows: int
    accuracy_flows: int
    scale_k: tuple[int, ...]
    scale_n: tuple[int, ...]
    scale_width: tuple[int, ...]
    scale_depth: tuple[int, ...]
    threads: tuple[int, ...]
    peak_n: int

    def capped(self, max_k: int | None) -> Suite:
        if max_k is None:
            return self

        def cap(ks: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(k for k in ks if k <= max_k) or (min(min(ks), max_k),)

        return dataclasses.replace(
            self,
            kernel_ks=cap(self.kernel_ks),
            scale_k=cap(self.scale_k),
            flows=tuple((p, t, min(k, max_k)) for p, t, k in self.flows),
        )


SUITES = {
    "smoke": Suite(
        "smoke", ("poly1d",), (16,), 0.02, 3, (("poly1d", 2.0, 8),), 2, 4, 2,
        (1, 16, 128), (8, 32), (4, 16), (1, 2), (1, 2), 256,
    ),
    "quick": Suite(
        "quick", ("poly1d", "poly2d", "poly4d"), (256, 1024), 0.2, 5,
        (("poly1d", 100.0, 256), ("poly2d", 20.0, 64)), 4, 32, 4,
        (1, 10, 100, 1000, 10_000), (8, 32, 128, 512, 2048), (4, 16, 64, 256), (1, 2, 3, 4), (1, 2), 2048,
    ),
    "full": Suite(
        "full", ("poly1d", "poly2d", "poly4d"), (256, 1024, 4096), 0.3, 7,
        (("poly1d", 100.0, 1024), ("poly2d", 20.0, 256), ("poly4d", 5.0, 64)), 8, 64, 8,
        (1, 10, 100, 1000, 10_000, 100_000), (8, 32, 128, 512, 2048, 8192), (4, 16, 64, 256, 1024),
        (1, 2, 3, 4, 6, 8), (1, 2, 4, 8, 16), 2048,
    ),
}  # fmt: skip


def backend_status(backends: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``{"ok"}`` or ``{"skipped", reason}`` per selected backend (a peer not installed)."""
    out = {}
    for b in backends:
        missing = [m for m in PEER_PACKAGES.get(b, ()) if importlib.util.find_spec(m) is None]
        out[b] = (
            {"status": "skipped", "reason": f"{', '.join(missing)} {INSTALL_HINT}"}
            if missing
            else {"status": "ok"}
        )
    return out


def _per_flow_us(t: dict[str, Any], K: int) -> float:
    return float(t["median_s"]) / K * 1e6


def _activations_per_grad(model: MLP, n_points: int) -> int:
    return n_points * sum(model.widths[1:-1])


def _kernels(suite: Suite, ok: dict[str, bool], log: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    runners = {"sadfast": bench_sadfast, "jax": bench_jax, "torch": bench_torch}
    for name in suite.kernel_problems:
        p = PROBLEMS[name]
        model = p.model()
        flops = model.flops_per_grad(p.n_points)
        for K in suite.kernel_ks:
            row: dict[str, Any] = {"problem": name, "K": K, "flops_per_grad": flops}
            for be in KERNEL_BACKENDS:
                if ok.get(be):
                    row[be] = runners[be](p, K, suite.min_time)
            s = row["sadfast"]
            us = _per_flow_us(s["grad"], K)
            row["sadfast_grad_us_per_flow"] = us
            row["sadfast_hvp_us_per_flow"] = _per_flow_us(s["hvp"], K)
            row["sadfast_gflops"] = flops / (us * 1e3)
            row["sadfast_activations_per_s"] = _activations_per_grad(model, p.n_points) / (us * 1e-6)
            for be in ("jax", "torch"):
                if isinstance(row.get(be), dict):
                    r = row[be]
                    row[f"speedup_vs_{be}"] = {
                        "grad": r["grad"]["median_s"] / s["grad"]["median_s"],
                        "hvp": r["hvp"]["median_s"] / s["hvp"]["median_s"],
                    }
            log(
                f"kernels {name} K={K}: sadfast {us:.3f} us/grad, {row['sadfast_gflops']:.2f} GFLOP/s"
                + "".join(
                    f", {be} x{row[f'speedup_vs_{be}']['grad']:.1f}"
                    for be in ("jax", "torch")
                    if f"speedup_vs_{be}" in row
                )
            )
            rows.append(row)
    return rows


def _flows(
    suite: Suite, ok: dict[str, bool], log: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, accuracy = [], []
    for name, t_end, K in suite.flows:
        p = PROBLEMS[name]
        theta0 = p.model().init(K, seed=0)
        row: dict[str, Any] = {"problem": name, "K": K, "t_end": t_end}
        base = run_sadfast(p, theta0, t_end, repeats=suite.repeats)
        base["lockstep_waste"] = 1.0  # every flow has its own step: nothing is computed for nothing
        row["sadfast"] = base
        ref = np.array(base["final_loss"])
        mean_needed = base["grad_evals_per_flow"]["mean"]
        log(f"flows {name} t_end={t_end:g} K={K}: sadfast {base['wall_s']:.3f} s")
        for be, fn, n in (
            ("diffrax", run_diffrax, K),
            ("torchdiffeq", run_torchdiffeq, min(K, suite.torch_flows)),
            ("scipy", run_scipy, min(K, suite.scipy_flows)),
        ):
            if not ok.get(be):
                continue
            r = fn(p, theta0[:n], t_end, repeats=suite.repeats)
            if isinstance(r, str):
                row[be] = {"skipped": r}
                continue
            r["flows"] = n
            r["wall_s_scaled_to_K"] = r["wall_s"] * K / n
            r["speedup_of_sadfast"] = r["wall_s_scaled_to_K"] / base["wall_s"]
            if be == "torchdiffeq":  # one step size for the batch: every flow gets every evaluation
                r["lockstep_waste"] = r["grad_evals_per_flow"]["mean"] / mean_needed
                r["lockstep_waste_note"] = "shared-step evaluations / sadfast's mean per-flow evaluations"
            elif be == "scipy":
                r["lockstep_waste"] = 1.0
            agree = np.abs(np.array(r["final_loss"]) - ref[:n]) / np.abs(ref[:n])
            r["final_loss_max_rel_diff_vs_sadfast"] = float(agree.max())
            row[be] = r
            log(f"  {be}: {r['wall_s']:.3f} s for {n} flows -> sadfast x{r['speedup_of_sadfast']:.1f}")
        # The library's default method on the same flows: Dormand-Prince until a flow turns stiff.
        # Lower order once it switches, so its final losses are less accurate at the same rtol.
        auto = run_sadfast_auto(p, theta0, t_end, base, row.get("diffrax"), repeats=suite.repeats)
        row["sadfast_auto"] = auto
        log(
            f"  sadfast auto: {auto['wall_s']:.3f} s (x{auto['speedup_over_dopri5']:.2f} over Dormand-Prince)"
        )
        rows.append(row)
        if importlib.util.find_spec("scipy") is not None and suite.accuracy_flows:
            n = min(K, suite.accuracy_flows)
            t0 = time.perf_counter()
            dop = np.array(reference_dop853(p, theta0[:n], t_end))
            acc: dict[str, Any] = {
                "problem": name,
                "flows": n,
                "t_end": t_end,
                "reference": "scipy DOP853 rtol 1e-12, atol 1e-15",
                "reference_wall_s": time.perf_counter() - t0,
                "max_rel_diff_vs_reference": {},
            }
            for be in (*FLOW_BACKENDS, "sadfast_auto"):
                got = row.get(be)
                if isinstance(got, dict) and "final_loss" in got:
                    r = got
                    m = min(n, len(r["final_loss"]))
                    d = np.abs(np.array(r["final_loss"][:m]) - dop[:m]) / np.abs(dop[:m])
                    acc["max_rel_diff_vs_reference"][be] = float(d.max())
            accuracy.append(acc)
            log(f"  accuracy vs DOP853: {acc['max_rel_diff_vs_reference']}")
    return rows, accuracy


def _grad_time(p: BenchProblem, K: int, suite: Suite) -> dict[str, Any]:
    model = p.model()
    prob = model.bind(*p.data())
    theta = model.init(K, seed=0)
    t = time_call(lambda: prob.loss_and_grad(theta), min_time=suite.min_time, repeats=suite.repeats)
    us = _per_flow_us(t, K)
    flops = model.flops_per_grad(p.n_points)
    return {
        "P": model.P,
        "N": p.n_points,
        "widths": list(p.widths),
        "K": K,
        "flops_per_grad": flops,
        "timing": t,
        "us_per_flow_grad": us,
        "gflops": flops / (us * 1e3),
        "activations_per_s": _activations_per_grad(model, p.n_points) / (us * 1e-6),
    }


def _scaling(suite: Suite, log: Callable[[str], None]) -> dict[str, list[dict[str, Any]]]:
    base = PROBLEMS["poly1d"]
    K0 = 256
    out: dict[str, list[dict[str, Any]]] = {"K": [], "N": [], "width": [], "depth": [], "threads": []}
    for K in suite.scale_k:
        out["K"].append(_grad_time(base, K, suite))
    for N in suite.scale_n:
        out["N"].append(_grad_time(dataclasses.replace(base, n_points=N), K0, suite))
    for h in suite.scale_width:
        out["width"].append(_grad_time(dataclasses.replace(base, widths=(1, h, 1)), K0, suite))
    for d in suite.scale_depth:
        out["depth"].append(_grad_time(dataclasses.replace(base, widths=(1, *([16] * d), 1)), K0, suite))
    before = get_num_threads()
    try:
        cores = os.cpu_count() or 1
        for n in [t for t in suite.threads if t <= cores] or [1]:
            set_num_threads(n)
            r = _grad_time(PROBLEMS["poly2d"], 1024, suite)
            r["threads"] = n
            out["threads"].append(r)
    finally:
        set_num_threads(before)
    for key, rows in out.items():
        log(
            f"scaling vs {key}: "
            + ", ".join(f"{r['us_per_flow_grad']:.3g}" for r in rows)
            + " us per flow-gradient"
        )
    return out


def run(
    suite: str = "quick",
    *,
    backends: tuple[str, ...] = BACKENDS,
    device: str = "cpu",
    out: str | Path = "sadfast-bench",
    max_k: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run a suite and write ``bench.json``, ``report.md`` and PNG plots to ``out``.

    Parameters
    ----------
    suite
        ``"smoke"`` (seconds), ``"quick"`` (a few minutes on 2 cores) or ``"full"``.
    backends
        Any of :data:`BACKENDS`; ``sadfast`` always runs (it is what the others are compared with).
    device
        ``"cpu"``: the suite compares CPU libraries; the GPU backend has its own benchmark,
        ``benchmarks/bench_gpu.py`` in the source tree. Anything else is an error.
    max_k
        Size budget: no measurement uses more than ``max_k`` flows.
    """
    if suite not in SUITES:
        raise ValueError(f"suite: unknown name {suite!r}; expected one of {list(SUITES)}")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"backends: unknown {unknown}; expected names from {list(BACKENDS)}")
    if device != "cpu":
        raise ValueError(
            f"device: expected 'cpu', got {device!r} (GPU benchmarks: benchmarks/bench_gpu.py in the source tree)"
        )
    if max_k is not None and max_k < 1:
        raise ValueError(f"max_k: expected an integer >= 1, got {max_k}")
    s = SUITES[suite].capped(max_k)
    selected = tuple(dict.fromkeys(("sadfast", *backends)))
    status = backend_status(selected)
    ok = {b: v["status"] == "ok" for b, v in status.items()}
    for b, v in status.items():
        if v["status"] != "ok":
            log(f"{b}: skipped, {v['reason']}")
    threads = get_num_threads()
    if ok.get("torch") or ok.get("torchdiffeq"):
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    kernels = _kernels(s, ok, log)
    flows, accuracy = _flows(s, ok, log)
    scaling = _scaling(s, log)
    # The BLAS probe runs last: its threads keep spinning for a while after a call, which would
    # slow the OpenMP kernels measured right after it.
    peak_t0 = time.perf_counter()
    peak = fp64_peak_probe(n=s.peak_n, repeats=s.repeats)
    peak_s = time.perf_counter() - peak_t0
    for row in kernels:
        row["sadfast_fraction_of_peak"] = row["sadfast_gflops"] / peak
    log(
        f"FP64 peak probe: {peak:.1f} GFLOP/s (numpy matmul {s.peak_n}^2, best of {s.repeats}); sadfast kernels "
        + ", ".join(f"{r['problem']} K={r['K']} {100 * r['sadfast_fraction_of_peak']:.1f}%" for r in kernels)
        + " of it"
    )
    result = {
        "schema": SCHEMA,
        "suite": dataclasses.asdict(s),
        "device": device,
        "machine": machine(),
        "versions": versions("zarr", "jax", "jaxlib", "diffrax", "equinox", "torch", "torchdiffeq", "scipy"),
        "backends": status,
        "threads": {
            "sadfast": f"{threads} OpenMP threads (OMP_NUM_THREADS / sadfast.set_num_threads)",
            "torch": f"torch.set_num_threads({threads})",
            "jax": "XLA's CPU thread pool, its default (all cores)",
            "scipy": "one flow at a time in Python; the right-hand side is sadfast's kernel",
        },
        "timing_discipline": (
            "warm-up calls first, excluded (JAX/diffrax compile + first run reported as compile_*); "
            f"kernels: median of {s.repeats} repeats of >= {s.min_time} s each; flows: median of "
            f"{s.repeats} runs for sadfast, {max(1, s.repeats - 1)} for diffrax, one for torchdiffeq and "
            "scipy (scaled to K); JAX results are block_until_ready before the clock stops"
        ),
        "fp64_peak_gflops": peak,
        "fp64_peak_method": f"numpy float64 matmul {s.peak_n}x{s.peak_n} (its BLAS, all threads), best of {s.repeats}",
        "fp64_peak_probe_s": peak_s,
        "kernels": kernels,
        "flows": flows,
        "accuracy": accuracy,
        "scaling": scaling,
        "wall_s": time.perf_counter() - start,
    }
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    from .report import write_report

    figures = write_report(result, outdir)
    result["figures"] = figures
    (outdir / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {outdir / 'bench.json'}, {outdir / 'report.md'} and {len(figures)} figures")
    return result
