"""Shared pieces of the benchmark scripts: the benchmark problems, machine description,
FP64 peak probe and a timing helper."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import sadfast

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class BenchProblem:
    name: str
    widths: tuple[int, ...]
    activation: str
    n_points: int

    def data(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        X = rng.uniform(-1, 1, (self.n_points, self.widths[0]))
        x = X.T
        if self.name == "poly1d":
            y = x[0] ** 2
        elif self.name == "poly2d":
            y = x[0] ** 2 + x[0] * x[1] - x[1] ** 2
        else:
            y = x[0] * x[1] * x[2] + x[0] ** 2 * x[3] - x[1] ** 3 + 0.5 * x[2] * x[3] + x[0] - 0.5 * x[3] ** 2
        return X, y[:, None]

    def model(self) -> sadfast.MLP:
        return sadfast.MLP(list(self.widths), activation=self.activation)


PROBLEMS = {
    "poly1d": BenchProblem("poly1d", (1, 16, 1), "tanh", 32),
    "poly2d": BenchProblem("poly2d", (2, 32, 1), "softplus", 128),
    "poly4d": BenchProblem("poly4d", (4, 32, 32, 1), "gelu", 256),
}


def jax_loss(p: BenchProblem) -> Callable[[Any], Any]:
    """The problem's MSE loss of a flat theta in JAX (float64), written as a user would."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    act = {
        "tanh": jnp.tanh,
        "softplus": jax.nn.softplus,
        "gelu": lambda z: jax.nn.gelu(z, approximate=False),
    }[p.activation]
    X, Y = (jnp.asarray(a) for a in p.data())
    layers = p.model().layers

    def loss(theta: Any) -> Any:
        a = X
        for i, ly in enumerate(layers):
            a = a @ theta[ly.weight].reshape(ly.weight_shape).T + theta[ly.bias]
            if i < len(layers) - 1:
                a = act(a)
        return jnp.mean(jnp.sum((a - Y) ** 2, axis=1))

    return loss


def torch_loss(p: BenchProblem) -> Callable[[Any], Any]:
    """The same loss in PyTorch (float64; softplus without torch's threshold cut-off)."""
    import torch

    act = {
        "tanh": torch.tanh,
        "gelu": torch.nn.functional.gelu,
        "softplus": lambda z: torch.logaddexp(torch.zeros_like(z), z),
    }[p.activation]
    X, Y = (torch.as_tensor(a) for a in p.data())
    layers = p.model().layers

    def loss(theta: Any) -> Any:
        a = X
        for i, ly in enumerate(layers):
            a = a @ theta[ly.weight].reshape(ly.weight_shape).T + theta[ly.bias]
            if i < len(layers) - 1:
                a = act(a)
        return ((a - Y) ** 2).sum(dim=1).mean()

    return loss


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(
                    f for f in flags if f in {"avx", "avx2", "fma", "avx512f", "avx512dq", "sse4_2"}
                )
    except OSError:
        pass
    return []


def versions(*names: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for n in ("sadfast", "numpy", *names):
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def fp64_peak_probe(n: int = 2048, repeats: int = 5) -> float:
    """Measured FP64 GEMM rate of numpy's BLAS (GFLOP/s): the practical peak we compare against."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, n, n))
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_call(fn: Callable[[], Any], *, min_time: float = 0.3, repeats: int = 5) -> dict[str, Any]:
    """Median and spread of the per-call time; each repeat loops until `min_time` has passed."""
    fn()  # warm-up, excluded
    t = _timed(fn)
    inner = max(1, int(min_time / max(t, 1e-9)))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "repeats": repeats,
        "calls_per_repeat": inner,
    }


def machine() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads": sadfast.get_num_threads(),
        "kernel_isa": sadfast.kernel_isa(),
    }


def write_json(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or (RESULTS / f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
