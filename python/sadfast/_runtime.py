"""Threads and kernel variants of the native core."""

from __future__ import annotations

from . import _core


def get_num_threads() -> int:
    """Number of OpenMP threads the native kernels use (``OMP_NUM_THREADS`` sets the default)."""
    return int(_core.max_threads())


def set_num_threads(n: int) -> None:
    """Set the number of OpenMP threads for subsequent native calls. Results do not depend on it."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an integer >= 1, got {type(n).__name__}")
    _core.set_threads(n)


def kernel_isa() -> str:
    """The instruction-set variant of the kernels in use: ``"avx2"`` or ``"baseline"``."""
    return str(_core.kernel_isa())


def set_kernel_isa(name: str) -> None:
    """Force a kernel variant (``"baseline"`` or ``"avx2"``), e.g. to compare the two paths."""
    _core.set_kernel_isa(name)
