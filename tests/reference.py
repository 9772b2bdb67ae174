"""Independent references for the kernels: a plain NumPy MLP (textbook formulas, (N, width)
layout, written without looking at the C++), JAX autodiff, and finite differences."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import special

SQRT2 = np.sqrt(2.0)
INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)

# Activations whose second derivative exists everywhere (finite differences apply).
SMOOTH = ("sigmoid", "tanh", "softplus", "swish", "gelu", "mish", "identity")


def act_ref(name: str, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Activation value, first and second derivative (NumPy/SciPy, textbook forms)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _act_ref(name, z)


def _act_ref(name: str, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if name == "sigmoid":
        s = special.expit(z)
        return s, s * (1 - s), s * (1 - s) * (1 - 2 * s)
    if name == "tanh":
        t = np.tanh(z)
        return t, 1 - t**2, -2 * t * (1 - t**2)
    if name == "softplus":
        s = special.expit(z)
        return np.logaddexp(0.0, z), s, s * special.expit(-z)
    if name == "swish":
        s = special.expit(z)
        return z * s, s + z * s * (1 - s), 2 * s * (1 - s) + z * s * (1 - s) * (1 - 2 * s)
    if name == "gelu":
        cdf = 0.5 * (1 + special.erf(z / SQRT2))
        pdf = INV_SQRT_2PI * np.exp(-0.5 * z**2)
        return z * cdf, cdf + z * pdf, 2 * pdf - z**2 * pdf
    if name == "mish":
        sp = np.logaddexp(0.0, z)
        t = np.tanh(sp)
        s = special.expit(z)
        g = 1 - t**2
        d1 = t + z * g * s
        d2 = 2 * g * s + z * (-2 * t * g * s**2 + g * s * (1 - s))
        return z * t, d1, d2
    if name == "elu":
        return (
            np.where(z > 0, z, np.expm1(z)),
            np.where(z > 0, 1.0, np.exp(z)),
            np.where(z > 0, 0.0, np.exp(z)),
        )
    if name == "softsign":
        a = 1 + np.abs(z)
        return z / a, 1 / a**2, -2 * np.sign(z) / a**3
    if name == "relu":
        return np.maximum(z, 0), (z > 0).astype(float), np.zeros_like(z)
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z), np.where(z > 0, 1.0, 0.01), np.zeros_like(z)
    if name == "identity":
        return z.copy(), np.ones_like(z), np.zeros_like(z)
    raise KeyError(name)


def loss_ref(loss: str, f: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean loss over the N rows of f (N, d_out) and its gradient wrt f."""
    n = f.shape[0]
    if loss == "mse":
        r = f - y
        return float(np.sum(r**2) / n), 2 * r / n
    if loss == "huber":
        r = f - y
        a = np.abs(r)
        ell = np.where(a <= 1, 0.5 * r**2, a - 0.5)
        return float(np.sum(ell) / n), np.clip(r, -1, 1) / n
    if loss == "bce":
        return float(np.sum(np.logaddexp(0.0, f) - y * f) / n), (special.expit(f) - y) / n
    if loss == "cross_entropy":
        lse = special.logsumexp(f, axis=1, keepdims=True)
        tsum = y.sum(axis=1, keepdims=True)
        return float((np.sum(tsum * lse) - np.sum(y * f)) / n), (tsum * np.exp(f - lse) - y) / n
    raise KeyError(loss)


def unpack(widths, theta):
    out, off = [], 0
    for n_in, n_out in itertools.pairwise(widths):
        w = theta[off : off + n_in * n_out].reshape(n_out, n_in)
        off += n_in * n_out
        b = theta[off : off + n_out]
        off += n_out
        out.append((w, b))
    return out


def mlp_ref(widths, activation, loss, weight_decay, theta, X, Y):
    """Loss and gradient of one flow by hand-written backpropagation in NumPy."""
    params = unpack(widths, theta)
    acts, derivs = [X], []
    a = X
    for i, (w, b) in enumerate(params):
        z = a @ w.T + b
        if i < len(params) - 1:
            a, d1, _ = act_ref(activation, z)
            derivs.append(d1)
        else:
            a = z
        acts.append(a)
    ell, g = loss_ref(loss, acts[-1], Y)
    ell += 0.5 * weight_decay * float(theta @ theta)
    grads = []
    for i in range(len(params) - 1, -1, -1):
        w, _ = params[i]
        grads.append((g.T @ acts[i], g.sum(axis=0)))
        if i > 0:
            g = (g @ w) * derivs[i - 1]
    flat = np.concatenate([np.concatenate([gw.ravel(), gb]) for gw, gb in reversed(grads)])
    return ell, flat + weight_decay * theta


def forward_ref(widths, activation, theta, X):
    a = X
    params = unpack(widths, theta)
    for i, (w, b) in enumerate(params):
        a = a @ w.T + b
        if i < len(params) - 1:
            a = act_ref(activation, a)[0]
    return a


def fd_gradient(f, theta, h=1e-3):
    """4th-order central differences of a scalar function, one coordinate at a time."""
    P = theta.size
    eye = np.eye(P)
    pts = np.concatenate([theta + c * h * eye for c in (2, 1, -1, -2)])
    vals = f(pts).reshape(4, P)
    return (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)


def fd_directional(g, theta, v, h=1e-3):
    """4th-order central difference of a vector function along v: approximates J(theta) v."""
    pts = np.stack([theta + c * h * v for c in (2, 1, -1, -2)])
    vals = g(pts)
    return (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)


def rel_err(a, b) -> float:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    den = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (den if den > 0 else 1.0))


def make_data(widths, loss, n, rng):
    X = rng.uniform(-1, 1, (n, widths[0]))
    d = widths[-1]
    if loss == "cross_entropy":
        Y = rng.integers(0, d, n)
    elif loss == "bce":
        Y = rng.uniform(0, 1, (n, d))
    else:
        Y = rng.normal(size=(n, d))
    return X, Y


def dense_targets(loss, Y, d):
    return np.eye(d)[Y] if loss == "cross_entropy" else np.asarray(Y, dtype=float).reshape(len(Y), d)


def linear_flow_problem():
    """Linear least squares (identity activation, one layer): its gradient flow is linear with the
    known solution theta(t) = theta* + expm(-H t) (theta0 - theta*). Returns (problem, theta0, H,
    theta*)."""
    import sadfast

    rng = np.random.default_rng(3)
    model = sadfast.MLP([3, 2], activation="identity")
    X = rng.normal(size=(20, 3))
    prob = model.bind(X, rng.normal(size=(20, 2)))
    theta0 = model.init(seed=1)
    P = model.P
    H = prob.hvp(np.repeat(theta0[None], P, 0), np.eye(P))
    theta_star = np.linalg.lstsq(H, -prob.grad(np.zeros(P)), rcond=None)[0]
    return prob, theta0, H, theta_star


def saddle_on_invariant_set():
    """1-8-1 tanh, weight decay 0.01, on y = x^2 + x, and a start whose hidden weights and biases
    and output weights are all zero: the gradient field leaves that set (S) invariant (the output
    weights get no gradient there), and the exact flow converges in S to a strict saddle of the
    full space (lambda_min = -0.75 along the output and incoming weights), loss 0.491317."""
    import sadfast

    model = sadfast.MLP([1, 8, 1], "tanh", weight_decay=1e-2)
    X = np.linspace(-1, 1, 16)[:, None]
    theta0 = np.zeros((1, model.P))
    theta0[0, -1] = 0.3  # the output bias
    return model.bind(X, X**2 + X), theta0
