"""Type stubs for the native extension (see cpp/bindings/)."""

from typing import Any, Literal, TypeAlias, overload

import numpy as np
from numpy.typing import NDArray

_F64: TypeAlias = NDArray[np.float64]

def max_threads() -> int: ...
def set_threads(n: int) -> None: ...
def kernel_isa() -> str: ...
def available_isas() -> list[str]: ...
def set_kernel_isa(name: str) -> None: ...
def activation_names() -> list[str]: ...
def loss_names() -> list[str]: ...
def activation_eval(name: str, z: _F64, scalar_reference: bool = False) -> tuple[_F64, _F64, _F64]: ...

class Problem:
    def __init__(
        self, widths: list[int], activation: str, loss: str, weight_decay: float, X: _F64, T: _F64
    ) -> None: ...
    @property
    def n_params(self) -> int: ...
    @property
    def n_points(self) -> int: ...
    @property
    def widths(self) -> list[int]: ...
    @overload
    def loss_grad(self, theta: _F64, want_grad: Literal[False]) -> _F64: ...
    @overload
    def loss_grad(self, theta: _F64, want_grad: Literal[True] = ...) -> tuple[_F64, _F64]: ...
    @overload
    def hvp(self, theta: _F64, v: _F64, want_grad: Literal[False] = ...) -> _F64: ...
    @overload
    def hvp(self, theta: _F64, v: _F64, want_grad: Literal[True]) -> tuple[_F64, _F64, _F64]: ...
    def forward(self, theta: _F64) -> _F64: ...

class FlowBatch:
    fields: list[str]
    @property
    def K(self) -> int: ...
    @property
    def P(self) -> int: ...
    def __init__(self, K: int, P: int) -> None: ...
    def array(self, name: str) -> np.ndarray: ...
    def jac_export(self) -> tuple[np.ndarray, np.ndarray]: ...
    def jac_import(self, index: np.ndarray, pool: np.ndarray) -> None: ...

def flows_initialize(
    problem: Problem,
    batch: FlowBatch,
    theta0: _F64,
    t0: float,
    first_step: float,
    rtol: float,
    atol: float,
    t_end: float,
    max_step: float,
    max_steps: int,
    loss_below: float,
    grad_norm_below: float,
    theta_norm_above: float,
    method: int,
    save_times: _F64,
    save_loss: _F64,
    save_grad_norm: _F64,
    save_theta_norm: _F64,
    save_theta: _F64 | None,
    jac_rank: int = 0,
) -> None: ...
def flows_advance(
    problem: Problem,
    batch: FlowBatch,
    rtol: float,
    atol: float,
    t_end: float,
    max_step: float,
    max_steps: int,
    loss_below: float,
    grad_norm_below: float,
    theta_norm_above: float,
    method: int,
    save_times: _F64,
    save_loss: _F64,
    save_grad_norm: _F64,
    save_theta_norm: _F64,
    save_theta: _F64 | None,
    max_attempts: int,
    jac_rank: int = 0,
) -> int: ...

class TrainBatch:
    @property
    def K(self) -> int: ...
    @property
    def P(self) -> int: ...
    def __init__(self, K: int, P: int) -> None: ...
    def array(self, name: str) -> np.ndarray: ...

def train_initialize(batch: TrainBatch, theta0: _F64) -> None: ...
def train_advance(
    problem: Problem,
    batch: TrainBatch,
    method: int,
    lr: float,
    momentum: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    steps: int,
    record_every: int,
    loss_below: float,
    grad_norm_below: float,
    theta_norm_above: float,
    trace_loss: _F64,
    trace_grad_norm: _F64,
    trace_theta_norm: _F64,
    max_steps: int,
) -> int: ...

# ---- the CUDA backend (present when built with nvcc; cuda_built() says) ----
def cuda_built() -> bool: ...
def cuda_device_count() -> tuple[int, str]: ...
def cuda_device_info(device: int = 0) -> dict[str, Any]: ...
def cuda_set_layer_kernel(kernel: int) -> None: ...
def cuda_layer_kernel() -> int: ...
def cuda_kernel_options() -> dict[str, dict[str, int]]: ...
def cuda_last_launch() -> dict[str, Any]: ...

class CudaBuffer:
    @property
    def ptr(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def __init__(self, nbytes: int) -> None: ...
    def upload(self, array: np.ndarray) -> None: ...
    def download(self, array: np.ndarray) -> None: ...

class CudaProblem:
    def __init__(self, problem: Problem) -> None: ...
    def warp_smem(self, dtype: int, hvp: bool) -> int: ...

def cuda_loss_grad(problem: CudaProblem, dtype: int, theta: int, K: int, loss: int, grad: int) -> None: ...
def cuda_hvp(problem: CudaProblem, dtype: int, theta: int, v: int, K: int, hv: int) -> None: ...

class CudaFlows:
    def __init__(self, K: int, P: int, dtype: int, method: int, rank: int = 0) -> None: ...
    @property
    def rank(self) -> int: ...
    def upload(self, batch: FlowBatch) -> None: ...
    def download(self, batch: FlowBatch) -> None: ...

def cuda_flows_initialize(
    problem: CudaProblem,
    batch: CudaFlows,
    theta0: int,
    t0: float,
    first_step: float,
    method: int,
    rtol: float,
    atol: float,
    t_end: float,
    max_step: float,
    max_steps: int,
    loss_below: float,
    grad_norm_below: float,
    theta_norm_above: float,
    save_times: int,
    n_save: int,
    save_loss: int,
    save_grad_norm: int,
    save_theta_norm: int,
    save_theta: int,
) -> None: ...
def cuda_flows_advance(
    problem: CudaProblem,
    batch: CudaFlows,
    method: int,
    rtol: float,
    atol: float,
    t_end: float,
    max_step: float,
    max_steps: int,
    loss_below: float,
    grad_norm_below: float,
    theta_norm_above: float,
    save_times: int,
    n_save: int,
    save_loss: int,
    save_grad_norm: int,
    save_theta_norm: int,
    save_theta: int,
    max_attempts: int,
) -> int: ...
def cuda_train_advance(
    problem: CudaProblem,
    batch: TrainBatch,
    dtype: int,
    method: int,
    lr: float,
    momentum: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    steps: int,
    record_every: int,
    loss_below: float,
    grad_norm_below: float,
    theta_norm_above: float,
    trace_loss: _F64,
    trace_grad_norm: _F64,
    trace_theta_norm: _F64,
    max_steps: int,
) -> int: ...
