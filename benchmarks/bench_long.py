"""Long horizons: Dormand-Prince against the stabilized explicit RKC, the Rosenbrock W-method ROSW
(on its default rank-32 Lanczos Hessian approximation, and on exact Hessians where P <= 1024)
and the per-flow switching ``auto`` method on the same flows.

    python benchmarks/bench_long.py [--K 64] [--dp-flows 16] [--horizons 100 1000 10000]
                                    [--problems poly1d poly2d] [--rtol 1e-6] [--diffrax-max-t 1000]
                                    [--out FILE]

For each problem and horizon: gradient evaluations and Hessian-vector products per flow
(an HVP counted as two gradient evaluations: "gradient-equivalents"), wall time per flow, and
the final-loss agreement of RKC with Dormand-Prince on the flows both ran. Dormand-Prince
runs on the first --dp-flows flows only (its cost grows linearly with the horizon), and so does
JAX diffrax's Dopri5 (jit(vmap), the reference a JAX user has) up to --diffrax-max-t.
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
from _common import PROBLEMS, machine, versions, write_json
from sadfast.bench.peers import run_diffrax


def run(prob, theta0, t_end, method, rtol, hessian_rank=None) -> dict[str, Any]:
    t0 = time.perf_counter()
    r = sadfast.solve_flows(
        prob,
        theta0,
        t_end,
        method=method,
        rtol=rtol,
        atol=rtol * 1e-3,
        progress=False,
        hessian_rank=hessian_rank,
    )
    wall = time.perf_counter() - t0
    ge = r.n_grad_evals + 2 * r.n_hvp
    return {
        "flows": int(theta0.shape[0]),
        "wall_s": wall,
        "wall_s_per_flow": wall / theta0.shape[0],
        "grad_evals_per_flow_median": float(np.median(r.n_grad_evals)),
        "hvp_per_flow_median": float(np.median(r.n_hvp)),
        "grad_equivalents_per_flow_median": float(np.median(ge)),
        "status": r.status_counts(),
        "final_loss": r.loss.tolist(),
    }


def loss_diff(x: dict[str, Any], dp: dict[str, Any], n: int) -> np.ndarray:
    """Relative final-loss differences from Dormand-Prince on the n flows both ran."""
    ref = np.array(dp["final_loss"])
    return np.abs(np.array(x["final_loss"][:n]) - ref) / np.abs(ref)


def median_max(d: np.ndarray) -> dict[str, float]:
    return {"median": float(np.median(d)), "max": float(d.max())}


def ratios(prefix: str, dp: dict[str, Any], x: dict[str, Any]) -> dict[str, float]:
    """Dormand-Prince's cost over x's: gradient-equivalents per flow and wall time per flow."""
    return {
        f"{prefix}ratio_grad_equivalents": dp["grad_equivalents_per_flow_median"]
        / x["grad_equivalents_per_flow_median"],
        f"{prefix}ratio_wall_per_flow": dp["wall_s_per_flow"] / x["wall_s_per_flow"],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--K", type=int, default=64)
    ap.add_argument("--dp-flows", type=int, default=16)
    ap.add_argument("--horizons", type=float, nargs="+", default=[100.0, 1000.0, 10000.0])
    ap.add_argument("--problems", nargs="+", default=["poly1d", "poly2d"], choices=list(PROBLEMS))
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument(
        "--diffrax-max-t", type=float, default=1000.0, help="diffrax up to this horizon (0: never)"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = []
    for name in args.problems:
        p = PROBLEMS[name]
        prob = p.model().bind(*p.data())
        theta0 = p.model().init(args.K, seed=0)
        for T in args.horizons:
            rk = run(prob, theta0, T, "rkc", args.rtol)
            rw = run(prob, theta0, T, "rosw", args.rtol)
            rx = run(prob, theta0, T, "rosw", args.rtol, hessian_rank=0) if prob.model.P <= 1024 else None
            au = run(prob, theta0, T, "auto", args.rtol)
            dp = run(prob, theta0[: args.dp_flows], T, "dopri5", args.rtol)
            n = args.dp_flows
            diff, diff_rw = loss_diff(rk, dp, n), loss_diff(rw, dp, n)
            row = {
                "problem": name,
                "t_end": T,
                "rtol": args.rtol,
                "rkc": rk,
                "P": prob.model.P,
                "rosw": rw,
                "rosw_exact_hessian": rx,
                "auto": au,
                "dopri5": dp,
                **ratios("", dp, rk),
                **ratios("rosw_", dp, rw),
                "final_loss_rel_diff_rosw_vs_dopri5": median_max(diff_rw),
                **ratios("auto_", dp, au),
                "final_loss_rel_diff_rkc_vs_dopri5": median_max(diff),
            }
            if T <= args.diffrax_max_t:
                dx = run_diffrax(
                    p, theta0[: args.dp_flows], T, rtol=args.rtol, atol=args.rtol * 1e-3, repeats=2
                )
                if isinstance(dx, str):
                    row["diffrax"] = {"skipped": dx}
                else:
                    row["diffrax"] = {
                        "flows": args.dp_flows,
                        "wall_s_per_flow": dx["wall_s"] / args.dp_flows,
                        "grad_evals_per_flow_median": dx["grad_evals_per_flow"]["median"],
                        "lockstep_waste": dx["lockstep_waste"],
                        "compile_and_first_run_s": dx["compile_and_first_run_s"],
                    }
                    row["auto_vs_diffrax_wall_per_flow"] = (
                        row["diffrax"]["wall_s_per_flow"] / au["wall_s_per_flow"]
                    )
                    print(
                        f"{name:7s} t_end={T:8.0f}  diffrax {dx['grad_evals_per_flow']['median']:9.0f} grads/flow "
                        f"{row['diffrax']['wall_s_per_flow'] * 1e3:8.1f} ms/flow: auto is "
                        f"x{row['auto_vs_diffrax_wall_per_flow']:.1f} faster",
                        flush=True,
                    )
            rows.append(row)
            print(
                f"{name:7s} t_end={T:8.0f}  dopri5 {dp['grad_equivalents_per_flow_median']:9.0f} grads/flow "
                f"{dp['wall_s_per_flow'] * 1e3:8.1f} ms/flow | rkc {rk['grad_evals_per_flow_median']:7.0f} grads + "
                f"{rk['hvp_per_flow_median']:4.0f} hvp {rk['wall_s_per_flow'] * 1e3:7.1f} ms/flow | "
                f"x{row['ratio_grad_equivalents']:5.1f} evals, x{row['ratio_wall_per_flow']:5.1f} wall; "
                f"loss diff median {np.median(diff):.1e} max {diff.max():.1e} | rosw "
                f"x{row['rosw_ratio_grad_equivalents']:5.1f} evals, x{row['rosw_ratio_wall_per_flow']:5.1f} wall, "
                f"loss diff max {diff_rw.max():.1e} | auto "
                f"x{row['auto_ratio_grad_equivalents']:5.1f} evals, x{row['auto_ratio_wall_per_flow']:5.1f} wall"
                + (
                    ""
                    if rx is None
                    else " | rosw exact Hessian x{ratio_grad_equivalents:5.1f} evals, "
                    "x{ratio_wall_per_flow:5.1f} wall".format(**ratios("", dp, rx))
                ),
                flush=True,
            )
    payload = {
        "benchmark": "long_horizons",
        "machine": machine(),
        "versions": versions("jax", "diffrax"),
        "parameters": {
            "K_rkc_rosw_auto": args.K,
            "K_dopri5": args.dp_flows,
            "rtol": args.rtol,
            "atol": args.rtol * 1e-3,
            "hvp_cost": "2 gradient evaluations",
            "hessian_rank": "default (exact for P <= 32, else Lanczos capped at min(P - 1, 256, max(32, 2^18 / (P + 1))) steps) unless the key says exact",
        },
        "results": rows,
    }
    path = write_json(
        "long_horizons", payload, None if args.out is None else __import__("pathlib").Path(args.out)
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
