"""The static GPU cost model (sadfast.bench.sass and benchmarks/gpu_sass.py): SASS parsing on a
fixed listing, the ceiling arithmetic worked by hand, and, where nvcc, cuobjdump and nvdisasm
are there (no GPU needed), the probes compiled from activations.hpp."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sadfast
from sadfast.bench.sass import (
    DEVICES,
    DeviceModel,
    InstructionMix,
    activation_costs,
    ceiling,
    main_path,
    parse_sass,
    probe_source,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_sass  # noqa: E402

# Trimmed from `cuobjdump -sass` of two probes (sm_90): the skeleton (identity) and a made-up
# activation with a predicated instruction, a slow path after EXIT, and NOP padding.
LISTING = """
\tcode for sm_90
\t\tFunction : _Z13sadfast_probeIdLN7sadfast10ActivationE10EEvPKT_PS2_
\t.headerflags\t@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;      /* 0x00000a00ff017b82 */
        /*0010*/                   S2R R0, SR_TID.X ;          /* 0x0000000000007919 */
        /*0020*/                   LDG.E.64.CONSTANT R2, desc[UR4][R2.64] ;  /* 0x000ee2000c1e9b00 */
        /*0030*/                   STG.E.64 desc[UR4][R4.64], R2 ;  /* 0x000fe2000c101b04 */
        /*0040*/                   EXIT ;                      /* 0x000000000000794d */
        /*0050*/                   BRA 0x50;                   /* 0xfffffffc00fc7947 */
        /*0060*/                   NOP;                        /* 0x0000000000007918 */
\t\t..........

\t\tFunction : _Z13sadfast_probeIdLN7sadfast10ActivationE1EEvPKT_PS2_
\t.headerflags\t@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;      /* 0x00000a00ff017b82 */
        /*0010*/                   S2R R0, SR_TID.X ;          /* 0x0000000000007919 */
        /*0020*/                   LDG.E.64.CONSTANT R2, desc[UR4][R2.64] ;  /* 0x000ee2000c1e9b00 */
        /*0030*/                   UMOV UR6, 0x652b82fe ;      /* 0x652b82fe00067882 */
        /*0040*/                   UMOV UR7, 0x3ff71547 ;      /* 0x3ff7154700077882 */
        /*0050*/                   DFMA R6, R2, UR6, R2 ;      /* 0x0000000602067c2b */
        /*0060*/                   NOP;                        /* 0x0000000000007918 */
        /*0070*/              @!P0 DADD R6, R6, 1 ;            /* 0x3ff0000006068429 */
        /*0080*/                   MUFU.RCP64H R9, R7 ;        /* 0x0000000700097308 */
        /*0090*/                   FSETP.GEU.AND P1, PT, |R7|, 4.1, PT ;  /* 0x4083333307007c0b */
        /*00a0*/                   STG.E.64 desc[UR4][R4.64], R6 ;  /* 0x000fe2000c101b04 */
        /*00b0*/                   EXIT ;                      /* 0x000000000000794d */
        /*00c0*/                   DFMA R10, R8, R8, R8 ;      /* slow path */
        /*00d0*/                   RET.REL.NODEC R2 0x0 ;      /* 0xfffffff402007950 */
