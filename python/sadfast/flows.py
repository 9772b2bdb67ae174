"""Batched gradient flows ``d theta/dt = -grad L(theta)``: per-flow adaptive Dormand-Prince 5(4).

Each flow has its own step size, events, status and counters; the native driver hands flows to
threads dynamically, so no flow waits for another. Steps are never shortened to land on
``t_end`` or a save time: values there come from the method's 4th-order continuous extension.
This makes slicing, checkpointing and resuming exact: a solve to T1 resumed to T2 is bitwise the
same as a solve to T2.
"""

from __future__ import annotations

import json
import math
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _core
from . import cuda as _cuda
from ._slices import BatchViews, run_in_slices
from ._status import FlowStatus
from ._validation import as_real_array, check_finite_float, check_int, check_optional_bool
from .mlp import MLP, Problem

FloatArray = NDArray[np.float64]
_FORMAT = "sadfast.FlowResult/2"
FlowMethod = Literal["dopri5", "tsit5", "rkc", "auto", "rosw"]  # the integrators of solve_flows
METHODS = {"dopri5": 0, "rkc": 1, "auto": 2, "rosw": 3, "tsit5": 4}
CudaFlowMethod = Literal["dopri5", "tsit5", "rkc", "rosw", "auto"]  # those of them on the GPU
# cuda/rk45.cu, cuda/rkc.cu, cuda/rosw.cu (ROSW with a Lanczos rank only); auto: the three in turn
CUDA_METHODS: tuple[CudaFlowMethod, ...] = ("dopri5", "tsit5", "rkc", "rosw", "auto")
_LANCZOS_METHODS = ("rosw", "auto")  # the methods with a Hessian approximation (hessian_rank)
_CUDA_METHOD_NAMES = ", ".join(map(repr, CUDA_METHODS[:-1])) + f" and {CUDA_METHODS[-1]!r}"
# Revision of each method's numbers: bumped whenever a change to the native integrator changes
# what a method computes, so that work saved by one revision is never silently continued by
# another (basin stores and FlowResult checkpoints record it). 2: ROSW refreshes that stop once
# the stiff part is resolved, every 20 steps, auto's earlier stiffness test and earlier ROSW
# (sadfast 0.1.0, session 6). auto 3: its way back to the stiff methods after a give-up no longer
# grows past 60 steps, and RKC's first spectral radius is warm-started (session 7). rosw 3, auto 4:
# a Lanczos flow keeps only the Ritz pairs its refresh made (other memory layout), and
# hessian_rank=None caps Lanczos at min(P - 1, 256, max(32, 2^18 / (P + 1))) steps, not 32
# (session 9). rosw 4, auto 5: Lanczos starts from the flow's f(y), not a fixed vector, so flows
# on invariant subspaces of the gradient field stay there (session 22).
INTEGRATOR_REVISION = {"dopri5": 1, "tsit5": 1, "rkc": 1, "rosw": 4, "auto": 5}
_ROSW_MAX_PARAMS = 1024  # the exact path keeps P x P numbers per flow
_ROSW_DEFAULT_RANK = 32  # hessian_rank=None: exact for P <= 32, else Lanczos with a cap ...
_ROSW_DEFAULT_MAX_RANK = 256  # ... of at most 256 steps ...
_ROSW_DEFAULT_NUMBERS = 2**18  # ... and at most 2^18 numbers (2 MiB) per flow, but at least 32
_MAX_TRAJECTORY_BYTES = 16 * 2**30
# ROSW on the GPU (cuda/rosw.cu): a Lanczos rank 1 <= m <= min(P - 1, 64) (api.hpp's kMaxGpuRank);
# hessian_rank=None there means min(P - 1, 32): m (P + 1) numbers per flow live on the device, and
# on the benchmark problems rank 8 already steps as well as the CPU's default on poly1d/poly2d, 32
# on poly4d up to t = 3e3 (+12% at 1e4; benchmarks/results/rosw_rank.json, session 18).
_CUDA_MAX_RANK = 64
_CUDA_DEFAULT_RANK = 32


