"""Outcome classification and growth-law fits: synthetic traces with known behaviour, then real
flows."""

from __future__ import annotations

import numpy as np
import pytest
import sadfast
from sadfast.analysis import classify_outcomes, fit_growth, growth_by_window

T = np.geomspace(1e-2, 1e4, 80)


def test_fit_growth_recovers_known_laws() -> None:
    norms = np.stack([2 + 0.5 * np.log(T), 1 + 0.3 * np.sqrt(T), 2 * T**0.25])
    fit = fit_growth(T, norms)
    assert list(fit.best) == ["log", "sqrt", "power"]
    assert fit.log_b[0] == pytest.approx(0.5, rel=1e-10) and fit.log_a[0] == pytest.approx(2.0, rel=1e-10)
    assert fit.sqrt_b[1] == pytest.approx(0.3, rel=1e-10)
    assert fit.power_alpha[2] == pytest.approx(0.25, rel=1e-10) and fit.power_c[2] == pytest.approx(
        2.0, rel=1e-10
    )
    assert fit.r2_log[0] == pytest.approx(1.0) and fit.r2_log[1] < 0.99
    assert fit.counts() == {"log": 1, "power": 1, "sqrt": 1}


def test_fit_growth_ignores_stopped_flows() -> None:
    norms = np.stack([2 + np.log(T), np.where(T < 10, 1 + T, np.nan)])
    fit = fit_growth(T, norms)
    assert np.isfinite(fit.log_b[0]) and np.isnan(fit.log_b[1])


def test_classify_synthetic_traces() -> None:
    rng = np.random.default_rng(0)
    loss = np.stack([1e-2 / (1 + T), 0.1 + 1 / (1 + T) ** 2, 0.5 + 0 * T])
    norm = np.stack([3 + 0.4 * np.log1p(T), 2 - np.exp(-T), 2 + 0.01 * rng.standard_normal(T.size)])
    grad = np.stack([1e-2 / (1 + T), 1e-3 * np.exp(-T) + 1e-9, 0.1 + 0 * T])
    out = classify_outcomes(T, loss, norm, grad)
    assert list(out.label) == ["diverging", "converged", "undecided"]
    assert out.counts() == {"converged": 1, "diverging": 1, "undecided": 1}
    assert out.norm_monotone[0] and out.loss_decreasing[0] and out.norm_change[0] > 0.01


def _classify_by_loop(t, L, N, G, tail, settle_tail, settled, loss_floor):  # type: ignore[no-untyped-def]
    """The per-flow definition of classify_outcomes' statistics, written as a loop (its first
    implementation): the reference the vectorized one must match bitwise."""
    from sadfast.analysis import _tail_mask

    m, ms = _tail_mask(t, tail), _tail_mask(t, settle_tail)
    K = N.shape[0]
    change, settle, settle_loss, last_g = (np.full(K, np.nan) for _ in range(4))
    mono, dec = np.zeros(K, dtype=bool), np.zeros(K, dtype=bool)
    with np.errstate(invalid="ignore"):  # inf - inf in a settle tail: NaN, as intended
        for k in range(K):
            ok = m & np.isfinite(N[k]) & np.isfinite(L[k])
            if ok.sum() < 2:
                continue
            n, lo = N[k, ok], L[k, ok]
            change[k] = (n[-1] - n[0]) / max(abs(n[0]), 1e-300)
            dec[k] = bool(lo[-1] <= lo[0] * (1 + 1e-12))
            g = G[k, np.isfinite(G[k])]
            last_g[k] = g[-1] if g.size else np.nan
            oks = ms & np.isfinite(N[k])
            if oks.sum() >= 2:
                ns, ls = N[k, oks], L[k, oks]
                settle[k] = (ns.max() - ns.min()) / max(abs(ns[-1]), 1e-300)
                mono[k] = bool(np.all(np.diff(ns) > 0)) and (ns[-1] - ns[0]) > settled * abs(ns[-1])
                lmax, lmin = ls.max(), ls.min()
                settle_loss[k] = 0.0 if lmax <= loss_floor else (lmax - lmin) / max(abs(ls[-1]), 1e-300)
    return change, settle, settle_loss, mono, dec, last_g


