"""Basins of initialization: where the gradient flow from every point of a slice (or a sample) of
weight space goes, computed in chunks into a resumable Zarr store, locally or on a Dask cluster.

A map is a :class:`BasinSpec`: a model and its data, the initial points (a 2-D :class:`Slice`
``theta = center + a d1 + b d2`` over a grid of ``(a, b)``, or a :class:`Sample` of initial
vectors), and the solver settings. :func:`run` integrates one flow per initial point and stores,
per flow, where it went (``outcome``: converged / diverging / undecided / optimum / failed) with
the evidence (initial, final and limit loss, final norms, stop time, gradient evaluations,
status). The store is a Zarr v3 group that :func:`open` reads as an :class:`xarray.Dataset`.

Chunks are independent: a chunk of flows is a block of rows of the grid (of the sample), aligned
with the Zarr chunks of every output, computed by one task and written by it; a chunk counts as
done only once its marker (``chunk_done``, a checksum of its outputs) is written after all its
outputs, so a run killed at any moment loses at most the chunks in flight, and running again
computes only the missing ones. Every flow's values are bitwise independent of the chunking, the
thread count and the worker that computed it, so a resumed or distributed map is identical to an
uninterrupted local one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._status import FlowStatus
from ._validation import as_real_array, check_bool, check_int, check_name, check_optional_bool
from .analysis import CRITICAL_KINDS, classify_outcomes, estimate_limit_loss, hessian_extremes
from .flows import (
    _CUDA_METHOD_NAMES,
    _LANCZOS_METHODS,
    CUDA_METHODS,
    INTEGRATOR_REVISION,
    SolverSettings,
    _check_exact_fits,
    _check_rank_used,
    _cuda_max_rank,
    _positive,
    _resolve_rank,
    solve_flows,
)
from .mlp import INIT_SCHEMES, MLP, Problem

if TYPE_CHECKING:
    import xarray

FORMAT = "sadfast.basins/1"
OUTCOMES = ("converged", "diverging", "undecided", "optimum", "failed")
NOT_COMPUTED = 255  # outcome of a flow whose chunk is not done yet
NORMALIZATIONS = ("filter", "none")
BIAS_DIRECTIONS = ("zero", "copy", "random")
_HASH_ROWS = 1 << 16  # rows of an input array hashed at a time

# Per-flow outputs: name -> (dtype, fill value, description). Fill values mark flows not computed.
OUTPUTS: dict[str, tuple[str, Any, str]] = {
    "outcome": ("uint8", NOT_COMPUTED, "where the flow went: index into OUTCOMES (255: not computed)"),
    "status": ("int8", 0, "FlowStatus code of the solver (0: not computed)"),
    "loss_init": ("float64", math.nan, "loss at the initial point"),
    "loss": ("float64", math.nan, "loss where the flow stopped"),
    "limit_loss": ("float64", math.nan, "estimated limit of the loss (analysis.estimate_limit_loss)"),
    "theta_norm": ("float64", math.nan, "parameter norm where the flow stopped"),
    "grad_norm": ("float64", math.nan, "gradient norm where the flow stopped"),
    "norm_change": ("float64", math.nan, "relative change of the norm over the tail of log t"),
    "t_stop": ("float64", math.nan, "time the flow stopped: t_end, its event time or its failure time"),
    "n_grad_evals": ("int64", 0, "gradient evaluations of the integration"),
    "n_hvp": ("int64", 0, "Hessian-vector products (stabilized methods)"),
}
# What a converged flow stopped at, for maps made with critical_points=True.
CRITICAL_POINTS = ("none", *CRITICAL_KINDS)  # none, minimum, saddle, degenerate, unresolved
# Revision of that classification, stored as the spec's "critical_points": 1 (written as true)
# called the sign of lambda_min at the stopping point whatever the residual gradient; 2 adds
# "unresolved" and the output hessian_resolution. A store is only continued by the revision that
# started it.
CRITICAL_REVISION = 2
_CRITICAL_OUTPUTS_V1: dict[str, tuple[str, Any, str]] = {
    "critical_point": (
        "uint8",
        NOT_COMPUTED,
        "Hessian type where a converged flow stopped: index into CRITICAL_POINTS (0: not converged)",
    ),
    "hessian_min": ("float64", math.nan, "smallest Hessian eigenvalue there (NaN: not converged)"),
    "hessian_max": ("float64", math.nan, "largest Hessian eigenvalue there (NaN: not converged)"),
}
CRITICAL_OUTPUTS: dict[str, tuple[str, Any, str]] = {
    **_CRITICAL_OUTPUTS_V1,
    "hessian_resolution": (
        "float64",
        math.nan,
        "sqrt(|d lambda_min / d theta| * grad_norm) there: |lambda_min| below it is unresolved (NaN: not converged)",
    ),
}


def _critical_revision(settings: Any) -> int:
    """The critical-point revision of a store's spec settings: 0 (not classified), 1 or 2."""
    value = settings.get("critical_points", False) if isinstance(settings, dict) else False
    return int(value) if isinstance(value, int) else 0  # true (revision 1) is 1, false 0


def _outputs(revision: int) -> dict[str, tuple[str, Any, str]]:
    """The per-flow outputs of a map: OUTPUTS, and the critical-point outputs of its revision."""
    return {0: OUTPUTS, 1: {**OUTPUTS, **_CRITICAL_OUTPUTS_V1}}.get(revision, {**OUTPUTS, **CRITICAL_OUTPUTS})


def _check_critical_revision(path: Path | str, stored: int) -> None:
    """A map that classifies critical points is only continued by the revision that started it."""
    if stored not in (0, CRITICAL_REVISION):
        raise BasinStoreError(
            f"store: {path} classified critical points by revision {stored} of the rule; this sadfast "
            f"({_version()}) uses revision {CRITICAL_REVISION} (adds 'unresolved': a residual gradient too "
            "large for the sign of lambda_min), whose labels differ: finish the map with the sadfast that "
            "started it, or start a new store"
        )


