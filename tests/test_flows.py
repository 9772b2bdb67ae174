"""The per-flow Dormand-Prince integrator against scipy, exact solutions and itself."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import sadfast
from reference import linear_flow_problem, rel_err
from sadfast import FlowStatus
from scipy.integrate import RK45, solve_ivp
from scipy.linalg import expm


def poly1d(K: int = 6, seed: int = 0):
    model = sadfast.MLP([1, 16, 1], activation="tanh")
    X = np.random.default_rng(0).uniform(-1, 1, (32, 1))
    return model, model.bind(X, X**2), model.init(K, seed=seed)


def poly2d(K: int = 4, seed: int = 0):
    model = sadfast.MLP([2, 12, 1], activation="softplus")
    X = np.random.default_rng(1).uniform(-1, 1, (40, 2))
    Y = X[:, :1] ** 2 + X[:, :1] * X[:, 1:] - X[:, 1:] ** 2
    return model, model.bind(X, Y), model.init(K, seed=seed)


def scipy_rk45(prob, theta0, t_end, rtol, atol):
    """scipy's RK45 stepping with an unbounded interval until it passes t_end, then its dense
    output at t_end: exactly sadfast's semantics."""
    s = RK45(lambda t, y: -prob.grad(y), 0.0, theta0, np.inf, rtol=rtol, atol=atol)
    n_acc = 0
    while s.t < t_end:
        s.step()
        n_acc += 1
    return s.dense_output()(t_end), s.nfev, n_acc


@pytest.mark.parametrize("make", [poly1d, poly2d])
def test_matches_scipy_rk45_step_for_step(make) -> None:
    _, prob, theta0 = make()
    t_end, rtol, atol = 30.0, 1e-6, 1e-9
    res = sadfast.solve_flows(prob, theta0, t_end, rtol=rtol, atol=atol, method="dopri5")
    assert np.all(res.status == FlowStatus.REACHED_T_END)
    for k in range(theta0.shape[0]):
        y, nfev, n_acc = scipy_rk45(prob, theta0[k], t_end, rtol, atol)
        # Same algorithm; only the round-off of sums differs, which may flip a marginal
        # accept/reject decision: allow 2 steps of difference.
        assert abs(int(res.n_accepted[k]) - n_acc) <= 2
        assert abs(int(res.n_grad_evals[k]) - nfev) <= 12
        if res.n_grad_evals[k] == nfev:
            assert rel_err(res.theta[k], y) <= 1e-10


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_accuracy_against_tight_dop853(method) -> None:
    _, prob, theta0 = poly2d(K=3)
    t_end = 10.0
    res = sadfast.solve_flows(prob, theta0, t_end, rtol=1e-8, atol=1e-11, method=method)
    for k in range(3):
        ref = solve_ivp(
            lambda t, y: -prob.grad(y), (0, t_end), theta0[k], method="DOP853", rtol=1e-12, atol=1e-14
        )
        assert rel_err(res.loss[k], prob.loss(ref.y[:, -1])) <= 1e-6
        assert rel_err(res.theta[k], ref.y[:, -1]) <= 1e-6


# Tsitouras' table makes the 6th-order error terms small (its design aim): at these steps its
# error ratios are still 63, 50, 42 on the way to 2^5 (measured), so its observed order is ~5.5.
@pytest.mark.parametrize(("method", "orders"), [("dopri5", (4.6, 5.4)), ("tsit5", (4.6, 6.0))])
def test_fifth_order_convergence_on_a_linear_flow(method, orders) -> None:
    # Linear least squares (identity activation, one layer): the flow is linear with a known
    # solution theta(t) = theta* + expm(-H t) (theta0 - theta*). Fixed steps h (first_step =
    # max_step = h, loose tolerances so none is rejected) must give global error ~ h^5.
    prob, theta0, H, theta_star = linear_flow_problem()
    t_end = 2.0
    exact = theta_star + expm(-H * t_end) @ (theta0 - theta_star)
    hs = np.array([0.0625, 0.03125, 0.015625])  # binary fractions: t lands exactly on t_end
    errs = []
    for h in hs:
        r = sadfast.solve_flows(
            prob, theta0, t_end, rtol=1e3, atol=1e3, first_step=h, max_step=h, method=method
        )
        assert r.n_rejected[0] == 0
        assert r.n_accepted[0] == round(t_end / h)
        errs.append(np.linalg.norm(r.theta[0] - exact))
    order = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert orders[0] <= order <= orders[1], (order, errs)  # error ratios ~ 2^5