def test_classify_matches_the_per_flow_definition_bitwise() -> None:
    """Random traces with every kind of gap: flows stopped early (NaN tails), NaN holes inside the
    tails, a loss non-finite where the norm is finite, grad norms all NaN, rising, flat and
    noisy norms, losses under the floor, ties (a norm that repeats: not strictly rising)."""
    from sadfast.analysis import DEFAULT_LOSS_FLOOR, DEFAULT_SETTLE_TAIL, DEFAULT_SETTLED, DEFAULT_TAIL

    rng = np.random.default_rng(5)
    K, S = 600, T.size
    kind = rng.integers(0, 4, K)[:, None]
    N = np.where(kind == 0, 2 + 0.3 * np.log1p(T), 1 + rng.random((K, S)) * 1e-3)
    N = np.where(kind == 1, np.round(2 + np.log1p(T), 1), N)  # plateaus: repeated values
    N = np.where(kind == 2, 2 + np.cumsum(rng.standard_normal((K, S)), axis=1) * 1e-3, N)
    L = np.exp(-rng.random((K, 1)) * np.log1p(T)) * rng.choice([1.0, 1e-25], (K, 1))
    G = rng.random((K, S))
    stop = rng.integers(0, S + 1, K)  # a flow stopped before save time `stop`
    N[np.arange(S) >= stop[:, None]] = np.nan
    L[np.arange(S) >= stop[:, None]] = np.nan
    N[rng.random((K, S)) < 0.05] = np.nan
    L[rng.random((K, S)) < 0.05] = np.nan
    L[rng.random((K, S)) < 0.01] = np.inf
    G[rng.random((K, S)) < 0.1] = np.nan
    G[:20] = np.nan
    out = classify_outcomes(T, L, N, G)
    want = _classify_by_loop(
        T, L, N, G, DEFAULT_TAIL, DEFAULT_SETTLE_TAIL, DEFAULT_SETTLED, DEFAULT_LOSS_FLOOR
    )
    got = (
        out.norm_change,
        out.settle_change,
        out.settle_loss_change,
        out.norm_monotone,
        out.loss_decreasing,
        out.last_grad_norm,
    )
    for name, g, w in zip(("change", "settle", "settle_loss", "mono", "dec", "last_g"), got, want, strict=True):
        np.testing.assert_array_equal(g, w, err_msg=name)
    # the random cases reach every branch
    assert np.isnan(out.norm_change).any() and np.isfinite(out.norm_change).any()
    assert out.norm_monotone.any() and (~out.norm_monotone & np.isfinite(out.settle_change)).any()
    assert (out.settle_loss_change == 0).any() and np.isnan(
        out.settle_loss_change[np.isfinite(out.settle_change)]
    ).any()
    assert set(out.counts().values()) != {0} and out.counts()["diverging"] > 0