# ---- what a map is ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Slice:
    """Initial points ``theta[i, j] = center + a[i] * d1 + b[j] * d2`` on a grid ``(len(a), len(b))``.

    ``recipe`` records how the vectors were made (provenance only: two slices with equal arrays
    are the same slice)."""

    center: NDArray[np.float64]
    d1: NDArray[np.float64]
    d2: NDArray[np.float64]
    a: NDArray[np.float64]
    b: NDArray[np.float64]
    recipe: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("center", "d1", "d2", "a", "b"):
            v = as_real_array(getattr(self, name), f"points.{name}", ndims=(1,))
            if v.size < 1:
                raise ValueError(f"points.{name}: expected at least one value")
            object.__setattr__(self, name, v)
        if not self.center.size == self.d1.size == self.d2.size:
            raise ValueError(
                f"points: center, d1 and d2 must have one length, got {self.center.size}, "
                f"{self.d1.size} and {self.d2.size}"
            )

    @classmethod
    def random(
        cls,
        model: MLP,
        *,
        seed: int = 0,
        center: ArrayLike | None = None,
        a: tuple[float, float, int] = (-1.0, 1.0, 64),
        b: tuple[float, float, int] | None = None,
        normalization: Literal["filter", "none"] = "filter",
        bias: Literal["zero", "copy", "random"] = "zero",
        scale: Literal["lecun", "xavier_uniform"] = "lecun",
    ) -> Slice:
        """A random 2-D slice through ``center`` (default: ``model.init(seed=seed, scale=scale)``).

        Directions: ``D = default_rng([seed, 1]).standard_normal((2, P))``, ``d1 = D[0]``,
        ``d2 = D[1]``. ``normalization="filter"`` (Li et al. 2018, "Visualizing the loss landscape
        of neural nets"): every row of every weight matrix of a direction (the weights into one
        neuron) is rescaled to the norm of the same row of the center; biases follow ``bias``:
        ``"zero"`` (Li et al.'s default: the slice does not move biases), ``"copy"`` (the center's
        biases, as their code with biases kept) or ``"random"`` (left as drawn).
        ``normalization="none"`` keeps the Gaussian directions as drawn. ``a`` and ``b`` are
        ``(start, stop, count)`` of ``np.linspace`` (``b`` defaults to ``a``).
        """
        if not isinstance(model, MLP):
            raise TypeError(f"model: expected sadfast.MLP, got {type(model).__name__}")
        check_int(seed, "seed", minimum=0)
        check_name(normalization, "normalization", NORMALIZATIONS)
        check_name(bias, "bias", BIAS_DIRECTIONS)
        check_name(scale, "scale", INIT_SCHEMES)
        c = model.init(seed=seed, scale=scale) if center is None else model._theta(center, "center")
        if c.ndim != 1:
            raise ValueError(f"center: expected one parameter vector ({model.P},), got shape {c.shape}")
        D = np.random.default_rng([seed, 1]).standard_normal((2, model.P))
        if normalization == "filter":
            for d in D:
                for ly in model.layers:
                    w = d[ly.weight].reshape(ly.weight_shape)
                    cw = c[ly.weight].reshape(ly.weight_shape)
                    dn = np.linalg.norm(w, axis=1)
                    w *= (np.linalg.norm(cw, axis=1) / np.where(dn > 0, dn, 1.0))[:, None]
                    if bias == "zero":
                        d[ly.bias] = 0.0
                    elif bias == "copy":
                        d[ly.bias] = c[ly.bias]
        recipe = {
            "kind": "random",
            "seed": seed,
            "center": "init" if center is None else "given",
            "scale": scale,
            "normalization": normalization,
            "bias": bias,
            "a": list(a),
            "b": list(a if b is None else b),
        }
        return cls(
            c, D[0].copy(), D[1].copy(), _linspace(a, "a"), _linspace(a if b is None else b, "b"), recipe
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.a.size, self.b.size)

    def thetas(self, rows: slice) -> NDArray[np.float64]:
        """Initial points of grid rows ``rows`` (``a`` indices), flattened row by row: ``(n, P)``."""
        a = self.a[rows]
        th = self.center + a[:, None, None] * self.d1 + self.b[None, :, None] * self.d2
        return th.reshape(-1, self.center.size)