def test_continuous_extensions_are_fourth_order() -> None:
    # Values between steps come from each table's continuous extension: on the linear flow, with
    # fixed steps h, the error at points inside steps shrinks like h^4 or better.
    prob, theta0, H, theta_star = linear_flow_problem()
    ts = np.array([0.3, 0.71, 1.13, 1.57])  # never a step end for these binary steps
    exact = np.stack([theta_star + expm(-H * t) @ (theta0 - theta_star) for t in ts])
    for method in ("dopri5", "tsit5"):
        errs = []
        hs = np.array([0.125, 0.0625, 0.03125])
        for h in hs:
            r = sadfast.solve_flows(
                prob, theta0, 2.0, rtol=1e3, atol=1e3, first_step=h, max_step=h, method=method,
                save_at=ts, store="trajectory",
            )  # fmt: skip
            errs.append(np.abs(r.trace_theta[0] - exact).max())
        order = np.polyfit(np.log(hs), np.log(errs), 1)[0]
        assert order >= 3.7, (method, order, errs)


def test_save_at_traces_and_trajectory() -> None:
    _, prob, theta0 = poly1d(K=3)
    ts = np.linspace(0, 20, 9)
    res = sadfast.solve_flows(prob, theta0, 20.0, save_at=ts, store="trajectory")
    assert res.trace_loss.shape == (3, 9) and res.trace_theta.shape == (3, 9, prob.model.P)
    np.testing.assert_array_equal(res.trace_theta[:, 0], theta0)
    np.testing.assert_allclose(
        res.trace_loss, prob.loss(res.trace_theta.reshape(-1, prob.model.P)).reshape(3, 9), rtol=1e-14
    )
    np.testing.assert_allclose(res.trace_theta_norm, np.linalg.norm(res.trace_theta, axis=2), rtol=1e-14)
    np.testing.assert_array_equal(res.trace_theta[:, -1], res.theta)
    assert np.all(np.diff(res.trace_loss, axis=1) < 0)  # a gradient flow decreases the loss
    summary = sadfast.solve_flows(prob, theta0, 20.0, save_at=ts)
    assert summary.trace_theta is None
    np.testing.assert_array_equal(summary.trace_loss, res.trace_loss)


def test_events_stop_each_flow_alone() -> None:
    _, prob, theta0 = poly1d(K=16, seed=4)
    free = sadfast.solve_flows(prob, theta0, 50.0, save_at=[0.0, 50.0])
    eps = float(np.median(free.loss))
    res = sadfast.solve_flows(prob, theta0, 50.0, loss_below=eps)
    hit = res.status == FlowStatus.LOSS_BELOW
    assert 0 < hit.sum() < 16
    assert np.all(res.loss[hit] <= eps) and np.all(res.t[hit] < 50.0)
    assert np.all(res.status[~hit] == FlowStatus.REACHED_T_END)
    np.testing.assert_array_equal(res.theta[~hit], free.theta[~hit])
    np.testing.assert_allclose(prob.loss(res.theta[hit]), res.loss[hit], rtol=1e-14)

    R = float(np.median(free.theta_norm))
    res = sadfast.solve_flows(prob, theta0, 50.0, theta_norm_above=R)
    hit = res.status == FlowStatus.THETA_NORM_ABOVE
    assert 0 < hit.sum() < 16 and np.all(res.theta_norm[hit] >= R)

    res = sadfast.solve_flows(prob, theta0, 50.0, grad_norm_below=1e30)
    assert np.all(res.status == FlowStatus.GRAD_NORM_BELOW) and np.all(res.t == 0.0)