@dataclass(frozen=True)
class SolverSettings:
    """Everything that defines a solve besides the model, data and initial values."""

    t0: float
    t_end: float
    rtol: float
    atol: float
    max_step: float
    max_steps: int
    loss_below: float | None
    grad_norm_below: float | None
    theta_norm_above: float | None
    method: str = "dopri5"
    hessian_rank: int = 0  # ROSW's W: 0 the exact Hessian, m >= 1 a rank-m Lanczos approximation

    @classmethod
    def checked(
        cls,
        *,
        t0: Any = 0.0,
        t_end: Any,
        rtol: Any = 1e-6,
        atol: Any = 1e-9,
        max_step: Any = math.inf,
        max_steps: Any = 1_000_000,
        loss_below: Any = None,
        grad_norm_below: Any = None,
        theta_norm_above: Any = None,
        method: Any = "dopri5",
        hessian_rank: Any = 0,
    ) -> SolverSettings:
        """Validated settings: a TypeError/ValueError naming the argument for anything invalid."""
        t0_f = check_finite_float(t0, "t0")
        t_end_f = check_finite_float(t_end, "t_end")
        if not t_end_f > t0_f:
            raise ValueError(f"t_end: expected a time after t0 = {t0_f:g}, got {t_end}")
        rtol_f = _positive(rtol, "rtol")
        if rtol_f < 100 * np.finfo(float).eps:
            raise ValueError(
                f"rtol: expected >= {100 * np.finfo(float).eps:.3g} (100 machine epsilons), got {rtol}"
            )
        return cls(
            t0=t0_f,
            t_end=t_end_f,
            rtol=rtol_f,
            atol=_positive(atol, "atol"),
            max_step=_positive(max_step, "max_step", allow_inf=True),
            max_steps=check_int(max_steps, "max_steps", minimum=1),
            loss_below=_positive_or_none(loss_below, "loss_below"),
            grad_norm_below=_positive_or_none(grad_norm_below, "grad_norm_below"),
            theta_norm_above=_positive_or_none(theta_norm_above, "theta_norm_above"),
            method=_check_method(method),
            hessian_rank=check_int(hessian_rank, "hessian_rank", minimum=0),
        )

    def native(self) -> dict[str, Any]:
        nan = float("nan")
        return {
            "method": METHODS[self.method],
            "rtol": self.rtol,
            "atol": self.atol,
            "t_end": self.t_end,
            "max_step": self.max_step,
            "max_steps": self.max_steps,
            "loss_below": nan if self.loss_below is None else self.loss_below,
            "grad_norm_below": nan if self.grad_norm_below is None else self.grad_norm_below,
            "theta_norm_above": nan if self.theta_norm_above is None else self.theta_norm_above,
            "jac_rank": self.hessian_rank,
        }


@dataclass
class _Saves:
    times: FloatArray
    loss: FloatArray
    grad_norm: FloatArray
    theta_norm: FloatArray
    theta: FloatArray | None

    @classmethod
    def empty(cls, K: int, P: int, times: FloatArray, trajectory: bool) -> _Saves:
        S = times.size
        nan = np.full((K, S), np.nan)
        theta = np.full((K, S, P), np.nan) if trajectory else None
        return cls(times, nan, nan.copy(), nan.copy(), theta)

    def native(self) -> dict[str, Any]:
        return {
            "save_times": self.times,
            "save_loss": self.loss,
            "save_grad_norm": self.grad_norm,
            "save_theta_norm": self.theta_norm,
            "save_theta": self.theta,
        }