def test_real_flows_weight_decay_converges_and_sad_diverges() -> None:
    X = np.linspace(-1, 1, 32)[:, None]
    ts = np.geomspace(1e-2, 3000, 60)
    wd = sadfast.MLP([1, 8, 1], activation="tanh", weight_decay=0.05)
    res = sadfast.solve_flows(wd.bind(X, X**2), wd.init(3, seed=2), ts[-1], save_at=ts)
    out = classify_outcomes(ts, res.trace_loss, res.trace_theta_norm, res.trace_grad_norm)
    assert list(out.label) == ["converged"] * 3

    sad = sadfast.MLP([1, 16, 1], activation="tanh")
    res = sadfast.solve_flows(sad.bind(X, X**2), sad.init(3, seed=0), ts[-1], save_at=ts)
    out = classify_outcomes(ts, res.trace_loss, res.trace_theta_norm, res.trace_grad_norm)
    assert list(out.label) == ["diverging"] * 3
    fit = fit_growth(ts, res.trace_theta_norm)
    assert np.all(fit.log_b > 0)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="theta_norm: expected 80 columns"):
        fit_growth(T, np.ones((2, 79)))
    with pytest.raises(ValueError, match="tail"):
        fit_growth(T, np.ones(80), tail=0.0)
    with pytest.raises(ValueError, match="at least 3 positive save times"):
        fit_growth(np.array([0.0, 1.0]), np.ones(2))
    with pytest.raises(ValueError, match="same shape"):
        classify_outcomes(T, np.ones((2, 80)), np.ones((3, 80)), np.ones((2, 80)))
    # Times out of order would fit a decreasing log t: refused by every function reading traces.
    ones = np.ones((2, 80))
    for t_bad in (T[::-1], np.r_[T[:40], T[39:79]]):
        for call, args in (
            (fit_growth, (ones,)),
            (classify_outcomes, (ones, ones, ones)),
            (growth_by_window, (ones, ones)),
            (sadfast.analysis.estimate_limit_loss, (ones,)),
        ):
            with pytest.raises(ValueError, match="t: expected strictly increasing save times"):
                call(t_bad, *args)
    for kwargs, exc, msg in [
        (dict(tail=0.0), ValueError, r"tail: expected a fraction in \(0, 1\], got 0.0"),
        (dict(tail=1.5), ValueError, "tail: expected a fraction"),
        (dict(tail=float("nan")), ValueError, "tail: expected a finite number"),
        (dict(settle_tail=2.0), ValueError, "settle_tail: expected a fraction"),
        (dict(settle_tail="0.1"), TypeError, "settle_tail: expected a finite number"),
        (dict(converged_grad=-1e-4), ValueError, "converged_grad: expected a finite number >= 0"),
        (dict(settled=float("nan")), ValueError, "settled: expected a finite number >= 0"),
        (dict(diverging_growth=-0.01), ValueError, "diverging_growth"),
        (dict(loss_floor=float("inf")), ValueError, "loss_floor"),
    ]:
        with pytest.raises(exc, match=msg):
            classify_outcomes(T, ones, ones, ones, **kwargs)
    with pytest.raises(TypeError, match="tail: expected a finite number"):
        fit_growth(T, ones, tail="half")


def test_lanczos_extremes_match_dense_eigenvalues() -> None:
    from sadfast.analysis import hessian_extremes

    model = sadfast.MLP([2, 6, 5, 1], activation="softplus")
    X = np.random.default_rng(2).uniform(-1, 1, (30, 2))
    prob = model.bind(X, X[:, :1] * X[:, 1:])
    theta = model.init(4, seed=5)
    ex = hessian_extremes(prob, theta, iterations=model.P)
    for k in range(4):
        H = prob.hvp(np.repeat(theta[k][None], model.P, 0), np.eye(model.P))
        ev = np.linalg.eigvalsh(0.5 * (H + H.T))
        scale = np.abs(ev).max()
        assert abs(ex.lambda_min[k] - ev[0]) <= 1e-8 * scale
        assert abs(ex.lambda_max[k] - ev[-1]) <= 1e-8 * scale
    # initializations are far from critical points: the gradient hides the sign of lambda_min
    assert list(ex.kind) == ["unresolved"] * 4 and np.all(ex.resolution > np.abs(ex.lambda_min))


def test_lanczos_chunks_bound_memory_and_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from sadfast.analysis import hessian_extremes

    model = sadfast.MLP([2, 6, 1], activation="tanh")
    X = np.random.default_rng(1).uniform(-1, 1, (20, 2))
    prob = model.bind(X, X[:, :1] ** 2)
    theta = model.init(7, seed=3)
    whole = hessian_extremes(prob, theta, iterations=12)
    batches: list[int] = []
    hvp = prob.hvp

    def counting_hvp(th, v, **kw):
        batches.append(th.shape[0])
        return hvp(th, v, **kw)

    monkeypatch.setattr(prob, "hvp", counting_hvp)
    per_flow = 13 * model.P * 8  # bytes of one flow's Krylov basis (iterations + 1 vectors)
    chunked = hessian_extremes(prob, theta, iterations=12, max_memory=3 * per_flow)
    # chunks of 3, 3, 1 flows, 12 Lanczos HVPs and 2 for the resolution each
    assert max(batches) == 3 and sum(batches[::14]) == 7 and len(batches) == 3 * 14
    for name in ("lambda_min", "lambda_max", "kind", "iterations", "lambda_min_slope", "resolution"):
        assert np.array_equal(getattr(whole, name), getattr(chunked, name)), name
    batches.clear()
    tiny = hessian_extremes(prob, theta, iterations=12, max_memory=1)  # at least one flow per chunk
    assert set(batches) == {1} and np.array_equal(tiny.lambda_min, whole.lambda_min)
    for bad, error in (
        (0, ValueError),
        (-5, ValueError),
        (1.5, TypeError),
        (True, TypeError),
        ("1GB", TypeError),
    ):
        with pytest.raises(error, match="max_memory: expected an integer >= 1"):
            hessian_extremes(prob, theta, max_memory=bad)
    with pytest.raises(TypeError, match="iterations: expected an integer >= 1"):
        hessian_extremes(prob, theta, iterations=1.5)
    with pytest.raises(ValueError, match=r"start: expected shape \(\d+, \d+\), one vector per flow"):
        hessian_extremes(prob, theta, start=np.ones((1, 3)))
    with pytest.raises(ValueError, match="tol: expected a finite number >= 0"):
        hessian_extremes(prob, theta, tol=float("nan"))