@dataclass(frozen=True, eq=False)
class Sample:
    """A list of initial points ``theta0`` ``(M, P)`` (e.g. :meth:`MLP.init` draws).

    ``theta0`` is a NumPy array, or a Zarr array for samples larger than memory: chunks then read
    only their own rows (NaN/Inf there is reported by the solver when the chunk runs)."""

    theta0: Any
    recipe: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        th = self.theta0
        if not isinstance(th, np.ndarray) and type(th).__module__.split(".")[0] == "zarr":
            if len(th.shape) != 2 or th.shape[0] < 1 or not np.issubdtype(th.dtype, np.floating):
                raise ValueError(
                    f"points.theta0: expected a float (M, P) array, M >= 1; got {th.shape} {th.dtype}"
                )
            return
        th = as_real_array(th, "points.theta0", ndims=(2,))
        if th.shape[0] < 1:
            raise ValueError(f"points.theta0: expected at least one initial point, got {th.shape}")
        object.__setattr__(self, "theta0", th)

    @classmethod
    def init(
        cls, model: MLP, M: int, *, seed: int = 0, scale: Literal["lecun", "xavier_uniform"] = "lecun"
    ) -> Sample:
        """``model.init(M, seed, scale)``: the reproducible initialization of the conventions."""
        return cls(
            model.init(M, seed=seed, scale=scale), {"kind": "init", "M": M, "seed": seed, "scale": scale}
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.theta0.shape[0],)

    def thetas(self, rows: slice) -> NDArray[np.float64]:
        return np.ascontiguousarray(self.theta0[rows], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class BasinSpec:
    """Everything that defines a basin map.

    Parameters
    ----------
    problem
        The model bound to its data.
    points
        A :class:`Slice` (grid of initial points) or a :class:`Sample`.
    t_end, rtol, atol, method, max_steps, loss_below, grad_norm_below, theta_norm_above
        Solver settings and events, as :func:`sadfast.solve_flows`.
    n_save
        Log-spaced save times ``np.geomspace(t_end * save_from, t_end, n_save)`` at which the
        traces that classify each flow (and estimate its limit loss) are recorded.
    save_from
        First save time as a fraction of t_end.
    device, dtype
        Where the chunks are integrated: ``"cpu"`` (float64) or ``"cuda"`` (``method`` one of
        :data:`sadfast.flows.CUDA_METHODS`; ``dtype="float64"`` or ``"float32"``), checked when a
        chunk runs, so a spec made on a machine without a GPU can be computed by GPU workers;
        ``"auto"`` (those methods, float64): each process (a Dask worker, or this one) uses its
        GPU when it has one, else its CPU, so a cluster of mixed machines works on one map. Part
        of the map's identity (GPU and CPU results agree to rounding, not bitwise: an ``"auto"``
        map's values depend on which machine computed each chunk at that level); the defaults
        leave it out of the fingerprint, so stores made before these fields existed keep theirs.
    hessian_rank
        ``"rosw"`` and ``"auto"``: the Hessian approximation, as :func:`sadfast.solve_flows`
        (resolved for the model here; one rank for every chunk, on either device).
    critical_points
        Also classify where each converged flow stopped (outputs ``critical_point``,
        ``hessian_min``, ``hessian_max``, ``hessian_resolution``): the extreme eigenvalues of the
        loss Hessian there by :func:`sadfast.analysis.hessian_extremes` (Lanczos, at most 60
        steps, exact once 60 >= P), each flow from its own start vector (seeded by its index in
        the map, so the values do not depend on the chunks), and ``unresolved`` where the
        residual gradient is too large for the sign of lambda_min (integrate longer or tighter).
        Costs at most 62 Hessian-vector products and one gradient per converged flow.
    """

    problem: Problem
    points: Slice | Sample
    t_end: float = 100.0
    rtol: float = 1e-6
    atol: float = 1e-9
    method: str = "dopri5"
    max_steps: int = 1_000_000
    loss_below: float | None = None
    grad_norm_below: float | None = None
    theta_norm_above: float | None = None
    n_save: int = 32
    save_from: float = 1e-3
    device: str = "cpu"
    dtype: str = "float64"
    hessian_rank: int | None = None
    critical_points: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.problem, Problem):
            raise TypeError(f"problem: expected sadfast.Problem, got {type(self.problem).__name__}")
        P = self.problem.model.P
        if isinstance(self.points, Slice):
            if self.points.center.size != P:
                raise ValueError(
                    f"points.center: expected ({P},) for {self.problem.model!r}, got ({self.points.center.size},)"
                )
        elif isinstance(self.points, Sample):
            if self.points.theta0.shape[1] != P:
                raise ValueError(f"points.theta0: expected (M, {P}), got {tuple(self.points.theta0.shape)}")
        else:
            raise TypeError(
                f"points: expected sadfast.basins.Slice or Sample, got {type(self.points).__name__}"
            )
        check_int(self.n_save, "n_save", minimum=8)
        if not 0 < self.save_from < 1:
            raise ValueError(f"save_from: expected a fraction in (0, 1), got {self.save_from}")
        # Validated and normalized (100 and 100.0 are one map) by the flow engine's own rules.
        st = SolverSettings.checked(**self._solver_kwargs(), max_steps=self.max_steps)
        for name in (
            "t_end",
            "rtol",
            "atol",
            "method",
            "max_steps",
            "loss_below",
            "grad_norm_below",
            "theta_norm_above",
        ):
            object.__setattr__(self, name, getattr(st, name))
        # The Rosenbrock mode's Hessian approximation, resolved for this model (0: exact); a rank
        # given to a method without one is refused.
        _check_rank_used(self.method, self.hessian_rank)
        rank = _resolve_rank(self.hessian_rank, P) if self.method in _LANCZOS_METHODS else None
        if rank is not None:
            _check_exact_fits(rank, P)
        object.__setattr__(self, "hessian_rank", rank)
        object.__setattr__(self, "critical_points", check_bool(self.critical_points, "critical_points"))
        check_name(self.device, "device", ["cpu", "cuda", "auto"])
        check_name(self.dtype, "dtype", ["float64", "float32"])
        if self.device != "cuda" and self.dtype != "float64":
            raise ValueError("dtype: float32 maps need device='cuda'")
        if self.device != "cpu" and self.method not in CUDA_METHODS:
            raise ValueError(
                f"method: device={self.device!r} integrates {_CUDA_METHOD_NAMES}, got {self.method!r}"
            )
        if self.device != "cpu" and rank is not None and not 1 <= rank <= _cuda_max_rank(P):
            # the same rank on both devices (one map), so the GPU's own default does not apply
            raise ValueError(
                f"hessian_rank: {'ROSW' if self.method == 'rosw' else 'auto'} maps on device={self.device!r} "
                "take a Lanczos rank "
                f"1..{_cuda_max_rank(P)} (P = {P}); this one resolves to {rank} (0: the exact Hessian)"
            )

    @property
    def kind(self) -> str:
        return "slice" if isinstance(self.points, Slice) else "sample"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.points.shape

    @property
    def dims(self) -> tuple[str, ...]:
        return ("a", "b") if self.kind == "slice" else ("flow",)

    @property
    def n_flows(self) -> int:
        return math.prod(self.shape)

    @property
    def outputs(self) -> dict[str, tuple[str, Any, str]]:
        """The map's per-flow outputs: name -> (dtype, fill value, description)."""
        return _outputs(CRITICAL_REVISION if self.critical_points else 0)

    @property
    def save_times(self) -> NDArray[np.float64]:
        return np.geomspace(self.t_end * self.save_from, self.t_end, self.n_save)

    def _solver_kwargs(self) -> dict[str, Any]:
        out = {
            "t_end": self.t_end,
            "rtol": self.rtol,
            "atol": self.atol,
            "method": self.method,
            "loss_below": self.loss_below,
            "grad_norm_below": self.grad_norm_below,
            "theta_norm_above": self.theta_norm_above,
        }
        # Exact Hessians (0) were all there was before the Lanczos approximation: stores made then
        # keep their fingerprint. (compute_chunk passes the rank, 0 included, to the solver.)
        if self.hessian_rank:
            out["hessian_rank"] = self.hessian_rank
        return out

    def _device_kwargs(self) -> dict[str, Any]:
        """device and dtype where they differ from the defaults (so old fingerprints stand)."""
        out: dict[str, Any] = {}
        if self.device != "cpu":
            out["device"] = self.device
        if self.dtype != "float64":
            out["dtype"] = self.dtype
        return out

    def _revision(self) -> dict[str, Any]:
        """The integrator revision of the method where it is past 1 (so old fingerprints stand for
        methods whose numbers never changed): a store is only ever continued by the same numbers."""
        rev = INTEGRATOR_REVISION[self.method]
        return {"integrator_revision": rev} if rev > 1 else {}

    def settings(self) -> dict[str, Any]:
        """The JSON-able part of the spec (the arrays are identified by their hashes)."""
        m = self.problem.model
        return {
            "model": {
                "widths": list(m.widths),
                "activation": m.activation,
                "loss": m.loss_name,
                "weight_decay": m.weight_decay,
            },
            "kind": self.kind,
            "shape": list(self.shape),
            "solver": {
                **self._solver_kwargs(),
                "max_steps": self.max_steps,
                **self._device_kwargs(),
                **self._revision(),
            },
            "n_save": self.n_save,
            "save_from": self.save_from,
            # only when asked: stores made before the field existed keep their fingerprint
            **({"critical_points": CRITICAL_REVISION} if self.critical_points else {}),
        }

    def inputs(self) -> dict[str, tuple[NDArray[np.float64], tuple[str, ...]]]:
        """The arrays that define the map, with their dimension names."""
        d_in, d_out = ("point", "input"), ("point", "output")
        out: dict[str, tuple[NDArray[np.float64], tuple[str, ...]]] = {
            "X": (self.problem.X, d_in),
            "Y": (self.problem.Y, d_out),
        }
        if isinstance(self.points, Slice):
            p = self.points
            out.update(center=(p.center, ("param",)), d1=(p.d1, ("param",)), d2=(p.d2, ("param",)))
            out.update(a=(p.a, ("a",)), b=(p.b, ("b",)))
        else:
            out["theta0"] = (self.points.theta0, ("flow", "param"))
        return out

    def fingerprint(self) -> str:
        """sha256 of the settings and of every input array's dtype, shape and bytes."""
        h = hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode())
        for name, (arr, _) in sorted(self.inputs().items()):
            h.update(f"{name}:{np.dtype(np.float64).str}:{tuple(arr.shape)}".encode())
            for i in range(0, arr.shape[0], _HASH_ROWS):  # by blocks: theta0 may be a Zarr array
                h.update(np.ascontiguousarray(arr[i : i + _HASH_ROWS], dtype=np.float64).tobytes())
        return h.hexdigest()


