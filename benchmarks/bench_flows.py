"""Whole gradient flows: sadfast's per-flow adaptive Dormand-Prince beside JAX diffrax
(jit(vmap(diffeqsolve)), Dopri5, PIDController), torchdiffeq (dopri5) and scipy's RK45, with the
same initializations, tolerances and horizon, in one run.

    python benchmarks/bench_flows.py [--K 256] [--problems poly1d poly2d] [--scipy-flows 4]
                                     [--torch-flows 32] [--out FILE]

Reports wall time, gradient evaluations per flow (median, max), the lockstep waste of the
vmapped/batched peers (evaluations executed / evaluations needed) and the agreement of final
losses with sadfast. Peers that are not installed are reported as skipped.

The like-for-like comparison is sadfast's Dormand-Prince (``method="dopri5"``, the ``sadfast``
entry) against the peers' Dopri5. With ``--auto`` (default on) the same flows are also solved
with ``method="auto"`` (sadfast's method for long horizons: it switches each flow to stabilized
or linearly implicit steps once the flow is stiff) at each ``--auto-rtol``, reported in
``sadfast_auto`` with the speed-ups and the final losses' agreement with the Dormand-Prince ones.
At equal rtol the two are not equally accurate: Dormand-Prince's stability-limited steps are far
shorter than its tolerance needs, so its final losses are much more accurate than rtol says,
while `auto`'s steps are tolerance-limited.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PROBLEMS, machine, versions, write_json
from sadfast.bench.peers import (
    ATOL,
    HORIZON,
    RTOL,
    run_diffrax,
    run_sadfast,
    run_sadfast_auto,
    run_scipy,
    run_torchdiffeq,
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--K", type=int, default=256)
    ap.add_argument("--problems", nargs="+", default=["poly1d", "poly2d"], choices=list(PROBLEMS))
    ap.add_argument("--backends", nargs="+", default=["sadfast", "diffrax", "torchdiffeq", "scipy"])
    ap.add_argument("--scipy-flows", type=int, default=4, help="flows for scipy (scaled up to K)")
    ap.add_argument("--torch-flows", type=int, default=32, help="flows for torchdiffeq (scaled up to K)")
    ap.add_argument(
        "--auto", action=argparse.BooleanOptionalAction, default=True, help="also time method='auto'"
    )
    ap.add_argument(
        "--auto-rtol",
        type=float,
        nargs="+",
        default=[RTOL, 3e-8],
        help="rtol values for method='auto' (atol scaled alike); 3e-8 matches Dormand-Prince's final-loss "
        "accuracy at rtol 1e-6 on poly1d/poly2d",
    )
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
        if args.auto:
            row["sadfast_auto"] = []
            for rtol in args.auto_rtol:
                atol = ATOL * rtol / RTOL
                r = run_sadfast_auto(p, theta0, t_end, base, row.get("diffrax"), rtol=rtol, atol=atol)
                row["sadfast_auto"].append(r)
                msg = (
                    f"  sadfast auto rtol {rtol:g}: {r['wall_s']:.3f} s, x{r['speedup_over_dopri5']:.2f} over "
                    f"Dormand-Prince; grad-equivalents/flow median {r['grad_equivalents_per_flow']['median']:.0f}; "
                    f"final loss max rel diff vs Dormand-Prince {r['final_loss_max_rel_diff_vs_dopri5']:.1e}"
                )
                if "speedup_over_diffrax" in r:
                    msg += (
                        f"; x{r['speedup_over_diffrax']:.1f} over diffrax "
                        f"(final loss max rel diff {r['final_loss_max_rel_diff_vs_diffrax']:.1e})"
                    )
                print(msg, flush=True)
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
            "method": "Dormand-Prince 5(4) (sadfast); auto in sadfast_auto"
            if args.auto
            else "Dormand-Prince 5(4)",
            "scipy_flows": args.scipy_flows,
            "torch_flows": args.torch_flows,
        },
        "results": rows,
    }
    path = write_json("flows", payload, None if args.out is None else __import__("pathlib").Path(args.out))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