\t\t..........
"""


def test_parse_sass_reads_functions_and_opcodes_without_modifiers() -> None:
    funcs = parse_sass(LISTING)
    assert list(funcs) == [
        "_Z13sadfast_probeIdLN7sadfast10ActivationE10EEvPKT_PS2_",
        "_Z13sadfast_probeIdLN7sadfast10ActivationE1EEvPKT_PS2_",
    ]
    ops = funcs["_Z13sadfast_probeIdLN7sadfast10ActivationE1EEvPKT_PS2_"]
    assert ops[:6] == ["LDC", "S2R", "LDG", "UMOV", "UMOV", "DFMA"]
    assert "DADD" in ops  # the predicated one (@!P0)
    assert ops[-2:] == ["DFMA", "RET"]  # the slow path after EXIT is listed ...
    path = main_path(ops)  # ... but not on the main path, and neither is NOP padding
    assert path.counts == {
        "LDC": 1,
        "S2R": 1,
        "LDG": 1,
        "UMOV": 2,
        "DFMA": 1,
        "DADD": 1,
        "MUFU": 1,
        "FSETP": 1,
        "STG": 1,
    }


def test_activation_costs_subtract_the_skeleton() -> None:
    costs = activation_costs(LISTING, list(sadfast.ACTIVATIONS))
    tanh = costs["float64"]["tanh"]
    assert tanh.counts == {"UMOV": 2, "DFMA": 1, "DADD": 1, "MUFU": 1, "FSETP": 1}
    assert (tanh.issue, tanh.fp64, tanh.fp32, tanh.sfu, tanh.uniform) == (6, 2, 1, 1, 2)
    assert costs["float64"]["identity"].issue == 0
    assert set(costs) == {"float64"}  # no float32 probes in the listing
    only_tanh = "\t\tFunction : " + LISTING.split("\t\tFunction : ")[2]
    with pytest.raises(ValueError, match="no identity probe for float64"):
        activation_costs(only_tanh, list(sadfast.ACTIVATIONS))


def test_ceiling_arithmetic_worked_by_hand() -> None:
    # [1, 16, 1] on 32 points: products 2 * (2 * (16 + 16) * 32) + 2 * 16 * 32 = 5120 flops,
    # 2560 multiply-adds; 32 * 16 = 512 activations.
    model = sadfast.MLP([1, 16, 1], activation="tanh")
    assert model.flops_per_grad(32) == 5120
    dev = DeviceModel("toy", multiprocessors=10, clock_ghz=1.0, fp64_lanes=64, fp32_lanes=128, sfu_lanes=16)
    cost = InstructionMix({"DFMA": 40, "UMOV": 30, "IMAD": 30, "MUFU": 2})  # issue 102, fp64 40
    c = ceiling(model, 32, "float64", cost, dev)
    assert c["activations_per_grad"] == 512
    assert c["cycles_per_grad_per_sm"]["pipe"] == pytest.approx((2560 + 512 * 40) / 64)  # 360
    assert c["cycles_per_grad_per_sm"]["issue"] == pytest.approx((2560 + 512 * 102) / 128)  # 428
    assert c["cycles_per_grad_per_sm"]["sfu"] == pytest.approx(512 * 2 / 16)  # 64
    assert c["bound_by"] == "issue"
    assert c["grad_evals_per_s"] == pytest.approx(10 * 1e9 / 428)
    assert c["max_fraction_of_peak"] == pytest.approx(10e9 / 428 * 5120 / (2 * 64 * 10 * 1e9))
    assert c["activation_share_of_pipe"] == pytest.approx(512 * 40 / (2560 + 512 * 40))
    # float32 counts the FP32 pipe, where these instructions do nothing; the issue slots remain
    c32 = ceiling(model, 32, "float32", cost, dev)
    assert c32["cycles_per_grad_per_sm"]["pipe"] == pytest.approx(2560 / 128)
    assert c32["bound_by"] == "issue"
    with pytest.raises(ValueError, match="dtype"):
        ceiling(model, 32, "float16", cost, dev)
    assert DEVICES["h200"].peak_gflops("float64") == pytest.approx(33454.08)  # bench_gpu.py's peak


def test_probe_source_instantiates_every_activation_in_both_precisions() -> None:
    src = probe_source(["tanh", "gelu"])
    for dtype in ("double", "float"):
        for a in ("tanh", "gelu", "identity"):
            assert f"sadfast_probe<{dtype}, Activation::{a}>" in src
    assert src.count("template __global__") == 6


_TOOLS = {t: gpu_sass.find_tool(t) for t in ("nvcc", "cuobjdump", "nvdisasm")}


@pytest.mark.skipif(None in _TOOLS.values(), reason=f"needs nvcc, cuobjdump and nvdisasm: {_TOOLS}")
def test_gpu_sass_script_on_the_real_headers(tmp_path: Path) -> None:
    out = tmp_path / "sass.json"
    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps(
            {
                "kernels": [
                    {"problem": "poly1d", "K": 10, "dtype": "float64", "grad_evals_per_s": 1.0},
                    {"problem": "poly1d", "K": 1000, "dtype": "float64", "grad_evals_per_s": 1e8},
                ],
                "flows": [
                    {"problem": "poly1d", "K": 100, "dtype": "float64", "t_end": 10.0,
                     "gpu_grad_evals_per_s": 5e7, "gpu_wall_s": 0.5},
                ],
                "diffrax": [
                    {"problem": "poly1d", "K": 1000, "t_end": 10.0, "diffrax_wall_s": 2.0, "speedup_vs_diffrax": 1.5},
                    # a Tsit5 row: the flows section's gradient counts are Dormand-Prince's, no bound from them
                    {"problem": "poly1d", "method": "tsit5", "K": 1000, "t_end": 10.0, "diffrax_wall_s": 1.8},
                ],
            }
        )
    )  # fmt: skip
    p = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_sass.py"),
            "--measured",
            str(bench),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    acts = data["activations"]
    assert set(acts["float64"]) == set(sadfast.ACTIVATIONS) - {"identity"}
    f64, f32 = acts["float64"], acts["float32"]
    # what the code of activations.hpp must cost, whatever the compiler version
    assert f64["relu"]["fp64"] <= 4 and f64["relu"]["sfu"] == 0
    assert f64["tanh"]["fp64"] >= 15  # an exp and a division in float64
    assert f64["gelu"]["fp64"] > f64["tanh"]["fp64"]  # erfc and exp
    assert all(f32[a]["fp64"] == 0 for a in f32)
    assert all(f32[a]["issue"] < f64[a]["issue"] for a in ("tanh", "gelu", "softplus"))
    rows = {(r["problem"], r["dtype"]): r for r in data["ceilings"]}
    assert len(rows) == 6
    r = rows[("poly1d", "float64")]
    assert r["bound_by"] in {"pipe", "issue", "sfu"}
    assert 0 < r["max_fraction_of_peak"] < 1
    assert r["measured_kernel_grad_evals_per_s"] == 1e8  # the largest K's
    assert r["measured_kernel_fraction_of_ceiling"] == pytest.approx(1e8 / r["grad_evals_per_s"])
    (b,) = data["diffrax_bounds"]
    assert b["grad_evals_per_flow"] == pytest.approx(5e7 * 0.5 / 100)
    assert b["max_speedup_vs_diffrax"] == pytest.approx(2.0 / (1000 * 2.5e5 / r["grad_evals_per_s"]))
    assert "wrote" in p.stdout and "kernels" not in data  # --kernels not asked for


def test_gpu_sass_script_rejects_bad_arguments(tmp_path: Path) -> None:
    script = str(ROOT / "benchmarks" / "gpu_sass.py")
    p = subprocess.run(
        [sys.executable, script, "--arch", "sm90"], capture_output=True, text=True, check=False
    )
    assert p.returncode == 2 and "--arch" in p.stderr
    p = subprocess.run(
        [sys.executable, script, "--measured", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 2 and "--measured" in p.stderr
