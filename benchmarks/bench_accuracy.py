"""Cost against accuracy: gradient evaluations and wall time of each integrator at a range of
tolerances, and the error of its results against a tight Dormand-Prince reference.

    python benchmarks/bench_accuracy.py [--methods dopri5 tsit5 auto] [--rtols 1e-5 1e-6 1e-7 1e-8]
                                        [--problems poly1d poly2d] [--t-end T ...] [--K K] [--out FILE]

poly1d runs K=64 flows to t=100, poly2d K=16 flows to t=20 (the horizons of bench_flows), with
atol = rtol * 1e-3; the reference is Dormand-Prince at rtol 1e-12, atol 1e-14. Reported per
method and rtol: gradient-equivalents per flow (median; an HVP counts 2), wall time, and the
largest relative error over the flows of the final loss and of the final parameters (2-norm).
Reading the table at equal error, not at equal rtol, compares methods of different orders
fairly. ``--t-end`` runs each problem at these horizons instead (long horizons: Dormand-Prince's
steps are stability-limited there, so its error is far below its rtol and its cost grows with
t_end; the stiff methods' steps follow the tolerance). Writes benchmarks/results/accuracy.json
unless --out is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sadfast
from _common import PROBLEMS, machine, versions, write_json

SETUPS = {"poly1d": (64, 100.0), "poly2d": (16, 20.0), "poly4d": (4, 20.0)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["dopri5", "tsit5", "auto"])
    ap.add_argument("--rtols", type=float, nargs="+", default=[1e-5, 1e-6, 1e-7, 1e-8])
    ap.add_argument("--problems", nargs="+", default=["poly1d", "poly2d"], choices=list(SETUPS))
    ap.add_argument("--t-end", type=float, nargs="+", help="horizons (default: each problem's above)")
    ap.add_argument("--K", type=int, help="flows per problem (default: each problem's above)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for name, t_end in [(n, t) for n in args.problems for t in (args.t_end or [SETUPS[n][1]])]:
        K = args.K or SETUPS[name][0]
        p = PROBLEMS[name]
        model = p.model()
        prob = model.bind(*p.data())
        theta0 = model.init(K, seed=0)
        ref = sadfast.solve_flows(prob, theta0, t_end, rtol=1e-12, atol=1e-14, method="dopri5")
        for method in args.methods:
            for rtol in args.rtols:
                start = time.perf_counter()
                r = sadfast.solve_flows(prob, theta0, t_end, rtol=rtol, atol=rtol * 1e-3, method=method)
                wall = time.perf_counter() - start
                loss_err = float(np.max(np.abs(r.loss - ref.loss) / np.abs(ref.loss)))
                theta_err = float(
                    np.max(np.linalg.norm(r.theta - ref.theta, axis=1) / np.linalg.norm(ref.theta, axis=1))
                )
                ge = r.n_grad_evals + 2 * r.n_hvp
                row = {
                    "problem": name,
                    "K": K,
                    "t_end": t_end,
                    "method": method,
                    "rtol": rtol,
                    "grad_equivalents_per_flow_median": float(np.median(ge)),
                    "wall_s": wall,
                    "final_loss_max_rel_err": loss_err,
                    "final_theta_max_rel_err": theta_err,
                    "status": r.status_counts(),
                }
                rows.append(row)
                print(
                    f"{name:7s} {method:7s} rtol {rtol:7.0e}: {row['grad_equivalents_per_flow_median']:8.0f} "
                    f"gradient-eq/flow {wall:7.3f} s  loss err {loss_err:8.1e}  theta err {theta_err:8.1e}",
                    flush=True,
                )
    payload = {
        "benchmark": "accuracy",
        "machine": machine(),
        "versions": versions(),
        "parameters": {
            "atol": "rtol * 1e-3",
            "reference": "dopri5 at rtol 1e-12, atol 1e-14",
            "setups": {
                k: {"K": args.K or v[0], "t_end": args.t_end or v[1]}
                for k, v in SETUPS.items()
                if k in args.problems
            },
            "hvp_cost": "2 gradient evaluations",
        },
        "results": rows,
    }
    print(f"wrote {write_json('accuracy', payload, args.out)}")


if __name__ == "__main__":
    main()
