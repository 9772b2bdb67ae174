"""A first look at sadfast: 256 tanh networks fitting y = x^2, gradients and Hessian-vector
products for all of them in one call each. Runs in a second or two."""

from __future__ import annotations

import time

import numpy as np
import sadfast


def main() -> None:
    model = sadfast.MLP([1, 16, 1], activation="tanh", loss="mse")
    X = np.random.default_rng(0).uniform(-1, 1, (32, 1))
    problem = model.bind(X, X**2)
    theta = model.init(256, seed=0)  # 256 initializations, one per row

    loss, grad = problem.loss_and_grad(theta)
    hv = problem.hvp(theta, grad)  # H g for every flow: curvature along the gradient
    curvature = np.einsum("kp,kp->k", grad, hv) / np.einsum("kp,kp->k", grad, grad)

    # A few hundred steps of plain gradient descent on every flow at once.
    lr = 0.05
    t0 = time.perf_counter()
    steps = 500
    for _ in range(steps):
        theta -= lr * problem.grad(theta)
    dt = time.perf_counter() - t0

    print(f"{model}, N={problem.n_points}, K={theta.shape[0]} flows, kernels: {sadfast.kernel_isa()}")
    print(f"initial loss: median {np.median(loss):.3e}, curvature g.Hg/g.g median {np.median(curvature):.3f}")
    final = problem.loss(theta)
    print(f"after {steps} GD steps (lr={lr}): loss median {np.median(final):.3e}, min {final.min():.3e}")
    print(f"{steps * theta.shape[0] / dt:,.0f} gradient evaluations per second")


if __name__ == "__main__":
    main()
