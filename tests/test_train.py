"""Discrete baselines: GD, momentum and Adam/AdamW against NumPy implementations of PyTorch's
update rules, and GD against the gradient flow."""

from __future__ import annotations

import numpy as np
import pytest
import sadfast
from reference import rel_err
from sadfast import FlowStatus


def problem(K: int = 3):
    model = sadfast.MLP([2, 6, 1], activation="gelu")
    X = np.random.default_rng(5).uniform(-1, 1, (24, 2))
    return model.bind(X, (X[:, :1] * X[:, 1:]) ** 2), model.init(K, seed=3)


def numpy_run(prob, theta0, method, lr, steps, momentum=0.9, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    y = theta0.copy()
    m = np.zeros_like(y)
    v = np.zeros_like(y)
    for s in range(steps):
        g = prob.grad(y)
        y *= 1 - lr * wd
        if method == "gd":
            y -= lr * g
        elif method == "momentum":
            m = g.copy() if s == 0 else momentum * m + g
            y -= lr * m
        else:
            m += (g - m) * (1 - b1)
            v = v * b2 + (1 - b2) * g * g
            denom = np.sqrt(v) / np.sqrt(1 - b2 ** (s + 1)) + eps
            y -= (lr / (1 - b1 ** (s + 1))) * m / denom
    return y


@pytest.mark.parametrize(
    ("method", "kw", "ref_kw"),
    [
        ("gd", {}, {}),
        ("momentum", {"momentum": 0.8}, {"momentum": 0.8}),
        ("adam", {}, {}),
        (
            "adam",
            {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
            {"b1": 0.8, "b2": 0.99, "eps": 1e-6, "wd": 0.1},
        ),
    ],
)
def test_against_numpy_optimizers(method, kw, ref_kw) -> None:
    prob, theta0 = problem()
    res = sadfast.train(prob, theta0, method=method, lr=0.01, steps=200, **kw)
    assert np.all(res.status == FlowStatus.REACHED_T_END) and np.all(res.steps == 200)
    for k in range(3):
        assert rel_err(res.theta[k], numpy_run(prob, theta0[k], method, 0.01, 200, **ref_kw)) <= 1e-12
    np.testing.assert_allclose(res.loss, prob.loss(res.theta), rtol=1e-14)


def test_against_torch_adam() -> None:
    torch = pytest.importorskip("torch")
    prob, theta0 = problem(K=1)
    res = sadfast.train(prob, theta0, method="adam", lr=0.01, steps=100, weight_decay=0.05)
    p = torch.tensor(theta0[0].copy(), requires_grad=True)
    opt = torch.optim.AdamW([p], lr=0.01, weight_decay=0.05)
    for _ in range(100):
        opt.zero_grad()
        p.grad = torch.as_tensor(prob.grad(p.detach().numpy()))
        opt.step()
    assert rel_err(res.theta[0], p.detach().numpy()) <= 1e-12


def test_gd_converges_to_the_flow_at_first_order() -> None:
    prob, theta0 = problem(K=2)
    T = 2.0
    flow = sadfast.solve_flows(prob, theta0, T, rtol=1e-10, atol=1e-12)
    errs = []
    for lr in (0.02, 0.01, 0.005):
        gd = sadfast.train(prob, theta0, method="gd", lr=lr, steps=round(T / lr))
        errs.append(np.linalg.norm(gd.theta - flow.theta))
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all((ratios > 1.8) & (ratios < 2.2)), errs  # explicit Euler: error ~ lr


def test_traces_events_and_invariance() -> None:
    prob, theta0 = problem(K=6)
    res = sadfast.train(prob, theta0, method="adam", lr=0.01, steps=300, record_every=50)
    np.testing.assert_array_equal(res.record_steps, np.arange(0, 301, 50))
    assert res.trace_loss.shape == (6, 7)
    np.testing.assert_allclose(res.trace_loss[:, 0], prob.loss(theta0), rtol=1e-14)
    np.testing.assert_array_equal(res.trace_loss[:, -1], res.loss)
    eps = float(np.median(res.loss))
    ev = sadfast.train(prob, theta0, method="adam", lr=0.01, steps=300, loss_below=eps)
    hit = ev.status == FlowStatus.LOSS_BELOW
    assert 0 < hit.sum() < 6 and np.all(ev.loss[hit] <= eps) and np.all(ev.steps[hit] < 300)
    np.testing.assert_array_equal(ev.theta[~hit], res.theta[~hit])
    alone = sadfast.train(prob, theta0[4], method="adam", lr=0.01, steps=300)
    np.testing.assert_array_equal(alone.theta[0], res.theta[4])
    assert "adam" in res.summary() and "REACHED_T_END 6" in repr(res)


def test_nonfinite_run_is_isolated() -> None:
    prob, theta0 = problem(K=3)
    ok = sadfast.train(prob, theta0, method="adam", lr=0.01, steps=50)
    bad = theta0.copy()
    bad[1] = 1e200  # the loss overflows: this run fails at step 0
    mixed = sadfast.train(prob, bad, method="adam", lr=0.01, steps=50)
    assert mixed.status[1] == FlowStatus.NONFINITE and mixed.steps[1] == 0
    np.testing.assert_array_equal(mixed.theta[[0, 2]], ok.theta[[0, 2]])
    np.testing.assert_array_equal(mixed.trace_loss[[0, 2]], ok.trace_loss[[0, 2]])


def test_bad_input() -> None:
    prob, theta0 = problem()
    for kwargs, exc, msg in [
        (dict(method="sgd"), ValueError, "method: unknown name 'sgd'"),
        (dict(method=None), TypeError, "method: expected one of"),
        (dict(progress="no"), TypeError, "progress: expected True, False or None"),
        (dict(lr=0.0), ValueError, "lr"),
        (dict(steps=-1), ValueError, "steps"),
        (dict(record_every=0), ValueError, "record_every"),
        (dict(momentum=1.0), ValueError, "momentum"),
        (dict(betas=(0.9, 1.0)), ValueError, "betas"),
        (dict(betas=0.9), TypeError, "betas"),
        (dict(eps=-1.0), ValueError, "eps"),
        (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    ]:
        with pytest.raises(exc, match=msg):
            sadfast.train(prob, theta0, **kwargs)
    with pytest.raises(ValueError, match="theta0"):
        sadfast.train(prob, theta0[:, :3])
