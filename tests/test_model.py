"""Model object: parameter layout, initialization, flatten/unflatten."""

from __future__ import annotations

import numpy as np
import pytest
import sadfast


def test_layout_matches_torch_linear_order() -> None:
    model = sadfast.MLP([3, 4, 2])
    assert model.P == 3 * 4 + 4 + 4 * 2 + 2
    l0, l1 = model.layers
    assert (l0.weight, l0.bias, l0.weight_shape) == (slice(0, 12), slice(12, 16), (4, 3))
    assert (l1.weight, l1.bias, l1.weight_shape) == (slice(16, 24), slice(24, 26), (2, 4))
    theta = np.arange(model.P, dtype=float)
    (w0, b0), (w1, b1) = model.unflatten(theta)
    assert w0[1, 2] == 5.0 and b0[0] == 12.0 and w1[0, 3] == 19.0
    assert np.array_equal(model.flatten([(w0, b0), (w1, b1)]), theta)


def test_forward_uses_the_documented_layout(rng: np.random.Generator) -> None:
    model = sadfast.MLP([3, 4, 2], activation="tanh")
    theta = model.init(seed=1)
    (w0, b0), (w1, b1) = model.unflatten(theta)
    X = rng.normal(size=(6, 3))
    np.testing.assert_allclose(model.forward(theta, X), np.tanh(X @ w0.T + b0) @ w1.T + b1, rtol=1e-14)


def test_batched_unflatten_roundtrip() -> None:
    model = sadfast.MLP([2, 3, 3, 1])
    theta = model.init(5, seed=0)
    params = model.unflatten(theta)
    assert params[1][0].shape == (5, 3, 3)
    assert np.array_equal(model.flatten(params), theta)


def test_lecun_init_is_the_documented_draw() -> None:
    model = sadfast.MLP([4, 8, 1])
    theta = model.init(6, seed=42)
    z = np.random.default_rng(42).standard_normal((6, model.P))
    l0, l1 = model.layers
    np.testing.assert_array_equal(theta[:, l0.weight], z[:, l0.weight] / 2.0)
    np.testing.assert_array_equal(theta[:, l1.bias], z[:, l1.bias] / np.sqrt(8.0))
    np.testing.assert_array_equal(model.init(3, seed=42), theta[:3])
    np.testing.assert_array_equal(model.init(seed=42), theta[0])


def test_xavier_uniform_init() -> None:
    model = sadfast.MLP([4, 20, 1])
    theta = model.init(200, seed=3, scale="xavier_uniform")
    l0, l1 = model.layers
    a0 = np.sqrt(6 / 24)
    w = theta[:, l0.weight]
    assert np.abs(w).max() <= a0 and np.abs(w).max() > 0.95 * a0
    assert np.all(theta[:, l0.bias] == 0) and np.all(theta[:, l1.bias] == 0)
    np.testing.assert_allclose(w.var(), a0**2 / 3, rtol=0.05)
    u = np.random.default_rng(3).random((200, model.P))
    np.testing.assert_array_equal(w, a0 * (2 * u[:, l0.weight] - 1))
    np.testing.assert_array_equal(model.init(7, seed=3, scale="xavier_uniform"), theta[:7])


def test_silu_alias_and_repr() -> None:
    m = sadfast.MLP([1, 2, 1], activation="silu", weight_decay=0.5)
    assert m.activation == "swish"
    assert "P=7" in repr(m) and "weight_decay=0.5" in repr(m)


def test_flops_count() -> None:
    m = sadfast.MLP([4, 32, 32, 1])
    # forward 2*(4*32 + 32*32 + 32) per point, weight gradients the same, signals through 2 layers
    per_point = 2 * (128 + 1024 + 32) * 2 + 2 * (1024 + 32)
    assert m.flops_per_grad(256) == per_point * 256


@pytest.mark.parametrize("scale", sadfast.INIT_SCHEMES)
def test_init_bad_input(scale: str) -> None:
    m = sadfast.MLP([1, 3, 1])
    with pytest.raises(ValueError, match="K"):
        m.init(0, scale=scale)
    with pytest.raises(ValueError, match="scale"):
        m.init(2, scale="he")
    with pytest.raises(TypeError, match="seed"):
        m.init(2, seed=1.5)


def test_problem_pickles_as_model_and_data() -> None:
    import pickle

    model = sadfast.MLP([2, 5, 3], activation="gelu", loss="cross_entropy", weight_decay=0.01)
    rng = np.random.default_rng(3)
    prob = model.bind(rng.uniform(-1, 1, (20, 2)), rng.integers(0, 3, 20))
    back = pickle.loads(pickle.dumps(prob))
    assert back.model.widths == model.widths and back.model.weight_decay == 0.01
    np.testing.assert_array_equal(back.X, prob.X)
    np.testing.assert_array_equal(back.Y, prob.Y)
    th = model.init(4, seed=1)
    np.testing.assert_array_equal(back.loss_and_grad(th)[1], prob.loss_and_grad(th)[1])
