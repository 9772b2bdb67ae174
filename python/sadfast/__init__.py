"""sadfast: batched gradient flows of small neural networks, fast.

Public API: :class:`MLP` (model, reproducible init, batched loss/gradient/Hessian-vector
product), :class:`Problem` (a model bound to data), :func:`solve_flows` (per-flow adaptive
gradient-flow integration) with :class:`FlowResult`, :func:`resume` and :func:`load_result`,
the discrete baselines :func:`train` (GD, momentum, Adam), and runtime controls. Submodules:
:mod:`sadfast.analysis` (outcomes, growth laws, Hessian extremes), :mod:`sadfast.basins`
(chunked, resumable basin maps in Zarr, local or on Dask), :mod:`sadfast.cuda` (the GPU
backend: :func:`cuda_available`, ``device="cuda"``, cupy arrays) and :mod:`sadfast.bench` (the
``sadfast bench`` comparison with other libraries).
"""

from __future__ import annotations

from . import analysis, basins, cuda
from ._runtime import get_num_threads, kernel_isa, set_kernel_isa, set_num_threads
from .flows import FlowResult, FlowStatus, SolverSettings, load_result, resume, solve_flows
from .mlp import ACTIVATIONS, INIT_SCHEMES, LOSSES, MLP, Layer, Problem
from .train import TrainResult, train

cuda_available = cuda.available

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "INIT_SCHEMES",
    "LOSSES",
    "MLP",
    "FlowResult",
    "FlowStatus",
    "Layer",
    "Problem",
    "SolverSettings",
    "TrainResult",
    "__version__",
    "analysis",
    "basins",
    "cuda",
    "cuda_available",
    "get_num_threads",
    "kernel_isa",
    "load_result",
    "resume",
    "set_kernel_isa",
    "set_num_threads",
    "solve_flows",
    "train",
]
