"""Values of the GPU kernels for a bitwise comparison between builds of different build-time knobs
(cuda/warp_mlp.cuh: SADFAST_ROW_BLOCK, SADFAST_ACT_ILP), which must all give the same bits.

    python benchmarks/variant_values.py save FILE.npz      # in each build (GPU or emulator)
    python benchmarks/variant_values.py compare A.npz B.npz

`save` evaluates loss, gradient and HVP of 6 flows, and Dormand-Prince flows to t = 0.5 in float64
and float32, on device="cuda" for five networks (widths off multiples of 4 and 8, every loss kind),
and saves them with the build's sadfast.cuda.kernel_options(). Without a GPU, use the CPU warp
emulator (docs/gpu_emulator.md): build each variant with its knob in CXXFLAGS,
`CXXFLAGS=-DSADFAST_ROW_BLOCK=8 pip install . -C cmake.define.SADFAST_CUDA=OFF
-C cmake.define.SADFAST_CUDA_EMULATION=ON`, and run `save` with SADFAST_CUDA_EMULATOR=1 (about a
second). `compare` exits 1 when any array differs in any bit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

CASES = [
    ([1, 16, 1], "tanh", "mse", 32),
    ([2, 32, 1], "softplus", "mse", 40),
    ([4, 32, 32, 1], "gelu", "mse", 64),
    ([3, 20, 13, 5], "swish", "cross_entropy", 37),
    ([2, 7, 9, 2], "mish", "huber", 33),
]


def save(path: Path) -> None:
    import sadfast

    out: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(1)
    for i, (widths, act, loss, n) in enumerate(CASES):
        model = sadfast.MLP(widths, activation=act, loss=loss, device="cuda")
        X = rng.uniform(-1, 1, (n, widths[0]))
        if loss == "cross_entropy":
            Y = np.eye(widths[-1])[rng.integers(0, widths[-1], n)]
        else:
            Y = rng.standard_normal((n, widths[-1]))
        prob = model.bind(X, Y)
        th = model.init(6, seed=i)
        v = rng.standard_normal(th.shape)
        out[f"{i}_loss"], out[f"{i}_grad"] = prob.loss_and_grad(th)
        out[f"{i}_hvp"] = prob.hvp(th, v)
        for dtype in ("float64", "float32"):
            tol = {} if dtype == "float64" else {"rtol": 1e-5, "atol": 1e-7}
            r = sadfast.solve_flows(prob, th[:3], 0.5, device="cuda", dtype=dtype, progress=False, **tol)
            out[f"{i}_{dtype}_theta"], out[f"{i}_{dtype}_n_accepted"] = r.theta, r.n_accepted
    options = sadfast.cuda.kernel_options()
    np.savez(path, kernel_options=np.array(json.dumps(options)), **out)
    print(f"saved {len(out)} arrays of the build {options} to {path}")


def _same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    """Bitwise, unlike np.array_equal (which has 0.0 == -0.0 and NaN != NaN)."""
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def compare(a_path: Path, b_path: Path) -> int:
    a, b = np.load(a_path), np.load(b_path)
    names = sorted(set(a.files) - {"kernel_options"})
    if names != sorted(set(b.files) - {"kernel_options"}):
        print("the files hold different arrays", file=sys.stderr)
        return 1
    differ = [k for k in names if not _same_bits(a[k], b[k])]
    builds = f"{a['kernel_options']} against {b['kernel_options']}"
    if differ:
        print(f"{builds}: {len(differ)} of {len(names)} arrays differ: {', '.join(differ)}")
        return 1
    print(f"{builds}: all {len(names)} arrays bitwise equal")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save", help="evaluate this build's kernels and save the values")
    s.add_argument("file", type=Path)
    c = sub.add_parser("compare", help="compare two saved files bitwise")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "save":
        save(args.file)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