def test_weight_decay_flow_converges_to_a_critical_point() -> None:
    model = sadfast.MLP([1, 8, 1], activation="tanh", weight_decay=0.05)
    X = np.linspace(-1, 1, 16)[:, None]
    prob = model.bind(X, X**2)
    # With rtol 1e-6 the integration error keeps |grad| near 1e-6 around the critical point, so the
    # event threshold sits above that floor.
    res = sadfast.solve_flows(prob, model.init(4, seed=2), 2000.0, grad_norm_below=1e-5)
    assert np.all(res.status == FlowStatus.GRAD_NORM_BELOW)
    assert np.all(res.grad_norm <= 1e-5) and np.all(res.t < 2000.0)
    np.testing.assert_allclose(np.linalg.norm(prob.grad(res.theta), axis=1), res.grad_norm, rtol=1e-12)


def test_failures_are_isolated_bitwise() -> None:
    _, prob, theta0 = poly1d(K=5)
    ok = sadfast.solve_flows(prob, theta0, 20.0, save_at=[0.0, 10.0, 20.0])
    bad = theta0.copy()
    bad[2] = 1e200  # the loss overflows to inf: NONFINITE from the start
    res = sadfast.solve_flows(prob, bad, 20.0, save_at=[0.0, 10.0, 20.0])
    assert res.status[2] == FlowStatus.NONFINITE and FlowStatus(res.status[2]).failed
    keep = [0, 1, 3, 4]
    for name in ("theta", "loss", "t", "n_grad_evals", "trace_loss"):
        np.testing.assert_array_equal(getattr(res, name)[keep], getattr(ok, name)[keep])

    n = int(np.sort(ok.n_accepted)[2])
    res = sadfast.solve_flows(prob, theta0, 20.0, max_steps=n)
    failed = res.status == FlowStatus.MAX_STEPS
    assert failed.any() and not failed.all()
    np.testing.assert_array_equal(res.theta[~failed], ok.theta[~failed])
    assert np.all(res.n_accepted[failed] + res.n_rejected[failed] == n)


def test_step_underflow_status() -> None:
    _, prob, theta0 = poly1d(K=2)
    res = sadfast.solve_flows(prob, theta0, 1e6 + 5.0, rtol=1e-13, atol=1e-300, max_step=1e-20, t0=1e6)
    assert np.all(res.status == FlowStatus.STEP_UNDERFLOW)
    assert "step size" in FlowStatus.STEP_UNDERFLOW.message


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_resume_is_bitwise_identical(tmp_path, method) -> None:
    _, prob, theta0 = poly2d(K=5)
    ts = np.linspace(0, 40, 21)
    full = sadfast.solve_flows(prob, theta0, 40.0, save_at=ts, store="trajectory", method=method)
    part = sadfast.solve_flows(prob, theta0, 17.3, save_at=ts[ts <= 17.3], store="trajectory", method=method)
    path = part.save(tmp_path / "ckpt")
    again = sadfast.resume(path, 40.0, save_at=ts)
    for name in (
        "t",
        "theta",
        "loss",
        "grad_norm",
        "theta_norm",
        "status",
        "n_grad_evals",
        "n_accepted",
        "n_rejected",
        "trace_loss",
        "trace_theta_norm",
        "trace_grad_norm",
        "trace_theta",
    ):
        np.testing.assert_array_equal(getattr(again, name), getattr(full, name), err_msg=name)


def test_resume_to_a_time_inside_the_last_step() -> None:
    _, prob, theta0 = poly1d(K=3)
    a = sadfast.solve_flows(prob, theta0, 10.0)
    t2 = 10.0 + 1e-3  # inside the step that crossed 10 for every flow
    b = sadfast.resume(a, t2)
    ref = sadfast.solve_flows(prob, theta0, t2)
    np.testing.assert_array_equal(b.theta, ref.theta)
    np.testing.assert_array_equal(b.n_grad_evals, ref.n_grad_evals)


def test_thread_and_batch_invariance() -> None:
    _, prob, theta0 = poly2d(K=9)
    old = sadfast.get_num_threads()
    try:
        sadfast.set_num_threads(1)
        r1 = sadfast.solve_flows(prob, theta0, 15.0, save_at=[5.0, 15.0])
        sadfast.set_num_threads(2)
        r2 = sadfast.solve_flows(prob, theta0, 15.0, save_at=[5.0, 15.0])
    finally:
        sadfast.set_num_threads(old)
    np.testing.assert_array_equal(r1.theta, r2.theta)
    np.testing.assert_array_equal(r1.trace_loss, r2.trace_loss)
    alone = sadfast.solve_flows(prob, theta0[6], 15.0, save_at=[5.0, 15.0])
    np.testing.assert_array_equal(alone.theta[0], r1.theta[6])
    np.testing.assert_array_equal(alone.n_grad_evals[0], r1.n_grad_evals[6])


