"""Static costs of the CUDA kernels, read from the machine code ptxas emitted (SASS), and the
throughput ceilings they imply on a GPU we cannot run on.

A gradient evaluation of an MLP does two kinds of arithmetic: the matrix products (one fused
multiply-add per weight, data point and pass, the count ``MLP.flops_per_grad`` reports) and one
activation per hidden unit and data point, value and derivatives together. On a GPU both use the
same pipe in float64 (the FP64 units), and an exact activation costs tens of FP64 instructions.
``activation_costs`` measures that cost per activation from the SASS of one probe kernel per
activation (``act::eval`` of activations.hpp, the code the CUDA kernels run), and ``ceiling``
turns it into the largest rate of gradient evaluations a device could reach if it did nothing
but this arithmetic at full rate: a bound that no kernel reaches (loads, shuffles, the loss and
the integrator are left out), against which measured rates can be read.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..mlp import MLP

__all__ = [
    "DEVICES",
    "DeviceModel",
    "InstructionMix",
    "activation_costs",
    "ceiling",
    "main_path",
    "parse_sass",
    "probe_source",
]

# Opcodes (without modifiers) by the unit that executes them, on sm_80 / sm_90.
FP64_OPS = frozenset({"DFMA", "DADD", "DMUL", "DSETP", "DSET", "DMNMX"})
FP32_OPS = frozenset({"FFMA", "FADD", "FMUL", "FSETP", "FSET", "FMNMX", "FSEL", "FCHK"})
SFU_OPS = frozenset({"MUFU"})

_FUNCTION = re.compile(r"^\s*Function\s*:\s*(\S+)", re.MULTILINE)
_INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)")


@dataclass(frozen=True)
class InstructionMix:
    """Instruction counts by opcode (modifiers dropped), per thread."""

    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def issue(self) -> int:
        """Instructions issued: every one takes an issue slot of its warp scheduler."""
        return sum(self.counts.values())

    @property
    def fp64(self) -> int:
        return sum(v for k, v in self.counts.items() if k in FP64_OPS)

    @property
    def fp32(self) -> int:
        return sum(v for k, v in self.counts.items() if k in FP32_OPS)

    @property
    def sfu(self) -> int:
        return sum(v for k, v in self.counts.items() if k in SFU_OPS)

    @property
    def uniform(self) -> int:
        """Uniform-datapath instructions (UMOV: on sm_90 each float64 constant takes two)."""
        return sum(v for k, v in self.counts.items() if k.startswith("U"))

    def __sub__(self, other: InstructionMix) -> InstructionMix:
        c = Counter(self.counts)
        c.subtract(other.counts)
        return InstructionMix({k: v for k, v in c.items() if v > 0})

    def as_dict(self) -> dict[str, Any]:
        return {
            "issue": self.issue,
            "fp64": self.fp64,
            "fp32": self.fp32,
            "sfu": self.sfu,
            "uniform": self.uniform,
            "opcodes": dict(sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        }


def parse_sass(text: str) -> dict[str, list[str]]:
    """``cuobjdump -sass`` output -> {mangled function name: its opcodes in address order}."""
    out: dict[str, list[str]] = {}
    marks = list(_FUNCTION.finditer(text))
    for i, m in enumerate(marks):
        body = text[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        out[m.group(1)] = _INSTRUCTION.findall(body)
    return out


def main_path(opcodes: Iterable[str]) -> InstructionMix:
    """The instructions before a function's first EXIT, less the NOP padding.

    For straight-line code with out-of-line slow paths (a division's, a libdevice function's
    special cases, placed after the EXIT and reached by branches), this is the code a thread
    runs for ordinary arguments. Blocks that ordinary arguments branch over (a non-finite
    input's) are counted too, so it slightly overstates: a few percent for the activations.
    """
    c: Counter[str] = Counter()
    for op in opcodes:
        if op == "EXIT":
            break
        if op != "NOP":
            c[op] += 1
    return InstructionMix(dict(c))


# One probe kernel per activation and dtype: it loads z, evaluates act::eval (value, first and
# second derivative: what every gradient and HVP kernel evaluates per hidden unit and point)
# and stores the three. The identity's probe is the load/store skeleton the others subtract.
_PROBE = """#include "sadfast/activations.hpp"
using sadfast::Activation;
template <class T, Activation A>
__global__ void sadfast_probe(const T* __restrict__ z, T* __restrict__ out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const sadfast::act::Deriv<T> d = sadfast::act::eval(A, z[i]);
  out[3 * i] = d.f;
  out[3 * i + 1] = d.d1;
  out[3 * i + 2] = d.d2;
}
"""


def probe_source(activations: Iterable[str], enum_names: Mapping[str, str] | None = None) -> str:
    """CUDA source of the probes (float64 and float32) for ``activations`` plus the identity.

    ``enum_names`` maps a user-facing name to its C++ enumerator when they differ."""
    names = dict.fromkeys([*activations, "identity"])
    lines = [_PROBE]
    for dtype in ("double", "float"):
        for a in names:
            e = (enum_names or {}).get(a, a)
            lines.append(
                f"template __global__ void sadfast_probe<{dtype}, Activation::{e}>(const {dtype}*, {dtype}*);"
            )
    return "\n".join(lines) + "\n"


_PROBE_NAME = re.compile(r"sadfast_probeI([df])LN7sadfast10ActivationE(\d+)EE")


def activation_costs(sass: str, enum_order: list[str]) -> dict[str, dict[str, InstructionMix]]:
    """Per dtype ("float64", "float32") and activation: the main path of its probe less the
    identity's (the skeleton); a dtype without probes is left out. ``enum_order`` lists the C++ enumerators by value, the order in
    which ``Activation`` declares them (the mangled names carry the value)."""
    probes: dict[str, dict[str, InstructionMix]] = {"float64": {}, "float32": {}}
    for name, ops in parse_sass(sass).items():
        m = _PROBE_NAME.search(name)
        if m is None:
            continue
        dtype = "float64" if m.group(1) == "d" else "float32"
        probes[dtype][enum_order[int(m.group(2))]] = main_path(ops)
    out: dict[str, dict[str, InstructionMix]] = {}
    for dtype, by_act in probes.items():
        if not by_act:
            continue
        if "identity" not in by_act:
            raise ValueError(f"sass: no identity probe for {dtype} (the skeleton to subtract)")
        skeleton = by_act["identity"]
        out[dtype] = {a: mix - skeleton for a, mix in by_act.items()}
    return out


@dataclass(frozen=True)
class DeviceModel:
    """Per-SM execution rates (lanes per clock) from NVIDIA's architecture whitepapers."""

    name: str
    multiprocessors: int
    clock_ghz: float
    fp64_lanes: int  # FP64 FMA lanes per SM
    fp32_lanes: int  # FP32 FMA lanes per SM
    sfu_lanes: int  # special-function (MUFU) lanes per SM
    schedulers: int = 4  # warp schedulers per SM, one instruction each per clock

    def peak_gflops(self, dtype: str) -> float:
        lanes = self.fp64_lanes if dtype == "float64" else self.fp32_lanes
        return 2 * lanes * self.multiprocessors * self.clock_ghz


# H200 (SXM): the H100 SXM's GH100 with 132 SMs at 1.98 GHz boost, the clock Nsight reported for
# the H200 this project measured (benchmarks/results/profile_gpu_h200.txt).
DEVICES = {
    "h100-sxm": DeviceModel("NVIDIA H100 SXM", 132, 1.98, 64, 128, 16),
    "h200": DeviceModel("NVIDIA H200", 132, 1.98, 64, 128, 16),
    "a100": DeviceModel("NVIDIA A100", 108, 1.41, 32, 64, 16),
}


def ceiling(
    model: MLP, n_points: int, dtype: str, cost: InstructionMix, device: DeviceModel
) -> dict[str, Any]:
    """The arithmetic ceiling of loss+gradient evaluations per second.

    Per evaluation: ``flops_per_grad / 2`` multiply-adds (FP64 or FP32 pipe, one issue slot per
    32 of them) and ``n_points x sum(hidden widths)`` activations of ``cost`` each. The rate is
    that of the busiest resource of an SM (the FP64 or FP32 pipe, the special-function units, or
    the issue slots of its schedulers), all fully used. Loads, shuffles, the loss and the
    integrator's own work are left out, so real kernels stay below it.
    """
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype: expected 'float64' or 'float32', got {dtype!r}")
    flops = model.flops_per_grad(n_points)
    fma = flops / 2
    n_act = n_points * sum(model.widths[1:-1])
    pipe_ops = cost.fp64 if dtype == "float64" else cost.fp32
    lanes = device.fp64_lanes if dtype == "float64" else device.fp32_lanes
    cycles = {  # SM clock cycles per evaluation
        "pipe": (fma + n_act * pipe_ops) / lanes,
        "sfu": n_act * cost.sfu / device.sfu_lanes,
        "issue": (fma + n_act * cost.issue) / (32 * device.schedulers),
    }
    limit = max(cycles, key=lambda k: cycles[k])
    rate = device.multiprocessors * device.clock_ghz * 1e9 / cycles[limit]
    return {
        "flops_per_grad": flops,
        "activations_per_grad": n_act,
        "activation_share_of_pipe": n_act * pipe_ops / (fma + n_act * pipe_ops),
        "cycles_per_grad_per_sm": cycles,
        "bound_by": limit,
        "grad_evals_per_s": rate,
        "max_fraction_of_peak": rate * flops / (device.peak_gflops(dtype) * 1e9),
    }
