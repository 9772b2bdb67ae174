"""Discrete optimizers on the same kernels, batched over K flows: the baselines the gradient
flow is compared with. GD, heavy-ball momentum (torch.optim.SGD with momentum) and Adam/AdamW
(torch.optim.Adam/AdamW arithmetic), each flow with its own optimizer state, events and status.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _core
from . import cuda as _cuda
from ._slices import BatchViews, run_in_slices
from ._status import FlowStatus
from ._validation import check_int, check_name, check_nonneg_float, check_optional_bool
from .flows import _positive, _positive_or_none
from .mlp import Problem

METHODS = {"gd": 0, "momentum": 1, "adam": 2}
FloatArray = NDArray[np.float64]


@dataclass
class TrainResult(BatchViews):
    """Outcome of :func:`train` for K flows. Same fields, status codes and summary as
    :class:`FlowResult` where they apply: ``theta`` ``(K, P)``, ``loss``, ``grad_norm``,
    ``theta_norm``, ``status`` (``REACHED_T_END`` = all steps done), ``steps`` (optimizer steps
    taken), ``n_grad_evals``; traces ``(K, S)`` at ``record_steps`` (NaN after a flow stopped)."""

    problem: Problem
    method: str
    hyper: dict[str, Any]
    _batch: Any = field(repr=False)
    record_steps: NDArray[np.int64] = field(repr=False)
    trace_loss: FloatArray = field(repr=False)
    trace_grad_norm: FloatArray = field(repr=False)
    trace_theta_norm: FloatArray = field(repr=False)
    wall_time: float = 0.0
    device: str = "cpu"
    dtype: str = "float64"

    @property
    def theta(self) -> FloatArray:
        return self._view("y")

    @property
    def loss(self) -> FloatArray:
        return self._view("loss")

    @property
    def grad_norm(self) -> FloatArray:
        return self._view("grad_norm")

    @property
    def theta_norm(self) -> FloatArray:
        return self._view("theta_norm")

    @property
    def steps(self) -> NDArray[np.int64]:
        return self._view("step")

    @property
    def n_grad_evals(self) -> NDArray[np.int64]:
        return self.steps + 1  # one gradient per step, plus the one at the final parameters

    def summary(self) -> str:
        lines = [
            f"TrainResult: K={self.K} runs of {self.method} {self.hyper} on {self.problem.model!r}"
            + ("" if self.device == "cpu" else f" ({self.device}, {self.dtype})")
            + f"; wall {self.wall_time:.3g} s",
            "  status: " + ", ".join(f"{k} {v}" for k, v in self.status_counts().items()),
        ]
        loss = self.loss[np.isfinite(self.loss)]
        if loss.size:
            q = np.quantile(loss, [0.0, 0.1, 0.5, 0.9, 1.0])
            lines.append("  final loss min/10%/50%/90%/max: " + " / ".join(f"{v:.3e}" for v in q))
        lines.append(
            f"  final |theta| median {np.median(self.theta_norm):.4g}, max {self.theta_norm.max():.4g}"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


def train(
    problem: Problem,
    theta0: ArrayLike,
    *,
    method: Literal["gd", "momentum", "adam"] = "gd",
    lr: float = 1e-3,
    steps: int = 1000,
    record_every: int | None = None,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    loss_below: float | None = None,
    grad_norm_below: float | None = None,
    theta_norm_above: float | None = None,
    progress: bool | None = None,
    device: str | None = None,
    dtype: str = "float64",
) -> TrainResult:
    """Run ``steps`` full-batch optimizer steps from every row of ``theta0`` ``(K, P)``.

    ``method``: ``"gd"`` (``theta -= lr g``), ``"momentum"`` (torch SGD: ``buf = momentum buf + g``,
    ``buf = g`` at the first step, ``theta -= lr buf``) or ``"adam"`` (torch Adam with bias
    correction). ``weight_decay`` is decoupled (``theta *= 1 - lr wd`` before the step: AdamW for
    adam); for L2 regularization in the loss use ``MLP(weight_decay=...)``. Events as in
    :func:`solve_flows`, checked at every step. Traces are recorded every ``record_every`` steps
    (default: about 1000 records).

    ``device``: ``"cpu"``, ``"cuda"``, ``"auto"`` or None (the model's device; the GPU for a cupy
    ``theta0``). On the GPU each run is one warp, a whole slice of steps inside one kernel, with
    the optimizer state in ``dtype`` (``"float64"``, or ``"float32"`` on the GPU only); the state
    and the traces come back to the host after every slice, and so does the result.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"problem: expected sadfast.Problem (model.bind(X, Y)), got {type(problem).__name__}")
    check_name(method, "method", list(METHODS))
    progress = check_optional_bool(progress, "progress")
    on_cuda = problem._on_cuda(theta0, device, dtype)
    if _cuda.is_cupy(theta0):
        theta0 = cast(Any, theta0).get()  # the state lives on the host between slices
    th = problem.model._theta(theta0, "theta0")
    th = th[None, :] if th.ndim == 1 else th
    K, P = th.shape
    n_steps = check_int(steps, "steps", minimum=0)
    every = (
        max(1, n_steps // 1000)
        if record_every is None
        else check_int(record_every, "record_every", minimum=1)
    )
    lr_f = _positive(lr, "lr")
    mom = check_nonneg_float(momentum, "momentum")
    if mom >= 1:
        raise ValueError(f"momentum: expected a number in [0, 1), got {momentum}")
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise TypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
    b1, b2 = (check_nonneg_float(b, f"betas[{i}]") for i, b in enumerate(betas))
    if b1 >= 1 or b2 >= 1:
        raise ValueError(f"betas: expected numbers in [0, 1), got {betas}")
    eps_f = _positive(eps, "eps")
    wd = check_nonneg_float(weight_decay, "weight_decay")
    nan = float("nan")
    events = {
        "loss_below": _positive_or_none(loss_below, "loss_below"),
        "grad_norm_below": _positive_or_none(grad_norm_below, "grad_norm_below"),
        "theta_norm_above": _positive_or_none(theta_norm_above, "theta_norm_above"),
    }
    S = n_steps // every + 1
    traces = [np.full((K, S), np.nan) for _ in range(3)]
    batch = _core.TrainBatch(K, P)
    _core.train_initialize(batch, th)
    hyper: dict[str, Any] = {"lr": lr_f, "weight_decay": wd}
    if method == "momentum":
        hyper["momentum"] = mom
    if method == "adam":
        hyper.update(betas=(b1, b2), eps=eps_f)
    args: dict[str, Any] = dict(
        method=METHODS[method],
        lr=lr_f,
        momentum=mom,
        beta1=b1,
        beta2=b2,
        eps=eps_f,
        weight_decay=wd,
        steps=n_steps,
        record_every=every,
        **{k: (nan if v is None else v) for k, v in events.items()},
        trace_loss=traces[0],
        trace_grad_norm=traces[1],
        trace_theta_norm=traces[2],
    )
    code = _cuda.dtype_code(dtype)
    dt = np.dtype(dtype)
    result = TrainResult(
        problem,
        method,
        hyper,
        batch,
        np.arange(S, dtype=np.int64) * every,
        traces[0],
        traces[1],
        traces[2],
        device="cuda" if on_cuda else "cpu",
        dtype=dt.name,
    )
    if on_cuda:
        dev = _cuda.native_problem(problem)

        def advance(budget: int) -> int:
            return int(_cuda.native().cuda_train_advance(dev, batch, code, **args, max_steps=budget))
    else:

        def advance(budget: int) -> int:
            return int(_core.train_advance(problem._native, batch, **args, max_steps=budget))

    status = batch.array("status")

    def postfix() -> str:
        live = batch.array("step")[status == FlowStatus.RUNNING]
        return f"step_min={live.min()}" if live.size else "done"

    run_in_slices(
        advance,
        result,
        progress=progress,
        desc=method,
        unit="run",
        postfix=postfix,
        start=time.perf_counter(),
        budget=64,
        max_budget=1 << 24,
    )
    return result