def test_ctrl_c_interrupts_a_long_solve_and_is_resumable() -> None:
    _, prob, theta0 = poly2d(K=8)
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            sadfast.solve_flows(prob, theta0, 1e7, method="dopri5")  # (auto would get there in time)
    finally:
        timer.cancel()
    assert time.perf_counter() - start < 3.0
    partial = info.value.result  # type: ignore[attr-defined]
    assert np.all(partial.status == FlowStatus.RUNNING)
    assert np.all(partial._batch.array("t") > 0)


def test_progress_bar_and_summary(capsys) -> None:
    _, prob, theta0 = poly1d(K=3)
    res = sadfast.solve_flows(prob, theta0, 5.0, progress=True)
    err = capsys.readouterr().err
    assert "flows" in err and "3/3" in err
    text = res.summary()
    assert "REACHED_T_END 3" in text and "gradient evaluations per flow" in text
    assert repr(res) == text


def test_bad_input() -> None:
    model, prob, theta0 = poly1d(K=2)
    cases = [
        (dict(rtol=0.0), ValueError, "rtol"),
        (dict(rtol=-1e-3), ValueError, "rtol"),
        (dict(rtol=1e-20), ValueError, "rtol"),
        (dict(atol=0.0), ValueError, "atol"),
        (dict(atol="1e-9"), TypeError, "atol"),
        (dict(save_at=[0.0, 2.0, 1.0]), ValueError, "save_at: expected strictly increasing"),
        (dict(save_at=[0.0, 20.0]), ValueError, r"save_at: expected times in \[t0, t_end\]"),
        (dict(save_at=[[0.0]]), ValueError, "save_at"),
        (dict(max_steps=0), ValueError, "max_steps"),
        (dict(loss_below=-1.0), ValueError, "loss_below"),
        (dict(theta_norm_above=float("nan")), ValueError, "theta_norm_above"),
        (dict(store="all"), ValueError, "store"),
        (dict(first_step=0.0), ValueError, "first_step"),
        (dict(method="rk45"), ValueError, "method: unknown name 'rk45'"),
        (dict(method=["dopri5"]), TypeError, "method: expected a name"),
        # a rank only the methods with a Hessian approximation use is refused, not ignored
        (dict(method="rkc", hessian_rank=8), ValueError, r"hessian_rank: only methods \['rosw', 'auto'\]"),
        (dict(method="dopri5", hessian_rank=0), ValueError, "method='dopri5' would ignore hessian_rank=0"),
        (dict(hessian_rank=-1), ValueError, "hessian_rank: expected an integer >= 0"),
        (dict(progress="yes"), TypeError, "progress: expected True, False or None, got str"),
    ]
    for kwargs, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            sadfast.solve_flows(prob, theta0, 10.0, **kwargs)
    with pytest.raises(ValueError, match="t_end: expected a time after t0"):
        sadfast.solve_flows(prob, theta0, 0.0)
    with pytest.raises(ValueError, match="t_end: expected a finite number"):
        sadfast.solve_flows(prob, theta0, float("inf"))
    with pytest.raises(ValueError, match=r"theta0: expected shape \(49,\) or \(K, 49\)"):
        sadfast.solve_flows(prob, theta0[:, :10], 10.0)
    with pytest.raises(ValueError, match="theta0: expected finite"):
        sadfast.solve_flows(prob, np.full((2, 49), np.nan), 10.0)
    with pytest.raises(TypeError, match="problem"):
        sadfast.solve_flows(model, theta0, 10.0)
    res = sadfast.solve_flows(prob, theta0, 1.0, save_at=[0.0, 1.0])
    with pytest.raises(ValueError, match="t_end: expected a time >= the previous"):
        sadfast.resume(res, 0.5)
    with pytest.raises(ValueError, match="save_at: must start with"):
        sadfast.resume(res, 2.0, save_at=[0.5, 2.0])
    with pytest.raises(TypeError, match="progress: expected True, False or None"):
        sadfast.resume(res, 2.0, progress=1)
    assert np.all(res.status == FlowStatus.REACHED_T_END)  # a refused resume leaves it as it was
    with pytest.raises(ValueError, match="not a sadfast FlowResult checkpoint"):
        path = os.path.join(os.path.dirname(__file__), "_not_a_checkpoint.npz")
        np.savez(path, a=np.zeros(2))
        try:
            sadfast.load_result(path)
        finally:
            os.remove(path)


