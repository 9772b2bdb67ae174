"""sadfast: batched gradient flows of small neural networks, fast.

Public API: :class:`MLP` (model, reproducible init, batched loss/gradient/Hessian-vector
product), :class:`Problem` (a model bound to data), and runtime controls.
"""

from __future__ import annotations

from ._runtime import get_num_threads, kernel_isa, set_kernel_isa, set_num_threads
from .mlp import ACTIVATIONS, INIT_SCHEMES, LOSSES, MLP, Layer, Problem

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "INIT_SCHEMES",
    "LOSSES",
    "MLP",
    "Layer",
    "Problem",
    "__version__",
    "get_num_threads",
    "kernel_isa",
    "set_kernel_isa",
    "set_num_threads",
]