@dataclass
class FlowResult(BatchViews):
    """Outcome of :func:`solve_flows` for K flows; also its own checkpoint.

    Per flow (shape ``(K,)`` unless noted): ``t`` (t_end, the event time, or the time of the
    last accepted step of a failed flow), ``theta`` ``(K, P)`` at ``t``, ``loss``, ``grad_norm``,
    ``theta_norm`` at ``t``, ``status`` (:class:`FlowStatus` codes), ``n_grad_evals`` (gradient
    evaluations of the integration, as scipy's nfev), ``n_accepted``, ``n_rejected``,
    ``n_output_evals`` (extra evaluations for values at save times and t_end).
    At the ``save_at`` times ``(S,)``: ``trace_loss``, ``trace_grad_norm``, ``trace_theta_norm``
    ``(K, S)`` (NaN where a flow stopped before that time) and, with ``store="trajectory"``,
    ``trace_theta`` ``(K, S, P)``.
    """

    problem: Problem
    settings: SolverSettings
    _batch: Any = field(repr=False)
    _saves: _Saves = field(repr=False)
    wall_time: float = 0.0
    device: str = "cpu"  # where it was integrated; its arrays are on the host either way
    dtype: str = "float64"
    # INTEGRATOR_REVISION of the method that computed it (checkpoints from before: 1)
    integrator_revision: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.integrator_revision == 0:
            self.integrator_revision = INTEGRATOR_REVISION[self.settings.method]

    # ---- per-flow results (read-only views of the native state) ----
    @property
    def t(self) -> FloatArray:
        return self._view("t_out")

    @property
    def theta(self) -> FloatArray:
        return self._view("theta_out")

    @property
    def loss(self) -> FloatArray:
        return self._view("loss_out")

    @property
    def grad_norm(self) -> FloatArray:
        return self._view("grad_norm_out")

    @property
    def theta_norm(self) -> FloatArray:
        return self._view("theta_norm_out")

    @property
    def n_grad_evals(self) -> NDArray[np.int64]:
        return self._view("n_grad")

    @property
    def n_accepted(self) -> NDArray[np.int64]:
        return self._view("n_accepted")

    @property
    def n_rejected(self) -> NDArray[np.int64]:
        return self._view("n_rejected")

    @property
    def n_output_evals(self) -> NDArray[np.int64]:
        return self._view("n_output_evals")

    @property
    def n_hvp(self) -> NDArray[np.int64]:
        """Hessian-vector products (spectral-radius estimates of the stabilized methods)."""
        return self._view("n_hvp")

    @property
    def save_at(self) -> FloatArray:
        return self._saves.times

    @property
    def trace_loss(self) -> FloatArray:
        return self._saves.loss

    @property
    def trace_grad_norm(self) -> FloatArray:
        return self._saves.grad_norm

    @property
    def trace_theta_norm(self) -> FloatArray:
        return self._saves.theta_norm

    @property
    def trace_theta(self) -> FloatArray | None:
        return self._saves.theta

    def summary(self) -> str:
        """A few lines a person reads at a glance."""
        s = self.settings
        lines = [
            f"FlowResult: K={self.K} flows of {self.problem.model!r}, N={self.problem.n_points}",
            f"  t in [{s.t0:g}, {s.t_end:g}], rtol={s.rtol:g}, atol={s.atol:g}, {s.method}; wall {self.wall_time:.3g} s",
            "  status: " + ", ".join(f"{k} {v}" for k, v in self.status_counts().items()),
        ]
        loss = self.loss[np.isfinite(self.loss)]
        if loss.size:
            q = np.quantile(loss, [0.0, 0.1, 0.5, 0.9, 1.0])
            lines.append("  final loss min/10%/50%/90%/max: " + " / ".join(f"{v:.3e}" for v in q))
        tn = self.theta_norm[np.isfinite(self.theta_norm)]
        if tn.size:
            lines.append(f"  final |theta| median {np.median(tn):.4g}, max {tn.max():.4g}")
        ev = self.n_grad_evals
        lines.append(
            f"  gradient evaluations per flow: median {np.median(ev):.0f}, max {ev.max()}, total {ev.sum()}"
        )
        if self.n_hvp.any():
            lines.append(
                f"  Hessian-vector products per flow: median {np.median(self.n_hvp):.0f}, max {self.n_hvp.max()}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    # ---- checkpoint -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write everything needed to inspect and resume this solve (model, data, settings, the
        full integrator state and the traces) to one ``.npz`` file."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz")
        m = self.problem.model
        payload: dict[str, Any] = {f"state_{n}": self._batch.array(n) for n in _core.FlowBatch.fields}
        payload["jac_index"], payload["jac_pool"] = self._batch.jac_export()
        payload.update(
            format=np.array(_FORMAT),
            widths=np.array(m.widths),
            activation=np.array(m.activation),
            loss_name=np.array(m.loss_name),
            weight_decay=np.array(m.weight_decay),
            X=self.problem.X,
            Y=self.problem.Y,
            settings=np.array(json.dumps(_settings_dict(self.settings))),
            save_times=self._saves.times,
            save_loss=self._saves.loss,
            save_grad_norm=self._saves.grad_norm,
            save_theta_norm=self._saves.theta_norm,
            wall_time=np.array(self.wall_time),
            device=np.array(self.device),
            dtype=np.array(self.dtype),
            integrator_revision=np.array(self.integrator_revision),
        )
        if self._saves.theta is not None:
            payload["save_theta"] = self._saves.theta
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **payload)
        tmp.replace(path)  # a checkpoint is written completely or not at all
        return path


def _settings_dict(s: SolverSettings) -> dict[str, Any]:
    return {k: getattr(s, k) for k in s.__dataclass_fields__}


def load_result(path: str | Path) -> FlowResult:
    """Read a :meth:`FlowResult.save` checkpoint (model and data included)."""
    # np.load on an open file, not a path: numpy leaves its own handle open when the archive is
    # corrupt.
    not_ours = f"path: {path} is not a sadfast FlowResult checkpoint ({_FORMAT})"
    with open(Path(path), "rb") as fh:
        try:
            archive = np.load(fh, allow_pickle=False)
        except (ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{not_ours}: {e}") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{not_ours}: a single .npy array")
        with archive as z:
            if "format" not in z or str(z["format"]) != _FORMAT:
                raise ValueError(not_ours)
            try:
                return _result_from_archive(z)
            except KeyError as e:  # NpzFile's message names the missing entry
                raise ValueError(f"path: {path} is a damaged sadfast checkpoint: {e.args[0]}") from None


