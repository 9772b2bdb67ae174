"""Experiments on the claims of the SAD-network theory, each returning plain data.

``demo`` is the main job of the command line: gradient flows of small SAD networks on a
polynomial target (they should diverge slowly while the loss falls towards 0), the contrasts
(weight decay: flows converge; ReLU), and GD against Adam (Adam grows the norm faster). Every
number it reports is reproducible from the seed; timings are kept apart.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._validation import check_name
from .analysis import (
    attraction_threshold,
    classify_outcomes,
    critical_kind,
    estimate_limit_loss,
    fit_growth,
    growth_by_window,
    hessian_extremes,
    kind_counts,
    quantiles,
)
from .flows import CUDA_METHODS, CudaFlowMethod, FlowMethod, solve_flows
from .mlp import MLP
from .train import train


def _c(X: np.ndarray, i: int) -> np.ndarray:
    return X[:, i - 1 : i]  # x_i as a column, 1-based as in the formulas


TARGETS: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    "x^2": (1, lambda X: X[:, :1] ** 2),
    "x1^2+x1x2-x2^2": (2, lambda X: X[:, :1] ** 2 + X[:, :1] * X[:, 1:2] - X[:, 1:2] ** 2),
    # The 4-D benchmark target (poly4d of the benchmarks).
    "poly4d": (
        4,
        lambda X: (
            _c(X, 1) * _c(X, 2) * _c(X, 3)
            + _c(X, 1) ** 2 * _c(X, 4)
            - _c(X, 2) ** 3
            + 0.5 * _c(X, 3) * _c(X, 4)
            + _c(X, 1)
            - 0.5 * _c(X, 4) ** 2
        ),
    ),
    # The published study's targets (Kranz, Gallon, Dereich, Jentzen, NeurIPS 2025).
    "paper1d": (1, lambda X: X**10 - 2 * X**8 + 2 * X**5 + 3 * X**3 - 2 * X**2 + 5),
    "paper2d": (
        2,
        lambda X: (
            _c(X, 2) ** 5
            - _c(X, 1) ** 3 * _c(X, 2) ** 2
            - 4 * _c(X, 1) ** 2 * _c(X, 2)
            + 3 * _c(X, 1) ** 3
            - _c(X, 2) ** 2
            + _c(X, 1)
            + 2
        ),
    ),
    "paper4d": (
        4,
        lambda X: (
            _c(X, 1) ** 6 * _c(X, 4) ** 5
            + _c(X, 2) ** 6
            - _c(X, 1) ** 3 * _c(X, 2) ** 2 * _c(X, 3)
            + _c(X, 4) ** 2
            - 4 * _c(X, 3) ** 4 * _c(X, 2) ** 4
            + 3 * _c(X, 4) ** 3 * _c(X, 2) ** 3
            - _c(X, 3) ** 2 * _c(X, 1)
            + _c(X, 3)
            + 3
        ),
    ),
}
SAD_ACTIVATIONS = ("sigmoid", "tanh", "softplus", "swish", "gelu", "mish")


def polynomial_data(target: str, n_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs uniform on [-1, 1]^d (seeded) and the polynomial target."""
    d, f = TARGETS[target]
    X = np.random.default_rng(seed).uniform(-1.0, 1.0, (n_points, d))
    return X, f(X)


HEAT_DIM, HEAT_T = 10, 1.0