def test_critical_point_types() -> None:
    from sadfast.analysis import hessian_extremes

    # Linear least squares with full-rank data: the Hessian is positive definite (a minimum).
    lin = sadfast.MLP([3, 1], activation="identity")
    X = np.random.default_rng(0).normal(size=(10, 3))
    ex = hessian_extremes(lin.bind(X, X[:, :1]), lin.init(2, seed=0))
    assert list(ex.kind) == ["minimum", "minimum"] and np.all(ex.iterations <= lin.P)
    # A converged weight-decay flow ends at a minimum; a tanh net at zero weights has a flat
    # (degenerate) Hessian direction for every unused hidden unit's incoming weights.
    wd = sadfast.MLP([1, 8, 1], activation="tanh", weight_decay=0.05)
    Xw = np.linspace(-1, 1, 16)[:, None]
    prob = wd.bind(Xw, Xw**2)
    res = sadfast.solve_flows(prob, wd.init(3, seed=2), 3000.0, grad_norm_below=1e-5)
    assert list(hessian_extremes(prob, res.theta).kind) == ["minimum"] * 3
    # Without weight decay, a tanh net whose hidden weights and biases are all zero is a critical
    # point once its output bias is the mean target (the only gradient left): a flat direction
    # for every output weight and every incoming weight (degenerate), nothing negative (y = x^2
    # on symmetric x is uncorrelated with x).
    net = sadfast.MLP([1, 4, 1], activation="tanh")
    zero = np.zeros((1, net.P))
    zero[0, -1] = np.mean(Xw**2)
    ex0 = hessian_extremes(net.bind(Xw, Xw**2), zero)
    assert ex0.kind[0] == "degenerate" and abs(ex0.lambda_min[0]) <= 1e-12 and ex0.grad_norm[0] < 1e-15
    # With y = x^2 + x that set of points is invariant under the flow (the output weights get no
    # gradient there) and the flow converges in it to a strict saddle, resolved.
    sad = wd.bind(Xw, Xw**2 + Xw)
    start = np.zeros((1, wd.P))
    start[0, -1] = 0.3
    res = sadfast.solve_flows(sad, start, 1000.0)
    ex1 = hessian_extremes(sad, res.theta)
    assert ex1.kind[0] == "saddle" and ex1.lambda_min[0] < -0.5 and ex1.resolution[0] < 1e-6