def _linspace(r: Any, name: str) -> NDArray[np.float64]:
    try:
        lo, hi, n = r
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (start, stop, count), got {r!r}") from None
    n = check_int(n, f"{name} count", minimum=1)
    v = as_real_array([lo, hi], name, ndims=(1,))
    return np.linspace(v[0], v[1], n)


# ---- the chunk layout ------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Chunks are blocks of ``chunk_rows`` rows along the first axis of ``shape``."""

    shape: tuple[int, ...]
    chunk_rows: int

    @classmethod
    def for_flows(cls, shape: tuple[int, ...], chunk_flows: int) -> Layout:
        row = math.prod(shape[1:])
        return cls(tuple(shape), max(1, min(shape[0], chunk_flows // row)))

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Layout:
        """The layout a store's metadata records."""
        return cls(tuple(meta["layout"]["shape"]), int(meta["layout"]["chunk_rows"]))

    @property
    def n_chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_rows)

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        return (self.chunk_rows, *self.shape[1:])

    def rows(self, c: int) -> slice:
        return slice(c * self.chunk_rows, min((c + 1) * self.chunk_rows, self.shape[0]))

    def n_flows(self, c: int) -> int:
        r = self.rows(c)
        return (r.stop - r.start) * math.prod(self.shape[1:])


# ---- computing one chunk ---------------------------------------------------------------------


def _chunk_device(device: str) -> str:
    """Where this process integrates a chunk: ``"auto"`` is its GPU when it has one."""
    if device != "auto":
        return device
    from . import cuda as _cuda

    return "cuda" if _cuda.available() else "cpu"


def compute_chunk(spec: BasinSpec, rows: slice) -> dict[str, NDArray[Any]]:
    """Integrate and classify the flows of grid rows ``rows``; outputs flattened ``(n,)``.

    Values are per flow and bitwise independent of which other flows share the chunk."""
    theta0 = spec.points.thetas(rows)
    prob = spec.problem
    ts = spec.save_times
    # The rank is passed even when it is 0 (exact Hessians), which the spec's settings leave out:
    # None would mean solve_flows' default, a Lanczos approximation for P > 32.
    res = solve_flows(
        prob,
        theta0,
        **{**spec._solver_kwargs(), "hessian_rank": spec.hessian_rank},
        max_steps=spec.max_steps,
        save_at=ts,
        progress=False,
        device=_chunk_device(spec.device),
        dtype=spec.dtype,
    )
    status = res.status.astype(np.int8)
    outc = classify_outcomes(ts, res.trace_loss, res.trace_theta_norm, res.trace_grad_norm)
    outcome = np.zeros(outc.label.shape, dtype=np.uint8)
    for code, name in enumerate(OUTCOMES):
        outcome[outc.label == name] = code
    outcome[status == FlowStatus.GRAD_NORM_BELOW] = OUTCOMES.index("converged")
    outcome[status == FlowStatus.THETA_NORM_ABOVE] = OUTCOMES.index("diverging")
    outcome[status == FlowStatus.LOSS_BELOW] = OUTCOMES.index("optimum")
    failed = status < 0
    outcome[failed] = OUTCOMES.index("failed")
    limit = estimate_limit_loss(ts, res.trace_loss)
    stopped = (status != FlowStatus.REACHED_T_END) & ~failed
    limit[stopped] = res.loss[stopped]  # an event ends the flow: its loss there is the evidence
    limit[failed] = np.nan
    values = {
        "outcome": outcome,
        "status": status,
        "loss_init": prob.loss(theta0),
        "loss": np.array(res.loss),
        "limit_loss": limit,
        "theta_norm": np.array(res.theta_norm),
        "grad_norm": np.array(res.grad_norm),
        "norm_change": outc.norm_change,
        "t_stop": np.array(res.t),
        "n_grad_evals": np.array(res.n_grad_evals, dtype=np.int64),
        "n_hvp": np.array(res.n_hvp, dtype=np.int64),
    }
    if spec.critical_points:
        first = (rows.start or 0) * math.prod(spec.shape[1:])  # the chunk's first flow in the map
        values.update(_critical_points(spec, res.theta, outcome == OUTCOMES.index("converged"), first))
    return values


_CRITICAL_SEED = 0  # flow i of a map starts its Lanczos run from default_rng([_CRITICAL_SEED, i])


def _critical_points(
    spec: BasinSpec, theta: NDArray[np.float64], converged: NDArray[np.bool_], first: int
) -> dict[str, NDArray[Any]]:
    """The Hessian type and extreme eigenvalues where each converged flow stopped; flow i of the
    map starts its Lanczos run from a vector seeded by (seed, i), so chunking changes nothing."""
    n = converged.size
    code = np.zeros(n, dtype=np.uint8)
    lmin, lmax, resolution = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    idx = np.flatnonzero(converged)
    if idx.size:
        P = spec.problem.model.P
        v0 = np.stack(
            [np.random.default_rng([_CRITICAL_SEED, first + int(i)]).standard_normal(P) for i in idx]
        )
        ex = hessian_extremes(spec.problem, theta[idx], start=v0, device=_chunk_device(spec.device))
        lmin[idx], lmax[idx], resolution[idx] = ex.lambda_min, ex.lambda_max, ex.resolution
        for c, name in enumerate(CRITICAL_POINTS):
            code[idx[ex.kind == name]] = c
    return {
        "critical_point": code,
        "hessian_min": lmin,
        "hessian_max": lmax,
        "hessian_resolution": resolution,
    }


def _checksum(values: dict[str, NDArray[Any]], outputs: dict[str, tuple[str, Any, str]]) -> int:
    """A nonzero 64-bit digest of a chunk's outputs: its done marker, and what --verify checks."""
    h = hashlib.blake2b(digest_size=8)
    for name, (dtype, _, _) in outputs.items():
        h.update(np.ascontiguousarray(values[name], dtype=dtype).tobytes())
    return int.from_bytes(h.digest(), "little") | 1


# ---- the store -------------------------------------------------------------------------------


class BasinStoreError(ValueError):
    """A path that is not a sadfast basin store, a damaged one, or one made for another spec."""


def _version() -> str:
    from . import __version__

    return f"sadfast {__version__}"


def _zarr() -> Any:
    import zarr

    return zarr


def create(path: str | Path, spec: BasinSpec, *, chunk_flows: int = 4096) -> Layout:
    """Create the store at ``path`` for ``spec`` (or check that the existing one is for it).

    Returns the chunk layout (an existing store keeps its own; ``chunk_flows`` then only has to
    be consistent with it when given explicitly through :func:`run`)."""
    path = Path(path)
    if path.exists():
        meta = _read_meta(path)
        _check_same_spec(meta, spec, path)
        return Layout.from_meta(meta)
    check_int(chunk_flows, "chunk_flows", minimum=1)
    from . import __version__

    zarr = _zarr()
    layout = Layout.for_flows(spec.shape, chunk_flows)
    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}")
    g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    for name, (arr, dims) in spec.inputs().items():
        chunks = (layout.chunk_rows, arr.shape[1]) if name == "theta0" else arr.shape
        z = g.create_array(name, shape=arr.shape, chunks=chunks, dtype="float64", dimension_names=dims)
        if name == "theta0":  # chunk by chunk, as the flows will read it
            for c in range(layout.n_chunks):
                z[layout.rows(c)] = spec.points.thetas(layout.rows(c))
        else:
            z[...] = arr
    z = g.create_array("save_times", shape=(spec.n_save,), dtype="float64", dimension_names=("save",))
    z[...] = spec.save_times
    for name, (dtype, fill, doc) in spec.outputs.items():
        attrs: dict[str, Any] = {"description": doc}
        if name == "outcome":
            attrs.update(flag_values=list(range(len(OUTCOMES))), flag_meanings=" ".join(OUTCOMES))
        if name == "critical_point":
            attrs.update(
                flag_values=list(range(len(CRITICAL_POINTS))), flag_meanings=" ".join(CRITICAL_POINTS)
            )
        if name == "status":
            attrs.update(
                flag_values=[int(s) for s in FlowStatus],
                flag_meanings=" ".join(s.name.lower() for s in FlowStatus),
            )
        g.create_array(
            name,
            shape=spec.shape,
            chunks=layout.chunk_shape,
            dtype=dtype,
            fill_value=fill,
            dimension_names=spec.dims,
            attributes=attrs,
        )
    g.create_array(
        "chunk_done",
        shape=(layout.n_chunks,),
        chunks=(1,),
        dtype="uint64",
        fill_value=0,
        dimension_names=("chunk",),
        attributes={"description": "nonzero checksum of each chunk's outputs once it is complete"},
    )
    g.attrs.update(
        {
            "format": FORMAT,
            "spec": spec.settings(),
            "fingerprint": spec.fingerprint(),
            "recipe": spec.points.recipe,
            "layout": {
                "shape": list(layout.shape),
                "chunk_rows": layout.chunk_rows,
                "n_chunks": layout.n_chunks,
            },
            "outcomes": list(OUTCOMES),
            "created_by": f"sadfast {__version__}",
        }
    )
    try:
        os.rename(tmp, path)  # the store appears complete (inputs and metadata) or not at all
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if not path.exists():
            raise
        _check_same_spec(_read_meta(path), spec, path)  # another process created it first
    return layout


def _read_meta(path: Path) -> dict[str, Any]:
    meta_file = path / "zarr.json"
    if not meta_file.is_file():
        raise BasinStoreError(f"store: {path} is not a Zarr v3 group (no zarr.json): not a sadfast basin map")
    try:
        meta = json.loads(meta_file.read_text())
        attrs = meta["attributes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BasinStoreError(
            f"store: {path}/zarr.json is damaged or not Zarr v3 group metadata ({exc})"
        ) from None
    if not isinstance(attrs, dict) or attrs.get("format") != FORMAT:
        found = attrs.get("format") if isinstance(attrs, dict) else None
        raise BasinStoreError(
            f"store: {path} is not a sadfast basin map (format {found!r}, expected {FORMAT!r})"
        )
    for key in ("spec", "fingerprint", "layout"):
        if key not in attrs:
            raise BasinStoreError(f"store: {path} is damaged: its metadata has no {key!r}")
    spec = attrs["spec"]
    for name in ("chunk_done", *_outputs(_critical_revision(spec))):
        if not (path / name / "zarr.json").is_file():
            raise BasinStoreError(f"store: {path} is damaged: array {name!r} is missing")
    return attrs


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: store has {old!r}, asked {new!r}"]


def _check_revision(path: Path | str, method: str, stored: int) -> None:
    """A store is only continued by the integrator revision that computed it."""
    current = INTEGRATOR_REVISION.get(method, 1)
    if stored != current:
        raise BasinStoreError(
            f"store: {path} was computed by revision {stored} of the {method!r} integrator; this "
            f"sadfast ({_version()}) computes revision {current}, whose numbers differ: finish the map "
            "with the sadfast that started it, or start a new store"
        )


def _check_same_spec(meta: dict[str, Any], spec: BasinSpec, path: Path) -> None:
    if meta["fingerprint"] == spec.fingerprint():
        return
    diffs = _diff(
        {**meta["spec"], "points": meta.get("recipe", {})}, {**spec.settings(), "points": spec.points.recipe}
    )
    if any(d.startswith("solver.integrator_revision") for d in diffs):
        _check_revision(path, spec.method, meta["spec"]["solver"].get("integrator_revision", 1))
    if spec.critical_points:
        _check_critical_revision(path, _critical_revision(meta["spec"]))
    detail = (
        "; ".join(diffs) if diffs else "the input arrays (data, center, directions or initial points) differ"
    )
    raise BasinStoreError(
        f"store: {path} holds a different map ({detail}). Use another --store path, or remove it to start over."
    )


@functools.lru_cache(maxsize=4)
def _spec_from_store(path: str, fingerprint: str) -> BasinSpec:
    """Rebuild the spec from a store's metadata and input arrays (what a worker does)."""
    zarr = _zarr()
    g = zarr.open_group(path, mode="r")
    s = dict(g.attrs)["spec"]
    m = s["model"]
    model = MLP(m["widths"], m["activation"], m["loss"], m["weight_decay"])
    prob = Problem._from_valid(model, np.asarray(g["X"][...]), np.asarray(g["Y"][...]))
    points: Slice | Sample
    if s["kind"] == "slice":
        center, d1, d2, a, b = (np.asarray(g[n][...]) for n in ("center", "d1", "d2", "a", "b"))
        points = Slice(center, d1, d2, a, b)
    else:
        points = Sample(g["theta0"])
    # A store's spec without a Hessian rank was computed with exact Hessians (see _solver_kwargs).
    solver = dict(s["solver"])
    if solver.get("method", "dopri5") in _LANCZOS_METHODS:
        solver.setdefault("hessian_rank", 0)
    _check_revision(path, solver.get("method", "dopri5"), solver.pop("integrator_revision", 1))
    _check_critical_revision(path, _critical_revision(s))
    spec = BasinSpec(
        prob,
        points,
        **solver,
        n_save=s["n_save"],
        save_from=s["save_from"],
        critical_points=_critical_revision(s) > 0,
    )
    if s["kind"] == "slice" and spec.fingerprint() != fingerprint:
        raise BasinStoreError(f"store: {path} is damaged: its input arrays do not match its fingerprint")
    return spec


def _stored_spec(path: Path) -> tuple[BasinSpec, Layout]:
    meta = _read_meta(path)
    spec = _spec_from_store(str(path), meta["fingerprint"])
    return spec, Layout.from_meta(meta)


def run_chunk(path: str | Path, c: int, *, threads: int | None = None) -> dict[str, Any]:
    """Compute chunk ``c`` of the store at ``path`` and write it (outputs first, marker last).

    This is the task a local thread or a Dask worker runs; it needs only the path. ``threads``
    sets the OpenMP threads of this call (results do not depend on it). Returns statistics."""
    from ._runtime import get_num_threads, set_num_threads

    path = Path(path)
    spec, layout = _stored_spec(path)
    if not 0 <= c < layout.n_chunks:
        raise ValueError(f"c: expected a chunk index in [0, {layout.n_chunks}), got {c}")
    before = get_num_threads()
    if threads is not None:
        set_num_threads(threads)
    try:
        start = time.perf_counter()
        rows = layout.rows(c)
        values = compute_chunk(spec, rows)
        seconds = time.perf_counter() - start
    finally:
        set_num_threads(before)
    g = _zarr().open_group(str(path), mode="r+")
    shape = (rows.stop - rows.start, *layout.shape[1:])
    for name in spec.outputs:
        g[name][rows] = values[name].reshape(shape)
    g["chunk_done"][c] = np.uint64(_checksum(values, spec.outputs))
    return {
        "chunk": c,
        "flows": int(values["outcome"].size),
        "grad_evals": int(values["n_grad_evals"].sum()),
        "seconds": seconds,
    }


def _done_mask(path: Path) -> NDArray[np.bool_]:
    return np.asarray(_zarr().open_array(str(path / "chunk_done"), mode="r")[...]) != 0


def _corrupted_chunks(
    path: Path, layout: Layout, done: NDArray[np.bool_], outputs: dict[str, tuple[str, Any, str]]
) -> list[int]:
    """Done chunks whose stored outputs do not match their checksum (or cannot be read)."""
    zarr = _zarr()
    g = zarr.open_group(str(path), mode="r")
    marks = np.asarray(g["chunk_done"][...])
    bad = []
    for c in np.flatnonzero(done):
        rows = layout.rows(int(c))
        try:
            values = {name: np.asarray(g[name][rows]).ravel() for name in outputs}
        except Exception:
            bad.append(int(c))
            continue
        if _checksum(values, outputs) != int(marks[c]):
            bad.append(int(c))
    return bad


# ---- running a map ---------------------------------------------------------------------------


@dataclass
class RunReport:
    """What one :func:`run` call did."""

    path: Path
    n_chunks: int
    computed: list[int]
    skipped: int
    flows: int
    grad_evals: int
    wall_s: float
    scheduler: str

    @property
    def flows_per_s(self) -> float:
        return self.flows / self.wall_s if self.wall_s > 0 else math.nan


def run(
    spec: BasinSpec | None,
    store: str | Path,
    *,
    chunk_flows: int | None = None,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    verify: bool = False,
    progress: bool | None = None,
    log_every: float | None = None,
) -> RunReport:
    """Compute the missing chunks of a basin map into the Zarr store ``store``.

    Parameters
    ----------
    spec
        The map. ``None`` continues the map already in ``store``.
    store
        Directory of the Zarr v3 store; created if absent. An existing store must hold the same
        spec (else :class:`BasinStoreError` naming the differences); its done chunks are kept.
    chunk_flows
        Flows per chunk (rounded to whole grid rows) for a new store (default 4096); a store
        keeps the layout it was created with, and a different explicit value is an error.
    client, scheduler
        A ``dask.distributed.Client``, or a scheduler address to connect one: chunks become
        Dask tasks, each worker computing and writing its chunks into the shared store (which
        must be on a file system all workers see). Each task uses one OpenMP thread per Dask
        thread of its worker. Default: chunks run in this process.
    workers
        Local threads computing chunks at once, the OpenMP threads shared among them. Default:
        one chunk per OpenMP thread, each single-threaded, when there are at least two chunks
        per thread to do (no thread then waits for the slowest flow of a chunk), else one
        chunk at a time with all threads; two chunks in flight for a ``device="cuda"`` map (one on
        the GPU while the other's outputs are classified and written).
    verify
        Check the checksums of done chunks first and recompute those that fail.
    progress
        tqdm bar over flows with flows/s and ETA (default: when stderr is a terminal).
    log_every
        Also write a progress line (chunks, flows, flows/s, ETA) to stderr at most every this
        many seconds and when done: for batch jobs whose stderr goes to a log file.

    Ctrl-C stops the run after the chunks in flight are written; running again resumes.
    """
    path = Path(store)
    progress = check_optional_bool(progress, "progress")
    if log_every is not None:
        _positive(log_every, "log_every")
    if spec is None:
        if not path.exists():
            raise ValueError(f"spec: needed to create a new store at {path}")
        spec, layout = _stored_spec(path)
    else:
        if not isinstance(spec, BasinSpec):
            raise TypeError(f"spec: expected sadfast.basins.BasinSpec or None, got {type(spec).__name__}")
        existed = path.exists()
        layout = create(path, spec, chunk_flows=4096 if chunk_flows is None else chunk_flows)
        if existed and chunk_flows is not None and Layout.for_flows(spec.shape, chunk_flows) != layout:
            raise BasinStoreError(
                f"chunk_flows: the store at {path} was made with chunks of {layout.n_flows(0)} flows "
                f"({layout.chunk_rows} grid rows); got {chunk_flows}. Omit it to keep the store's chunks."
            )
    if workers is not None:
        check_int(workers, "workers", minimum=1)
    elif _chunk_device(spec.device) == "cuda":
        # Two chunks in flight: while one integrates on the GPU (the GIL released), the other is
        # classified and written on the host; the GPU itself runs one chunk's kernels at a time.
        workers = 2
    done = _done_mask(path)
    if verify:
        for c in _corrupted_chunks(path, layout, done, spec.outputs):
            done[c] = False
    todo = [int(c) for c in np.flatnonzero(~done)]
    start = time.perf_counter()
    stats: list[dict[str, Any]] = []
    if client is None and scheduler is not None:
        from distributed import Client

        with Client(scheduler) as cl:
            name = _run_dask(cl, path, todo, layout, stats, progress, log_every)
    elif client is not None:
        name = _run_dask(client, path, todo, layout, stats, progress, log_every)
    else:
        name = _run_local(path, todo, layout, workers, stats, progress, log_every)
    return RunReport(
        path,
        layout.n_chunks,
        sorted(s["chunk"] for s in stats),
        layout.n_chunks - len(todo),
        sum(s["flows"] for s in stats),
        sum(s["grad_evals"] for s in stats),
        time.perf_counter() - start,
        name,
    )


class _Progress:
    """A tqdm bar over flows (flows/s, ETA), and/or, for batch jobs without a terminal, a line on
    stderr at most every ``log_every`` seconds and at the end."""

    def __init__(
        self,
        layout: Layout,
        todo: Sequence[int],
        enabled: bool | None,
        desc: str,
        log_every: float | None = None,
    ) -> None:
        import sys

        if enabled is None:
            enabled = sys.stderr.isatty()
        self.total = math.prod(layout.shape)
        self.flows_done = self.total - sum(layout.n_flows(c) for c in todo)
        self.flows_at_start = self.flows_done
        self.done = layout.n_chunks - len(todo)
        self.n = layout.n_chunks
        self.desc = desc
        self.log_every = log_every
        self.start = self.last_log = time.perf_counter()
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.total, initial=self.flows_done, unit="flow", desc=desc, dynamic_ncols=True
            )
            self.bar.set_postfix_str(f"{self.done}/{self.n} chunks")

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = (self.flows_done - self.flows_at_start) / elapsed if elapsed > 0 else 0.0
        left = self.total - self.flows_done
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        return (
            f"{self.desc}: {self.done}/{self.n} chunks, {self.flows_done}/{self.total} flows "
            f"({100 * self.flows_done / self.total:.1f}%), {rate:.0f} flows/s, ETA {eta}"
        )

    def update(self, s: dict[str, Any]) -> None:
        import sys

        self.done += 1
        self.flows_done += s["flows"]
        if self.bar is not None:
            self.bar.update(s["flows"])
            self.bar.set_postfix_str(f"{self.done}/{self.n} chunks")
        now = time.perf_counter()
        if self.log_every is not None and (now - self.last_log >= self.log_every or self.done == self.n):
            self.last_log = now
            print(self.line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_local(
    path: Path,
    todo: list[int],
    layout: Layout,
    workers: int | None,
    stats: list[dict[str, Any]],
    progress: bool | None,
    log_every: float | None,
) -> str:
    from ._runtime import get_num_threads

    if workers is None:
        workers = get_num_threads() if len(todo) >= 2 * get_num_threads() else 1
    bar = _Progress(layout, todo, progress, "basins", log_every)
    try:
        if workers == 1:
            for c in todo:
                stats.append(run_chunk(path, c))
                bar.update(stats[-1])
        else:
            from concurrent.futures import ThreadPoolExecutor, as_completed

            threads = max(1, get_num_threads() // workers)
            with ThreadPoolExecutor(workers) as pool:
                futures = [pool.submit(run_chunk, path, c, threads=threads) for c in todo]
                try:
                    for f in as_completed(futures):
                        stats.append(f.result())
                        bar.update(stats[-1])
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        bar.close()
    return f"local ({workers} thread{'s' if workers > 1 else ''})"


def _dask_task(path: str, c: int) -> dict[str, Any]:
    # Dask runs one task per worker thread: one OpenMP thread each, so tasks do not share cores.
    return run_chunk(path, c, threads=1)


def _run_dask(
    client: Any,
    path: Path,
    todo: list[int],
    layout: Layout,
    stats: list[dict[str, Any]],
    progress: bool | None,
    log_every: float | None,
) -> str:
    from distributed import as_completed

    meta = _read_meta(path)
    bar = _Progress(layout, todo, progress, "basins (dask)", log_every)
    futures = [
        client.submit(
            _dask_task,
            str(path.resolve()),
            c,
            key=f"sadfast-basin-{meta['fingerprint'][:12]}-{c}",
            pure=False,
            retries=2,  # a chunk is idempotent: a lost worker's chunk is computed again
        )
        for c in todo
    ]
    try:
        for f in as_completed(futures):
            stats.append(f.result())
            bar.update(stats[-1])
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        bar.close()
    return f"dask ({client.scheduler.address})"


# ---- reading a map ---------------------------------------------------------------------------


def open(path: str | Path) -> xarray.Dataset:
    """The map at ``path`` as an :class:`xarray.Dataset` (lazy, Dask-backed).

    Per-flow outputs have dims ``("a", "b")`` for a slice (with coordinates ``a`` and ``b``) or
    ``("flow",)`` for a sample; ``outcome`` is 255 and the float outputs NaN where a chunk is
    not done yet. ``attrs`` hold the spec, its fingerprint and the chunk layout.
    """
    import xarray as xr

    path = Path(path)
    _read_meta(path)
    ds = xr.open_zarr(str(path), consolidated=False, mask_and_scale=False)
    ds.attrs["outcome_names"] = list(OUTCOMES)
    return ds


@dataclass
class StoreInfo:
    """What is done and what is missing in a store."""

    path: Path
    spec: dict[str, Any]
    recipe: dict[str, Any]
    layout: Layout
    done: NDArray[np.bool_]
    outcome_counts: dict[str, int]
    grad_evals: int
    corrupted: list[int] | None
    # converged flows by CRITICAL_POINTS name (minimum / saddle / degenerate); None: not classified
    critical_counts: dict[str, int] | None = None

    @property
    def missing(self) -> list[int]:
        return [int(c) for c in np.flatnonzero(~self.done)]

    def flows_done(self) -> int:
        return sum(self.layout.n_flows(int(c)) for c in np.flatnonzero(self.done))

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "spec": self.spec,
            "recipe": self.recipe,
            "shape": list(self.layout.shape),
            "chunk_rows": self.layout.chunk_rows,
            "n_chunks": self.layout.n_chunks,
            "chunks_done": int(self.done.sum()),
            "flows": math.prod(self.layout.shape),
            "flows_done": self.flows_done(),
            "missing_chunks": _ranges(self.missing),
            "outcomes": self.outcome_counts,
            "grad_evals": self.grad_evals,
            "corrupted_chunks": None if self.corrupted is None else _ranges(self.corrupted),
            "critical_points": self.critical_counts,
        }

    def __str__(self) -> str:
        d = self.to_dict()
        s = self.spec
        m = s["model"]
        lines = [
            f"{self.path}: sadfast basin map ({s['kind']} {' x '.join(map(str, d['shape']))})",
            f"  model   {m['widths']} {m['activation']}, loss {m['loss']}, weight decay {m['weight_decay']:g}",
            "  solver  " + ", ".join(f"{k}={v}" for k, v in s["solver"].items() if v is not None),
            f"  chunks  {d['chunks_done']}/{d['n_chunks']} done ({d['flows_done']}/{d['flows']} flows, "
            f"{self.layout.chunk_rows} rows per chunk)",
            f"  missing {d['missing_chunks'] or 'none'}",
            "  outcome " + (", ".join(f"{k} {v}" for k, v in self.outcome_counts.items()) or "none yet"),
        ]
        if self.critical_counts is not None:
            counts = ", ".join(f"{k} {v}" for k, v in self.critical_counts.items())
            lines.append(f"  critical points of converged flows: {counts or 'none yet'}")
        lines.append(f"  gradient evaluations {self.grad_evals}")
        if self.corrupted is not None:
            lines.append(
                f"  verify  {'corrupted chunks: ' + d['corrupted_chunks'] if self.corrupted else 'all done chunks match their checksums'}"
            )
        return "\n".join(lines)


def _ranges(ids: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _counts(array: Any, names: Sequence[str], skip: int | None = None) -> dict[str, int]:
    """Flows per name of a stored code array (uncomputed flows and the code ``skip`` left out)."""
    codes = np.asarray(array[...]).ravel()
    keep = (codes != NOT_COMPUTED) & (codes != skip) if skip is not None else codes != NOT_COMPUTED
    values, n = np.unique(codes[keep], return_counts=True)
    return {names[int(c)]: int(k) for c, k in zip(values, n, strict=True)}


def info(path: str | Path, *, verify: bool = False) -> StoreInfo:
    """Done and missing chunks, outcome counts of the done flows, and optionally a checksum check."""
    path = Path(path)
    meta = _read_meta(path)
    layout = Layout.from_meta(meta)
    g = _zarr().open_group(str(path), mode="r")
    done = _done_mask(path)
    counts = _counts(g["outcome"], OUTCOMES)
    evals = int(np.asarray(g["n_grad_evals"][...]).sum())
    revision = _critical_revision(meta["spec"])
    corrupted = _corrupted_chunks(path, layout, done, _outputs(revision)) if verify else None
    crit = _counts(g["critical_point"], CRITICAL_POINTS, skip=0) if revision else None
    return StoreInfo(path, meta["spec"], meta.get("recipe", {}), layout, done, counts, evals, corrupted, crit)


# ---- specs as plain data (JSON files, the command line) ----------------------------------------

SPEC_DEFAULTS: dict[str, Any] = {
    "model": {"widths": [1, 16, 1], "activation": "tanh", "loss": "mse", "weight_decay": 0.0},
    "data": {"target": "x^2", "n_points": 32, "seed": 0},
    "points": {
        "kind": "slice",
        "seed": 0,
        "scale": "lecun",
        "normalization": "filter",
        "bias": "zero",
        "a": [-1.0, 1.0, 64],
        "b": None,
        "file": None,
    },
    "solver": {
        "t_end": 100.0,
        "rtol": 1e-6,
        "atol": 1e-9,
        "method": "dopri5",
        "max_steps": 1_000_000,
        "loss_below": None,
        "grad_norm_below": None,
        "theta_norm_above": None,
        "device": "cpu",
        "dtype": "float64",
        "hessian_rank": None,
    },
    "n_save": 32,
    "save_from": 1e-3,
    "critical_points": False,
}
_SECTIONS = {"model", "data", "points", "solver"}


def _merge(base: dict[str, Any], over: dict[str, Any], where: str) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if k not in base:
            raise ValueError(f"spec: unknown key {where}{k!r}; expected one of {sorted(base)}")
        if k in _SECTIONS and not where:
            if not isinstance(v, dict):
                raise TypeError(f"spec: {k!r} must be a JSON object, got {type(v).__name__}")
            out[k] = _merge(base[k], v, f"{k}.")
        else:
            out[k] = v
    return out


def _points_from_file(p: dict[str, Any]) -> Slice | Sample:
    """Initial points given by the user in an ``.npz``: ``center``, ``d1``, ``d2`` for a slice
    (grid from ``a`` and ``b``), ``theta0`` ``(M, P)`` for a sample."""
    path = p["file"]
    need = ("center", "d1", "d2") if p["kind"] == "slice" else ("theta0",)
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in need if k not in z]
        if missing:
            raise ValueError(f"points.file: {path} must hold arrays {list(need)}; missing {missing}")
        arrays = {k: np.array(z[k]) for k in need}
    recipe: dict[str, Any] = {"kind": "file", "file": str(path)}
    if p["kind"] == "sample":
        return Sample(arrays["theta0"], recipe)
    a, b = p["a"], p["a"] if p["b"] is None else p["b"]
    recipe.update(a=list(a), b=list(b))
    return Slice(arrays["center"], arrays["d1"], arrays["d2"], _linspace(a, "a"), _linspace(b, "b"), recipe)


def spec_from_dict(d: dict[str, Any]) -> BasinSpec:
    """Build a :class:`BasinSpec` from plain data (a JSON spec file); missing keys take
    :data:`SPEC_DEFAULTS`.

    ``data`` is either a polynomial target of :data:`sadfast.experiments.TARGETS` (``target``,
    ``n_points``, ``seed``: inputs uniform on [-1, 1]^d) or ``{"file": "data.npz"}`` with arrays
    ``X`` and ``Y``. ``points`` is a slice (``kind: "slice"``, keys of :meth:`Slice.random`, ``a``
    and ``b`` as ``[start, stop, count]``) or a sample (``kind: "sample"``, ``M``, ``seed``,
    ``scale``: :meth:`Sample.init`).
    """
    from .experiments import TARGETS, polynomial_data

    if not isinstance(d, dict):
        raise TypeError(f"spec: expected a JSON object, got {type(d).__name__}")
    points_in = d.get("points", {})
    base = dict(SPEC_DEFAULTS)
    if isinstance(points_in, dict) and points_in.get("kind") == "sample":
        base["points"] = {"kind": "sample", "M": 1024, "seed": 0, "scale": "lecun", "file": None}
    data_in = d.get("data", {})
    if isinstance(data_in, dict) and "file" in data_in:
        base["data"] = {"file": None}
    s = _merge(base, d, "")
    m = s["model"]
    model = MLP(m["widths"], m["activation"], m["loss"], m["weight_decay"])
    data = s["data"]
    if "file" in data:
        with np.load(data["file"], allow_pickle=False) as z:
            if "X" not in z or "Y" not in z:
                raise ValueError(f"data.file: {data['file']} must hold arrays 'X' and 'Y', has {sorted(z)}")
            X, Y = np.array(z["X"]), np.array(z["Y"])
    else:
        check_name(data["target"], "data.target", list(TARGETS))
        X, Y = polynomial_data(
            data["target"], check_int(data["n_points"], "data.n_points", minimum=1), data["seed"]
        )
    prob = model.bind(X, Y)
    p = s["points"]
    points: Slice | Sample
    if p["file"] is not None:
        points = _points_from_file(p)
    elif p["kind"] == "slice":
        points = Slice.random(
            model,
            seed=p["seed"],
            a=tuple(p["a"]),
            b=None if p["b"] is None else tuple(p["b"]),
            normalization=p["normalization"],
            bias=p["bias"],
            scale=p["scale"],
        )
    elif p["kind"] == "sample":
        points = Sample.init(
            model, check_int(p["M"], "points.M", minimum=1), seed=p["seed"], scale=p["scale"]
        )
    else:
        raise ValueError(f"points.kind: expected 'slice' or 'sample', got {p['kind']!r}")
    return BasinSpec(
        prob,
        points,
        **s["solver"],
        n_save=s["n_save"],
        save_from=s["save_from"],
        critical_points=s["critical_points"],
    )


def plot(store: str | Path, out: str | Path | None = None) -> Path:
    """Write the picture of the map at ``store`` as PNG (default: the store path with ``.png``);
    see :func:`sadfast.plotting.basin_map`."""
    from .plotting import basin_map

    store = Path(store)
    return basin_map(open(store), Path(out) if out is not None else store.with_suffix(".png"))
