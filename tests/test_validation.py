"""Bad input gets a clear ValueError/TypeError naming the argument; never a crash."""

from __future__ import annotations

import numpy as np
import pytest
import sadfast
from sadfast import _core


@pytest.fixture
def model() -> sadfast.MLP:
    return sadfast.MLP([2, 4, 1], activation="tanh")


@pytest.fixture
def data(rng: np.random.Generator):
    X = rng.uniform(-1, 1, (10, 2))
    return X, X[:, :1] ** 2


def test_bad_widths() -> None:
    with pytest.raises(ValueError, match="widths"):
        sadfast.MLP([3])
    with pytest.raises(ValueError, match=r"widths\[1\]"):
        sadfast.MLP([3, 0, 1])
    with pytest.raises(TypeError, match=r"widths\[1\]"):
        sadfast.MLP([3, 2.5, 1])
    with pytest.raises(TypeError, match="widths"):
        sadfast.MLP("3,4")


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match="activation: unknown name 'swishy'"):
        sadfast.MLP([1, 2, 1], activation="swishy")
    with pytest.raises(ValueError, match="loss: unknown name 'l2'"):
        sadfast.MLP([1, 2, 1], loss="l2")
    with pytest.raises(TypeError, match="activation"):
        sadfast.MLP([1, 2, 1], activation=3)
    with pytest.raises(ValueError, match="activation"):
        _core.Problem([1, 2, 1], "nope", "mse", 0.0, np.zeros((2, 1)), np.zeros((2, 1)))


def test_bad_weight_decay() -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="weight_decay"):
            sadfast.MLP([1, 2, 1], weight_decay=bad)
    with pytest.raises(TypeError, match="weight_decay"):
        sadfast.MLP([1, 2, 1], weight_decay="0.1")


def test_bad_theta(model, data) -> None:
    X, Y = data
    prob = model.bind(X, Y)
    with pytest.raises(ValueError, match=r"theta: expected shape \(17,\) or \(K, 17\).*got \(16,\)"):
        prob.loss(np.zeros(16))
    with pytest.raises(ValueError, match="theta: expected a 1-D or 2-D array"):
        prob.loss(np.zeros((2, 2, 17)))
    with pytest.raises(ValueError, match="K >= 1"):
        prob.loss(np.zeros((0, 17)))
    with pytest.raises(TypeError, match="theta: expected a real numeric array"):
        prob.loss(np.zeros(17, dtype=complex))
    with pytest.raises(TypeError, match="theta"):
        prob.loss(np.array(["a"] * 17))
    with pytest.raises(TypeError, match="theta"):
        prob.loss(np.ones(17, dtype=bool))
    with pytest.raises(ValueError, match="theta: expected finite values, got 1 NaN"):
        prob.grad(np.r_[np.zeros(16), np.nan])
    with pytest.raises(ValueError, match="v: expected"):
        prob.hvp(np.zeros(17), np.zeros(16))
    with pytest.raises(ValueError, match="v: expected"):
        prob.hvp(np.zeros((2, 17)), np.zeros((3, 17)))


def test_convertible_and_noncontiguous_theta_are_copied(model, data) -> None:
    X, Y = data
    prob = model.bind(X, Y)
    theta = model.init(4, seed=0)
    wide = np.zeros((4, 2 * model.P))
    wide[:, ::2] = theta
    np.testing.assert_array_equal(prob.grad(wide[:, ::2]), prob.grad(theta))
    np.testing.assert_allclose(
        prob.loss(theta.astype(np.float32)), prob.loss(theta.astype(np.float32).astype(float))
    )
    assert np.isfinite(prob.loss(np.ones(model.P, dtype=np.int64)))
    assert np.isfinite(prob.loss(list(theta[0])))


def test_bad_data(model) -> None:
    with pytest.raises(ValueError, match=r"X: expected shape \(N, 2\)"):
        model.bind(np.zeros((5, 3)), np.zeros((5, 1)))
    with pytest.raises(ValueError, match="X: expected a 1-D or 2-D array"):
        model.bind(np.zeros((5, 2, 1)), np.zeros((5, 1)))
    with pytest.raises(ValueError, match=r"Y: expected shape \(5, 1\) to match X"):
        model.bind(np.zeros((5, 2)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="X: expected finite values"):
        model.bind(np.full((5, 2), np.inf), np.zeros((5, 1)))
    with pytest.raises(ValueError, match="Y: expected finite values"):
        model.bind(np.zeros((5, 2)), np.full((5, 1), np.nan))
    with pytest.raises(ValueError, match=r"X: expected shape \(N, 2\) with N >= 1"):
        model.bind(np.zeros((0, 2)), np.zeros((0, 1)))
    with pytest.raises(TypeError, match="model"):
        sadfast.Problem("mlp", np.zeros((5, 2)), np.zeros((5, 1)))


def test_one_dimensional_data_when_unambiguous() -> None:
    m = sadfast.MLP([1, 3, 1])
    x = np.linspace(-1, 1, 8)
    p = m.bind(x, x**2)
    assert p.X.shape == (8, 1) and p.Y.shape == (8, 1)
    m2 = sadfast.MLP([2, 3, 1])
    with pytest.raises(ValueError, match=r"X: expected shape \(N, 2\)"):
        m2.bind(x, x)


def test_cross_entropy_labels() -> None:
    m = sadfast.MLP([2, 4, 3], loss="cross_entropy")
    X = np.zeros((4, 2))
    assert np.isfinite(m.loss(m.init(seed=0), X, np.array([0, 1, 2, 1])))
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 2\]"):
        m.bind(X, np.array([0, 1, 3, 1]))
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 2\]"):
        m.bind(X, np.array([0, -1, 2, 1]))
    with pytest.raises(ValueError, match="integer labels"):
        m.bind(X, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="sum to 1"):
        m.bind(X, np.full((4, 3), 0.5))
    probs = np.full((4, 3), 1 / 3)
    np.testing.assert_allclose(
        m.loss(m.init(seed=0), X, probs), m.loss(m.init(seed=0), X, np.full((4, 3), 1 / 3)), rtol=0
    )


def test_bce_targets_range() -> None:
    m = sadfast.MLP([1, 2, 1], loss="bce")
    with pytest.raises(ValueError, match=r"bce targets must lie in \[0, 1\]"):
        m.bind(np.zeros((3, 1)), np.array([0.0, 1.5, 0.2]))


def test_native_layer_checks_shapes() -> None:
    p = _core.Problem([2, 3, 1], "tanh", "mse", 0.0, np.zeros((4, 2)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"theta: expected shape \(K, 13\)"):
        p.loss_grad(np.zeros((2, 12)))
    with pytest.raises(TypeError):
        p.loss_grad(np.zeros((2, 13), dtype=np.float32))
    with pytest.raises(ValueError, match="Y: expected shape"):
        _core.Problem([2, 3, 1], "tanh", "mse", 0.0, np.zeros((4, 2)), np.zeros((3, 1)))


def test_runtime_controls() -> None:
    with pytest.raises(ValueError, match="threads"):
        sadfast.set_num_threads(0)
    with pytest.raises(TypeError):
        sadfast.set_num_threads(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="isa: 'avx512'"):
        sadfast.set_kernel_isa("avx512")
    assert sadfast.kernel_isa() in ("avx2", "baseline")