def test_resolution_is_the_gradient_of_lambda_min() -> None:
    """lambda_min_slope = |grad_theta lambda_min|, against central differences of dense
    eigenvalues, at initializations (generic points: lambda_min is simple and the gradient is
    large, so most are unresolved); resolution and kind follow their definitions."""
    from sadfast.analysis import critical_kind, hessian_extremes

    model = sadfast.MLP([2, 6, 5, 1], activation="softplus")
    X = np.random.default_rng(2).uniform(-1, 1, (30, 2))
    prob = model.bind(X, X[:, :1] * X[:, 1:])
    theta = model.init(4, seed=5)
    ex = hessian_extremes(prob, theta, iterations=model.P)
    eye = np.eye(model.P)

    def eigenvalues(th: np.ndarray) -> np.ndarray:
        H = prob.hvp(np.repeat(th[None], model.P, 0), eye)
        return np.linalg.eigvalsh(0.5 * (H + H.T))

    h = 1e-6
    for k in range(4):
        ev = eigenvalues(theta[k])
        assert ev[1] - ev[0] > 1e3 * h * ex.lambda_min_slope[k]  # simple over the differences' steps
        grad = [(eigenvalues(theta[k] + h * e)[0] - eigenvalues(theta[k] - h * e)[0]) / (2 * h) for e in eye]
        assert ex.lambda_min_slope[k] == pytest.approx(np.linalg.norm(grad), rel=1e-6)
    np.testing.assert_allclose(ex.grad_norm, np.linalg.norm(prob.grad(theta), axis=1), rtol=1e-14)
    np.testing.assert_array_equal(ex.resolution, np.sqrt(ex.lambda_min_slope * ex.grad_norm))
    np.testing.assert_array_equal(ex.kind, critical_kind(ex.lambda_min, ex.lambda_max, ex.resolution))
    assert set(ex.counts()) == {"minimum", "saddle", "degenerate", "unresolved"}
    # resolve=False: the sign test at the point itself, whatever its gradient
    plain = hessian_extremes(prob, theta, iterations=model.P, resolve=False)
    assert np.array_equal(plain.lambda_min, ex.lambda_min) and np.all(np.isnan(plain.resolution))
    assert set(plain.counts()) == {"minimum", "saddle", "degenerate"} and "unresolved" not in plain.kind
    np.testing.assert_array_equal(plain.kind, critical_kind(ex.lambda_min, ex.lambda_max))
    with pytest.raises(TypeError, match="resolve: expected True or False, got str"):
        hessian_extremes(prob, theta, resolve="yes")
    # the rule on its own: bound = max(tol |lambda|_max, resolution)
    kinds = critical_kind(
        [1e-3, -1e-3, 1e-3, 1e-9, 1e-9, -1e-3], [1.0] * 6, [1e-4, 1e-4, 1e-2, 0, 1e-2, np.nan]
    )
    assert list(kinds) == ["minimum", "saddle", "unresolved", "degenerate", "unresolved", "saddle"]


def test_flows_stopped_short_of_a_minimum_are_unresolved() -> None:
    """1-8-1 tanh flows with weight decay at t = 1e4 still move through regions of slight
    negative curvature towards one minimum: the sign test calls some of them saddles; the
    resolution calls them unresolved. Integrated to 1e5 they are all resolved minima."""
    from sadfast import basins
    from sadfast.analysis import hessian_extremes
    from sadfast.experiments import polynomial_data

    model = sadfast.MLP([1, 8, 1], "tanh", weight_decay=1e-2)
    X, Y = polynomial_data("x^2", 16, 0)
    prob = model.bind(X, Y)
    theta0 = basins.Slice.random(model, seed=0, a=(-3.0, 3.0, 6), b=(-3.0, 3.0, 5)).thetas(slice(0, 6))
    short = sadfast.solve_flows(prob, theta0, 1e4, method="auto")
    sign = hessian_extremes(prob, short.theta, resolve=False)
    resolved = hessian_extremes(prob, short.theta)
    false_saddles = sign.kind == "saddle"
    assert false_saddles.any() and np.all(resolved.kind[false_saddles] == "unresolved")
    assert np.all(np.abs(resolved.lambda_min) < resolved.resolution)
    longer = sadfast.solve_flows(prob, theta0, 1e5, method="auto")
    assert list(hessian_extremes(prob, longer.theta).kind) == ["minimum"] * 30
    assert np.ptp(longer.loss) < 1e-9 * longer.loss[0]  # one minimum


