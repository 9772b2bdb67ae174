"""Basin maps: throughput of `sadfast.basins` against the flow engine's own, on poly1d slices.

    python benchmarks/bench_basins.py [--sizes 32 64 128] [--methods dopri5 auto] [--t-end 100]
                                      [--chunk-flows 4096] [--cluster 2] [--out FILE]

For each grid size n (n x n flows of a filter-normalized random slice of poly1d, t_end=100,
rtol 1e-6, atol 1e-9) and method:
- engine: one `solve_flows` call on all n^2 initial points with the same save times (the pure
  integration a map needs; no classification, no storage);
- local: `basins.run` into a fresh Zarr store (chunking, classification, limit-loss estimate,
  checksums and writes included), chunks run one after another with all threads;
- cluster: the same through a Dask LocalCluster of --cluster processes x 1 thread (its start-up
  is timed apart).
Overhead = wall / engine wall - 1. The target of issue #6: 512 x 512 (--sizes 512) in < 4 min.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sadfast
from _common import PROBLEMS, machine, versions, write_json
from sadfast import basins


def spec_for(n: int, method: str, t_end: float, device: str = "cpu") -> basins.BasinSpec:
    p = PROBLEMS["poly1d"]
    model = p.model()
    X, Y = p.data()
    sl = basins.Slice.random(model, seed=0, a=(-1.0, 1.0, n))
    return basins.BasinSpec(model.bind(X, Y), sl, t_end=t_end, method=method, device=device)


def engine(spec: basins.BasinSpec) -> dict[str, Any]:
    theta0 = spec.points.thetas(slice(0, spec.shape[0]))
    t0 = time.perf_counter()
    r = sadfast.solve_flows(
        spec.problem,
        theta0,
        **spec._solver_kwargs(),
        save_at=spec.save_times,
        progress=False,
        device=spec.device,
    )
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "flows_per_s": theta0.shape[0] / wall,
        "grad_evals_per_flow_median": float(np.median(r.n_grad_evals)),
        "hvp_per_flow_median": float(np.median(r.n_hvp)),
        "status": r.status_counts(),
    }


def through_basins(spec: basins.BasinSpec, chunk_flows: int, client: Any = None) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(prefix="bench_basins_"))
    try:
        t0 = time.perf_counter()
        rep = basins.run(spec, d / "map.zarr", chunk_flows=chunk_flows, client=client, progress=False)
        wall = time.perf_counter() - t0
        inf = basins.info(d / "map.zarr")
        size = sum(f.stat().st_size for f in (d / "map.zarr").rglob("*") if f.is_file())
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {
        "wall_s": wall,
        "flows_per_s": spec.n_flows / wall,
        "chunks": rep.n_chunks,
        "scheduler": rep.scheduler,
        "outcomes": inf.outcome_counts,
        "store_bytes": size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--methods", nargs="+", default=["dopri5", "auto"])
    ap.add_argument("--t-end", type=float, default=100.0)
    ap.add_argument("--chunk-flows", type=int, default=4096)
    ap.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="where the flows run (cuda: dopri5)"
    )
    ap.add_argument("--cluster", type=int, default=2, help="LocalCluster processes (0: skip)")
    ap.add_argument("--no-engine", action="store_true", help="skip the engine-only reference (large sizes)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    client = cluster = None
    cluster_start = None
    if args.cluster:
        from distributed import Client, LocalCluster

        t0 = time.perf_counter()
        cluster = LocalCluster(
            n_workers=args.cluster, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
        cluster_start = time.perf_counter() - t0
    results = []
    try:
        for n in args.sizes:
            for method in args.methods:
                spec = spec_for(n, method, args.t_end, args.device)
                row: dict[str, Any] = {"grid": [n, n], "flows": n * n, "method": method}
                if not args.no_engine:
                    row["engine"] = engine(spec)
                row["local"] = through_basins(spec, args.chunk_flows)
                if client is not None:
                    row["cluster"] = through_basins(spec, args.chunk_flows, client)
                if "engine" in row:
                    for k in ("local", "cluster"):
                        if k in row:
                            row[k]["overhead"] = row[k]["wall_s"] / row["engine"]["wall_s"] - 1
                results.append(row)
                print(
                    f"{n}x{n} {method:6s} "
                    + "  ".join(
                        f"{k} {row[k]['wall_s']:.2f} s ({row[k]['flows_per_s']:.0f} flows/s"
                        + (f", overhead {100 * row[k]['overhead']:+.1f}%" if "overhead" in row[k] else "")
                        + ")"
                        for k in ("engine", "local", "cluster")
                        if k in row
                    ),
                    flush=True,
                )
    finally:
        if client is not None:
            client.close()
            cluster.close()
    payload = {
        "benchmark": "basins",
        "machine": machine(),
        "versions": versions("zarr", "xarray", "dask", "distributed"),
        "parameters": {
            "problem": "poly1d [1,16,1] tanh, N=32, y=x^2",
            "slice": "Slice.random(seed=0), filter-normalized, biases not moved, a, b in [-1, 1]",
            "t_end": args.t_end,
            "rtol": 1e-6,
            "atol": 1e-9,
            "n_save": 32,
            "chunk_flows": args.chunk_flows,
            "device": args.device,
            "cluster": f"LocalCluster({args.cluster} processes x 1 thread)" if args.cluster else None,
            "cluster_start_s": cluster_start,
        },
        "results": results,
    }
    print(f"wrote {write_json('basins', payload, args.out)}")


if __name__ == "__main__":
    main()
