"""Loss, gradient and Hessian-vector product against independent references.

Tolerances: the NumPy reference evaluates the same formulas in another order, so agreement is
at round-off level (1e-12 relative); JAX autodiff likewise (1e-11); 4th-order central finite
differences with h = 1e-3 have truncation ~h^4 = 1e-12 and round-off ~1e-16/h, so 1e-8 relative
is a safe bound that still catches any wrong term.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import sadfast
from reference import (
    SMOOTH,
    dense_targets,
    fd_directional,
    fd_gradient,
    forward_ref,
    make_data,
    mlp_ref,
    rel_err,
)

ARCHS = [[1, 16, 1], [2, 7, 3], [3, 5, 4, 2], [4, 8, 8, 8, 1]]


def _problem(widths, act, loss, wd, n, rng):
    model = sadfast.MLP(widths, activation=act, loss=loss, weight_decay=wd)
    X, Y = make_data(widths, loss, n, rng)
    return model, model.bind(X, Y), X, Y


@pytest.mark.parametrize("act", sadfast.ACTIVATIONS)
@pytest.mark.parametrize("loss", sadfast.LOSSES)
def test_loss_grad_against_numpy(act: str, loss: str, rng: np.random.Generator) -> None:
    for widths, wd in zip(ARCHS, [0.0, 0.1, 0.0, 1e-3], strict=True):
        if loss == "cross_entropy" and widths[-1] == 1:
            widths = [*widths[:-1], 3]
        model, prob, X, Y = _problem(widths, act, loss, wd, 37, rng)
        theta = model.init(3, seed=1)
        ell, grad = prob.loss_and_grad(theta)
        T = dense_targets(loss, Y, widths[-1])
        for k in range(3):
            r_ell, r_grad = mlp_ref(widths, act, loss, wd, theta[k], X, T)
            assert rel_err(ell[k], r_ell) <= 1e-12
            assert rel_err(grad[k], r_grad) <= 1e-12


@pytest.mark.parametrize("act", sadfast.ACTIVATIONS)
def test_forward_against_numpy(act: str, rng: np.random.Generator) -> None:
    widths = [3, 6, 5, 2]
    model = sadfast.MLP(widths, activation=act)
    X = rng.uniform(-2, 2, (23, 3))
    theta = model.init(4, seed=3)
    out = model.forward(theta, X)
    assert out.shape == (4, 23, 2)
    for k in range(4):
        assert rel_err(out[k], forward_ref(widths, act, theta[k], X)) <= 1e-13
    assert model.forward(theta[2], X).shape == (23, 2)


@pytest.mark.parametrize("act", SMOOTH)
@pytest.mark.parametrize("loss", ["mse", "bce", "cross_entropy"])
def test_grad_and_hvp_against_finite_differences(act: str, loss: str, rng: np.random.Generator) -> None:
    widths = [2, 6, 5, 3]
    model, prob, _, _ = _problem(widths, act, loss, 0.05, 29, rng)
    theta = model.init(seed=4)
    grad = prob.grad(theta)
    assert rel_err(grad, fd_gradient(prob.loss, theta)) <= 1e-8
    v = rng.standard_normal(model.P)
    hv = prob.hvp(theta, v)
    assert rel_err(hv, fd_directional(prob.grad, theta, v)) <= 1e-8


def test_huber_hvp_against_finite_differences(rng: np.random.Generator) -> None:
    # Away from the kink |r| = 1 the Huber loss is smooth; data are scaled so that both branches
    # occur but no residual is within the finite-difference stencil of the kink.
    model = sadfast.MLP([2, 5, 1], activation="tanh", loss="huber")
    X = rng.uniform(-1, 1, (40, 2))
    theta = model.init(seed=2)
    f0 = model.forward(theta, X)[:, 0]
    Y = f0 + np.where(rng.random(40) < 0.5, 0.3, 2.5) * rng.choice([-1, 1], 40)
    prob = model.bind(X, Y)
    assert rel_err(prob.grad(theta), fd_gradient(prob.loss, theta)) <= 1e-8
    v = rng.standard_normal(model.P)
    assert rel_err(prob.hvp(theta, v), fd_directional(prob.grad, theta, v)) <= 1e-8


@pytest.mark.parametrize(
    ("act", "loss"),
    [(a, "mse") for a in sadfast.ACTIVATIONS]
    + [(a, lo) for a, lo in itertools.product(("tanh", "gelu"), sadfast.LOSSES)],
)
def test_against_jax(act: str, loss: str, rng: np.random.Generator) -> None:
    jr = pytest.importorskip("jax_reference")
    widths = [3, 8, 6, 2] if loss != "cross_entropy" else [3, 8, 6, 4]
    model, prob, X, Y = _problem(widths, act, loss, 0.01, 31, rng)
    T = dense_targets(loss, Y, widths[-1])
    theta = model.init(2, seed=7)
    v = rng.standard_normal(theta.shape)
    ell, grad = prob.loss_and_grad(theta)
    hv = prob.hvp(theta, v)
    for k in range(2):
        j_ell, j_grad, j_hv = jr.loss_grad_hvp(widths, act, loss, 0.01, theta[k], v[k], X, T)
        assert rel_err(ell[k], j_ell) <= 1e-11
        assert rel_err(grad[k], j_grad) <= 1e-11
        assert rel_err(hv[k], j_hv) <= 1e-11


@pytest.mark.parametrize("act", ["tanh", "softplus", "gelu", "mish", "relu"])
def test_hvp_symmetric_and_linear(act: str, rng: np.random.Generator) -> None:
    model, prob, _, _ = _problem([3, 9, 7, 2], act, "mse", 0.0, 50, rng)
    theta = model.init(seed=9)
    u, v = rng.standard_normal((2, model.P))
    hu, hv = prob.hvp(theta, u), prob.hvp(theta, v)
    assert abs(u @ hv - v @ hu) <= 1e-12 * (abs(u @ hv) + 1e-300) + 1e-13
    lin = prob.hvp(theta, 2.5 * u - 0.75 * v)
    assert rel_err(lin, 2.5 * hu - 0.75 * hv) <= 1e-13


def test_hvp_matches_dense_hessian_symmetric(rng: np.random.Generator) -> None:
    model, prob, _, _ = _problem([2, 4, 1], "softplus", "mse", 0.0, 20, rng)
    theta = model.init(seed=5)
    H = prob.hvp(np.repeat(theta[None], model.P, axis=0), np.eye(model.P))
    assert np.max(np.abs(H - H.T)) <= 1e-13 * np.max(np.abs(H))


def test_single_and_batched_shapes(rng: np.random.Generator) -> None:
    model, prob, _, _ = _problem([2, 5, 1], "tanh", "mse", 0.0, 10, rng)
    theta = model.init(4, seed=0)
    ell, grad = prob.loss_and_grad(theta)
    assert ell.shape == (4,) and grad.shape == (4, model.P)
    e1, g1 = prob.loss_and_grad(theta[1])
    assert np.shape(e1) == () and g1.shape == (model.P,)
    assert prob.hvp(theta[1], theta[0]).shape == (model.P,)
    assert prob.loss(theta).shape == (4,)


def test_batch_invariance_bitwise(rng: np.random.Generator) -> None:
    model, prob, _, _ = _problem([4, 32, 32, 1], "gelu", "mse", 0.0, 64, rng)
    theta = model.init(37, seed=1)
    v = rng.standard_normal(theta.shape)
    ell, grad = prob.loss_and_grad(theta)
    hv = prob.hvp(theta, v)
    for k in (0, 5, 36):
        e1, g1 = prob.loss_and_grad(theta[k])
        assert e1 == ell[k] and np.array_equal(g1, grad[k])
        assert np.array_equal(prob.hvp(theta[k], v[k]), hv[k])
    # Same flows inside a different batch (other neighbours, other offsets).
    sub = np.ascontiguousarray(theta[[36, 3, 5]])
    assert np.array_equal(prob.grad(sub)[2], grad[5])


def test_thread_invariance_bitwise(rng: np.random.Generator) -> None:
    model, prob, _, _ = _problem([2, 32, 1], "softplus", "mse", 0.0, 128, rng)
    theta = model.init(101, seed=2)
    v = rng.standard_normal(theta.shape)
    old = sadfast.get_num_threads()
    try:
        sadfast.set_num_threads(1)
        g1, h1 = prob.grad(theta), prob.hvp(theta, v)
        sadfast.set_num_threads(2)
        g2, h2 = prob.grad(theta), prob.hvp(theta, v)
    finally:
        sadfast.set_num_threads(old)
    assert np.array_equal(g1, g2) and np.array_equal(h1, h2)


def test_thread_invariance_across_processes(tmp_path) -> None:
    code = (
        "import numpy as np, sadfast, sys\n"
        "m = sadfast.MLP([1, 16, 1], 'tanh')\n"
        "X = np.linspace(-1, 1, 32)[:, None]\n"
        "g = m.grad(m.init(64, seed=3), X, X**2)\n"
        "np.save(sys.argv[1], g)\n"
    )
    outs = []
    for n in ("1", "2"):
        path = tmp_path / f"g{n}.npy"
        env = {**os.environ, "OMP_NUM_THREADS": n}
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=env)
        outs.append(np.load(path))
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.skipif("avx2" not in sadfast._core.available_isas(), reason="CPU without AVX2/FMA")
@pytest.mark.parametrize("act", sadfast.ACTIVATIONS)
def test_simd_and_baseline_variants_agree(act: str, rng: np.random.Generator) -> None:
    model, prob, _, _ = _problem([3, 16, 16, 2], act, "mse", 0.0, 40, rng)
    theta = model.init(5, seed=8)
    v = rng.standard_normal(theta.shape)
    old = sadfast.kernel_isa()
    try:
        sadfast.set_kernel_isa("baseline")
        gb, hb = prob.grad(theta), prob.hvp(theta, v)
        sadfast.set_kernel_isa("avx2")
        ga, ha = prob.grad(theta), prob.hvp(theta, v)
    finally:
        sadfast.set_kernel_isa(old)
    assert rel_err(ga, gb) <= 1e-13 and rel_err(ha, hb) <= 1e-13


def test_deep_and_wide_networks(rng: np.random.Generator) -> None:
    widths = [5, 512, 64, 64, 64, 64, 64, 64, 3]
    model, prob, X, Y = _problem(widths, "swish", "mse", 0.0, 16, rng)
    theta = model.init(2, seed=0)
    ell, grad = prob.loss_and_grad(theta)
    r_ell, r_grad = mlp_ref(widths, "swish", "mse", 0.0, theta[1], X, Y)
    assert rel_err(ell[1], r_ell) <= 1e-12 and rel_err(grad[1], r_grad) <= 1e-12