def test_attraction_threshold_separates_initial_losses() -> None:
    from sadfast.analysis import attraction_threshold

    L0 = np.array([0.01, 0.02, 0.05, 0.08, 0.1, 0.3, 0.5, 1.0, np.nan])
    # Flows started below 0.1 reach the optimum (limit ~0); one at 0.1 and one at 0.5 stop at a
    # positive critical value; the one at 0.3 and at 1.0 still reach it; a failed flow (NaN).
    lim = np.array([0.0, 1e-9, 0.0, 2e-8, 0.04, 0.0, 0.04, 1e-9, 0.2])
    th = attraction_threshold(L0, lim, tol=1e-6)
    np.testing.assert_array_equal(th.reaches, [1, 1, 1, 1, 0, 1, 0, 1, 0])
    assert th.eps == 0.1 and th.highest_reaching == 1.0
    assert th.summary()["reaching"] == 6 and th.summary()["flows"] == 9
    assert np.nansum(th.fraction) > 0 and th.bins.size == 13
    # Above an optimal level of 0.01 the excess losses count; every flow reaching it gives eps = inf.
    th2 = attraction_threshold(L0[:4], np.full(4, 0.01), optimal_level=0.01, tol=1e-12)
    assert th2.eps == np.inf and th2.reaches[:4].all()
    # The default tolerance: 1e-3 of the median initial excess loss.
    assert attraction_threshold(L0, lim).tol == pytest.approx(1e-3 * np.median(L0[:8]))
    with pytest.raises(ValueError, match="limit_loss: expected the shape"):
        attraction_threshold(L0, lim[:3])
    with pytest.raises(ValueError, match="no flow has a finite"):
        attraction_threshold([np.nan], [np.nan])
    with pytest.raises(ValueError, match="n_bins: expected an integer >= 1, got 0"):
        attraction_threshold(L0, lim, n_bins=0)
    with pytest.raises(ValueError, match="optimal_level: expected a finite number"):
        attraction_threshold(L0, lim, optimal_level=float("nan"))
    with pytest.raises(ValueError, match="tol: expected a finite number >= 0"):
        attraction_threshold(L0, lim, tol=-1.0)


def test_round_off_level_loss_counts_as_settled() -> None:
    """An interpolating network at its global minimum: the loss sits at round-off level, its
    relative changes mean nothing, and the flow is converged."""
    t = np.geomspace(1e-2, 1e3, 40)
    norm = 3.0 + 0.5 * (1 - np.exp(-t))  # settles
    rng = np.random.default_rng(0)
    loss = np.where(t < 10, np.exp(-t), 1e-16 * (1 + rng.random(t.size)))  # round-off jitter at the end
    grad = np.sqrt(loss)
    assert classify_outcomes(t, loss, norm, grad).label[0] == "converged"
    # The same jitter well above the floor is not settled.
    assert classify_outcomes(t, loss * 1e8, norm, grad).label[0] == "undecided"


# ---- growth window by window ---------------------------------------------------------------------

TW = np.geomspace(1e-1, 1e5, 61)  # 10 save times per decade


def test_growth_by_window_recovers_local_laws() -> None:
    norms = np.stack([2 + 0.3 * np.log(TW), 1.5 * np.sqrt(TW), 2 * TW**0.2])
    loss = np.stack([3 / TW, 3 / TW, 0.5 * TW**-0.4])
    wg = growth_by_window(TW, norms, loss)
    assert wg.t_start.size == 6
    np.testing.assert_allclose(wg.t_start, 10.0 ** np.arange(-1, 5), rtol=1e-12)
    np.testing.assert_allclose(wg.t_end, 10.0 ** np.arange(0, 6), rtol=1e-12)
    # a + b ln t: the same log slope in every window, the local exponent falling towards 0
    np.testing.assert_allclose(wg.log_slope[0], 0.3, rtol=1e-12)
    assert np.all(np.diff(wg.alpha[0]) < 0) and wg.alpha[0, -1] < 0.1
    # pure powers: the exponent exactly, whatever the window
    np.testing.assert_allclose(wg.alpha[1], 0.5, rtol=1e-12)
    np.testing.assert_allclose(wg.alpha[2], 0.2, rtol=1e-12)
    np.testing.assert_allclose(wg.loss_exponent[:2], 1.0, rtol=1e-12)
    np.testing.assert_allclose(wg.loss_exponent[2], 0.4, rtol=1e-12)
    # sqrt((t1 - t0)(3/t0 - 3/t1)) = (t1 - t0) sqrt(3 / (t0 t1)): 9 sqrt(0.3) for decades
    np.testing.assert_allclose(wg.path_bound[0], 9 * np.sqrt(0.3), rtol=1e-12)
    np.testing.assert_allclose(wg.increment[0], 0.3 * np.log(10), rtol=1e-12)
    np.testing.assert_allclose(wg.bound_ratio[0], 0.3 * np.log(10) / (9 * np.sqrt(0.3)), rtol=1e-12)
    # sqrt growth outruns what a 1/t loss decay can pay for: the ratio grows like sqrt t
    assert np.all(np.diff(wg.bound_ratio[1]) > 0) and wg.bound_ratio[1, -1] > 1

    rows = wg.summary()
    assert len(rows) == 6 and rows[0]["t_start"] == pytest.approx(0.1)
    assert rows[-1]["alpha"]["q10"] == pytest.approx(np.quantile(wg.alpha[:, -1], 0.1), rel=1e-12)
    assert rows[-1]["alpha"]["median"] == pytest.approx(0.2, rel=1e-12)
    only_log = wg.summary(flows=np.array([True, False, False]))
    assert only_log[2]["log_slope"]["median"] == pytest.approx(0.3, rel=1e-12)
    assert only_log[2]["max_bound_ratio"] == pytest.approx(wg.bound_ratio[0, 2], rel=1e-12)


