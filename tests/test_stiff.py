"""The stiff-aware integrators (stabilized explicit RKC, the Rosenbrock W-method ROSW) against exact
solutions, DOP853 and Dormand-Prince."""

from __future__ import annotations

import numpy as np
import pytest
import sadfast
from reference import linear_flow_problem, rel_err, saddle_on_invariant_set
from sadfast import FlowStatus
from scipy.integrate import solve_ivp
from scipy.linalg import expm


def poly1d(K: int = 4):
    model = sadfast.MLP([1, 16, 1], activation="tanh")
    X = np.random.default_rng(0).uniform(-1, 1, (32, 1))
    return model.bind(X, X**2), model.init(K, seed=0)


@pytest.mark.parametrize(
    ("method", "hs", "orders"),
    [
        ("rkc", [0.0625, 0.03125, 0.015625], (1.8, 2.3)),
        ("rosw", [0.125, 0.0625, 0.03125], (2.8, 3.4)),
        # rank 3 < P = 8: W is not the Jacobian, a W-method keeps its order
        (("rosw", 3), [0.125, 0.0625, 0.03125], (2.8, 3.4)),
    ],
)
def test_convergence_order_on_a_linear_flow(method, hs, orders) -> None:
    method, rank = method if isinstance(method, tuple) else (method, None)
    prob, theta0, H, theta_star = linear_flow_problem()
    t_end = 2.0
    exact = theta_star + expm(-H * t_end) @ (theta0 - theta_star)
    errs = []
    for h in hs:
        r = sadfast.solve_flows(
            prob,
            theta0,
            t_end,
            method=method,
            rtol=1e3,
            atol=1e3,
            first_step=h,
            max_step=h,
            hessian_rank=rank,
        )
        assert r.n_rejected[0] == 0 and r.n_accepted[0] == round(t_end / h)
        if method == "rosw":
            # the flow is linear: one exact Hessian (P products, P <= 32) for the whole solve; a
            # rank-3 Lanczos approximation (3 products) refreshed every 20 steps
            n = round(t_end / h)
            assert r.n_hvp[0] == (theta0.size if rank is None else rank * -(-n // 20))
        errs.append(np.linalg.norm(r.theta[0] - exact))
    order = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert orders[0] <= order <= orders[1], (order, errs)


def test_spectral_radius_matches_the_hessian() -> None:
    prob, theta0, H, _ = linear_flow_problem()
    r = sadfast.solve_flows(prob, theta0, 1.0, method="rkc")
    lam = np.abs(np.linalg.eigvalsh(H)).max()
    rho = r._batch.array("rho")[0]
    assert lam <= rho <= 1.2 * lam * (1 + 1e-6) + 1e-9  # power iteration, inflated by the 1.2 safety factor
    assert r.n_hvp[0] >= 20


# Final losses within 1e-6 of the reference: the bar is rtol 1e-8. ROSW (3rd order)
# meets it there (measured <= 1e-7); RKC (2nd order) is within 1.3e-6 at rtol 1e-8 and 3e-7 at 1e-9.
@pytest.mark.parametrize(
    ("method", "rtol", "rank"),
    [("rkc", 1e-9, None), ("rosw", 1e-8, 0), ("rosw", 1e-8, 8), ("rosw", 1e-8, None)],
)
def test_accuracy_against_tight_dop853(method, rtol, rank) -> None:
    prob, theta0 = poly1d(K=3)
    t_end = 10.0
    res = sadfast.solve_flows(
        prob, theta0, t_end, method=method, rtol=rtol, atol=rtol * 1e-3, hessian_rank=rank
    )
    for k in range(3):
        ref = solve_ivp(
            lambda t, y: -prob.grad(y), (0, t_end), theta0[k], method="DOP853", rtol=1e-12, atol=1e-14
        )
        assert rel_err(res.loss[k], prob.loss(ref.y[:, -1])) <= 1e-6


# Measured gradient-equivalents against Dormand-Prince: RKC about 3x fewer at t = 300; ROSW about
# 9x fewer at t = 1e3 (60x at 1e4).
@pytest.mark.parametrize(
    ("method", "t_end", "gain", "rank"),
    [("rkc", 300.0, 2, None), ("rosw", 1000.0, 5, 0), ("rosw", 1000.0, 5, 8)],
)
def test_long_horizon_agrees_with_dormand_prince_and_is_cheaper(method, t_end, gain, rank) -> None:
    prob, theta0 = poly1d(K=3)
    dp = sadfast.solve_flows(prob, theta0, t_end, rtol=1e-10, atol=1e-12, method="dopri5")
    st = sadfast.solve_flows(prob, theta0, t_end, method=method, rtol=1e-8, atol=1e-11, hessian_rank=rank)
    assert np.all(st.status == FlowStatus.REACHED_T_END)
    assert rel_err(st.loss, dp.loss) <= 1e-6
    cheap = sadfast.solve_flows(prob, theta0, t_end, method=method, hessian_rank=rank)
    costly = sadfast.solve_flows(prob, theta0, t_end, method="dopri5")
    assert np.all(cheap.n_grad_evals + 2 * cheap.n_hvp < costly.n_grad_evals / gain)


@pytest.mark.parametrize(("method", "rank"), [("rkc", None), ("rosw", 0), ("rosw", None), ("auto", None)])
def test_resume_and_invariance_are_bitwise(tmp_path, method, rank) -> None:
    prob, theta0 = poly1d(K=5)
    ts = np.linspace(0, 400, 11)
    kw = {"method": method, "hessian_rank": rank}
    full = sadfast.solve_flows(prob, theta0, 400.0, save_at=ts, **kw)
    part = sadfast.solve_flows(prob, theta0, 14.0, save_at=ts[ts <= 14.0], **kw)
    again = sadfast.resume(sadfast.load_result(part.save(tmp_path / "r")), 400.0, save_at=ts)
    for name in ("theta", "loss", "t", "n_grad_evals", "n_hvp", "trace_loss", "trace_theta_norm"):
        np.testing.assert_array_equal(getattr(again, name), getattr(full, name), err_msg=name)
    alone = sadfast.solve_flows(prob, theta0[3], 400.0, save_at=ts, **kw)
    np.testing.assert_array_equal(alone.theta[0], full.theta[3])
    threads = sadfast.get_num_threads()
    sadfast.set_num_threads(1)
    try:
        one_thread = sadfast.solve_flows(prob, theta0, 400.0, save_at=ts, **kw)
    finally:
        sadfast.set_num_threads(threads)
    np.testing.assert_array_equal(one_thread.theta, full.theta)
    assert "Hessian-vector products per flow" in full.summary()
    if method == "auto":  # the solve crossed Dormand-Prince -> RKC -> ROSW, the part did not
        assert np.all(full._batch.array("mode") == 2) and np.all(part._batch.array("mode") == 1)


def test_rosw_events_and_the_size_limit() -> None:
    prob, theta0 = poly1d(K=4)
    r = sadfast.solve_flows(prob, theta0, 1e4, method="rosw", loss_below=1e-4, save_at=[1.0, 10.0])
    assert np.all(r.status == FlowStatus.LOSS_BELOW) and np.all(r.loss <= 1e-4)
    assert np.all(np.isfinite(r.trace_loss))
    big = sadfast.MLP([4, 32, 32, 1], activation="gelu")  # P = 1249
    X = np.random.default_rng(0).uniform(-1, 1, (16, 4))
    with pytest.raises(
        ValueError, match=r"hessian_rank: the exact Hessian \(0\) keeps P x P numbers per flow"
    ):
        sadfast.solve_flows(big.bind(X, X[:, :1]), big.init(1), 1.0, method="rosw", hessian_rank=0)
    with pytest.raises(
        ValueError, match=r"exact Hessian \(0\) keeps P x P numbers .* P = 1249"
    ):  # auto's ROSW too
        sadfast.solve_flows(big.bind(X, X[:, :1]), big.init(1), 1.0, method="auto", hessian_rank=0)
    with pytest.raises(ValueError, match="hessian_rank: expected an integer >= 0, got -1"):
        sadfast.solve_flows(prob, theta0, 1.0, method="rosw", hessian_rank=-1)
    with pytest.raises(TypeError, match="hessian_rank: expected an integer"):
        sadfast.solve_flows(prob, theta0, 1.0, method="rosw", hessian_rank=2.5)


def test_auto_equals_dormand_prince_when_nothing_is_stiff() -> None:
    prob, theta0 = poly1d(K=4)
    dp = sadfast.solve_flows(prob, theta0, 1.0, method="dopri5")
    au = sadfast.solve_flows(prob, theta0, 1.0, method="auto")
    np.testing.assert_array_equal(au.theta, dp.theta)
    np.testing.assert_array_equal(au.n_grad_evals, dp.n_grad_evals)
    assert np.all(au.n_hvp == 0)


def test_auto_switches_on_stiff_flows_and_is_cheaper() -> None:
    prob, theta0 = poly1d(K=4)
    t_end = 1000.0
    dp = sadfast.solve_flows(prob, theta0, t_end, method="dopri5")
    au = sadfast.solve_flows(prob, theta0, t_end)  # auto: the default
    assert au.settings.method == "auto"
    # every flow went stiff (RKC), and on this long horizon moved on to ROSW, whose Hessian
    # approximations (rank 32 by default: P = 49) cost 32 HVPs each
    assert np.all(au._batch.array("mode") == 2)
    assert np.all(au.n_hvp >= 32)
    assert np.all(au.n_grad_evals + 2 * au.n_hvp < dp.n_grad_evals / 5)
    tight = sadfast.solve_flows(prob, theta0, t_end, rtol=1e-10, atol=1e-12, method="dopri5")
    assert rel_err(au.loss, tight.loss) <= 1e-4  # RKC/ROSW are 2nd/3rd order: ~1e-5 at rtol 1e-6


def test_auto_stays_with_rkc_on_short_horizons() -> None:
    prob, theta0 = poly1d(K=4)
    au = sadfast.solve_flows(prob, theta0, 12.0, method="auto")
    assert np.all(au._batch.array("mode") == 1)  # t * rho < 300: no Hessian would pay off
    assert np.all(au._batch.jac_export()[0] == -1)  # none was built


def test_auto_on_larger_networks_uses_lanczos_not_exact_hessians() -> None:
    model = sadfast.MLP([2, 64, 1], activation="softplus")  # P = 257
    X = np.random.default_rng(1).uniform(-1, 1, (64, 2))
    prob = model.bind(X, X[:, :1] ** 2 - X[:, 1:] ** 2)
    theta0 = model.init(2, seed=0)
    au = sadfast.solve_flows(prob, theta0, 300.0, method="auto")
    assert np.all(au.status == FlowStatus.REACHED_T_END)
    mode = au._batch.array("mode")
    assert np.any(mode == 2)  # ROSW on a Lanczos approximation (default cap: 256 steps at P = 257)
    assert sadfast.flows._resolve_rank(None, model.P) == 256
    index, pool = au._batch.jac_export()
    width = pool.shape[1] // (model.P + 1)
    assert pool.shape == (np.count_nonzero(index >= 0), width * (model.P + 1))
    n_ritz = np.count_nonzero(pool[:, width * model.P :], axis=1)  # padding columns have value 0
    assert np.all((n_ritz >= 8) & (n_ritz <= 256)) and n_ritz.max() == width
    # exact Hessians (P products each) pay off only for small networks: P = 257 > 256 stays RKC
    ex = sadfast.solve_flows(prob, theta0, 300.0, method="auto", hessian_rank=0)
    stiff = ex.n_hvp > 0
    assert stiff.any()
    assert np.all(ex._batch.array("mode")[stiff] == 1)
    assert np.all(ex.n_hvp[stiff] % model.P != 0)  # power iterations, not whole Hessians


@pytest.mark.parametrize(
    ("rank", "first_step", "n_ritz", "top_tol"),
    [
        (6, 1e-3, 6, 1e-5),  # fewer steps than the first stopping check: all of them
        (16, 1e-3, 8, 1e-10),  # a short step: nothing is stiff, the run stops at the first check
        (16, 1e-2, 8, 1e-12),  # the top eigenvalue is stiff: found from f(y) by the first check
        (16, 1.5e-2, 12, 1e-12),  # the top two are stiff: found, the run stops at the second check
        (16, 1e3, 16, 1e-12),  # a long step: much of the positive spectrum is stiff, all 16 steps
    ],
)
def test_lanczos_approximation_is_a_rayleigh_ritz_projection_of_the_hessian(
    rank, first_step, n_ritz, top_tol
) -> None:
    prob, theta0 = poly1d(K=2)
    P = prob.model.P
    # one step attempt: the flow's approximation is the one built at theta0 for the first step
    r = sadfast.solve_flows(
        prob, theta0, 1e3, method="rosw", hessian_rank=rank, first_step=first_step, max_steps=1
    )
    assert np.all(r.n_hvp == n_ritz)
    index, pool = r._batch.jac_export()
    # each flow keeps only the n_ritz pairs its run made, not `rank` (both flows made n_ritz)
    assert pool.shape == (2, n_ritz * (P + 1))
    for k in range(2):
        V = pool[index[k], : n_ritz * P].reshape(n_ritz, P).T  # column-major P x n
        vals = pool[index[k], n_ritz * P :]
        H = prob.hvp(np.repeat(theta0[k][None], P, 0), np.eye(P))
        H = 0.5 * (H + H.T)
        lam = np.linalg.eigvalsh(H)
        scale = np.abs(lam).max()
        assert np.all(np.diff(vals) >= 0)
        np.testing.assert_allclose(V.T @ V, np.eye(n_ritz), atol=1e-12)
        np.testing.assert_allclose(V.T @ H @ V, np.diag(vals), atol=1e-10 * scale)
        # Ritz values lie inside the spectrum; the largest (the stiff one) has converged
        assert lam[0] - 1e-10 * scale <= vals[0] and vals[-1] <= lam[-1] + 1e-10 * scale
        assert rel_err(vals[-1], lam[-1]) <= top_tol
        if n_ritz < rank:  # stopped early: 4 spare Ritz values in [0, cut], cut = 0.05 / h
            cut = 0.05 / first_step
            assert np.count_nonzero((vals >= 0) & (vals <= cut)) >= 4
            n_stiff = np.count_nonzero(lam > cut)  # all captured: the top Ritz values match them
            assert n_stiff <= n_ritz - 4
            np.testing.assert_allclose(vals[::-1][:n_stiff], lam[::-1][:n_stiff], rtol=1e-6)


def test_rosw_runs_matrix_free_beyond_the_dense_limit() -> None:
    big = sadfast.MLP([4, 32, 32, 1], activation="gelu")  # P = 1249 > 1024
    X = np.random.default_rng(0).uniform(-1, 1, (32, 4))
    prob = big.bind(X, X[:, :1] * X[:, 1:2] - X[:, 3:] ** 2)
    theta0 = big.init(2, seed=0)
    r = sadfast.solve_flows(prob, theta0, 50.0, method="rosw", rtol=1e-8, atol=1e-11)
    assert np.all(r.status == FlowStatus.REACHED_T_END)
    # refreshes (cap: 209 steps at P = 1249) that stop at 8, 12, ... Lanczos steps once the stiff
    # part is resolved; the pool is as wide as the widest, narrower flows padded with value 0
    assert sadfast.flows._resolve_rank(None, big.P) == 209
    _, pool = r._batch.jac_export()
    width = pool.shape[1] // (big.P + 1)
    n_used = np.count_nonzero(pool[:, width * big.P :], axis=1)
    assert np.all((n_used >= 8) & (n_used <= 209) & (n_used % 4 == 0)) and n_used.max() == width
    ref = sadfast.solve_flows(prob, theta0, 50.0, rtol=1e-11, atol=1e-13, method="dopri5")
    assert rel_err(r.loss, ref.loss) <= 1e-6


def test_auto_falls_back_on_non_smooth_relu_flows(tmp_path) -> None:
    model = sadfast.MLP([1, 16, 1], activation="relu")
    X = np.linspace(-1, 1, 32)[:, None]
    prob = model.bind(X, X**2)
    theta0 = model.init(6, seed=0)
    dp = sadfast.solve_flows(prob, theta0, 300.0, method="dopri5")
    au = sadfast.solve_flows(prob, theta0, 300.0, method="auto", save_at=[100.0, 300.0])
    assert np.all(au.status == FlowStatus.REACHED_T_END)
    assert au.n_grad_evals.sum() + 2 * au.n_hvp.sum() <= 1.5 * dp.n_grad_evals.sum()
    part = sadfast.solve_flows(prob, theta0, 120.0, method="auto", save_at=[100.0])
    # Give-ups are not for good: flows that gave the stiff methods up by t = 120 use them again.
    gave_up = part._batch.array("give_ups") > 0
    assert gave_up.any()
    assert np.all(au.n_hvp[gave_up] > part.n_hvp[gave_up])
    again = sadfast.resume(sadfast.load_result(part.save(tmp_path / "a")), 300.0, save_at=[100.0, 300.0])
    for name in ("theta", "n_grad_evals", "n_hvp", "trace_loss"):
        np.testing.assert_array_equal(getattr(again, name), getattr(au, name), err_msg=name)


def test_auto_costs_little_more_than_dormand_prince_on_short_horizons() -> None:
    # To t = 10 most poly1d flows have just switched to RKC, whose gains have not come yet. Its
    # first spectral radius came from a 20-HVP cold power iteration (auto cost 8.1% more than
    # Dormand-Prince here); it starts from the vector of Hairer's stiffness test now, 5 HVPs
    # (3.2% more, the same stage counts).
    prob, theta0 = poly1d(K=64)
    dp = sadfast.solve_flows(prob, theta0, 10.0, method="dopri5")
    au = sadfast.solve_flows(prob, theta0, 10.0, method="auto")
    assert (au._batch.array("last_mode") == 1).sum() >= 32  # most flows are in RKC
    assert (au.n_grad_evals + 2 * au.n_hvp).sum() <= 1.05 * dp.n_grad_evals.sum()
    assert rel_err(au.loss, dp.loss) <= 1e-4


def test_auto_returns_to_the_stiff_methods_soon_after_giving_them_up() -> None:
    # ReLU flows (init x3) on which the stiff methods are given up again and again. The way back
    # used to grow as 15 * 4^n Dormand-Prince steps after the n-th give-up, so these flows spent
    # most of their time in stability-limited Dormand-Prince steps: 4.96 M gradient-equivalents
    # to t = 1e4 where ROSW alone, rejections and all, needs 0.91 M. Now the wait stays at 60
    # steps (measured 1.04 M).
    model = sadfast.MLP([1, 16, 1], activation="relu")
    X = np.linspace(-1, 1, 32)[:, None]
    prob = model.bind(X, X**2)
    theta0 = (model.init(32, seed=1) * 3)[[1, 15, 20, 30]]
    au = sadfast.solve_flows(prob, theta0, 1e4, method="auto")
    ro = sadfast.solve_flows(prob, theta0, 1e4, method="rosw")
    assert np.all(au.status == FlowStatus.REACHED_T_END)
    assert (au.n_grad_evals + 2 * au.n_hvp).sum() <= 1.5 * (ro.n_grad_evals + 2 * ro.n_hvp).sum()
    assert np.all(au._batch.array("give_ups") > 0)  # the flows this is about
    # Give-ups and returns are each flow's own: one flow alone on one thread is bitwise the same.
    threads = sadfast.get_num_threads()
    sadfast.set_num_threads(1)
    try:
        alone = sadfast.solve_flows(prob, theta0[2], 1e4, method="auto")
    finally:
        sadfast.set_num_threads(threads)
    np.testing.assert_array_equal(alone.theta[0], au.theta[2])
    assert alone.n_hvp[0] == au.n_hvp[2] and alone.n_grad_evals[0] == au.n_grad_evals[2]


def test_auto_keeps_rosw_through_a_burst_of_rejections() -> None:
    # A saturated tanh flow (init x10) on which ROSW meets a burst of rejections near t = 1.2e4:
    # auto used to give the stiff methods up for good there and crawl on with Dormand-Prince at
    # h ~ 0.12 (1.05 M gradients to t = 3e4, 5.1 M to 1e5). A stiff method whose next step is
    # still far past Dormand-Prince's stability edge is kept now.
    model = sadfast.MLP([1, 16, 1], activation="tanh")
    X = np.linspace(-1, 1, 32)[:, None]
    prob = model.bind(X, X**2)
    theta0 = model.init(64, seed=1)[48] * 10
    au = sadfast.solve_flows(prob, theta0, 3e4, method="auto")
    ro = sadfast.solve_flows(prob, theta0, 3e4, method="rosw")
    assert au.status[0] == FlowStatus.REACHED_T_END
    assert au.n_grad_evals[0] + au.n_hvp[0] <= 3 * (ro.n_grad_evals[0] + ro.n_hvp[0])  # measured 1.0x
    assert rel_err(au.loss, ro.loss) <= 1e-3


@pytest.mark.parametrize("method", ["auto", "rosw", "rkc"])
def test_outputs_inside_very_long_stiff_steps_are_accurate(method) -> None:
    # Saturated tanh flows (init x10) to t = 1e8 at the default rtol take steps of h ~ 1e5 with
    # h lambda ~ 1e6. Cubic Hermite interpolation inside such steps multiplied what is left in the
    # stiff directions by h lambda: the output loss at t_end reached 5.4e-5 where the integrated
    # state's was 2.7e-8, and 63 of 64 flows showed loss increases between save times. Outputs
    # there come from sub-steps of the method now.
    model = sadfast.MLP([1, 16, 1], activation="tanh")
    X = np.linspace(-1, 1, 32)[:, None]
    prob = model.bind(X, X**2)
    theta0 = model.init(64, seed=1)[::8] * 10
    # RKC (stages grow with h) on a shorter horizon, where its outputs were already right: a guard
    t_end = 1e8 if method != "rkc" else 1e6
    save = np.geomspace(t_end * 1e-4, t_end, 41)
    r = sadfast.solve_flows(prob, theta0, t_end, method=method, save_at=save)
    assert np.all(r.status == FlowStatus.REACHED_T_END)
    L = r.trace_loss
    assert np.all(L[:, 1:] <= L[:, :-1] * 1.01)  # the loss of a gradient flow never increases
    # the output at t_end (inside the last step) agrees with the integrated state beyond it
    state = r._batch.array("loss")
    assert np.all(np.abs(r.loss - state) <= 0.05 * state + 1e-12)
    if method == "rosw":
        assert np.any(r.n_output_evals > 2 * save.size)  # sub-steps (4 gradients each) were taken
    # a solve stopped inside such a step and resumed redoes its outputs bitwise as one solve
    part = sadfast.solve_flows(prob, theta0, t_end / 3, method=method, save_at=save[save <= t_end / 3])
    again = sadfast.resume(part, t_end, save_at=save)
    for name in ("theta", "loss", "t", "trace_loss", "trace_theta_norm", "n_grad_evals", "n_hvp"):
        np.testing.assert_array_equal(getattr(again, name), getattr(r, name), err_msg=name)


@pytest.mark.parametrize(("method", "rank"), [("rosw", 8), ("rosw", None), ("auto", None)])
def test_stiff_methods_on_cross_entropy_with_weight_decay(method, rank) -> None:
    # The Hessian approximation comes from the general HVP kernel: any loss, any regularization.
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (40, 3))
    model = sadfast.MLP([3, 12, 4], activation="swish", loss="cross_entropy", weight_decay=1e-3)
    prob = model.bind(X, rng.integers(0, 4, 40))
    theta0 = model.init(3, seed=1)
    ref = sadfast.solve_flows(prob, theta0, 200.0, rtol=1e-11, atol=1e-13, method="dopri5")
    res = sadfast.solve_flows(prob, theta0, 200.0, method=method, hessian_rank=rank, rtol=1e-8, atol=1e-11)
    assert np.all(res.status == FlowStatus.REACHED_T_END)
    assert rel_err(res.loss, ref.loss) <= 1e-6  # measured <= 1e-9
    if method == "rosw":
        assert np.all(res.n_hvp > 0)  # (auto stays with Dormand-Prince here: not stiff at this rtol)


def test_default_lanczos_cap_and_compact_checkpoints(tmp_path) -> None:
    from sadfast.flows import _resolve_rank

    # exact for P <= 32; else at most 256 steps and at most 2^18 numbers per flow (but >= 32)
    assert [_resolve_rank(None, P) for P in (32, 33, 49, 257, 1023, 1249, 5701, 10**5)] == [
        0,
        32,
        48,
        256,
        256,
        209,
        45,
        32,
    ]
    assert _resolve_rank(16, 49) == 16 and _resolve_rank(49, 49) == 0
    # flows whose refreshes stopped at different lengths: the checkpoint pads the narrower ones in
    # front (zero vectors, value 0); loading strips the padding, so the resumed solve runs on the
    # same numbers in the same layout as one uninterrupted solve (bitwise)
    prob, theta0 = poly1d(K=6)
    theta0 = theta0 * np.linspace(0.5, 3.0, 6)[:, None]  # different stiffness per flow
    part = sadfast.solve_flows(prob, theta0, 400.0, method="rosw", hessian_rank=24)
    index, pool = part._batch.jac_export()
    P = prob.model.P
    width = pool.shape[1] // (P + 1)
    n_ritz = np.count_nonzero(pool[:, width * P :], axis=1)
    assert len(set(n_ritz.tolist())) > 1 and n_ritz.max() == width <= 24
    for k in range(pool.shape[0]):
        pad = width - n_ritz[k]
        assert np.all(pool[k, : pad * P] == 0) and np.all(pool[k, width * P : width * P + pad] == 0)
    loaded = sadfast.load_result(part.save(tmp_path / "c"))
    i2, p2 = loaded._batch.jac_export()
    np.testing.assert_array_equal(i2, index)
    np.testing.assert_array_equal(p2, pool)
    whole = sadfast.solve_flows(prob, theta0, 3000.0, method="rosw", hessian_rank=24)
    again = sadfast.resume(loaded, 3000.0)
    for name in ("theta", "n_grad_evals", "n_hvp", "n_accepted", "n_rejected"):
        np.testing.assert_array_equal(getattr(again, name), getattr(whole, name), err_msg=name)


@pytest.mark.parametrize(("method", "rank"), [("rosw", 8), ("auto", 8), ("rosw", 0), ("auto", None)])
def test_stiff_methods_keep_flows_on_invariant_sets(method, rank) -> None:
    # Lanczos starts from f(y), which lies in S with y, so W and every stage stay in S: the flow
    # stays exactly in S, at the saddle, as Dormand-Prince's does (from a fixed start vector the
    # Krylov space mixed S with the rest and the flow left the saddle by t ~ 10, for a minimum).
    prob, theta0 = saddle_on_invariant_set()
    ref = sadfast.solve_flows(prob, theta0, 5e3, method="dopri5")
    r = sadfast.solve_flows(prob, theta0, 5e3, method=method, hessian_rank=rank)
    assert np.all(r.status == FlowStatus.REACHED_T_END) and r.n_hvp[0] > 0
    np.testing.assert_array_equal(r.theta[0, :-1], 0.0)  # exactly in S
    assert r.loss[0] == pytest.approx(ref.loss[0], rel=1e-10) and ref.loss[0] == pytest.approx(
        0.491317, rel=1e-6
    )
    assert r.grad_norm[0] < 1e-8


@pytest.mark.parametrize("method", ["rosw", "auto"])
def test_stiff_methods_keep_copied_units_equal(method) -> None:
    # Hidden unit 1 a copy of unit 0 (incoming weight, bias, outgoing weight): the flow keeps them
    # equal (a permutation-invariant subspace). With the Lanczos run started from f(y) they stay
    # bitwise equal, as under Dormand-Prince (from a fixed start vector: apart by 4e-7 / 1e-5).
    model = sadfast.MLP([1, 6, 1], "tanh")
    X = np.linspace(-1, 1, 24)[:, None]
    prob = model.bind(X, X**2 + 0.5 * X)
    (W1, b1), (W2, b2) = (
        tuple(a.copy() for a in layer) for layer in model.unflatten(model.init(1, seed=3)[0])
    )
    W1[1], b1[1], W2[:, 1] = W1[0], b1[0], W2[:, 0]
    theta0 = model.flatten([(W1, b1), (W2, b2)])[None]
    r = sadfast.solve_flows(prob, theta0, 1e4, method=method, hessian_rank=8)
    assert r.n_hvp[0] > 0
    (V1, c1), (V2, _) = model.unflatten(r.theta[0])
    assert np.array_equal(V1[1], V1[0]) and c1[1] == c1[0] and V2[0, 1] == V2[0, 0]
    ref = sadfast.solve_flows(prob, theta0, 1e4, method="dopri5", rtol=1e-10, atol=1e-13)
    assert r.loss[0] == pytest.approx(ref.loss[0], rel=1e-5)
