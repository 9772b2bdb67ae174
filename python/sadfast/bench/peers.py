"""Runners of every backend on the same problem, initial points and settings: sadfast, and the
libraries people would otherwise use (JAX, diffrax, PyTorch/torch.func, torchdiffeq, scipy).

A runner returns a dict of measurements, or a string saying why it was skipped (a peer that is
not installed, with the install hint)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .._runtime import get_num_threads
from ..flows import FlowMethod, solve_flows
from ._machine import time_call
from .problems import BenchProblem, jax_loss, torch_loss

INSTALL_HINT = "not installed (pip install 'sadfast[bench]')"


def _evals(per_flow: Any) -> dict[str, float]:
    """Median, max and mean of gradient evaluations per flow."""
    ev = np.asarray(per_flow)
    return {"median": float(np.median(ev)), "max": int(ev.max()), "mean": float(ev.mean())}


# ---- kernels: batched gradient and Hessian-vector product ---------------------------------------


def bench_sadfast(p: BenchProblem, K: int, min_time: float) -> dict[str, Any]:
    model = p.model()
    X, Y = p.data()
    prob = model.bind(X, Y)
    theta = model.init(K, seed=0)
    v = np.random.default_rng(1).standard_normal(theta.shape)
    g = time_call(lambda: prob.loss_and_grad(theta), min_time=min_time)
    h = time_call(lambda: prob.hvp(theta, v), min_time=min_time)
    return {"grad": g, "hvp": h}


def bench_jax(p: BenchProblem, K: int, min_time: float) -> dict[str, Any] | str:
    try:
        import jax
    except ImportError:
        return INSTALL_HINT
    loss = jax_loss(p)
    model = p.model()
    grad = jax.jit(jax.vmap(jax.grad(loss)))
    hvp = jax.jit(jax.vmap(lambda t, v: jax.jvp(jax.grad(loss), (t,), (v,))[1]))
    theta = jax.numpy.asarray(model.init(K, seed=0))
    v = jax.numpy.asarray(np.random.default_rng(1).standard_normal(theta.shape))
    t0 = time.perf_counter()
    grad(theta).block_until_ready()
    compile_g = time.perf_counter() - t0
    t0 = time.perf_counter()
    hvp(theta, v).block_until_ready()
    compile_h = time.perf_counter() - t0
    g = time_call(lambda: grad(theta).block_until_ready(), min_time=min_time)
    h = time_call(lambda: hvp(theta, v).block_until_ready(), min_time=min_time)
    return {"grad": g, "hvp": h, "compile_s": {"grad": compile_g, "hvp": compile_h}}


def bench_torch(p: BenchProblem, K: int, min_time: float) -> dict[str, Any] | str:
    try:
        import torch
        from torch.func import grad, jvp, vmap
    except ImportError:
        return INSTALL_HINT
    torch.set_num_threads(get_num_threads())
    loss = torch_loss(p)
    model = p.model()
    g_fn = vmap(grad(loss))
    h_fn = vmap(lambda t, v: jvp(grad(loss), (t,), (v,))[1])
    theta = torch.as_tensor(model.init(K, seed=0))
    v = torch.as_tensor(np.random.default_rng(1).standard_normal(theta.shape))
    g = time_call(lambda: g_fn(theta), min_time=min_time)
    h = time_call(lambda: h_fn(theta, v), min_time=min_time)
    return {"grad": g, "hvp": h, "threads": torch.get_num_threads()}


# ---- whole flows: Dormand-Prince 5(4) to t_end -------------------------------------------------

HORIZON = {"poly1d": 100.0, "poly2d": 20.0, "poly4d": 5.0}
RTOL, ATOL = 1e-6, 1e-9


def run_sadfast(
    p: BenchProblem,
    theta0: np.ndarray,
    t_end: float,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    repeats: int = 3,
    method: FlowMethod = "dopri5",
) -> dict[str, Any]:
    """Time ``solve_flows`` (median of ``repeats`` runs after a warm-up); for methods that use
    Hessian-vector products, ``grad_equivalents_per_flow`` counts each HVP as two gradients."""
    prob = p.model().bind(*p.data())
    solve_flows(
        prob, theta0[:2], min(t_end, 1.0), rtol=rtol, atol=atol, progress=False, method=method
    )  # warm-up
    times, res = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = solve_flows(prob, theta0, t_end, rtol=rtol, atol=atol, progress=False, method=method)
        times.append(time.perf_counter() - t0)
    assert res is not None
    ev = res.n_grad_evals
    return {
        "method": method,
        "wall_s": float(np.median(times)),
        "wall_s_repeats": times,
        "grad_evals_per_flow": _evals(ev),
        "hvp_per_flow": _evals(res.n_hvp),
        "grad_equivalents_per_flow": _evals(ev + 2 * res.n_hvp),
        "status": res.status_counts(),
        "final_loss": res.loss.tolist(),
    }


def run_sadfast_auto(
    p: BenchProblem,
    theta0: np.ndarray,
    t_end: float,
    dopri5: dict[str, Any],
    diffrax: dict[str, Any] | str | None = None,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    repeats: int = 3,
) -> dict[str, Any]:
    """:func:`run_sadfast` with ``method="auto"`` on the flows ``dopri5`` (run_sadfast's result)
    ran, with its speed-up over them and its final losses' largest relative difference from
    theirs; the same against ``diffrax`` (run_diffrax's result on the same flows) when given."""
    r = run_sadfast(p, theta0, t_end, rtol=rtol, atol=atol, repeats=repeats, method="auto")
    r.update(rtol=rtol, atol=atol, flows=len(theta0), lockstep_waste=1.0)
    loss = np.array(r["final_loss"])

    def rel_diff(ref: Any) -> float:
        ref = np.array(ref)
        return float(np.max(np.abs(loss - ref) / np.abs(ref)))

    r["speedup_over_dopri5"] = dopri5["wall_s"] / r["wall_s"]
    r["final_loss_max_rel_diff_vs_dopri5"] = rel_diff(dopri5["final_loss"])
    if isinstance(diffrax, dict):
        r["speedup_over_diffrax"] = diffrax.get("wall_s_scaled_to_K", diffrax["wall_s"]) / r["wall_s"]
        r["final_loss_max_rel_diff_vs_diffrax"] = rel_diff(diffrax["final_loss"])
    return r


def run_diffrax(
    p: BenchProblem,
    theta0: np.ndarray,
    t_end: float,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    repeats: int = 3,
    solver: str = "dopri5",
) -> dict[str, Any] | str:
    """jit(vmap(diffeqsolve)) of the flows from ``theta0`` with ``solver`` ``"dopri5"`` (Dopri5,
    as sadfast's default) or ``"tsit5"`` (Tsit5, diffrax's recommended solver; both FSAL with 7
    stages, so the gradient counts below hold for either), a PIDController at rtol/atol."""
    if solver not in ("dopri5", "tsit5"):
        raise ValueError(f"solver: expected 'dopri5' or 'tsit5', got {solver!r}")
    try:
        import diffrax
        import jax
        import jax.numpy as jnp
    except ImportError:
        return INSTALL_HINT
    loss = jax_loss(p)
    term = diffrax.ODETerm(lambda t, y, args: -jax.grad(loss)(y))
    ctrl = diffrax.PIDController(rtol=rtol, atol=atol)

    def solve(y0):
        sol = diffrax.diffeqsolve(
            term,
            diffrax.Tsit5() if solver == "tsit5" else diffrax.Dopri5(),
            t0=0.0,
            t1=t_end,
            dt0=None,
            y0=y0,
            stepsize_controller=ctrl,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=1_000_000,
        )
        return sol.ys[-1], sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"]

    fn = jax.jit(jax.vmap(solve))
    y0 = jnp.asarray(theta0)
    t0 = time.perf_counter()
    out = fn(y0)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(max(1, repeats - 1)):
        t0 = time.perf_counter()
        out = fn(y0)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    ys, acc, rej = (np.asarray(a) for a in out)
    steps = acc + rej
    needed = 6 * steps + 2  # per flow: FSAL Dopri5 / Tsit5 + Hairer's initial step
    executed = 6 * steps.max() + 2  # lockstep under vmap: every flow runs until the slowest stops
    final_loss = np.asarray(jax.vmap(loss)(jnp.asarray(ys)))
    return {
        "wall_s": float(np.median(times)),
        "wall_s_repeats": times,
        "compile_and_first_run_s": compile_s,
        "grad_evals_per_flow": _evals(needed),
        "lockstep_waste": float(executed / needed.mean()),
        "final_loss": final_loss.tolist(),
    }


def run_torchdiffeq(
    p: BenchProblem,
    theta0: np.ndarray,
    t_end: float,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    repeats: int = 3,
) -> dict[str, Any] | str:
    try:
        import torch
        from torch.func import grad, vmap
        from torchdiffeq import odeint
    except ImportError:
        return INSTALL_HINT
    torch.set_num_threads(get_num_threads())
    loss = torch_loss(p)
    g = vmap(grad(loss))
    nfe = [0]

    def f(t, y):
        nfe[0] += 1
        return -g(y)

    y0 = torch.as_tensor(theta0)
    t0 = time.perf_counter()
    ys = odeint(f, y0, torch.tensor([0.0, t_end], dtype=torch.float64), method="dopri5", rtol=rtol, atol=atol)
    wall = time.perf_counter() - t0
    final_loss = vmap(loss)(ys[-1]).numpy()
    # One shared step for the whole batch: every flow gets every evaluation.
    return {
        "wall_s": wall,
        "flows": int(theta0.shape[0]),
        "grad_evals_per_flow": _evals([nfe[0]]),
        "final_loss": final_loss.tolist(),
    }


def run_scipy(
    p: BenchProblem,
    theta0: np.ndarray,
    t_end: float,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    repeats: int = 3,
) -> dict[str, Any] | str:
    try:
        from scipy.integrate import solve_ivp
    except ImportError:
        return "not installed (pip install scipy)"
    prob = p.model().bind(*p.data())
    t0 = time.perf_counter()
    nfev, losses = [], []
    for k in range(theta0.shape[0]):
        sol = solve_ivp(
            lambda t, y: -prob.grad(y), (0.0, t_end), theta0[k], method="RK45", rtol=rtol, atol=atol
        )
        nfev.append(sol.nfev)
        losses.append(float(prob.loss(sol.y[:, -1])))
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "flows": int(theta0.shape[0]),
        "rhs": "sadfast's own gradient kernel, one flow per call (scipy's Python loop is what is measured)",
        "grad_evals_per_flow": _evals(nfev),
        "final_loss": losses,
    }


def reference_dop853(
    p: BenchProblem, theta0: np.ndarray, t_end: float, *, rtol: float = 1e-12
) -> list[float]:
    """Final losses of a tight scipy DOP853 solve (atol = rtol * 1e-3), one flow at a time: the
    accuracy reference. The right-hand side is sadfast's gradient kernel (tested against JAX and
    finite differences to ~1e-12), the integrator is scipy's."""
    from scipy.integrate import solve_ivp

    prob = p.model().bind(*p.data())
    out = []
    for k in range(theta0.shape[0]):
        sol = solve_ivp(
            lambda t, y: -prob.grad(y), (0.0, t_end), theta0[k], method="DOP853", rtol=rtol, atol=rtol * 1e-3
        )
        out.append(float(prob.loss(sol.y[:, -1])))
    return out