def _result_from_archive(z: Any) -> FlowResult:
    """The FlowResult stored in an open checkpoint archive (a KeyError for a missing entry)."""
    model = MLP(
        [int(w) for w in z["widths"]],
        str(z["activation"]),
        str(z["loss_name"]),
        float(z["weight_decay"]),
    )
    problem = Problem._from_valid(model, np.array(z["X"]), np.array(z["Y"]))
    settings = SolverSettings(**json.loads(str(z["settings"])))
    K, P = z["state_y"].shape
    batch = _core.FlowBatch(K, P)
    for n in _core.FlowBatch.fields:
        key = f"state_{n}"
        if key not in z and n == "jac_age":
            continue  # checkpoints written before ROSW existed
        if key not in z and n == "give_ups":
            key = "state_no_rkc"  # its name before give-ups could be undone (0 or 1 there)
        batch.array(n)[...] = z[key]
    if "jac_index" in z:
        batch.jac_import(np.array(z["jac_index"]), np.array(z["jac_pool"]))
    saves = _Saves(
        np.array(z["save_times"]),
        np.array(z["save_loss"]),
        np.array(z["save_grad_norm"]),
        np.array(z["save_theta_norm"]),
        np.array(z["save_theta"]) if "save_theta" in z else None,
    )
    device = str(z["device"]) if "device" in z else "cpu"
    dtype = str(z["dtype"]) if "dtype" in z else "float64"
    revision = int(z["integrator_revision"]) if "integrator_revision" in z else 1
    return FlowResult(problem, settings, batch, saves, float(z["wall_time"]), device, dtype, revision)


# ---- solving ---------------------------------------------------------------------------------


