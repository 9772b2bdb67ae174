"""Machine description, library versions, an FP64 peak probe and a timing helper."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .._runtime import get_num_threads, kernel_isa


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
        "threads": get_num_threads(),
        "kernel_isa": kernel_isa(),
    }
