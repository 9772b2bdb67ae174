"""Static GPU costs from the machine code, no GPU needed: per-activation instruction counts, the
arithmetic ceilings of the benchmark problems on a device model, and (--kernels) the registers,
spills and stack frames ptxas gives every kernel.

    python benchmarks/gpu_sass.py [--arch 90] [--device h200] [--measured FILE.json]
                                  [--kernels] [--define NAME=VALUE ...] [--out FILE]

Needs nvcc, cuobjdump and nvdisasm (in the CUDA toolkit; where the toolkit lacks them,
`pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm` provides them, and this script finds them). Per activation, a probe kernel evaluates act::eval of
activations.hpp (value, first and second derivative, the code every gradient kernel runs per
hidden unit and point); its main path (the instructions before the first EXIT, slow paths being
out of line) less the identity's is the activation's cost (sadfast.bench.sass). From those and
the device's per-SM rates, `ceiling` gives each problem's largest loss+gradient rate if the SMs
did nothing but that arithmetic at full rate, and the largest fraction of vector peak its matrix
products could then reach (the fraction bench_gpu.py reports). --measured reads a bench_gpu.py
JSON and puts each measured rate beside its ceiling. --define passes -DNAME=VALUE to the kernels'
compilation (the build-time knobs of cuda/warp_mlp.cuh, e.g. SADFAST_ROW_BLOCK=8), so that a
variant's registers can be set beside the default's without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sadfast
from _common import PROBLEMS, RESULTS, machine, versions, write_json
from sadfast.bench.sass import DEVICES, activation_costs, ceiling, probe_source

ROOT = Path(__file__).resolve().parent.parent
NVCC_FLAGS = ["-std=c++17", "--expt-relaxed-constexpr", "-O3"]


def find_tool(name: str, explicit: str | None = None) -> str | None:
    """``explicit``, else PATH, $CUDA_HOME/bin, nvcc's folder, then the nvidia-* wheels."""
    if explicit:
        return explicit
    found = shutil.which(name)
    if found:
        return found
    dirs = [Path(os.environ["CUDA_HOME"]) / "bin"] if "CUDA_HOME" in os.environ else []
    nvcc = shutil.which("nvcc")
    if nvcc:
        dirs.append(Path(nvcc).resolve().parent)
    try:
        import nvidia  # the namespace package of NVIDIA's wheels (nvidia-cuda-cuobjdump, ...)

        dirs += [Path(p) / sub / "bin" for p in nvidia.__path__ for sub in ("cu13", "cu12", "cuda_cuobjdump")]
    except ImportError:
        pass
    for d in dirs:
        if (d / name).is_file() and os.access(d / name, os.X_OK):
            return str(d / name)
    return None


def tool_version(tool: str) -> str:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown"


