"""ROSW's cost against its Lanczos rank (hessian_rank), beside RKC, on long horizons.

    python benchmarks/bench_rosw_rank.py [--K 32] [--horizons 100 1000 10000]
                                         [--problems poly1d poly2d] [--ranks 4 8 16 32]
                                         [--poly4d-K 4] [--poly4d-horizons 1000 3000 10000] [--out FILE]

The GPU's ROSW (cuda/rosw.cu) keeps rank (P + 1) numbers per flow on the device and takes
ranks up to 64 (default min(P - 1, 32)); the CPU's default rank is larger (min(P - 1, 256,
max(32, 2^18 / (P + 1)))). Which rank the GPU needs is a question of steps, not of the device:
the per-flow arithmetic, and so the gradient and Hessian-vector product counts, are the same on
both (tests/test_cuda.py: GPU ROSW = CPU ROSW in steps and HVPs at equal rank). This script counts
them on the CPU: median gradient-equivalents per flow (an HVP counted as two gradients) and wall
time per flow for each rank, the CPU's default rank, and RKC (the GPU's other stiff method), and
the final loss's largest relative difference from the CPU's default rank. poly4d (P = 1249) runs
on fewer flows and shorter horizons (--poly4d-K, --poly4d-horizons; --poly4d-K 0 skips it).
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


def run(
    prob: sadfast.Problem, theta0: np.ndarray, t_end: float, method: str, rank: int | None
) -> dict[str, Any]:
    t0 = time.perf_counter()
    r = sadfast.solve_flows(
        prob, theta0, t_end, method=method, rtol=1e-6, atol=1e-9, hessian_rank=rank, progress=False
    )
    wall = time.perf_counter() - t0
    ge = r.n_grad_evals + 2 * r.n_hvp
    return {
        "method": method,
        "hessian_rank": r.settings.hessian_rank if method == "rosw" else None,
        "grad_equivalents_per_flow_median": float(np.median(ge)),
        "hvp_per_flow_median": float(np.median(r.n_hvp)),
        "wall_s_per_flow": wall / theta0.shape[0],
        "status": r.status_counts(),
        "final_loss": r.loss.tolist(),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--K", type=int, default=32)
    ap.add_argument("--horizons", type=float, nargs="+", default=[100.0, 1000.0, 10000.0])
    ap.add_argument("--problems", nargs="+", default=["poly1d", "poly2d"], choices=["poly1d", "poly2d"])
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--poly4d-K", type=int, default=4)
    ap.add_argument("--poly4d-horizons", type=float, nargs="+", default=[1000.0, 3000.0, 10000.0])
    ap.add_argument("--poly4d-ranks", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    jobs = [(name, args.K, T, args.ranks) for name in args.problems for T in args.horizons]
    if args.poly4d_K > 0:
        jobs += [("poly4d", args.poly4d_K, T, args.poly4d_ranks) for T in args.poly4d_horizons]
    rows = []
    for name, K, T, ranks in jobs:
        p = PROBLEMS[name]
        prob = p.model().bind(*p.data())
        theta0 = p.model().init(K, seed=0)
        ref = run(prob, theta0, T, "rosw", None)  # the CPU's default rank
        runs = {f"rank_{m}": run(prob, theta0, T, "rosw", m) for m in ranks if m < prob.model.P}
        runs["rkc"] = run(prob, theta0, T, "rkc", None)
        base = np.array(ref["final_loss"])
        for r in runs.values():
            r["final_loss_max_rel_diff_vs_default_rank"] = float(
                np.max(np.abs(np.array(r["final_loss"]) - base) / np.abs(base))
            )
        row = {"problem": name, "P": prob.model.P, "K": K, "t_end": T, "default_rank": ref, **runs}
        rows.append(row)
        cells = "  ".join(
            f"{k} {r['grad_equivalents_per_flow_median']:7.0f}" for k, r in [("default", ref), *runs.items()]
        )
        print(f"{name} t_end={T:g} (default rank {ref['hessian_rank']}): {cells}", flush=True)
    path = write_json(
        "rosw_rank",
        {
            "benchmark": "rosw_rank",
            "machine": machine(),
            "versions": versions(),
            "threads": sadfast.get_num_threads(),
            "rtol": 1e-6,
            "atol": 1e-9,
            "rows": rows,
        },
        None if args.out is None else Path(args.out),
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
