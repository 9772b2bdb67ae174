"""Whole gradient flows: sadfast's per-flow adaptive Dormand-Prince beside JAX diffrax
(jit(vmap(diffeqsolve)), Dopri5, PIDController), torchdiffeq (dopri5) and scipy's RK45, with the
same initializations, tolerances and horizon, in one run.

    python benchmarks/bench_flows.py [--K 256] [--problems poly1d poly2d] [--scipy-flows 4]
                                     [--torch-flows 32] [--out FILE]

Reports wall time, gradient evaluations per flow (median, max), the lockstep waste of the
vmapped/batched peers (evaluations executed / evaluations needed) and the agreement of final
losses with sadfast. Peers that are not installed are reported as skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sadfast
from _common import PROBLEMS, BenchProblem, jax_loss, machine, torch_loss, versions, write_json

HORIZON = {"poly1d": 100.0, "poly2d": 20.0, "poly4d": 5.0}
RTOL, ATOL = 1e-6, 1e-9


def run_sadfast(p: BenchProblem, theta0: np.ndarray, t_end: float) -> dict[str, Any]:
    prob = p.model().bind(*p.data())
    sadfast.solve_flows(prob, theta0[:2], min(t_end, 1.0), rtol=RTOL, atol=ATOL)  # warm-up
    times, res = [], None
    for _ in range(3):
        t0 = time.perf_counter()
        res = sadfast.solve_flows(prob, theta0, t_end, rtol=RTOL, atol=ATOL, progress=False)
        times.append(time.perf_counter() - t0)
    assert res is not None
    ev = res.n_grad_evals
    return {
        "wall_s": float(np.median(times)),
        "wall_s_repeats": times,
        "grad_evals_per_flow": {
            "median": float(np.median(ev)),
            "max": int(ev.max()),
            "mean": float(ev.mean()),
        },
        "status": res.status_counts(),
        "final_loss": res.loss.tolist(),
    }


def run_diffrax(p: BenchProblem, theta0: np.ndarray, t_end: float) -> dict[str, Any] | str:
    try:
        import diffrax
        import jax
        import jax.numpy as jnp
    except ImportError:
        return "not installed (pip install 'sadfast[bench]')"
    loss = jax_loss(p)
    term = diffrax.ODETerm(lambda t, y, args: -jax.grad(loss)(y))
    ctrl = diffrax.PIDController(rtol=RTOL, atol=ATOL)

    def solve(y0):
        sol = diffrax.diffeqsolve(
            term,
            diffrax.Dopri5(),
            t0=0.0,
            t1=t_end,
            dt0=None,
            y0=y0,
            stepsize_controller=ctrl,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=1_000_000,
        )
        return sol.ys[-1], sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"]

    fn = jax.jit(jax.vmap(solve))
    y0 = jnp.asarray(theta0)
    t0 = time.perf_counter()
    out = fn(y0)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        out = fn(y0)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    ys, acc, rej = (np.asarray(a) for a in out)
    steps = acc + rej
    needed = 6 * steps + 2  # per flow: FSAL Dopri5 + Hairer's initial step
    executed = 6 * steps.max() + 2  # lockstep under vmap: every flow runs until the slowest stops
    final_loss = np.asarray(jax.vmap(loss)(jnp.asarray(ys)))
    return {
        "wall_s": float(np.median(times)),
        "wall_s_repeats": times,
        "compile_and_first_run_s": compile_s,
        "grad_evals_per_flow": {
            "median": float(np.median(needed)),
            "max": int(needed.max()),
            "mean": float(needed.mean()),
        },
        "lockstep_waste": float(executed / needed.mean()),
        "final_loss": final_loss.tolist(),
    }


def run_torchdiffeq(p: BenchProblem, theta0: np.ndarray, t_end: float) -> dict[str, Any] | str:
    try:
        import torch
        from torch.func import grad, vmap
        from torchdiffeq import odeint
    except ImportError:
        return "not installed (pip install 'sadfast[bench]')"
    torch.set_num_threads(sadfast.get_num_threads())
    loss = torch_loss(p)
    g = vmap(grad(loss))
    nfe = [0]

    def f(t, y):
        nfe[0] += 1
        return -g(y)

    y0 = torch.as_tensor(theta0)
    t0 = time.perf_counter()
    ys = odeint(f, y0, torch.tensor([0.0, t_end], dtype=torch.float64), method="dopri5", rtol=RTOL, atol=ATOL)
    wall = time.perf_counter() - t0
    final_loss = vmap(loss)(ys[-1]).numpy()
    # One shared step for the whole batch: every flow gets every evaluation.
    return {
        "wall_s": wall,
        "flows": int(theta0.shape[0]),
        "grad_evals_per_flow": {"median": float(nfe[0]), "max": int(nfe[0]), "mean": float(nfe[0])},
        "final_loss": final_loss.tolist(),
    }


def run_scipy(p: BenchProblem, theta0: np.ndarray, t_end: float) -> dict[str, Any] | str:
    try:
        from scipy.integrate import solve_ivp
    except ImportError:
        return "not installed (pip install scipy)"
    prob = p.model().bind(*p.data())
    t0 = time.perf_counter()
    nfev, losses = [], []
    for k in range(theta0.shape[0]):
        sol = solve_ivp(
            lambda t, y: -prob.grad(y), (0.0, t_end), theta0[k], method="RK45", rtol=RTOL, atol=ATOL
        )
        nfev.append(sol.nfev)
        losses.append(float(prob.loss(sol.y[:, -1])))
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "flows": int(theta0.shape[0]),
        "rhs": "sadfast's own gradient kernel, one flow per call (scipy's Python loop is what is measured)",
        "grad_evals_per_flow": {
            "median": float(np.median(nfev)),
            "max": int(max(nfev)),
            "mean": float(np.mean(nfev)),
        },
        "final_loss": losses,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--K", type=int, default=256)
    ap.add_argument("--problems", nargs="+", default=["poly1d", "poly2d"], choices=list(PROBLEMS))
    ap.add_argument("--backends", nargs="+", default=["sadfast", "diffrax", "torchdiffeq", "scipy"])
    ap.add_argument("--scipy-flows", type=int, default=4, help="flows for scipy (scaled up to K)")
    ap.add_argument("--torch-flows", type=int, default=32, help="flows for torchdiffeq (scaled up to K)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    rows = []
    for name in args.problems:
        p = PROBLEMS[name]
        t_end = HORIZON[name]
        theta0 = p.model().init(args.K, seed=0)
        row: dict[str, Any] = {"problem": name, "K": args.K, "t_end": t_end, "rtol": RTOL, "atol": ATOL}
        row["sadfast"] = run_sadfast(p, theta0, t_end)
        base = row["sadfast"]
        ref_loss = np.array(base["final_loss"])
        print(
            f"{name}: sadfast {base['wall_s']:.3f} s for {args.K} flows, evals/flow median "
            f"{base['grad_evals_per_flow']['median']:.0f} max {base['grad_evals_per_flow']['max']}",
            flush=True,
        )
        for be, fn, n in (
            ("diffrax", run_diffrax, args.K),
            ("torchdiffeq", run_torchdiffeq, args.torch_flows),
            ("scipy", run_scipy, args.scipy_flows),
        ):
            if be not in args.backends:
                continue
            r = fn(p, theta0[:n], t_end)
            row[be] = r
            if isinstance(r, str):
                print(f"  {be}: skipped, {r}")
                continue
            scaled = r["wall_s"] * args.K / n
            r["wall_s_scaled_to_K"] = scaled
            r["speedup_of_sadfast"] = scaled / base["wall_s"]
            agree = np.abs(np.array(r["final_loss"]) - ref_loss[:n]) / np.abs(ref_loss[:n])
            r["final_loss_max_rel_diff_vs_sadfast"] = float(agree.max())
            extra = f", lockstep waste {r['lockstep_waste']:.2f}" if "lockstep_waste" in r else ""
            comp = f", compile {r['compile_and_first_run_s']:.1f} s" if "compile_and_first_run_s" in r else ""
            print(
                f"  {be}: {r['wall_s']:.3f} s for {n} flows (scaled to K: {scaled:.2f} s) -> sadfast "
                f"x{r['speedup_of_sadfast']:.1f}; evals/flow median {r['grad_evals_per_flow']['median']:.0f}"
                f"{extra}{comp}; final loss max rel diff {agree.max():.1e}",
                flush=True,
            )
        rows.append(row)
    payload = {
        "benchmark": "flows",
        "machine": machine(),
        "versions": versions("jax", "jaxlib", "diffrax", "equinox", "torch", "torchdiffeq", "scipy"),
        "parameters": {
            "K": args.K,
            "rtol": RTOL,
            "atol": ATOL,
            "dtype": "float64",
            "method": "Dormand-Prince 5(4)",
            "scipy_flows": args.scipy_flows,
            "torch_flows": args.torch_flows,
        },
        "results": rows,
    }
    path = write_json("flows", payload, None if args.out is None else __import__("pathlib").Path(args.out))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
