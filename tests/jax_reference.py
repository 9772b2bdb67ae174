"""JAX autodiff reference (float64): loss, gradient and Hessian-vector product."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")


def _mish(z):
    return z * jnp.tanh(jax.nn.softplus(z))


ACTS = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "swish": jax.nn.silu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "mish": _mish,
    "elu": jax.nn.elu,
    "softsign": jax.nn.soft_sign,
    "relu": jax.nn.relu,
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.01),
    "identity": lambda z: z,
}


def make_loss(widths, activation, loss, weight_decay):
    act = ACTS[activation]

    def f(theta, X, T):
        a, off = X, 0
        for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
            W = theta[off : off + n_in * n_out].reshape(n_out, n_in)
            off += n_in * n_out
            b = theta[off : off + n_out]
            off += n_out
            a = a @ W.T + b
            if i < len(widths) - 2:
                a = act(a)
        n = X.shape[0]
        if loss == "mse":
            ell = jnp.sum((a - T) ** 2) / n
        elif loss == "huber":
            r = jnp.abs(a - T)
            ell = jnp.sum(jnp.where(r <= 1, 0.5 * r**2, r - 0.5)) / n
        elif loss == "bce":
            ell = jnp.sum(jax.nn.softplus(a) - T * a) / n
        else:
            lse = jax.scipy.special.logsumexp(a, axis=1)
            ell = jnp.sum(T.sum(axis=1) * lse - jnp.sum(T * a, axis=1)) / n
        return ell + 0.5 * weight_decay * jnp.dot(theta, theta)

    return f


def loss_grad_hvp(widths, activation, loss, weight_decay, theta, v, X, T):
    f = make_loss(widths, activation, loss, weight_decay)
    th, vv, x, t = (jnp.asarray(a, dtype=jnp.float64) for a in (theta, v, X, T))
    ell, g = jax.value_and_grad(f)(th, x, t)
    _, hv = jax.jvp(lambda p: jax.grad(f)(p, x, t), (th,), (vv,))
    return float(ell), np.asarray(g), np.asarray(hv)