def sass_of_probes(nvcc: str, cuobjdump: str, nvdisasm: str, arch: str, activations: list[str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        src, cubin = Path(tmp) / "probe.cu", Path(tmp) / "probe.cubin"
        src.write_text(probe_source(activations))
        subprocess.run(
            [
                nvcc,
                *NVCC_FLAGS,
                f"-arch=sm_{arch}",
                f"-I{ROOT / 'cpp' / 'include'}",
                "-cubin",
                "-o",
                str(cubin),
                str(src),
            ],
            check=True,
        )
        env = {**os.environ, "NVDISASM_PATH": str(Path(nvdisasm).parent)}  # cuobjdump -sass runs nvdisasm
        return subprocess.run(
            [cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True, env=env
        ).stdout


def demangle(names: list[str]) -> list[str]:
    cxxfilt = shutil.which("c++filt")
    if cxxfilt is None:
        return names
    out = subprocess.run(
        [cxxfilt], input="\n".join(names), capture_output=True, text=True, check=False
    ).stdout
    lines = out.splitlines()
    return lines if len(lines) == len(names) else names


def kernel_resources(nvcc: str, arch: str, defines: list[str] | None = None) -> list[dict[str, Any]]:
    """Registers, spills and stack frame of every kernel of cuda/*.cu, from ptxas -v, compiled with
    -D of each of ``defines`` (NAME=VALUE)."""
    rows: list[dict[str, Any]] = []
    for cu in sorted((ROOT / "cuda").glob("*.cu")):
        err = subprocess.run(
            [
                nvcc,
                *NVCC_FLAGS,
                *(f"-D{d}" for d in defines or []),
                f"-arch=sm_{arch}",
                "-Icuda",
                "-Icpp/include",
                "-Xptxas",
                "-v",
                "-c",
                str(cu),
                "-o",
                os.devnull,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        entry: dict[str, Any] | None = None
        for line in err.splitlines():
            if m := re.search(r"Compiling entry function '(\S+)'", line):
                entry = {"file": cu.name, "mangled": m.group(1)}
                rows.append(entry)
            elif entry is not None and (m := re.search(r"Function properties for (\S+)", line)):
                entry["_props"] = m.group(1) == entry["mangled"]
            elif (
                entry is not None
                and entry.get("_props")
                and (
                    m := re.search(
                        r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line
                    )
                )
            ):
                entry.update(
                    stack_bytes=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3))
                )
                entry["_props"] = False
            elif entry is not None and (m := re.search(r"Used (\d+) registers", line)):
                entry["registers"] = int(m.group(1))
    for row, name in zip(rows, demangle([r["mangled"] for r in rows]), strict=True):
        row.pop("_props", None)
        short = (
            name.replace("(anonymous namespace)::", "").removeprefix("void ").replace("sadfast::gpu::", "")
        )
        row["kernel"] = short.split("(")[0]
    return rows


def measured_rates(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    """(problem, dtype) -> measured loss+gradient rates of a bench_gpu.py JSON: the kernels
    section's at its largest K, and the gradient evaluations per second inside flows."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in sorted(data.get("kernels", []), key=lambda r: r["K"]):
        out.setdefault((r["problem"], r["dtype"]), {})["kernel"] = r["grad_evals_per_s"]
    for r in data.get("flows", []):
        out.setdefault((r["problem"], r["dtype"]), {})["in_flows"] = r["gpu_grad_evals_per_s"]
    return out


def diffrax_bounds(data: dict[str, Any], ceilings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The largest speedup over diffrax that sadfast could show in each of bench_gpu.py's diffrax
    rows (float64), were it to run at its arithmetic ceiling: the gradient evaluations sadfast's
    flows needed per flow (its flows section, same problem and t_end) times the row's K, at the
    ceiling's rate, against diffrax's measured wall time. Dormand-Prince rows only (the flows
    section's method; rows of files before the method was recorded are Dormand-Prince)."""
    rows = []
    ceil = {(c["problem"], c["dtype"]): c["grad_evals_per_s"] for c in ceilings}
    flows = {(f["problem"], f["t_end"]): f for f in data.get("flows", []) if f["dtype"] == "float64"}
    for d in data.get("diffrax", []):
        if d.get("method", "dopri5") != "dopri5":
            continue
        f = flows.get((d["problem"], d["t_end"]))
        if f is None or (d["problem"], "float64") not in ceil:
            continue
        evals_per_flow = f["gpu_grad_evals_per_s"] * f["gpu_wall_s"] / f["K"]
        best_s = d["K"] * evals_per_flow / ceil[(d["problem"], "float64")]
        rows.append(
            {
                "problem": d["problem"],
                "K": d["K"],
                "t_end": d["t_end"],
                "grad_evals_per_flow": evals_per_flow,
                "diffrax_wall_s": d["diffrax_wall_s"],
                "sadfast_wall_s_at_ceiling": best_s,
                "max_speedup_vs_diffrax": d["diffrax_wall_s"] / best_s,
                "measured_speedup_vs_diffrax": d.get("speedup_vs_diffrax"),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--arch", default="90", help="compute capability to compile for, as in sm_XX (default 90)"
    )
    ap.add_argument("--device", default="h200", choices=sorted(DEVICES), help="device model for the ceilings")
    ap.add_argument(
        "--measured", type=Path, help="a bench_gpu.py JSON whose rates to set beside the ceilings"
    )
    ap.add_argument(
        "--kernels", action="store_true", help="also compile cuda/*.cu for ptxas' resource usage (minutes)"
    )
    ap.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="-DNAME=VALUE for the kernels of --kernels (repeatable), e.g. SADFAST_ROW_BLOCK=8",
    )
    ap.add_argument("--cuobjdump", help="path of cuobjdump (default: searched)")
    ap.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/gpu_sass_sm<arch>.json)")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"\d{2,3}a?", args.arch):
        ap.error(f"--arch: expected a compute capability such as 90, got {args.arch!r}")
    bad = [d for d in args.define if not re.fullmatch(r"[A-Za-z_]\w*=[\w.+-]*", d)]
    if bad:
        ap.error(f"--define: expected NAME=VALUE, got {bad[0]!r}")
    if args.define and not args.kernels:
        ap.error("--define applies to the kernels: add --kernels")
    if args.measured is not None and not args.measured.is_file():
        ap.error(f"--measured: no such file {args.measured}")
    tools = {
        "nvcc": find_tool("nvcc"),
        "cuobjdump": find_tool("cuobjdump", args.cuobjdump),
        "nvdisasm": find_tool("nvdisasm"),
    }
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        hint = "" if missing == ["nvcc"] else " (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)"
        print(f"gpu_sass: {', '.join(missing)} not found{hint}", file=sys.stderr)
        return 2
    nvcc, cuobjdump, nvdisasm = tools["nvcc"], tools["cuobjdump"], tools["nvdisasm"]
    assert nvcc is not None and cuobjdump is not None and nvdisasm is not None

    acts = [a for a in sadfast.ACTIVATIONS if a != "identity"]
    costs = activation_costs(
        sass_of_probes(nvcc, cuobjdump, nvdisasm, args.arch, acts), list(sadfast.ACTIVATIONS)
    )
    device = DEVICES[args.device]
    bench = json.loads(args.measured.read_text()) if args.measured else {}
    measured = measured_rates(bench)

    ceilings = []
    for p in PROBLEMS.values():
        for dtype in ("float64", "float32"):
            row = {
                "problem": p.name,
                "widths": list(p.widths),
                "activation": p.activation,
                "N": p.n_points,
                "dtype": dtype,
            }
            row.update(ceiling(p.model(), p.n_points, dtype, costs[dtype][p.activation], device))
            for what, rate in measured.get((p.name, dtype), {}).items():
                row[f"measured_{what}_grad_evals_per_s"] = rate
                row[f"measured_{what}_fraction_of_ceiling"] = rate / row["grad_evals_per_s"]
            ceilings.append(row)

    payload: dict[str, Any] = {
        "benchmark": "gpu_sass",
        "machine": machine(),
        "versions": {**versions(), "nvcc": tool_version(nvcc), "cuobjdump": tool_version(cuobjdump)},
        "parameters": {
            "arch": f"sm_{args.arch}",
            "nvcc_flags": NVCC_FLAGS,
            "defines": args.define,
            "measured": str(args.measured or ""),
        },
        "device_model": {
            **device.__dict__,
            "peak_gflops": {d: device.peak_gflops(d) for d in ("float64", "float32")},
        },
        "activations": {
            d: {a: mix.as_dict() for a, mix in by.items() if a != "identity"} for d, by in costs.items()
        },
        "ceilings": ceilings,
    }
    if bench:
        payload["diffrax_bounds"] = diffrax_bounds(bench, ceilings)
    if args.kernels:
        payload["kernels"] = kernel_resources(nvcc, args.arch, args.define)
    path = write_json(
        f"gpu_sass_sm{args.arch}", payload, args.out or RESULTS / f"gpu_sass_sm{args.arch}.json"
    )

    print(
        f"per activation (value + 2 derivatives), sm_{args.arch}: issue slots / FP64 ops / FP32 ops / MUFU / uniform"
    )
    for a in acts:
        f64, f32 = costs["float64"][a], costs["float32"][a]
        print(
            f"  {a:10s} float64 {f64.issue:4d} / {f64.fp64:3d} / {f64.fp32:3d} / {f64.sfu} / {f64.uniform:3d}"
            f"   float32 {f32.issue:4d} / {f32.fp32:3d} / {f32.sfu} / {f32.uniform:3d}"
        )
    print(f"ceilings on {device.name} ({device.multiprocessors} SMs at {device.clock_ghz} GHz):")
    for r in ceilings:
        seen = r.get("measured_kernel_fraction_of_ceiling")
        print(
            f"  {r['problem']} {r['dtype']}: {r['grad_evals_per_s']:.3g} grad/s ({r['bound_by']}-bound; activations"
            f" {100 * r['activation_share_of_pipe']:.0f}% of the pipe), at most {100 * r['max_fraction_of_peak']:.0f}% of"
            " peak" + ("" if seen is None else f"; measured kernel at {100 * seen:.0f}% of the ceiling")
        )
    for b in payload.get("diffrax_bounds", []):
        print(
            f"  vs diffrax, {b['problem']} K={b['K']}: at most {b['max_speedup_vs_diffrax']:.1f}x at the ceiling"
            + (
                ""
                if b["measured_speedup_vs_diffrax"] is None
                else f" (measured {b['measured_speedup_vs_diffrax']:.2f}x)"
            )
        )
    if args.kernels:
        for k in payload["kernels"]:
            print(f"  {k['file']:9s} {k['kernel']}: {k.get('registers')} registers, spills {k.get('spill_stores')}/"
                  f"{k.get('spill_loads')} B, stack {k.get('stack_bytes')} B")  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
