"""Multilayer perceptrons over a flat parameter vector, evaluated for many parameter vectors at
once by the native kernels.

Layout (see docs/conventions.md): widths ``[d_in, h_1, ..., d_out]``; theta holds, layer by
layer, ``W_l`` (out x in, row-major) then ``b_l`` (out), as ``torch.nn.Linear`` does. A batch of
K flows is a C-contiguous ``(K, P)`` array. Hidden layers apply the activation; the output layer
is linear.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _core
from . import cuda as _cuda
from ._validation import as_real_array, check_int, check_name, check_nonneg_float

ACTIVATIONS: tuple[str, ...] = tuple(_core.activation_names())
LOSSES: tuple[str, ...] = tuple(_core.loss_names())
INIT_SCHEMES: tuple[str, ...] = ("lecun", "xavier_uniform")
_ALIASES = {"silu": "swish"}

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Layer:
    """One affine layer's place in the flat parameter vector."""

    index: int
    in_features: int
    out_features: int
    weight: slice  # theta[..., weight] reshaped to (out_features, in_features) is W
    bias: slice  # theta[..., bias] is b

    @property
    def weight_shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)


class MLP:
    """A fully connected network ``[d_in, h_1, ..., h_k, d_out]`` with one activation and a loss.

    Parameters
    ----------
    widths
        Layer widths, input first, output last; at least two entries, each >= 1.
    activation
        One of :data:`ACTIVATIONS` (``"silu"`` is accepted for ``"swish"``).
    loss
        One of :data:`LOSSES`: ``mse``, ``huber`` (delta 1), ``bce`` (on logits) or
        ``cross_entropy`` (softmax over the outputs).
    weight_decay
        L2 coefficient ``lam``: ``lam/2 * ||theta||^2`` is added to the loss.
    device
        Where its problems evaluate and integrate by default: ``"cpu"``, ``"cuda"`` (an error
        when no CUDA device is usable) or ``"auto"`` (cuda when available). A cupy ``theta``
        always runs on the GPU.

    Examples
    --------
    >>> import numpy as np, sadfast
    >>> model = sadfast.MLP([1, 16, 1], activation="tanh")
    >>> X = np.linspace(-1, 1, 32)[:, None]; Y = X**2
    >>> theta = model.init(4, seed=0)            # (4, P)
    >>> loss, grad = model.loss_and_grad(theta, X, Y)
    """

    def __init__(
        self,
        widths: Sequence[int],
        activation: str = "tanh",
        loss: str = "mse",
        weight_decay: float = 0.0,
        device: str = "cpu",
    ) -> None:
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence | np.ndarray):
            raise TypeError(f"widths: expected a sequence of positive integers, got {type(widths).__name__}")
        ws = [check_int(w, f"widths[{i}]", minimum=1) for i, w in enumerate(widths)]
        if len(ws) < 2:
            raise ValueError(f"widths: expected at least [d_in, d_out], got {list(widths)}")
        if isinstance(activation, str):
            activation = _ALIASES.get(activation, activation)
        self.widths: tuple[int, ...] = tuple(ws)
        self.activation: str = check_name(activation, "activation", ACTIVATIONS)
        self.loss_name: str = check_name(loss, "loss", LOSSES)
        self.weight_decay: float = check_nonneg_float(weight_decay, "weight_decay")
        self.device: str = "cpu" if device == "cpu" else _cuda.resolve_device(device)
        layers = []
        off = 0
        for i, (n_in, n_out) in enumerate(itertools.pairwise(ws)):
            w = slice(off, off + n_in * n_out)
            b = slice(w.stop, w.stop + n_out)
            layers.append(Layer(i, n_in, n_out, w, b))
            off = b.stop
        self.layers: tuple[Layer, ...] = tuple(layers)
        self.n_params: int = off

    # ---- shapes -----------------------------------------------------------------------------
    @property
    def P(self) -> int:
        """Number of parameters (length of theta)."""
        return self.n_params

    @property
    def d_in(self) -> int:
        return self.widths[0]

    @property
    def d_out(self) -> int:
        return self.widths[-1]

    def __repr__(self) -> str:
        wd = f", weight_decay={self.weight_decay:g}" if self.weight_decay else ""
        dev = f", device={self.device!r}" if self.device != "cpu" else ""
        return f"MLP({list(self.widths)}, activation={self.activation!r}, loss={self.loss_name!r}{wd}{dev}; P={self.P})"

    def flops_per_grad(self, n_points: int) -> int:
        """Multiply-adds x 2 of one loss+gradient evaluation's matrix products (forward, weight
        gradients, back-propagated signals): the count used for GFLOP/s figures."""
        fwd = sum(2 * ly.in_features * ly.out_features * n_points for ly in self.layers)
        back = sum(2 * ly.in_features * ly.out_features * n_points for ly in self.layers[1:])
        return 2 * fwd + back

    # ---- parameters -------------------------------------------------------------------------
    def init(
        self, K: int | None = None, seed: int = 0, scale: Literal["lecun", "xavier_uniform"] = "lecun"
    ) -> FloatArray:
        """Reproducible initial parameters, ``(K, P)`` (or ``(P,)`` when K is None).

        ``lecun``: ``Z = default_rng(seed).standard_normal((K, P))`` in one call, then every entry
        of layer l (weights and biases) times ``1/sqrt(in_l)``.
        ``xavier_uniform``: ``U = default_rng(seed).random((K, P))`` in one call; weights of layer l
        are ``a * (2U - 1)`` with ``a = sqrt(6 / (in_l + out_l))`` (torch's ``xavier_uniform_``),
        biases 0 (their draws are discarded so that every scheme uses P draws per flow).
        In both, the first k rows for K flows equal the result for k flows.
        """
        k = 1 if K is None else check_int(K, "K", minimum=1)
        check_int(seed, "seed", minimum=0)
        check_name(scale, "scale", INIT_SCHEMES)
        rng = np.random.default_rng(seed)
        if scale == "lecun":
            theta = rng.standard_normal((k, self.P))
            for ly in self.layers:
                s = 1.0 / np.sqrt(ly.in_features)
                theta[:, ly.weight] *= s
                theta[:, ly.bias] *= s
        else:
            u = rng.random((k, self.P))
            theta = np.zeros((k, self.P))
            for ly in self.layers:
                a = np.sqrt(6.0 / (ly.in_features + ly.out_features))
                theta[:, ly.weight] = a * (2.0 * u[:, ly.weight] - 1.0)
        return theta[0] if K is None else theta

    def unflatten(self, theta: ArrayLike) -> list[tuple[FloatArray, FloatArray]]:
        """Split theta ``(P,)`` or ``(K, P)`` into ``[(W_l, b_l), ...]`` views with shapes
        ``(..., out, in)`` and ``(..., out)``."""
        th = self._theta(theta, "theta")
        lead = th.shape[:-1]
        return [(th[..., ly.weight].reshape(*lead, *ly.weight_shape), th[..., ly.bias]) for ly in self.layers]

    def flatten(self, params: Sequence[tuple[ArrayLike, ArrayLike]]) -> FloatArray:
        """Inverse of :meth:`unflatten`: ``[(W_l, b_l), ...]`` -> theta ``(P,)`` or ``(K, P)``."""
        if len(params) != len(self.layers):
            raise ValueError(f"params: expected {len(self.layers)} (W, b) pairs, got {len(params)}")
        parts = []
        lead: tuple[int, ...] | None = None
        for ly, (w, b) in zip(self.layers, params, strict=True):
            w = as_real_array(w, f"params[{ly.index}].W", ndims=(2, 3), finite=False)
            b = as_real_array(b, f"params[{ly.index}].b", ndims=(1, 2), finite=False)
            if w.shape[-2:] != ly.weight_shape or b.shape[-1] != ly.out_features:
                raise ValueError(
                    f"params[{ly.index}]: expected W {ly.weight_shape} and b ({ly.out_features},), "
                    f"got {w.shape[-2:]} and {b.shape[-1:]}"
                )
            if lead is None:
                lead = w.shape[:-2]
            if w.shape[:-2] != lead or b.shape[:-1] != lead:
                raise ValueError(f"params[{ly.index}]: leading (batch) shapes differ from params[0]'s {lead}")
            parts += [w.reshape(*lead, -1), b]
        return np.concatenate(parts, axis=-1)

    # ---- evaluation ---------------------------------------------------------------------------
    def bind(self, X: ArrayLike, Y: ArrayLike) -> Problem:
        """Validate and copy the data once; the returned :class:`Problem` evaluates without
        further checks or copies of X and Y."""
        return Problem(self, X, Y)

    def forward(self, theta: ArrayLike, X: ArrayLike) -> FloatArray:
        """Network outputs: ``(N, d_out)`` for theta ``(P,)``, ``(K, N, d_out)`` for ``(K, P)``."""
        x = self._data_x(X)
        dummy = np.zeros((x.shape[0], self.d_out))
        return Problem._from_valid(self, x, dummy).forward(theta)

    def loss(self, theta: ArrayLike, X: ArrayLike, Y: ArrayLike) -> FloatArray:
        """Loss: ``()`` for theta ``(P,)``, ``(K,)`` for ``(K, P)``."""
        return self.bind(X, Y).loss(theta)

    def grad(self, theta: ArrayLike, X: ArrayLike, Y: ArrayLike) -> FloatArray:
        """Gradient of the loss, shaped like theta."""
        return self.bind(X, Y).grad(theta)

    def loss_and_grad(self, theta: ArrayLike, X: ArrayLike, Y: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Loss and gradient in one pass."""
        return self.bind(X, Y).loss_and_grad(theta)

    def hvp(self, theta: ArrayLike, v: ArrayLike, X: ArrayLike, Y: ArrayLike) -> FloatArray:
        """Exact Hessian-vector product ``H(theta) v`` (forward-over-reverse), shaped like theta."""
        return self.bind(X, Y).hvp(theta, v)

    # ---- checks -------------------------------------------------------------------------------
    def _theta(self, theta: Any, name: str) -> FloatArray:
        th = as_real_array(theta, name, ndims=(1, 2))
        if th.shape[-1] != self.P:
            want = f"({self.P},) or (K, {self.P})"
            raise ValueError(f"{name}: expected shape {want} for {self!r}, got {th.shape}")
        if th.ndim == 2 and th.shape[0] == 0:
            raise ValueError(f"{name}: expected at least one flow (K >= 1), got shape {th.shape}")
        return th

    def _data_x(self, X: Any) -> FloatArray:
        x = as_real_array(X, "X", ndims=(1, 2))
        if x.ndim == 1:
            if self.d_in != 1:
                raise ValueError(f"X: expected shape (N, {self.d_in}), got {x.shape}")
            x = x[:, None]
        if x.shape[1] != self.d_in or x.shape[0] < 1:
            raise ValueError(f"X: expected shape (N, {self.d_in}) with N >= 1, got {x.shape}")
        return x

    def _data_y(self, Y: Any, n: int) -> FloatArray:
        if self.loss_name == "cross_entropy":
            return self._class_targets(Y, n)
        y = as_real_array(Y, "Y", ndims=(1, 2))
        if y.ndim == 1:
            if self.d_out != 1:
                raise ValueError(f"Y: expected shape ({n}, {self.d_out}), got {y.shape}")
            y = y[:, None]
        if y.shape != (n, self.d_out):
            raise ValueError(f"Y: expected shape ({n}, {self.d_out}) to match X, got {y.shape}")
        if self.loss_name == "bce" and ((y < 0) | (y > 1)).any():
            raise ValueError("Y: bce targets must lie in [0, 1]")
        return y

    def _class_targets(self, Y: Any, n: int) -> FloatArray:
        y = np.asarray(Y)
        c = self.d_out
        if y.ndim == 1 and (np.issubdtype(y.dtype, np.integer) and y.dtype != np.bool_):
            if y.shape[0] != n:
                raise ValueError(f"Y: expected {n} integer labels to match X, got shape {y.shape}")
            if y.size and (y.min() < 0 or y.max() >= c):
                raise ValueError(
                    f"Y: class labels must lie in [0, {c - 1}] for d_out={c}, got [{y.min()}, {y.max()}]"
                )
            return np.eye(c)[y]
        t = as_real_array(Y, "Y", ndims=(2,))
        if t.shape != (n, c):
            raise ValueError(
                f"Y: cross_entropy expects integer labels ({n},) or class probabilities ({n}, {c}), got {t.shape}"
            )
        if (t < 0).any() or not np.allclose(t.sum(axis=1), 1.0, rtol=0, atol=1e-9):
            raise ValueError("Y: class probabilities must be >= 0 and each row must sum to 1")
        return t


class Problem:
    """An :class:`MLP` bound to a data set ``(X, Y)``: the object the solvers evaluate.

    X is ``(N, d_in)`` (or ``(N,)`` when d_in is 1). Y is ``(N, d_out)`` (or ``(N,)`` when d_out
    is 1); for ``cross_entropy`` it is integer labels ``(N,)`` or class probabilities
    ``(N, d_out)``. The data are validated (shape, finiteness, label range) and copied once.
    Theta of shape ``(P,)`` gives unbatched results; ``(K, P)`` gives one result per row.
    """

    def __init__(self, model: MLP, X: ArrayLike, Y: ArrayLike) -> None:
        if not isinstance(model, MLP):
            raise TypeError(f"model: expected sadfast.MLP, got {type(model).__name__}")
        x = model._data_x(X)
        y = model._data_y(Y, x.shape[0])
        self._init(model, x, y)

    @classmethod
    def _from_valid(cls, model: MLP, x: FloatArray, y: FloatArray) -> Problem:
        self = cls.__new__(cls)
        self._init(model, x, y)
        return self

    def _init(self, model: MLP, x: FloatArray, y: FloatArray) -> None:
        self.model = model
        self.X = x
        self.Y = y
        self.X.flags.writeable = False
        self.Y.flags.writeable = False
        self._native = _core.Problem(
            list(model.widths), model.activation, model.loss_name, model.weight_decay, x, y
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles as its model and data (for multiprocessing and Dask); the native copies, on
        # the CPU and on a GPU, are rebuilt where it is unpickled.
        return (Problem._from_valid, (self.model, self.X, self.Y))

    @property
    def n_points(self) -> int:
        return int(self.X.shape[0])

    def __repr__(self) -> str:
        return f"Problem({self.model!r}, N={self.n_points})"

    def _batch(self, theta: ArrayLike, name: str = "theta") -> tuple[FloatArray, bool]:
        th = self.model._theta(theta, name)
        return (th[None, :], True) if th.ndim == 1 else (th, False)

    # ---- the GPU path ------------------------------------------------------------------------
    def _on_cuda(self, theta: Any, device: str | None, dtype: Any) -> bool:
        if device is None:
            on = _cuda.is_cupy(theta) or self.model.device == "cuda"
        else:
            on = _cuda.resolve_device(device) == "cuda"
            if not on and _cuda.is_cupy(theta):
                raise TypeError("theta: a cupy array is evaluated on the GPU; pass device='cuda' or None")
        if not on and dtype is not None and _cuda.dtype_code(dtype) != 0:
            raise ValueError("dtype: float32 is available on device='cuda' only; the CPU computes in float64")
        if on:
            _cuda.resolve_device("cuda")
        return on

    def _cuda_theta(self, theta: Any, name: str, dtype: Any) -> tuple[Any, np.dtype, int, bool]:
        """(device array, dtype, K, single) of a theta for the GPU."""
        if _cuda.is_cupy(theta):
            dt = np.dtype(theta.dtype if dtype is None else dtype)
            if (
                theta.ndim not in (1, 2)
                or theta.shape[-1] != self.model.P
                or (theta.ndim == 2 and theta.shape[0] == 0)
            ):
                raise ValueError(
                    f"{name}: expected shape ({self.model.P},) or (K, {self.model.P}) with K >= 1, got {theta.shape}"
                )
            arr = _cuda.device_input(theta, name, dt, (1, 2))
        else:
            dt = np.dtype("float64" if dtype is None else dtype)
            arr = _cuda.device_input(self.model._theta(theta, name), name, dt, (1, 2))
        _cuda.dtype_code(dt)
        single = len(arr.shape) == 1
        return arr, dt, 1 if single else int(arr.shape[0]), single

    def _cuda_loss_grad(self, theta: Any, dtype: Any, want_grad: bool) -> tuple[Any, Any]:
        arr, dt, K, single = self._cuda_theta(theta, "theta", dtype)
        use_cupy = arr.cupy is not None
        loss = _cuda.DeviceArray.empty((K,), dt, use_cupy=use_cupy)
        grad = _cuda.DeviceArray.empty(arr.shape, dt, use_cupy=use_cupy) if want_grad else None
        _cuda.native().cuda_loss_grad(
            _cuda.native_problem(self),
            _cuda.dtype_code(dt),
            arr.ptr,
            K,
            loss.ptr,
            0 if grad is None else grad.ptr,
        )
        lo = loss.result()
        return (lo[0] if single else lo), (None if grad is None else grad.result())

    # ---- evaluation ------------------------------------------------------------------------------
    def loss(self, theta: ArrayLike, *, device: str | None = None, dtype: Any = None) -> Any:
        """Loss: ``()`` for theta ``(P,)``, ``(K,)`` for ``(K, P)``.

        ``device``: ``"cpu"``, ``"cuda"``, ``"auto"`` or None (the model's device; the GPU for a
        cupy theta). ``dtype``: ``"float64"`` (default; a cupy theta's own dtype) or
        ``"float32"`` (GPU only). Results are NumPy arrays, or cupy arrays for a cupy theta.
        """
        if self._on_cuda(theta, device, dtype):
            return self._cuda_loss_grad(theta, dtype, False)[0]
        th, single = self._batch(theta)
        out = self._native.loss_grad(th, False)
        return out[0] if single else out

    def loss_and_grad(
        self, theta: ArrayLike, *, device: str | None = None, dtype: Any = None
    ) -> tuple[Any, Any]:
        """Loss ``()``/``(K,)`` and gradient ``(P,)``/``(K, P)`` in one pass (device, dtype: as
        :meth:`loss`)."""
        if self._on_cuda(theta, device, dtype):
            return self._cuda_loss_grad(theta, dtype, True)
        th, single = self._batch(theta)
        loss, grad = self._native.loss_grad(th, True)
        return (loss[0], grad[0]) if single else (loss, grad)

    def grad(self, theta: ArrayLike, *, device: str | None = None, dtype: Any = None) -> Any:
        """Gradient of the loss, shaped like theta (device, dtype: as :meth:`loss`)."""
        return self.loss_and_grad(theta, device=device, dtype=dtype)[1]

    def hvp(self, theta: ArrayLike, v: ArrayLike, *, device: str | None = None, dtype: Any = None) -> Any:
        """Exact Hessian-vector product ``H(theta) v``; v has theta's shape (device, dtype: as
        :meth:`loss`)."""
        if self._on_cuda(theta, device, dtype):
            arr, dt, K, _ = self._cuda_theta(theta, "theta", dtype)
            vv, _, _, _ = self._cuda_theta(v, "v", dt)
            if vv.shape != arr.shape:
                raise ValueError(f"v: expected the shape of theta {arr.shape}, got {vv.shape}")
            out = _cuda.DeviceArray.empty(arr.shape, dt, use_cupy=arr.cupy is not None)
            _cuda.native().cuda_hvp(
                _cuda.native_problem(self), _cuda.dtype_code(dt), arr.ptr, vv.ptr, K, out.ptr
            )
            return out.result()
        th, single = self._batch(theta)
        vh, _ = self._batch(v, "v")
        if vh.shape != th.shape:
            raise ValueError(
                f"v: expected the shape of theta {th.shape[1:] if single else th.shape}, got {np.shape(v)}"
            )
        hv = self._native.hvp(th, vh, False)
        return hv[0] if single else hv

    def forward(self, theta: ArrayLike) -> FloatArray:
        """Network outputs at X: ``(N, d_out)`` or ``(K, N, d_out)``."""
        th, single = self._batch(theta)
        out = self._native.forward(th)
        return out[0] if single else out