def heat_data(n_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The heat equation ``u_t = Laplace(u)`` in d = 10 with ``u(0, x) = ||x||^2``, learned at t = 1 in
    the deep Kolmogorov way (Beck et al.): inputs X uniform on [-1, 1]^10 and one Monte Carlo label
    per point, ``||X + sqrt(2 t) Z||^2`` with Z standard normal (fixed, seeded); the regression's
    minimizer over all functions is ``u(t, x) = ||x||^2 + 2 d t``, a polynomial."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, (n_points, HEAT_DIM))
    Z = rng.standard_normal((n_points, HEAT_DIM))
    return X, np.sum((X + np.sqrt(2 * HEAT_T) * Z) ** 2, axis=1, keepdims=True)


def digits_data(n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_points`` of scikit-learn's bundled 8x8 digits (1,797 images; no download):
    pixels scaled to [0, 1], integer labels 0-9 for the cross-entropy loss."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError(
            "target: 'digits' needs scikit-learn for its bundled data set (pip install 'sadfast[experiments]')"
        ) from None
    d = load_digits()
    if not 1 <= n_points <= d.data.shape[0]:
        raise ValueError(f"n_points: expected 1..{d.data.shape[0]} for digits, got {n_points}")
    return d.data[:n_points] / 16.0, d.target[:n_points].astype(np.int64)


def experiment_data(target: str, n_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Data of an experiment: a polynomial target of :data:`TARGETS`, ``"heat10d"`` or ``"digits"``."""
    if target == "heat10d":
        return heat_data(n_points, seed)
    if target == "digits":
        return digits_data(n_points)
    if target not in TARGETS:
        raise ValueError(
            f"target: unknown name {target!r}; expected one of {[*TARGETS, 'heat10d', 'digits']}"
        )
    return polynomial_data(target, n_points, seed)


@dataclass(frozen=True)
class FlowExperiment:
    name: str
    description: str
    widths: tuple[int, ...]
    activation: str
    weight_decay: float = 0.0
    target: str = "x^2"
    n_points: int = 32
    # auto for smooth flows (Dormand-Prince, then RKC and the Rosenbrock W-method as the flow turns
    # stiff: long horizons are cheap; bench_long measured it 2x cheaper than RKC alone at t = 1e4);
    # Dormand-Prince for ReLU, whose kinks break the smoothness the stiff methods rely on.
    method: FlowMethod = "auto"
    loss: str = "mse"
    # A horizon of its own (else the suite's): ReLU flows cross kinks all the time, and an
    # adaptive explicit method needs 1e5-1e6 gradients per flow to t = 100 there.
    t_end: float | None = None


DEMO_FLOWS = (
    FlowExperiment("sad_tanh", "SAD: tanh 1-16-1 on y = x^2", (1, 16, 1), "tanh"),
    FlowExperiment("sad_softplus", "SAD: softplus 1-16-1 on y = x^2", (1, 16, 1), "softplus"),
    FlowExperiment(
        "contrast_weight_decay", "contrast: tanh 1-16-1 with weight decay 0.05", (1, 16, 1), "tanh", 0.05
    ),
    FlowExperiment("contrast_relu", "contrast: shallow ReLU 1-16-1", (1, 16, 1), "relu", method="dopri5"),
)


_GPU_METHOD_NAMES = {
    "dopri5": "Dormand-Prince",
    "tsit5": "Tsitouras 5(4)",
    "rkc": "Runge-Kutta-Chebyshev",
    "rosw": "Rosenbrock W (ROS34PW2, Lanczos rank min(P - 1, 32))",
    "auto": "auto (Dormand-Prince -> Runge-Kutta-Chebyshev -> Rosenbrock W per flow, Lanczos rank min(P - 1, 32))",
}


def _quantiles(a: np.ndarray) -> dict[str, float]:
    return quantiles(a) or {}


def run_flow_experiment(
    exp: FlowExperiment,
    flows: int,
    t_end: float,
    seed: int,
    n_save: int = 60,
    progress: bool = False,
    device: str = "cpu",
    gpu_method: CudaFlowMethod = "dopri5",
) -> dict[str, Any]:
    """Integrate `flows` gradient flows of one experiment; classify and fit their growth.

    Save times: `n_save` geometric from 1e-2 to `t_end`; beyond 6 decades, a whole number (at least
    10, and at least `n_save` in all) per decade of 1e-2, and `t_end`, so the per-decade growth
    windows start and end on save times.

    On ``device="cuda"`` an experiment of method ``"auto"`` (the smooth networks') is integrated
    with ``gpu_method``: ``"dopri5"`` (default), ``"tsit5"``, or for long horizons the GPU's stiff
    methods ``"rkc"``, ``"rosw"`` (on a Lanczos approximation of rank min(P - 1, 32)) or
    ``"auto"`` (the CPU's per-flow switching between the three, same rank); ReLU's ``"dopri5"``
    stays. The analysis (classification, fits, Hessian extremes) runs on the CPU
    either way."""
    check_name(gpu_method, "gpu_method", CUDA_METHODS)
    model = MLP(list(exp.widths), activation=exp.activation, loss=exp.loss, weight_decay=exp.weight_decay)
    X, Y = experiment_data(exp.target, exp.n_points, seed)
    theta0 = model.init(flows, seed=seed, scale="xavier_uniform")
    decades = math.ceil(math.log10(t_end / 1e-2) - 1e-9)
    if decades > 6:  # long horizons: a whole number (>= 10) of save times per decade of 1e-2
        per = max(10, math.ceil((n_save - 1) / decades))
        ts = 1e-2 * np.logspace(0, decades, per * decades + 1)
        ts = np.append(ts[ts < t_end * (1 - 1e-12)], t_end)
    else:
        ts = np.geomspace(1e-2, t_end, n_save)
    start = time.perf_counter()
    prob = model.bind(X, Y)
    method = gpu_method if device != "cpu" and exp.method == "auto" else exp.method
    res = solve_flows(prob, theta0, t_end, save_at=ts, progress=progress, method=method, device=device)
    wall = time.perf_counter() - start
    out = classify_outcomes(ts, res.trace_loss, res.trace_theta_norm, res.trace_grad_norm)
    fit = fit_growth(ts, res.trace_theta_norm)
    windows = growth_by_window(ts, res.trace_theta_norm, res.trace_loss)
    div = out.label == "diverging"
    conv = out.label == "converged"
    limit = estimate_limit_loss(ts, res.trace_loss)
    # The optimal level: 0 for a polynomial target (the infimum); with weight decay the minimum
    # is positive and unknown, so the lowest limit loss observed stands for it.
    level = 0.0 if exp.weight_decay == 0 else float(np.nanmin(limit))
    thr = attraction_threshold(prob.loss(theta0), limit, optimal_level=level)
    ths = thr.summary()
    attraction = {
        **ths,
        # JSON has no infinity: no flow stopping above the optimum means no threshold was seen.
        "eps": ths["eps"] if math.isfinite(ths["eps"]) else None,
        "highest_reaching_initial_loss": ths["highest_reaching_initial_loss"]
        if math.isfinite(ths["highest_reaching_initial_loss"])
        else None,
    }
    hess: dict[str, Any] = {"flows": int(conv.sum())}
    if conv.any():
        ex = hessian_extremes(prob, res.theta[conv])
        at_stop = critical_kind(ex.lambda_min, ex.lambda_max)  # the sign test where they stopped
        hess.update(
            types=ex.counts(),
            types_at_stop=kind_counts(at_stop, resolved=False),
            lambda_min=_quantiles(ex.lambda_min),
            lambda_max=_quantiles(ex.lambda_max),
            resolution=_quantiles(ex.resolution),
        )
    return {
        "name": exp.name,
        "description": exp.description,
        "model": repr(model),
        "flows": flows,
        "t_end": t_end,
        "method": method,
        "device": device,
        "status": res.status_counts(),
        "outcomes": out.counts(),
        "growth_law_best": fit.counts(),
        "growth_fits_of_diverging_flows": {
            "log_slope_b": _quantiles(fit.log_b[div]),
            "sqrt_slope_b": _quantiles(fit.sqrt_b[div]),
            "power_alpha": _quantiles(fit.power_alpha[div]),
            "r2_log": _quantiles(fit.r2_log[div]),
            "r2_sqrt": _quantiles(fit.r2_sqrt[div]),
            "r2_power": _quantiles(fit.r2_power[div]),
        },
        # Local rates per decade of t (sadfast.analysis.growth_by_window) of the diverging flows:
        # the log slope b, the exponent alpha of ||theta||, the loss's decay exponent, and the
        # gradient-flow bound |Delta||theta||| <= sqrt(Delta t Delta L) as a ratio (<= 1).
        "growth_by_decade_of_diverging_flows": windows.summary(div) if div.any() else [],
        "hessian_at_converged_endpoints": hess,
        "limit_loss": _quantiles(limit),
        "attraction_threshold": attraction,
        "initial_loss": _quantiles(res.trace_loss[:, 0]),
        "final_loss": _quantiles(res.loss),
        "final_theta_norm": _quantiles(res.theta_norm),
        "final_grad_norm": _quantiles(res.grad_norm),
        "grad_evals_per_flow": _quantiles(res.n_grad_evals.astype(float)),
        "_traces": {"t": ts, "loss": res.trace_loss, "theta_norm": res.trace_theta_norm},
        "_windows": windows,
        "_diverging": div,
        "_wall_s": wall,
    }


def run_optimizer_comparison(
    flows: int, steps: int, seed: int, progress: bool = False, device: str = "cpu"
) -> dict[str, Any]:
    """GD and Adam (the published study's learning rates) from the same initializations."""
    exp = FlowExperiment("optimizers", "tanh 1-16-1 on y = x^2", (1, 16, 1), "tanh")
    runs = run_optimizers(exp, flows, steps, seed, 1e-3, 5e-3, progress=progress, device=device)
    model = MLP(list(exp.widths), activation=exp.activation)
    return {"model": repr(model), "flows": flows, "steps": steps, "runs": runs}


def _public(d: Any) -> Any:
    """Drop the private (underscored) entries: traces and timings."""
    if isinstance(d, dict):
        return {k: _public(v) for k, v in d.items() if not k.startswith("_")}
    return d


def demo(
    out_dir: str | Path = "sadfast-demo",
    *,
    flows: int = 128,
    t_end: float = 10000.0,
    steps: int = 20000,
    seed: int = 0,
    experiments: Sequence[str] | None = None,
    progress: bool = False,
    device: str = "cpu",
    gpu_method: CudaFlowMethod = "dopri5",
) -> dict[str, Any]:
    """Run the demo experiments (all of :data:`DEMO_FLOWS`, or those named in ``experiments``),
    write figures, ``report.md`` and ``summary.json`` to `out_dir`, and return the summary.

    ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"`` (the GPU when there is one). On the GPU the
    smooth networks' flows use ``gpu_method`` (``"dopri5"``, ``"tsit5"``, ``"rkc"``, ``"rosw"`` or ``"auto"``; see
    :func:`run_flow_experiment`), ReLU's Dormand-Prince, and GD/Adam run there too."""
    from . import cuda as _cuda
    from . import plotting

    dev = _cuda.resolve_device(device)
    check_name(gpu_method, "gpu_method", CUDA_METHODS)

    names = [e.name for e in DEMO_FLOWS]
    chosen = names if experiments is None else list(experiments)
    unknown = [n for n in chosen if n not in names]
    if unknown or not chosen:
        raise ValueError(f"experiments: expected names from {names}, got {list(chosen)}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flow_runs = [
        run_flow_experiment(e, flows, t_end, seed, progress=progress, device=dev, gpu_method=gpu_method)
        for e in DEMO_FLOWS
        if e.name in chosen
    ]
    opt = run_optimizer_comparison(flows, steps, seed, progress=progress, device=dev)
    figures = {
        "flows_loss": plotting.flow_traces(flow_runs, "loss", out / "flows_loss.png"),
        "flows_theta_norm": plotting.flow_traces(flow_runs, "theta_norm", out / "flows_theta_norm.png"),
        "growth_by_decade": plotting.growth_windows(flow_runs, out / "growth_by_decade.png"),
        "optimizers": plotting.optimizer_traces(opt, out / "optimizers.png"),
    }
    summary = {
        "sadfast_demo": 1,
        "parameters": {
            "flows": flows,
            "t_end": t_end,
            "steps": steps,
            "seed": seed,
            "rtol": 1e-6,
            "atol": 1e-9,
            "init": "xavier_uniform",
            "method": "auto (Dormand-Prince -> Runge-Kutta-Chebyshev -> Rosenbrock W per flow); Dormand-Prince for ReLU"
            if dev == "cpu"
            else f"{_GPU_METHOD_NAMES[gpu_method]} (on the GPU); Dormand-Prince for ReLU",
            "device": dev,
            "data": "32 points uniform on [-1, 1]",
        },
        "flow_experiments": [_public(r) for r in flow_runs],
        "optimizers": _public(opt),
        "figures": {k: v.name for k, v in figures.items()},
    }
    timing = {r["name"]: r["_wall_s"] for r in flow_runs}
    timing.update({f"train_{m}": v["_wall_s"] for m, v in opt["runs"].items()})
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    (out / "report.md").write_text(_report(summary, timing))
    return summary


def _report(s: dict[str, Any], timing: dict[str, float]) -> str:
    p = s["parameters"]
    lines = [
        "# sadfast demo: gradient flows of SAD networks",
        "",
        f"{p['flows']} initializations ({p['init']}, seed {p['seed']}) per experiment; gradient flows integrated "
        f"to t = {p['t_end']:g} with per-flow adaptive {p['method']} (rtol {p['rtol']:g}, atol {p['atol']:g}); "
        f"GD and Adam for {p['steps']} steps. Data: {p['data']}.",
        "",
        "## Flow outcomes",
        "",
        "| experiment | converged | diverging | undecided | best growth law (log/sqrt/power) | final loss (median) | final norm (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in s["flow_experiments"]:
        o, g = r["outcomes"], r["growth_law_best"]
        lines.append(
            f"| {r['description']} | {o['converged']} | {o['diverging']} | {o['undecided']} | "
            f"{g.get('log', 0)}/{g.get('sqrt', 0)}/{g.get('power', 0)} | {r['final_loss'].get('median', float('nan')):.3e} | "
            f"{r['final_theta_norm'].get('median', float('nan')):.3f} |"
        )
    lines += [
        "",
        "Outcome rules and growth fits: `sadfast.analysis` (the last half of log t for growth, the last "
        "tenth for convergence). A flow still `undecided` needs a longer horizon.",
        "",
        "Attraction threshold of the optimal level (0, or with weight decay the lowest limit loss observed; "
        "`sadfast.analysis.attraction_threshold`: a flow reaches it when its extrapolated limit loss is within "
        "1e-3 of the median initial excess loss; the estimate is the lowest initial excess loss of a flow that "
        "does not):",
        "",
        *[
            f"- {r['description']}: {r['attraction_threshold']['reaching']} of {r['attraction_threshold']['flows']} "
            "reach it; "
            + (
                f"threshold estimate {r['attraction_threshold']['eps']:.3e}"
                if r["attraction_threshold"]["eps"] is not None
                else "no flow stops above it (no threshold seen)"
            )
            for r in s["flow_experiments"]
        ],
        "",
        "Critical points reached (converged flows; extreme Hessian eigenvalues by Lanczos on exact "
        "Hessian-vector products; 'unresolved': |lambda_min| below the resolution "
        "sqrt(|d lambda_min/d theta| |grad L|), the residual gradient hides its sign at the critical point):",
        "",
        *[
            f"- {r['description']}: {r['hessian_at_converged_endpoints']['flows']} converged"
            + (
                f"; types {r['hessian_at_converged_endpoints']['types']} (sign of lambda_min where "
                f"they stopped: {r['hessian_at_converged_endpoints']['types_at_stop']}), lambda_min median "
                f"{r['hessian_at_converged_endpoints']['lambda_min']['median']:.3e}, resolution median "
                f"{r['hessian_at_converged_endpoints']['resolution']['median']:.1e}"
                if r["hessian_at_converged_endpoints"]["flows"]
                else ""
            )
            for r in s["flow_experiments"]
        ],
        "",
        f"![loss]({s['figures']['flows_loss']})",
        "",
        f"![norm]({s['figures']['flows_theta_norm']})",
        "",
        *_decade_table(s["flow_experiments"]),
        f"![growth by decade]({s['figures']['growth_by_decade']})",
        "",
        "## GD and Adam",
        "",
        "| method | lr | final loss (median) | final norm (median) | norm growth (median) |",
        "|---|---|---|---|---|",
    ]
    for m, r in s["optimizers"]["runs"].items():
        lines.append(
            f"| {m} | {r['lr']:g} | {r['final_loss']['median']:.3e} | {r['final_theta_norm']['median']:.3f} | "
            f"{r['norm_growth']['median']:.3f} |"
        )
    lines += ["", f"![optimizers]({s['figures']['optimizers']})", "", "## Timing (s)", ""]
    lines += [f"- {k}: {v:.2f}" for k, v in timing.items()]
    return "\n".join(lines) + "\n"


def _fmt(q: dict[str, float] | None, spec: str) -> str:
    return "-" if q is None else format(q["median"], spec)


def _decade_table(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown: the diverging flows' local rates decade by decade (growth_by_window)."""
    rows = [r for r in runs if r["growth_by_decade_of_diverging_flows"]]
    if not rows:
        return []
    lines = [
        "### Growth decade by decade (diverging flows, medians)",
        "",
        "b = Delta||theta|| / Delta ln t (constant under a + b log t), alpha = Delta ln||theta|| / Delta ln t "
        "(constant under c t^alpha; 1/2 for sqrt t), beta = -Delta ln L / Delta ln t (the loss's decay); "
        "ratio: the largest |Delta||theta||| / sqrt(Delta t Delta L), which a gradient flow keeps <= 1 "
        "(`sadfast.analysis.growth_by_window`).",
        "",
        "| experiment | t | b | alpha | beta | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        for w in r["growth_by_decade_of_diverging_flows"]:
            ratio = w["max_bound_ratio"]
            lines.append(
                f"| {r['description']} | {w['t_start']:.3g} - {w['t_end']:.3g} | {_fmt(w['log_slope'], '.3f')} | "
                f"{_fmt(w['alpha'], '.4f')} | {_fmt(w['loss_exponent'], '.2f')} | "
                f"{'-' if ratio is None else format(ratio, '.2f')} |"
            )
    return [*lines, ""]


# ---- experiment suites: `sadfast experiment NAME` ------------------------------------------------

_DIMS = {1: "1d", 2: "2d", 4: "4d"}


def _label(target: str) -> str:
    return _DIMS[TARGETS[target][0]] if target in TARGETS else target


@dataclass(frozen=True)
class ExperimentSuite:
    """A set of flow experiments, each also trained with GD and Adam from the same initializations.

    ``flows``, ``t_end``, ``steps`` and ``n_points`` are the defaults the command line can override.
    """

    name: str
    description: str
    experiments: tuple[FlowExperiment, ...]
    flows: int
    t_end: float
    steps: int
    gd_lr: float = 1e-3
    adam_lr: float = 5e-3
    note: str = ""


def _name(target: str, act: str, suffix: str = "") -> str:
    return f"{_label(target)}_{act}{suffix}"


_SMALL = (("x^2", (1, 16, 1), 32), ("x1^2+x1x2-x2^2", (2, 32, 1), 128), ("poly4d", (4, 32, 32, 1), 256))
_PAPER = (
    ("paper1d", (1, 10, 20, 10, 1)),
    ("paper2d", (2, 20, 40, 20, 1)),
    ("paper4d", (4, 20, 40, 20, 1)),
)


def _widths_str(w: tuple[int, ...]) -> str:
    return "-".join(map(str, w))


SUITES: dict[str, ExperimentSuite] = {
    "sad": ExperimentSuite(
        "sad",
        "Every SAD activation on polynomial targets in 1, 2 and 4 dimensions (the benchmark problems)",
        tuple(
            FlowExperiment(
                _name(t, a), f"{a} {_widths_str(w)} on {t}", w, a, target=t, n_points=n
            )
            for t, w, n in _SMALL
            for a in SAD_ACTIVATIONS
        ),
        flows=32,
        t_end=1000.0,
        steps=5000,
    ),
    "contrasts": ExperimentSuite(
        "contrasts",
        "SAD (tanh) beside the contrasts: shallow ReLU (not SAD) and tanh with L2 weight decay 0.05",
        tuple(
            e
            for t, w, n in _SMALL
            for e in (
                FlowExperiment(_name(t, "tanh"), f"SAD: tanh {_widths_str(w)} on {t}", w, "tanh", target=t, n_points=n),
                FlowExperiment(
                    _name(t, "relu"),
                    f"contrast: ReLU {_widths_str((w[0], w[1], w[-1]))} on {t} (t_end 100)",
                    (w[0], w[1], w[-1]),
                    "relu",
                    target=t,
                    n_points=n,
                    method="dopri5",
                    t_end=100.0,
                ),
                FlowExperiment(
                    _name(t, "tanh", "_wd"),
                    f"contrast: tanh {_widths_str(w)} + weight decay 0.05 on {t}",
                    w,
                    "tanh",
                    0.05,
                    target=t,
                    n_points=n,
                ),
            )
        ),
        flows=16,
        t_end=1000.0,
        steps=5000,
    ),
    "tasks": ExperimentSuite(
        "tasks",
        "Beyond polynomial regression: the heat equation in 10 dimensions learned from Monte Carlo labels "
        "(deep Kolmogorov; GELU 10-50-50-50-1) and scikit-learn's 8x8 digits with cross-entropy (GELU 64-32-10)",
        (
            FlowExperiment(
                "heat10d_gelu", "heat equation d=10: GELU 10-50-50-50-1", (10, 50, 50, 50, 1), "gelu",
                target="heat10d", n_points=512,
            ),
            FlowExperiment(
                "digits_gelu", "digits, cross-entropy: GELU 64-32-10", (64, 32, 10), "gelu",
                target="digits", n_points=512, loss="cross_entropy",
            ),
        ),
        flows=8,
        t_end=100.0,
        steps=2000,
        note="The optimal level of the attraction threshold is taken as 0. The heat task's default of 512 "
        "Monte Carlo samples is below the network's 5,651 parameters, so the network can interpolate the noisy "
        "labels and its loss can reach 0 at a finite norm; with N > P (--n-points 10000, as published) the "
        "minimum is the label noise and each gradient costs ~20x more (a GPU's job).",
    ),
    "paper": ExperimentSuite(
        "paper",
        "The published study's settings: its three targets, 10,000 points uniform on [-1, 1]^d, networks "
        "1-10-20-10-1, 2-20-40-20-1 and 4-20-40-20-1, Xavier-uniform weights and zero biases, swish, softplus, "
        "GELU, ELU and tanh; GD (lr 1e-3) and Adam (lr 5e-3) for 500,000 steps, 20 runs each; here also the "
        "exact gradient flows to t = 500 (GD's 500,000 steps of 1e-3)",
        tuple(
            FlowExperiment(
                _name(t, a), f"{a} {_widths_str(w)} on {t}", w, a, target=t, n_points=10_000,
                method="auto",
            )
            for t, w in _PAPER
            for a in ("swish", "softplus", "gelu", "elu", "tanh")
        ),
        flows=20,
        t_end=500.0,
        steps=500_000,
        note="Sized for a GPU or a cluster: on 2 cores the defaults take days; use --flows/--steps/--n-points "
        "to run a reduced version.",
    ),
}  # fmt: skip


def run_optimizers(
    exp: FlowExperiment,
    flows: int,
    steps: int,
    seed: int,
    gd_lr: float,
    adam_lr: float,
    progress: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """GD and Adam on one experiment's model and data from its flows' initializations."""
    model = MLP(list(exp.widths), activation=exp.activation, loss=exp.loss, weight_decay=exp.weight_decay)
    prob = model.bind(*experiment_data(exp.target, exp.n_points, seed))
    theta0 = model.init(flows, seed=seed, scale="xavier_uniform")
    out: dict[str, Any] = {}
    runs: tuple[tuple[Literal["gd", "adam"], float], ...] = (("gd", gd_lr), ("adam", adam_lr))
    for method, lr in runs:
        start = time.perf_counter()
        r = train(prob, theta0, method=method, lr=lr, steps=steps, progress=progress, device=device)
        out[method] = {
            "lr": lr,
            "steps": steps,
            "status": r.status_counts(),
            "final_loss": _quantiles(r.loss),
            "final_theta_norm": _quantiles(r.theta_norm),
            "norm_growth": _quantiles(r.theta_norm - r.trace_theta_norm[:, 0]),
            "_traces": {"step": r.record_steps, "loss": r.trace_loss, "theta_norm": r.trace_theta_norm},
            "_wall_s": time.perf_counter() - start,
        }
    return out


def run_suite(
    suite: str | ExperimentSuite,
    out_dir: str | Path,
    *,
    flows: int | None = None,
    t_end: float | None = None,
    steps: int | None = None,
    n_points: int | None = None,
    seed: int = 0,
    only: str | None = None,
    progress: bool = False,
    device: str = "cpu",
    gpu_method: CudaFlowMethod = "dopri5",
) -> dict[str, Any]:
    """Run an experiment suite (:data:`SUITES`) and write ``report.md``, ``summary.json``,
    ``timing.json`` and, per target, loss/norm figures of the flows and of GD and Adam.

    ``flows``, ``t_end``, ``steps`` and ``n_points`` override the suite's defaults; ``only`` keeps
    the experiments whose name contains it; ``device`` and ``gpu_method`` as in :func:`demo`.
    Returns the summary (what ``summary.json`` holds).
    """
    from . import cuda as _cuda
    from . import plotting

    dev = _cuda.resolve_device(device)
    check_name(gpu_method, "gpu_method", CUDA_METHODS)

    if isinstance(suite, str):
        if suite not in SUITES:
            raise ValueError(f"suite: unknown name {suite!r}; expected one of {list(SUITES)}")
        suite = SUITES[suite]
    exps = [e for e in suite.experiments if only is None or only in e.name]
    if not exps:
        raise ValueError(f"only: no experiment of suite {suite.name!r} has {only!r} in its name")
    if n_points is not None:
        exps = [dataclasses.replace(e, n_points=n_points) for e in exps]
    K = suite.flows if flows is None else flows
    T = suite.t_end if t_end is None else t_end
    S = suite.steps if steps is None else steps
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for e in exps:
        horizon = T if t_end is not None or e.t_end is None else e.t_end
        r = run_flow_experiment(e, K, horizon, seed, progress=progress, device=dev, gpu_method=gpu_method)
        r["optimizers"] = (
            run_optimizers(e, K, S, seed, suite.gd_lr, suite.adam_lr, progress=progress, device=dev)
            if S
            else {}
        )
        r["target"] = e.target
        r["n_points"] = e.n_points
        results.append(r)
    figures: dict[str, str] = {}
    for target in dict.fromkeys(r["target"] for r in results):
        group = [r for r in results if r["target"] == target]
        key = _label(target) + "_" + target.replace("^", "").replace("+", "p").replace("-", "m")
        for what in ("loss", "theta_norm"):
            figures[f"{key}_flows_{what}"] = plotting.flow_traces(
                group, what, out / f"{key}_flows_{what}.png"
            ).name
        if any(r["_diverging"].any() for r in group):
            figures[f"{key}_growth_by_decade"] = plotting.growth_windows(
                group, out / f"{key}_growth_by_decade.png"
            ).name
        if S:
            figures[f"{key}_optimizers_norm"] = plotting.optimizer_norms(
                group, out / f"{key}_optimizers_norm.png"
            ).name
    summary = {
        "sadfast_experiment": suite.name,
        "description": suite.description,
        "parameters": {
            "flows": K,
            "t_end": T,
            "steps": S,
            "seed": seed,
            "gd_lr": suite.gd_lr,
            "adam_lr": suite.adam_lr,
            "rtol": 1e-6,
            "atol": 1e-9,
            "init": "xavier_uniform",
            "device": dev,
            **({"gpu_method": gpu_method} if dev == "cuda" else {}),
            "data": "points uniform on [-1, 1]^d, seeded",
        },
        "experiments": [_public(r) for r in results],
        "figures": figures,
    }
    timing = {
        r["name"]: {"flows": r["_wall_s"], **{m: v["_wall_s"] for m, v in r["optimizers"].items()}}
        for r in results
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    (out / "report.md").write_text(_suite_report(suite, summary))
    return summary


def _suite_decade_table(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown: one row per experiment with diverging flows, one column per decade of t:
    the medians of the log slope b and of the exponent alpha (growth_by_window)."""
    rows = [r for r in runs if r["growth_by_decade_of_diverging_flows"]]
    if not rows:
        return []
    spans = sorted(
        {(w["t_start"], w["t_end"]) for r in rows for w in r["growth_by_decade_of_diverging_flows"]},
        key=lambda x: x[0],
    )
    lines = [
        "## Growth decade by decade (diverging flows)",
        "",
        "Each cell: median b = Delta||theta|| / Delta ln t and median alpha = Delta ln||theta|| / Delta ln t "
        "over that decade of t (a + b log t keeps b steady while alpha falls; c t^alpha keeps alpha; sqrt t is "
        "alpha = 1/2); the largest |Delta||theta||| / sqrt(Delta t Delta L) over all cells of a row, <= 1 for a "
        "gradient flow (`sadfast.analysis.growth_by_window`).",
        "",
        "| experiment | " + " | ".join(f"{a:.3g}-{b:.3g}" for a, b in spans) + " | max ratio |",
        "|---|" + "---|" * (len(spans) + 1),
    ]
    for r in rows:
        by = {(w["t_start"], w["t_end"]): w for w in r["growth_by_decade_of_diverging_flows"]}
        cells = []
        for span in spans:
            w = by.get(span)
            cells.append("-" if w is None else f"{_fmt(w['log_slope'], '.2f')} / {_fmt(w['alpha'], '.3f')}")
        ratios = [w["max_bound_ratio"] for w in by.values() if w["max_bound_ratio"] is not None]
        worst = f"{max(ratios):.2f}" if ratios else "-"
        lines.append(f"| {r['description']} | " + " | ".join(cells) + f" | {worst} |")
    return [*lines, ""]


def _med(d: dict[str, float]) -> float:
    return d.get("median", float("nan"))


def _suite_report(suite: ExperimentSuite, s: dict[str, Any]) -> str:
    p = s["parameters"]
    lines = [
        f"# sadfast experiment `{suite.name}`",
        "",
        suite.description + ".",
        "",
        f"{p['flows']} initializations ({p['init']}, seed {p['seed']}) per experiment; gradient flows to "
        f"t = {p['t_end']:g} (rtol {p['rtol']:g}); GD (lr {p['gd_lr']:g}) and Adam (lr {p['adam_lr']:g}) for "
        f"{p['steps']} steps from the same initializations.",
        "",
        "## Gradient flows",
        "",
        "| experiment | N | t_end | converged | diverging | undecided | best growth law (log/sqrt/power) | final loss | limit loss | "
        "final norm | reach the optimum | threshold estimate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["experiments"]:
        o, g, a = r["outcomes"], r["growth_law_best"], r["attraction_threshold"]
        eps = "none seen" if a["eps"] is None else f"{a['eps']:.3e}"
        lines.append(
            f"| {r['description']} | {r['n_points']} | {r['t_end']:g} | {o['converged']} | {o['diverging']} | {o['undecided']} | "
            f"{g.get('log', 0)}/{g.get('sqrt', 0)}/{g.get('power', 0)} | {_med(r['final_loss']):.3e} | "
            f"{_med(r['limit_loss']):.3e} | {_med(r['final_theta_norm']):.3f} | {a['reaching']}/{a['flows']} | {eps} |"
        )
    lines += [
        "",
        "Medians over the initializations. Outcomes and growth laws: `sadfast.analysis` (the last half of log t "
        "for growth, the last tenth for convergence); `undecided` needs a longer horizon. The optimum is 0 "
        "(weight decay: the lowest limit loss observed).",
        "",
    ]
    lines += _suite_decade_table(s["experiments"])
    if s["parameters"]["steps"]:
        lines += [
            "## GD and Adam",
            "",
            "| experiment | GD final loss | GD norm growth | Adam final loss | Adam norm growth |",
            "|---|---|---|---|---|",
        ]
        for r in s["experiments"]:
            gd, ad = r["optimizers"]["gd"], r["optimizers"]["adam"]
            lines.append(
                f"| {r['description']} | {_med(gd['final_loss']):.3e} | {_med(gd['norm_growth']):.3f} | "
                f"{_med(ad['final_loss']):.3e} | {_med(ad['norm_growth']):.3f} |"
            )
        lines.append("")
    lines += ["## Figures", "", *[f"![{k}]({v})" for k, v in s["figures"].items()], ""]
    if suite.note:
        lines += [suite.note, ""]
    return "\n".join(lines)
