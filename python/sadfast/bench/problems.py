"""The benchmark problems (polynomial regression with small MLPs) and the same losses written in
JAX and PyTorch as a user of those libraries would write them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..mlp import MLP


@dataclass(frozen=True)
class BenchProblem:
    name: str
    widths: tuple[int, ...]
    activation: str
    n_points: int

    def data(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        X = rng.uniform(-1, 1, (self.n_points, self.widths[0]))
        x = X.T
        if self.name == "poly1d":
            y = x[0] ** 2
        elif self.name == "poly2d":
            y = x[0] ** 2 + x[0] * x[1] - x[1] ** 2
        else:
            y = x[0] * x[1] * x[2] + x[0] ** 2 * x[3] - x[1] ** 3 + 0.5 * x[2] * x[3] + x[0] - 0.5 * x[3] ** 2
        return X, y[:, None]

    def model(self) -> MLP:
        return MLP(list(self.widths), activation=self.activation)


PROBLEMS = {
    "poly1d": BenchProblem("poly1d", (1, 16, 1), "tanh", 32),
    "poly2d": BenchProblem("poly2d", (2, 32, 1), "softplus", 128),
    "poly4d": BenchProblem("poly4d", (4, 32, 32, 1), "gelu", 256),
}


def _mse_loss(p: BenchProblem, act: Callable[[Any], Any], X: Any, Y: Any) -> Callable[[Any], Any]:
    """The MSE loss of a flat theta, for any array library with ``@``, ``.T`` and ``.sum(1)``."""
    layers = p.model().layers

    def loss(theta: Any) -> Any:
        a = X
        for i, ly in enumerate(layers):
            a = a @ theta[ly.weight].reshape(ly.weight_shape).T + theta[ly.bias]
            if i < len(layers) - 1:
                a = act(a)
        return ((a - Y) ** 2).sum(1).mean()

    return loss


def jax_loss(p: BenchProblem) -> Callable[[Any], Any]:
    """The problem's MSE loss of a flat theta in JAX (float64), written as a user would."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    act: Callable[[Any], Any] = {
        "tanh": jnp.tanh,
        "softplus": jax.nn.softplus,
        "gelu": lambda z: jax.nn.gelu(z, approximate=False),
    }[p.activation]
    X, Y = (jnp.asarray(a) for a in p.data())
    return _mse_loss(p, act, X, Y)


def torch_loss(p: BenchProblem) -> Callable[[Any], Any]:
    """The same loss in PyTorch (float64; softplus without torch's threshold cut-off)."""
    import torch

    acts: dict[str, Any] = {
        "tanh": torch.tanh,
        "gelu": torch.nn.functional.gelu,
        "softplus": lambda z: torch.logaddexp(torch.zeros_like(z), z),
    }
    act = acts[p.activation]
    X, Y = (torch.as_tensor(a) for a in p.data())
    return _mse_loss(p, act, X, Y)