def _positive(value: Any, name: str, *, allow_inf: bool = False) -> float:
    """A positive (finite unless `allow_inf`) number, or a TypeError/ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a positive number, got {type(value).__name__}")
    v = float(value)
    if not (v > 0) or (math.isinf(v) and not allow_inf):
        raise ValueError(
            f"{name}: expected a positive {'number' if allow_inf else 'finite number'}, got {value}"
        )
    return v


def _positive_or_none(value: Any, name: str) -> float | None:
    return None if value is None else _positive(value, name)


def _resolve_rank(hessian_rank: Any, P: int) -> int:
    """The native rank code of ``hessian_rank`` for a model with P parameters (0: exact)."""
    if hessian_rank is None:
        if P <= _ROSW_DEFAULT_RANK:
            return 0
        return min(P - 1, _ROSW_DEFAULT_MAX_RANK, max(_ROSW_DEFAULT_RANK, _ROSW_DEFAULT_NUMBERS // (P + 1)))
    m = check_int(hessian_rank, "hessian_rank", minimum=0)
    return 0 if m >= P else m


def _check_rank_used(method: str, hessian_rank: Any) -> None:
    """Refuse a rank given to a method without a Hessian approximation (it would be ignored)."""
    if hessian_rank is not None and method not in _LANCZOS_METHODS:
        raise ValueError(
            f"hessian_rank: only methods {list(_LANCZOS_METHODS)} use a Hessian approximation; "
            f"method={method!r} would ignore hessian_rank={hessian_rank!r} (leave it None)"
        )


def _check_exact_fits(rank: int, P: int) -> None:
    """Refuse exact Hessians (rank 0) where their P x P numbers per flow are too many."""
    if rank == 0 and P > _ROSW_MAX_PARAMS:
        raise ValueError(
            f"hessian_rank: the exact Hessian (0) keeps P x P numbers per flow, for P <= {_ROSW_MAX_PARAMS}; "
            f"this model has P = {P} (use a Lanczos rank, e.g. hessian_rank={_ROSW_DEFAULT_RANK}, or None)"
        )


def _cuda_max_rank(P: int) -> int:
    """The largest Lanczos rank of GPU ROSW for P parameters (the smallest is 1)."""
    return min(P - 1, _CUDA_MAX_RANK)


def _resolve_cuda_rank(hessian_rank: Any, P: int, method: str = "rosw") -> int:
    """The Lanczos rank of a GPU ROSW (or auto) solve (the GPU has no exact-Hessian variant)."""
    top = _cuda_max_rank(P)
    if hessian_rank is None:
        return min(P - 1, _CUDA_DEFAULT_RANK)
    m = check_int(hessian_rank, "hessian_rank", minimum=0)
    if not 1 <= m <= top:
        raise ValueError(
            f"hessian_rank: method={method!r} on device='cuda' takes a Lanczos rank 1..{top} (P = {P}), got {m} "
            "(the exact Hessian, 0 or >= P, runs on the CPU)"
        )
    return m


def _check_method(method: Any) -> str:
    """``method`` if it names an integrator, else a TypeError/ValueError naming the argument."""
    if not isinstance(method, str):
        raise TypeError(f"method: expected a name, one of {list(METHODS)}, got {type(method).__name__}")
    if method not in METHODS:
        raise ValueError(f"method: unknown name {method!r}; expected one of {list(METHODS)}")
    return method


def _save_times(save_at: ArrayLike | None, t0: float, t_end: float) -> FloatArray:
    if save_at is None:
        return np.zeros(0)
    ts = as_real_array(save_at, "save_at", ndims=(1,))
    if ts.size and (np.any(np.diff(ts) <= 0)):
        raise ValueError("save_at: expected strictly increasing times")
    if ts.size and (ts[0] < t0 or ts[-1] > t_end):
        raise ValueError(
            f"save_at: expected times in [t0, t_end] = [{t0:g}, {t_end:g}], got [{ts[0]:g}, {ts[-1]:g}]"
        )
    return ts


def solve_flows(
    problem: Problem,
    theta0: ArrayLike,
    t_end: float,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    save_at: ArrayLike | None = None,
    loss_below: float | None = None,
    grad_norm_below: float | None = None,
    theta_norm_above: float | None = None,
    max_steps: int = 1_000_000,
    max_step: float = math.inf,
    first_step: float | None = None,
    method: FlowMethod | None = None,
    hessian_rank: int | None = None,
    store: Literal["summary", "trajectory"] = "summary",
    progress: bool | None = None,
    t0: float = 0.0,
    device: str | None = None,
    dtype: str = "float64",
) -> FlowResult:
    """Integrate ``d theta/dt = -grad L(theta)`` from ``theta0`` for every flow at once.

    Parameters
    ----------
    problem
        A model bound to its data (:meth:`MLP.bind`).
    theta0
        Initial parameters ``(K, P)`` (or ``(P,)`` for one flow).
    t_end
        Final time (> t0).
    rtol, atol
        Tolerances of the per-flow error control (RMS norm, as scipy's RK45).
    save_at
        Strictly increasing times in ``[t0, t_end]`` at which loss, gradient norm and parameter
        norm are recorded for every flow (``trace_*`` of the result, ``(K, S)``); with
        ``store="trajectory"`` also theta ``(K, S, P)``.
    loss_below, grad_norm_below, theta_norm_above
        Events: a flow stops, with its own status, at the end of the first accepted step where
        its loss <= ``loss_below``, its gradient norm <= ``grad_norm_below`` or its parameter norm
        >= ``theta_norm_above`` (checked at step ends; checked in this order).
    max_steps
        Attempted steps (accepted + rejected) allowed per flow; beyond, status ``MAX_STEPS``.
    max_step, first_step
        Largest step; initial step (default: Hairer's rule, as scipy).
    method
        None (default): ``"auto"`` on the CPU, ``"dopri5"`` on the GPU (``"tsit5"``, ``"rkc"``,
        and ``"rosw"`` and ``"auto"`` with a Lanczos rank run there too).
        ``"auto"`` is Dormand-Prince, bitwise, until a flow turns stiff; at equal rtol it was at
        most 1% slower on average (single flows up to 8%, just after switching) and up to 5x
        faster at t = 100 on the benchmark problems. Its stiff methods (orders 2 and 3) give final values ~1e-5 from
        Dormand-Prince's (which are ~3e-8 from a tight reference at rtol 1e-6). For 5th-order
        accuracy at a given rtol, or scipy's exact steps, pass ``"dopri5"``.
        ``"dopri5"``: Dormand-Prince 5(4), explicit (step sizes follow scipy's RK45 exactly).
        ``"tsit5"``: Tsitouras 5(4), explicit, the same stepper, controller and events with
        Tsitouras' table and 4th-order continuous extension (CPU and GPU).
        ``"rkc"``: Runge-Kutta-Chebyshev, 2nd order, stabilized explicit: each step uses
        ``s ~ sqrt(1.54 h rho)`` stages, ``rho`` the largest |eigenvalue| of the Hessian (power
        iteration on exact Hessian-vector products, refreshed every 25 steps and after a rejection),
        so the step follows accuracy rather than stability. Much cheaper on long horizons, where
        gradient flows are stiff (``n_hvp`` counts the Hessian-vector products). Values at save
        times and t_end come from cubic Hermite interpolation (from a sub-step where h lambda_max > 100).
        ``"auto"``: per flow, Dormand-Prince while the flow is not stiff, RKC once it is (switched
        by Hairer's stiffness test on the Dormand-Prince stages), ROSW on long stiff stretches
        (t * lambda_max >= 300), and back to Dormand-Prince when the flow is no longer stiff; on a
        flow where the stiff methods keep failing (non-smooth, e.g. ReLU) they are given up for
        a while, and Dormand-Prince returns to them after 60 stiff steps (README "Long horizons").
        ``"rosw"``: the Rosenbrock W-method ROS34PW2 (Rang and Angermann; order 3 with an embedded
        order 2, L-stable): linearly implicit with an approximation of the flow's Hessian built
        from exact Hessian-vector products (``n_hvp``; see ``hessian_rank``), reused for up to 20
        steps (exact Hessians: 100) through its eigenpairs and refreshed after a rejection; 4 gradients per step
        whatever the stiffness. For long horizons. Values at save times and t_end: cubic Hermite (a sub-step where h lambda_max > 100).
    hessian_rank
        The Hessian approximation of ``"rosw"`` (and of ``"auto"``'s Rosenbrock mode). On the GPU
        a Lanczos rank 1..min(P - 1, 64), None meaning min(P - 1, 32) there (on the benchmark
        problems 8 steps as well as the CPU's default on poly1d and poly2d, 32 on poly4d to
        t = 3e3, 64 beyond; benchmarks/results/rosw_rank.json); on the CPU: ``0``: the
        exact Hessian, P Hessian-vector products per refresh and a dense eigendecomposition, P x P
        numbers per flow (P <= 1024). ``m >= 1``: matrix-free, the Ritz pairs of at most m Lanczos
        steps (one product each; a refresh stops after 8, 12, ... steps once the eigenvalues
        above 0.05 / h are resolved; at most m (P + 1) numbers per flow, any P); stiff directions
        it misses are integrated explicitly, at small steps. None (default): exact for P <= 32,
        else Lanczos with m = min(P - 1, 256, max(32, 2^18 / (P + 1))) (256 up to P = 1023, 209
        for P = 1249; at most 2 MiB per flow beyond). Refreshes stop early, so the cap costs
        nothing where fewer steps resolve the stiff part (poly1d, poly2d: results as with m = 32);
        where it does not, a low cap costs steps: on 4-32-32-1 nets at t = 1e4 rank 32 took 12%
        more gradient-equivalents than the default and rank 16 3.7x (rosw_rank.json).
        Lanczos measured better than exact Hessians on every benchmark problem. Values >= P mean
        exact. Other methods use no Hessian approximation: for them a rank other than None is an
        error, not ignored.
    progress
        tqdm progress bar over finished flows (default: when stderr is a terminal).
    device
        ``"cpu"``, ``"cuda"``, ``"auto"`` or None (the model's device; the GPU for a cupy
        ``theta0``). On the GPU each flow is integrated by one warp inside one kernel, with the
        same step-size control; ``method="dopri5"`` (the default there), ``"tsit5"``, or for long
        horizons ``"rkc"``, ``"rosw"`` or ``"auto"`` (Lanczos ranks only; auto runs the three
        methods' kernels in turn, each on the flows in its mode, switching by the CPU's rules).
        Results come back to the host.
    dtype
        ``"float64"`` (default) or ``"float32"`` (GPU only: state and gradients in single
        precision, times and step sizes in double; use ``rtol >= 1e-5``).

    Returns
    -------
    FlowResult
        Per-flow final values, status and statistics, traces at ``save_at``. A failing flow
        (NaN, step underflow, max_steps) gets its own status; the other flows are unaffected,
        bitwise. On Ctrl-C the ``KeyboardInterrupt`` carries the partial, resumable result as
        its ``result`` attribute.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"problem: expected sadfast.Problem (model.bind(X, Y)), got {type(problem).__name__}")
    progress = check_optional_bool(progress, "progress")
    on_cuda = problem._on_cuda(theta0, device, dtype)
    if on_cuda:
        dev_theta, dt, K, _ = problem._cuda_theta(theta0, "theta0", dtype)
        P = problem.model.P
        th = None
    else:
        th = problem.model._theta(theta0, "theta0")
        th = th[None, :] if th.ndim == 1 else th
        K, P = th.shape
    name = ("dopri5" if on_cuda else "auto") if method is None else _check_method(method)
    _check_rank_used(name, hessian_rank)
    settings = SolverSettings.checked(
        t0=t0,
        t_end=t_end,
        rtol=rtol,
        atol=atol,
        max_step=max_step,
        max_steps=max_steps,
        loss_below=loss_below,
        grad_norm_below=grad_norm_below,
        theta_norm_above=theta_norm_above,
        method=name,
        hessian_rank=(
            _resolve_cuda_rank(hessian_rank, P, name)
            if on_cuda and name in _LANCZOS_METHODS
            else _resolve_rank(hessian_rank, P)
        ),
    )
    if on_cuda and settings.method not in CUDA_METHODS:
        raise ValueError(f"method: device='cuda' supports {_CUDA_METHOD_NAMES}, got {settings.method!r}")
    if settings.method in _LANCZOS_METHODS:
        _check_exact_fits(settings.hessian_rank, P)
    t0, t_end_f = settings.t0, settings.t_end
    fs = _positive_or_none(first_step, "first_step")
    if store not in ("summary", "trajectory"):
        raise ValueError(f"store: expected 'summary' or 'trajectory', got {store!r}")
    times = _save_times(save_at, t0, t_end_f)
    if store == "trajectory" and K * times.size * P * 8 > _MAX_TRAJECTORY_BYTES:
        raise ValueError(
            f"store: 'trajectory' needs {K * times.size * P * 8 / 2**30:.1f} GiB for theta (K, S, P); "
            "use fewer flows or save times, or store='summary'"
        )
    saves = _Saves.empty(K, P, times, store == "trajectory")
    batch = _core.FlowBatch(K, P)
    start = time.perf_counter()
    native = settings.native()
    if on_cuda:
        result = FlowResult(problem, settings, batch, saves, device="cuda", dtype=dt.name)

        def initialize(run: _CudaRun) -> None:
            _cuda.native().cuda_flows_initialize(
                run.problem,
                run.flows,
                dev_theta.ptr,
                t0,
                0.0 if fs is None else fs,
                **run.native,
                **run.saves,
            )

        return _run(result, progress, start, cuda_init=initialize)
    assert th is not None
    _core.flows_initialize(
        problem._native, batch, th, t0, 0.0 if fs is None else fs, **native, **saves.native()
    )
    result = FlowResult(problem, settings, batch, saves)
    return _run(result, progress, start)


class _CudaRun:
    """A FlowResult's state and save buffers on the GPU for the length of a ``with`` block:
    uploaded on entry (unless a new solve initializes them there), downloaded on exit (also on
    Ctrl-C or an error), so the host result is always complete and resumable."""

    def __init__(self, result: FlowResult, *, upload: bool = True) -> None:

        self.result = result
        self._upload = upload
        dt = np.dtype(result.dtype)
        code = _cuda.dtype_code(dt)
        K, P = result.K, int(result._batch.P)
        self.problem = _cuda.native_problem(result.problem)
        method = result.settings.method
        rank = result.settings.hessian_rank if method in _LANCZOS_METHODS else 0
        self.flows = _cuda.native().CudaFlows(K, P, code, METHODS[method], rank)
        sv = result._saves
        self._times = _cuda.DeviceArray.from_host(sv.times, np.dtype(np.float64))
        self._traces = [
            _cuda.DeviceArray.from_host(a, np.dtype(np.float64))
            for a in (sv.loss, sv.grad_norm, sv.theta_norm)
        ]
        self._theta = None if sv.theta is None else _cuda.DeviceArray.from_host(sv.theta, dt)
        native = result.settings.native()
        native.pop("jac_rank")
        self.native = native
        self.saves = {
            "save_times": self._times.ptr,
            "n_save": int(sv.times.size),
            "save_loss": self._traces[0].ptr,
            "save_grad_norm": self._traces[1].ptr,
            "save_theta_norm": self._traces[2].ptr,
            "save_theta": 0 if self._theta is None else self._theta.ptr,
        }

    def __enter__(self) -> _CudaRun:
        if self._upload:
            self.flows.upload(self.result._batch)
        return self

    def __exit__(self, *exc: Any) -> None:
        sv = self.result._saves
        self.flows.download(self.result._batch)
        sv.loss[...], sv.grad_norm[...], sv.theta_norm[...] = (a.host() for a in self._traces)
        if self._theta is not None and sv.theta is not None:
            sv.theta[...] = self._theta.host()


def resume(
    result: FlowResult | str | Path,
    t_end: float,
    *,
    save_at: ArrayLike | None = None,
    progress: bool | None = None,
    device: str | None = None,
) -> FlowResult:
    """Continue a solve (a :class:`FlowResult` or a checkpoint path) to a later ``t_end``.

    Flows that reached the old t_end continue; flows stopped by events or failures stay as
    they are. ``save_at`` may extend the old save times (it must start with them). The result
    is bitwise identical to a single solve to ``t_end`` with the same save times (on the same
    device; ``device`` defaults to the one the result was integrated on).
    """
    progress = check_optional_bool(progress, "progress")
    res = load_result(result) if isinstance(result, (str, Path)) else result
    if not isinstance(res, FlowResult):
        raise TypeError(f"result: expected a FlowResult or a checkpoint path, got {type(res).__name__}")
    old = res.settings
    if res.integrator_revision != INTEGRATOR_REVISION[old.method]:
        warnings.warn(
            f"result: computed by revision {res.integrator_revision} of the {old.method!r} integrator; "
            f"this sadfast continues it with revision {INTEGRATOR_REVISION[old.method]}, whose numbers "
            "differ: the result will not be bitwise the same as one solve by either",
            stacklevel=2,
        )
    t_end_f = check_finite_float(t_end, "t_end")
    if not t_end_f >= old.t_end:
        raise ValueError(f"t_end: expected a time >= the previous t_end = {old.t_end:g}, got {t_end}")
    times = res._saves.times if save_at is None else _save_times(save_at, old.t0, t_end_f)
    S_old = res._saves.times.size
    if times.size < S_old or not np.array_equal(times[:S_old], res._saves.times):
        raise ValueError("save_at: must start with the save times of the solve being resumed")
    K, P = res.K, int(res._batch.P)
    saves = _Saves.empty(K, P, times, res._saves.theta is not None)
    for a, b in (
        (saves.loss, res._saves.loss),
        (saves.grad_norm, res._saves.grad_norm),
        (saves.theta_norm, res._saves.theta_norm),
    ):
        a[:, :S_old] = b
    if saves.theta is not None and res._saves.theta is not None:
        saves.theta[:, :S_old] = res._saves.theta
    settings = SolverSettings(**{**_settings_dict(old), "t_end": t_end_f})
    dev = res.device if device is None else _cuda.resolve_device(device)
    if dev == "cuda":
        _cuda.resolve_device("cuda")
        if settings.method not in CUDA_METHODS:
            raise ValueError(
                f"device: 'cuda' integrates methods {_CUDA_METHOD_NAMES}, this solve uses {settings.method!r}"
            )
        if settings.method in _LANCZOS_METHODS:
            _resolve_cuda_rank(settings.hessian_rank, P, settings.method)
    elif res.dtype != "float64":
        raise ValueError("device: a float32 solve continues on device='cuda' only")
    batch = res._batch  # (checked first: a refused resume leaves the result as it was)
    if t_end_f > old.t_end:
        status = batch.array("status")
        status[status == FlowStatus.REACHED_T_END] = FlowStatus.RUNNING
    new = FlowResult(res.problem, settings, batch, saves, res.wall_time, dev, res.dtype)
    return _run(new, progress, time.perf_counter() - res.wall_time)


def _run(
    result: FlowResult,
    progress: bool | None,
    start: float,
    cuda_init: Callable[[_CudaRun], None] | None = None,
) -> FlowResult:
    """Advance in slices (each exact, so an interrupted result can be resumed). On the GPU,
    ``cuda_init`` sets up a new solve's state there first (then nothing is uploaded)."""
    if result.device == "cuda":
        with _CudaRun(result, upload=cuda_init is None) as run:
            if cuda_init is not None:
                cuda_init(run)
            run_in_slices(
                lambda budget: _cuda.native().cuda_flows_advance(
                    run.problem, run.flows, **run.native, **run.saves, max_attempts=budget
                ),
                result,
                progress=progress,
                desc="flows (cuda)",
                unit="flow",
                postfix=lambda: "",
                start=start,
                budget=64,
                max_budget=1 << 24,
            )
        return result
    native = result.settings.native()
    batch, saves, prob = result._batch, result._saves, result.problem._native
    status = batch.array("status")

    def postfix() -> str:
        live = batch.array("t")[status == FlowStatus.RUNNING]
        return f"t_min={live.min():.4g}" if live.size else "done"

    run_in_slices(
        lambda budget: _core.flows_advance(prob, batch, **native, **saves.native(), max_attempts=budget),
        result,
        progress=progress,
        desc="flows",
        unit="flow",
        postfix=postfix,
        start=start,
        budget=16,
        max_budget=1 << 20,
    )
    return result