def test_load_result_reads_checkpoints_that_name_give_ups_no_rkc(tmp_path):
    # The per-flow count of stiff-method give-ups was saved as `state_no_rkc` (0 or 1) before it
    # became a count.
    model = sadfast.MLP([1, 8, 1], activation="tanh")
    X = np.linspace(-1, 1, 16)[:, None]
    res = sadfast.solve_flows(model.bind(X, X**2), model.init(3, seed=0), 5.0, method="auto")
    path = res.save(tmp_path / "new.npz")
    with np.load(path) as z:
        arrays = {("state_no_rkc" if k == "state_give_ups" else k): z[k] for k in z.files}
    arrays["state_no_rkc"] = np.array([0, 1, 0], dtype=np.int8)
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    back = sadfast.load_result(old)
    np.testing.assert_array_equal(back._batch.array("give_ups"), [0, 1, 0])
    np.testing.assert_array_equal(back.theta, res.theta)


def test_resuming_a_checkpoint_of_another_integrator_revision_warns(tmp_path):
    # rosw/auto changed their numbers (rosw: revision 2, auto: 3); checkpoints written before
    # revisions were recorded carry none (1): resuming one continues with the new numbers, which
    # is said, not silent.
    model = sadfast.MLP([1, 8, 1], activation="tanh")
    X = np.linspace(-1, 1, 16)[:, None]
    prob = model.bind(X, X**2)
    for method in ("auto", "dopri5"):
        revision = sadfast.flows.INTEGRATOR_REVISION[method]
        res = sadfast.solve_flows(prob, model.init(3, seed=0), 5.0, method=method)
        assert res.integrator_revision == revision
        path = res.save(tmp_path / f"{method}.npz")
        assert sadfast.load_result(path).integrator_revision == revision
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if k != "integrator_revision"}
        old = tmp_path / f"{method}_old.npz"
        np.savez(old, **arrays)
        back = sadfast.load_result(old)
        assert back.integrator_revision == 1
        if method == "auto":
            assert revision > 1
            with pytest.warns(
                UserWarning, match=rf"revision 1 of the 'auto' integrator; .* revision {revision}"
            ):
                again = sadfast.resume(back, 6.0)
        else:
            again = sadfast.resume(back, 6.0)  # dopri5's numbers never changed: no warning
        assert np.all(again.t == 6.0)
        assert again.integrator_revision == revision


def test_load_result_rejects_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an archive\n")
    single = tmp_path / "one.npy"
    np.save(single, np.zeros(3))
    truncated = tmp_path / "cut.npz"
    np.savez(truncated, a=np.zeros(100))
    truncated.write_bytes(truncated.read_bytes()[:60])
    for path in (text, single, truncated):
        with pytest.raises(ValueError, match=r"path: .* is not a sadfast FlowResult checkpoint"):
            sadfast.load_result(path)
    # A checkpoint missing an entry: a ValueError naming the file and the entry, not a KeyError.
    model = sadfast.MLP([1, 4, 1], activation="tanh")
    X = np.linspace(-1, 1, 8)[:, None]
    good = sadfast.solve_flows(model.bind(X, X**2), model.init(2, seed=0), 1.0).save(tmp_path / "ok.npz")
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    for missing in ("state_y", "state_n_accepted", "settings", "X", "wall_time"):
        damaged = tmp_path / f"no_{missing}.npz"
        np.savez(damaged, **{k: v for k, v in arrays.items() if k != missing})
        with pytest.raises(
            ValueError, match=rf"path: .*no_{missing}.npz is a damaged sadfast checkpoint: {missing}"
        ):
            sadfast.load_result(damaged)
