"""The CUDA backend from Python: device queries and device arrays (cupy or sadfast's own).

sadfast's GPU kernels (``cuda/`` in the source tree) are built when ``nvcc`` is found at install
time. They need no Python GPU library: NumPy arrays are copied to and from the device through
sadfast's own buffers. With cupy installed (``pip install "sadfast[cuda]"``), cupy arrays are
accepted and returned as they are, without host copies: a cupy ``theta`` gives cupy results.

Calls are synchronous on the legacy default stream, which is cupy's default stream too.

For testing the kernels without a GPU, a build with ``-C cmake.define.SADFAST_CUDA_EMULATION=ON``
also has ``sadfast._cuda_emu``: the same kernels compiled for the CPU and run by a warp
emulator (docs/gpu_emulator.md). ``SADFAST_CUDA_EMULATOR=1`` in the environment makes
``device="cuda"`` use it; it is slow and only meant for tests.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from . import _core

DTYPES = {"float64": 0, "float32": 1}
LAYER_KERNELS = {"lanes": 0, "tiled": 1}
DEVICES = ("cpu", "cuda", "auto")
EMULATOR_ENV = "SADFAST_CUDA_EMULATOR"


def emulated() -> bool:
    """Whether ``device="cuda"`` runs on the CPU warp emulator (``SADFAST_CUDA_EMULATOR=1``)."""
    return os.environ.get(EMULATOR_ENV, "").strip() not in ("", "0")


@functools.cache
def native() -> ModuleType:
    """The native module with the GPU backend: ``sadfast._core``, or the emulator's module."""
    if not emulated():
        return _core
    try:
        return importlib.import_module("sadfast._cuda_emu")
    except ImportError as e:
        raise RuntimeError(
            f"{EMULATOR_ENV} is set but this installation has no CUDA emulator; build it with "
            "`pip install . -C cmake.define.SADFAST_CUDA_EMULATION=ON`"
        ) from e


def built() -> bool:
    """Whether this installation was built with the CUDA backend."""
    return bool(native().cuda_built())


@functools.cache
def _count() -> tuple[int, str]:
    n, why = native().cuda_device_count()
    return int(n), str(why)


def available() -> bool:
    """Whether the CUDA backend is built and a CUDA device is usable."""
    return _count()[0] > 0


def why_unavailable() -> str:
    """Why :func:`available` is False ('' when it is True)."""
    return "" if available() else _count()[1]


def devices() -> list[dict[str, Any]]:
    """Name, compute capability, multiprocessors, memory and clock of each visible device."""
    return [dict(native().cuda_device_info(i)) for i in range(_count()[0])]


def get_layer_kernel() -> str:
    """How the GPU evaluates layers at least 16 wide on both sides: ``"lanes"`` or ``"tiled"``."""
    if not built():
        return "lanes"
    code = int(native().cuda_layer_kernel())
    return next(k for k, v in LAYER_KERNELS.items() if v == code)


def set_layer_kernel(kernel: str) -> str:
    """Choose how the GPU evaluates wide layers (process-wide); returns the previous choice.

    ``"lanes"`` (default): one data point per lane, as for narrow layers. ``"tiled"``: layers at
    least 16 wide on both sides (poly4d's 32 x 32 layer) run as register-tiled warp GEMMs, with
    about a third of the shared-memory loads per FMA but ``in x (out + 1)`` more numbers of shared
    memory per flow. Values agree to rounding (the weight gradients sum in another order). It
    applies to loss/gradient evaluations and to Dormand-Prince's steps; the Hessian-vector product,
    RKC and training keep the lanes path. Which is faster depends on the GPU and the widths:
    ``benchmarks/bench_gpu.py --sections layers`` measures both.
    """
    if not isinstance(kernel, str) or kernel not in LAYER_KERNELS:
        raise ValueError(f"kernel: expected one of {list(LAYER_KERNELS)}, got {kernel!r}")
    previous = get_layer_kernel()
    if built():
        native().cuda_set_layer_kernel(LAYER_KERNELS[kernel])
    return previous


@contextlib.contextmanager
def layer_kernel(kernel: str) -> Iterator[None]:
    """``with sadfast.cuda.layer_kernel("tiled"): ...`` sets the layer kernel inside the block."""
    previous = set_layer_kernel(kernel)
    try:
        yield
    finally:
        set_layer_kernel(previous)


def kernel_options() -> dict[str, dict[str, int]]:
    """The build-time knobs of the GPU kernels' lanes path in this build (``cuda/warp_mlp.cuh``),
    per dtype: ``{"float64": {"row_block": 4, "act_ilp": 4}, "float32": {...}}``.

    ``row_block``: neurons (forward pass) and inputs (backward pass) per block of independent FMA
    chains, 4 or 8 (``-DSADFAST_ROW_BLOCK``); ``act_ilp``: activations evaluated together, 1, 2 or
    4, or 0 for one at a time (``-DSADFAST_ACT_ILP``). ``-DSADFAST_ROW_BLOCK_F64=8`` (or ``_F32``)
    sets one dtype's kernels only. Every setting gives bitwise the same values; they are for
    measuring speed (``benchmarks/gpu_session.sh``, step ``variants``), set at build time through
    ``CUDAFLAGS``. Raises RuntimeError when sadfast was built without CUDA.
    """
    if not built():
        raise RuntimeError(why_unavailable())
    return {k: dict(v) for k, v in native().cuda_kernel_options().items()}