def test_growth_by_window_edges_and_stopped_flows() -> None:
    norms = np.stack([1 + np.log1p(TW), np.where(TW < 50, 1 + np.log1p(TW), np.nan)])
    loss = np.stack([1 / (1 + TW), 1 / (1 + TW)])
    half = growth_by_window(TW, norms, loss, width=0.5, t_min=1.0)
    np.testing.assert_allclose(half.t_start, 10.0 ** np.arange(0, 5, 0.5), rtol=1e-12)
    assert half.log_slope.shape == (2, 10)
    stopped = np.isnan(half.log_slope[1])
    assert stopped.tolist() == [False] * 3 + [True] * 7  # its last value is at t < 50
    rows = half.summary(flows=np.array([False, True]))
    assert len(rows) == 3  # windows without a finite value of the selected flows are left out
    # edges snap to the nearest save time: with 3 save times per decade, decade edges still land
    coarse = np.geomspace(1e-1, 1e5, 19)
    wg = growth_by_window(coarse, 1 + np.log1p(coarse), 1 / (1 + coarse), width=1.0)
    np.testing.assert_allclose(wg.t_start, 10.0 ** np.arange(-1, 5), rtol=1e-12)


def test_growth_by_window_bad_input() -> None:
    n, lo = 1 + np.log1p(TW), 1 / (1 + TW)
    with pytest.raises(ValueError, match="width"):
        growth_by_window(TW, n, lo, width=0)
    with pytest.raises(ValueError, match="t_min"):
        growth_by_window(TW, n, lo, t_min=1e6)
    with pytest.raises(ValueError, match="t_min"):
        growth_by_window(TW, n, lo, t_min=-1.0)
    with pytest.raises(ValueError, match="increasing"):
        growth_by_window(TW[::-1], n, lo)
    with pytest.raises(ValueError, match="loss"):
        growth_by_window(TW, n, lo[:-1])
    with pytest.raises(ValueError, match="same shape"):
        growth_by_window(TW, np.stack([n, n]), lo[None].repeat(3, axis=0))
    with pytest.raises(ValueError, match="too few save times"):
        growth_by_window(TW, n, lo, width=0.01, t_min=TW[-1] * 0.999)
    with pytest.raises(ValueError, match="flows"):
        growth_by_window(TW, n, lo).summary(flows=np.array([True, False]))


def test_real_flows_obey_the_gradient_flow_path_bound() -> None:
    # |Delta||theta||| <= integral of ||grad L|| <= sqrt(Delta t Delta L) on every window of real
    # flows (SAD flows to t = 1e6 with the stiff methods, and weight decay flows): a check of the
    # integrators and of the traces' alignment, not only of the analysis.
    X = np.linspace(-1, 1, 32)[:, None]
    ts = np.geomspace(1e-2, 1e6, 81)
    for model in (
        sadfast.MLP([1, 16, 1], activation="tanh"),
        sadfast.MLP([1, 8, 1], activation="softplus", weight_decay=0.05),
    ):
        res = sadfast.solve_flows(model.bind(X, X**2), model.init(8, seed=1), ts[-1], save_at=ts)
        wg = growth_by_window(ts, res.trace_theta_norm, res.trace_loss, width=0.5)
        ratio = wg.bound_ratio
        assert np.all(np.isfinite(ratio[:, :-1]))
        assert np.nanmax(ratio) <= 1 + 1e-6
        assert np.nanmax(ratio) > 0.05  # the bound is not vacuous on these flows