def last_launch() -> dict[str, Any]:
    """The most recent GPU kernel launch this process planned, for benchmarks and profiling.

    Keys: ``kernel`` (``"loss_grad"``, ``"hvp"``, ``"flows_initialize"``, ``"dopri5"``,
    ``"tsit5"``, ``"rkc"`` or ``"train"``; ``""`` before the first launch), ``flows``,
    ``warps_per_block``, ``blocks``, ``blocks_per_sm`` (resident at once, from CUDA's occupancy calculator), ``multiprocessors``
    ``smem_per_warp`` (bytes of each warp's workspace) and ``global_workspace`` (True when that
    workspace exceeds a block's shared memory and lies in global memory instead: any width runs,
    more slowly). Each flow runs on one warp; the block shape is the one that keeps the most flows
    resident at once (``cuda/launch.cuh``). Raises RuntimeError when sadfast was built without
    CUDA.
    """
    if not built():
        raise RuntimeError(why_unavailable())
    return dict(native().cuda_last_launch())


def resolve_device(device: Any, name: str = "device") -> str:
    """``"cpu"`` or ``"cuda"`` for a user's ``device`` (``"auto"``: cuda when available)."""
    if not isinstance(device, str):
        raise TypeError(f"{name}: expected one of {list(DEVICES)}, got {type(device).__name__}")
    if device not in DEVICES:
        raise ValueError(f"{name}: unknown device {device!r}; expected one of {list(DEVICES)}")
    if device == "auto":
        return "cuda" if available() else "cpu"
    if device == "cuda" and not available():
        raise RuntimeError(f"{name}='cuda': no usable CUDA device ({why_unavailable()})")
    return device


def dtype_code(dtype: Any, name: str = "dtype") -> int:
    """0 for float64, 1 for float32 (names or NumPy dtypes)."""
    try:
        key = np.dtype(dtype).name
    except TypeError:
        key = None
    if key not in DTYPES:
        raise ValueError(f"{name}: expected 'float64' or 'float32', got {dtype!r}")
    return DTYPES[key]


def is_cupy(a: Any) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def _cupy() -> Any:
    import cupy  # type: ignore[import-not-found]

    return cupy


class DeviceArray:
    """A device array of known shape and dtype: a cupy array, or sadfast's own buffer."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, *, cupy_array: Any = None) -> None:
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.cupy = cupy_array
        n = int(np.prod(shape)) * self.dtype.itemsize
        self._buf = native().CudaBuffer(n if cupy_array is None else 0)

    @property
    def ptr(self) -> int:
        return int(self.cupy.data.ptr) if self.cupy is not None else int(self._buf.ptr)

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: np.dtype, *, use_cupy: bool) -> DeviceArray:
        if use_cupy:
            return cls(shape, dtype, cupy_array=_cupy().empty(shape, dtype=dtype))
        return cls(shape, dtype)

    @classmethod
    def from_host(cls, a: np.ndarray, dtype: np.dtype) -> DeviceArray:
        h = np.ascontiguousarray(a, dtype=dtype)
        d = cls(h.shape, h.dtype)
        if h.size:
            d._buf.upload(h)
        return d

    def host(self) -> np.ndarray:
        if self.cupy is not None:
            return np.asarray(self.cupy.get())
        out = np.empty(self.shape, self.dtype)
        if out.size:
            self._buf.download(out)
        return out

    def result(self) -> Any:
        """cupy array if this is one, else a NumPy copy."""
        return self.cupy if self.cupy is not None else self.host()


def device_input(a: Any, name: str, dtype: np.dtype, ndims: tuple[int, ...]) -> DeviceArray:
    """A cupy array checked in place (dtype, layout, finiteness), or host data copied over."""
    if is_cupy(a):
        cp = _cupy()
        if a.dtype != dtype:
            raise TypeError(f"{name}: expected a cupy array of dtype {np.dtype(dtype).name}, got {a.dtype}")
        if a.ndim not in ndims:
            raise ValueError(
                f"{name}: expected a {' or '.join(f'{d}-D' for d in ndims)} array, got shape {a.shape}"
            )
        if not a.flags.c_contiguous:
            a = cp.ascontiguousarray(a)
        if not bool(cp.isfinite(a).all()):
            raise ValueError(f"{name}: expected finite values, got NaN or infinite entries")
        return DeviceArray(tuple(a.shape), a.dtype, cupy_array=a)
    return DeviceArray.from_host(np.asarray(a), dtype)


def native_problem(problem: Any) -> Any:
    """The problem's data on the device (made once per Problem object)."""
    dev = getattr(problem, "_cuda_native", None)
    if dev is None:
        dev = native().CudaProblem(problem._native)
        problem._cuda_native = dev
    return dev
