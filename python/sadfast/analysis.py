"""What happened to each flow: outcome classification from its traces and fits of the
parameter-norm growth law.

The SAD-network theory says a gradient flow either converges to a critical point or diverges
(||theta|| -> infinity) while the loss tends to a limit; diverging flows of these networks grow
slowly (observed roughly like log t; at most like sqrt t). These functions make that visible
per flow, from traces recorded at ``save_at`` times (``FlowResult.trace_*``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import as_real_array, check_bool, check_finite_float, check_int, check_nonneg_float

GROWTH_LAWS = ("log", "sqrt", "power")

# Thresholds of classify_outcomes (documented, overridable by its arguments).
DEFAULT_TAIL = 0.5  # the last half of the save times, in log t (growth and divergence)
DEFAULT_SETTLE_TAIL = 0.1  # the last tenth, in log t (convergence)
DEFAULT_CONVERGED_GRAD = 1e-4  # last gradient norm below this ...
DEFAULT_SETTLED = 1e-3  # ... and relative change of ||theta|| over the settle tail below this
DEFAULT_LOSS_FLOOR = 1e-12  # a loss at or below this is numerically zero: settled whatever it does
DEFAULT_DIVERGING_GROWTH = 1e-2  # relative growth of ||theta|| over the tail above this ...


@dataclass(frozen=True)
class GrowthFit:
    """Least-squares fits of ``||theta(t)||`` on the tail of each flow's trace, shapes ``(K,)``.

    ``log``: ``a + b log t``; ``sqrt``: ``a + b sqrt t``; ``power``: ``c t^alpha`` (fitted in log-log).
    ``r2_*`` are coefficients of determination of each fit on the norm itself (the power fit is
    evaluated on the norm scale too, so the three are comparable); ``best`` names the law with
    the highest R^2 per flow.
    """

    log_a: NDArray[np.float64]
    log_b: NDArray[np.float64]
    sqrt_a: NDArray[np.float64]
    sqrt_b: NDArray[np.float64]
    power_c: NDArray[np.float64]
    power_alpha: NDArray[np.float64]
    r2_log: NDArray[np.float64]
    r2_sqrt: NDArray[np.float64]
    r2_power: NDArray[np.float64]

    @property
    def best(self) -> NDArray[np.str_]:
        r2 = np.stack([self.r2_log, self.r2_sqrt, self.r2_power])
        return np.array(GROWTH_LAWS)[np.argmax(np.nan_to_num(r2, nan=-np.inf), axis=0)]

    def counts(self) -> dict[str, int]:
        names, n = np.unique(self.best, return_counts=True)
        return {str(k): int(v) for k, v in zip(names, n, strict=True)}


def _save_times(t: ArrayLike) -> NDArray[np.float64]:
    """Save times ``(S,)``: finite and strictly increasing, else a ValueError naming ``t``."""
    ts = as_real_array(t, "t", ndims=(1,))
    if np.any(np.diff(ts) <= 0):
        raise ValueError("t: expected strictly increasing save times")
    return ts


def _fraction(value: Any, name: str) -> float:
    """A fraction in (0, 1] (of the log-time range), else a TypeError/ValueError naming ``name``."""
    v = check_finite_float(value, name)
    if not 0 < v <= 1:
        raise ValueError(f"{name}: expected a fraction in (0, 1], got {value}")
    return v


def _traces(ts: NDArray[np.float64], **named: ArrayLike) -> list[NDArray[np.float64]]:
    """Traces ``(K, S)`` (or ``(S,)``, made ``(1, S)``) at the save times ``ts``, all of one shape."""
    out = []
    for name, a in named.items():
        v = as_real_array(a, name, ndims=(1, 2), finite=False)
        v = v[None] if v.ndim == 1 else v
        if v.shape[1] != ts.size:
            raise ValueError(f"{name}: expected {ts.size} columns to match t, got shape {v.shape}")
        out.append(v)
    if len({v.shape for v in out}) > 1:
        raise ValueError(
            f"{', '.join(named)}: expected the same shape (K, S), got {', '.join(str(v.shape) for v in out)}"
        )
    return out


def _tail_mask(t: NDArray[np.float64], tail: float) -> NDArray[np.bool_]:
    pos = t > 0
    if pos.sum() < 3:
        raise ValueError("t: need at least 3 positive save times to fit a tail")
    lt = np.log(t[pos])
    cut = lt[-1] - tail * (lt[-1] - lt[0])
    mask = np.zeros(t.shape, dtype=bool)
    mask[pos] = lt >= cut
    if mask.sum() < 3:
        mask[np.flatnonzero(pos)[-3:]] = True
    return mask


def _first_last(
    mask: NDArray[np.bool_],
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.bool_]]:
    """Per row of ``mask`` (K, S): the first and last True column (0 where a row has none), and
    whether it has one."""
    present: NDArray[np.bool_] = np.asarray(mask.any(axis=1))
    first = np.argmax(mask, axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    return first, np.where(present, last, 0), present


def _linfit(
    x: NDArray[np.float64], Y: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Fit Y[k] ~ a + b x for every row k; returns a, b and R^2 (rows with NaN give NaN)."""
    A = np.stack([np.ones_like(x), x], axis=1)
    coef, *_ = np.linalg.lstsq(A, Y.T, rcond=None)
    pred = (A @ coef).T
    ss_res = np.sum((Y - pred) ** 2, axis=1)
    ss_tot = np.sum((Y - Y.mean(axis=1, keepdims=True)) ** 2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.nan)
    return coef[0], coef[1], r2


def fit_growth(t: ArrayLike, theta_norm: ArrayLike, *, tail: float = DEFAULT_TAIL) -> GrowthFit:
    """Fit the growth of ``||theta(t)||`` on the tail of each trace.

    Parameters
    ----------
    t
        Save times ``(S,)``, increasing; only t > 0 is used.
    theta_norm
        Norms ``(K, S)`` (or ``(S,)``), e.g. ``FlowResult.trace_theta_norm``; flows with NaN in
        the tail (stopped early) get NaN fits.
    tail
        Fraction of the log-time range (from the end) used for the fits.
    """
    ts = _save_times(t)
    (y,) = _traces(ts, theta_norm=theta_norm)
    m = _tail_mask(ts, _fraction(tail, "tail"))
    tt, yy = ts[m], y[:, m]
    la, lb, lr2 = _linfit(np.log(tt), yy)
    sa, sb, sr2 = _linfit(np.sqrt(tt), yy)
    with np.errstate(invalid="ignore", divide="ignore"):
        ly = np.log(yy)
    lc, alpha, _ = _linfit(np.log(tt), ly)
    pred = np.exp(lc)[:, None] * tt[None, :] ** alpha[:, None]
    ss_res = np.sum((yy - pred) ** 2, axis=1)
    ss_tot = np.sum((yy - yy.mean(axis=1, keepdims=True)) ** 2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pr2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.nan)
    return GrowthFit(la, lb, sa, sb, np.exp(lc), alpha, lr2, sr2, pr2)


def quantiles(a: ArrayLike) -> dict[str, float] | None:
    """The 10%, 50% and 90% quantiles of the finite values of `a` (None when there are none)."""
    v = np.asarray(a, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    q = np.quantile(v, [0.1, 0.5, 0.9])
    return {"q10": float(q[0]), "median": float(q[1]), "q90": float(q[2])}


@dataclass(frozen=True)
class WindowGrowth:
    """Growth of ``||theta||`` and decay of the loss window by window in log t, shapes ``(K, W)``
    (windows ``t_start[w] .. t_end[w]``, save times).

    - ``log_slope``: ``Delta||theta|| / Delta ln t``, the ``b`` of ``a + b ln t`` inside the window.
      Logarithmic growth keeps it bounded away from 0 and infinity, window after window.
    - ``alpha``: ``Delta ln||theta|| / Delta ln t``, the local power-law exponent. Power growth
      ``c t^alpha`` keeps it constant (1/2 for the ``sqrt t`` bound of the theory); logarithmic
      growth and convergence drive it to 0.
    - ``loss_exponent``: ``-Delta ln L / Delta ln t``, the local decay exponent beta of the loss.
    - ``path_bound``: ``sqrt((t1 - t0) (L(t0) - L(t1)))``. Along a gradient flow
      ``dL/dt = -||grad L||^2``, so by Cauchy-Schwarz the flow moves at most this far inside the
      window: ``|Delta||theta||| <= path_bound``, exactly (up to integration error; GD and Adam
      runs are not bound by it). With ``L ~ t^-beta`` the bound per window of fixed ratio scales
      like ``t^((1 - beta) / 2)``: a loss decaying like ``1/t`` pays for logarithmic growth at most,
      a slower decay for up to ``sqrt t``. ``bound_ratio = |increment| / path_bound`` (0 where
      the increment is at round-off level, 1e-12 of ``theta_norm``: a settled flow).
    - ``theta_norm``: ``||theta||`` at the end of each window.
    """

    t_start: NDArray[np.float64]
    t_end: NDArray[np.float64]
    increment: NDArray[np.float64]
    log_slope: NDArray[np.float64]
    alpha: NDArray[np.float64]
    loss_exponent: NDArray[np.float64]
    path_bound: NDArray[np.float64]
    theta_norm: NDArray[np.float64]

    @property
    def bound_ratio(self) -> NDArray[np.float64]:
        inc = np.abs(self.increment)
        still = inc <= 1e-12 * np.maximum(np.abs(self.theta_norm), 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(self.path_bound > 0, inc / self.path_bound, np.inf)
        return np.where(still, 0.0, np.where(np.isnan(self.increment), np.nan, ratio))

    def summary(self, flows: ArrayLike | None = None) -> list[dict[str, Any]]:
        """Per window: the times and the 10/50/90% quantiles over flows (all, or the boolean
        mask ``flows``) of the finite values of ``log_slope``, ``alpha`` and ``loss_exponent``
        (None where there are none), and the largest ``bound_ratio`` (above 1 only if a flow
        broke the gradient-flow bound). Windows where no selected flow has a finite log slope
        are left out."""
        sel = np.ones(self.increment.shape[0], dtype=bool) if flows is None else np.asarray(flows, dtype=bool)
        if sel.shape != (self.increment.shape[0],):
            raise ValueError(
                f"flows: expected a boolean mask of shape ({self.increment.shape[0]},), got {sel.shape}"
            )
        out: list[dict[str, Any]] = []
        ratio = self.bound_ratio
        for w in range(self.t_start.size):
            b = self.log_slope[sel, w]
            if not np.isfinite(b).any():
                continue
            row: dict[str, Any] = {"t_start": float(self.t_start[w]), "t_end": float(self.t_end[w])}
            row["log_slope"] = quantiles(b)
            row["alpha"] = quantiles(self.alpha[sel, w])
            row["loss_exponent"] = quantiles(self.loss_exponent[sel, w])
            r = ratio[sel, w]
            r = r[~np.isnan(r)]
            row["max_bound_ratio"] = float(r.max()) if r.size else None
            out.append(row)
        return out


def growth_by_window(
    t: ArrayLike, theta_norm: ArrayLike, loss: ArrayLike, *, width: float = 1.0, t_min: float | None = None
) -> WindowGrowth:
    """Local growth laws of ``||theta(t)||`` and decay of the loss, window by window in log t.

    A single fit over a long tail (:func:`fit_growth`) blends phases; over many decades the local
    rates tell the growth laws apart: see :class:`WindowGrowth` for what each rate means and for
    the gradient-flow bound ``|Delta||theta||| <= sqrt(Delta t Delta L)``.

    Parameters
    ----------
    t
        Save times ``(S,)``, increasing (geometric spacing suits these diagnostics).
    theta_norm, loss
        Traces ``(K, S)`` (or ``(S,)``) at the save times, e.g. ``FlowResult.trace_theta_norm`` and
        ``FlowResult.trace_loss``. NaN entries (flows stopped early) give NaN in their windows.
    width
        Window width in decades of t (1: one window per decade).
    t_min
        Start of the first window (default: the first positive save time). Window edges are
        ``t_min * 10^(width j)``; each is moved to the save time nearest to it in log t, and the
        windows report the save times actually used.
    """
    ts = _save_times(t)
    N, L = _traces(ts, theta_norm=theta_norm, loss=loss)
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width: expected a positive number of decades, got {width}")
    pos = np.flatnonzero(ts > 0)
    if pos.size < 2:
        raise ValueError("t: need at least 2 positive save times")
    lt = np.log10(ts[pos])
    start = lt[0] if t_min is None else math.log10(t_min) if t_min > 0 else math.nan
    if not (math.isfinite(start) and start < lt[-1]):
        raise ValueError(f"t_min: expected a positive time before the last save time {ts[-1]:g}, got {t_min}")
    n_win = max(1, math.floor((lt[-1] - start) / width + 1e-9))
    edges = start + width * np.arange(n_win + 1)
    idx = pos[np.abs(lt[None, :] - edges[:, None]).argmin(axis=1)]
    idx = np.unique(idx)
    if idx.size < 2:
        raise ValueError("t: too few save times for one window; save more often or narrow the windows")
    i0, i1 = idx[:-1], idx[1:]
    t0, t1 = ts[i0], ts[i1]
    dlog = np.log(t1 / t0)
    with np.errstate(invalid="ignore", divide="ignore"):
        inc = N[:, i1] - N[:, i0]
        alpha = np.log(N[:, i1] / N[:, i0]) / dlog
        beta = -np.log(L[:, i1] / L[:, i0]) / dlog
        bound = np.sqrt((t1 - t0) * np.maximum(L[:, i0] - L[:, i1], 0.0))
    bound = np.where(np.isfinite(L[:, i0]) & np.isfinite(L[:, i1]), bound, np.nan)
    return WindowGrowth(t0, t1, inc, inc / dlog, alpha, beta, bound, N[:, i1])


@dataclass(frozen=True)
class Outcomes:
    """Per-flow outcome (``label`` ``(K,)``: ``converged``, ``diverging`` or ``undecided``) with the
    evidence it rests on: relative change of ||theta|| over the tail, the relative spread of
    ||theta|| and of the loss over the settle tail, whether the norm still rose monotonically over the settle tail, whether the loss
    fell over the tail, and the last gradient norm. ``norm_monotone`` means: still rising, monotonically
    and by more than ``settled``, over the settle tail."""

    label: NDArray[np.str_]
    norm_change: NDArray[np.float64]
    settle_change: NDArray[np.float64]
    settle_loss_change: NDArray[np.float64]
    norm_monotone: NDArray[np.bool_]
    loss_decreasing: NDArray[np.bool_]
    last_grad_norm: NDArray[np.float64]

    def counts(self) -> dict[str, int]:
        return {
            name: int(np.count_nonzero(self.label == name))
            for name in ("converged", "diverging", "undecided")
        }


def classify_outcomes(
    t: ArrayLike,
    loss: ArrayLike,
    theta_norm: ArrayLike,
    grad_norm: ArrayLike,
    *,
    tail: float = DEFAULT_TAIL,
    settle_tail: float = DEFAULT_SETTLE_TAIL,
    converged_grad: float = DEFAULT_CONVERGED_GRAD,
    settled: float = DEFAULT_SETTLED,
    diverging_growth: float = DEFAULT_DIVERGING_GROWTH,
    loss_floor: float = DEFAULT_LOSS_FLOOR,
) -> Outcomes:
    """Classify each flow from its traces ``(K, S)`` at save times ``t`` ``(S,)``.

    With the tail the last ``tail`` fraction of the log-time range and the settle tail the last
    ``settle_tail`` fraction:

    - ``converged``: the last gradient norm is below ``converged_grad``, and over the settle tail
      both ||theta|| and the loss changed by less than ``settled`` (relative; a loss staying at or
      below ``loss_floor`` counts as settled): a flow whose norm stalls while its loss keeps
      falling is not converged;
    - ``diverging``: ||theta|| grew over the tail by more than ``diverging_growth`` (relative),
      and is still rising over the settle tail, monotonically and by more than ``settled``
      (a stalled norm is not evidence; brief dips near saddles earlier in the tail are allowed),
      while the loss did not increase over the tail;
    - ``undecided``: neither (the horizon is too short to tell) -- integrate longer.

    NaN entries (flows stopped before a save time) are ignored: the tail ends at each flow's last
    recorded value.
    """
    ts = _save_times(t)
    L, N, G = _traces(ts, loss=loss, theta_norm=theta_norm, grad_norm=grad_norm)
    m = _tail_mask(ts, _fraction(tail, "tail"))
    ms = _tail_mask(ts, _fraction(settle_tail, "settle_tail"))
    converged_grad = check_nonneg_float(converged_grad, "converged_grad")
    settled = check_nonneg_float(settled, "settled")
    diverging_growth = check_nonneg_float(diverging_growth, "diverging_growth")
    loss_floor = check_nonneg_float(loss_floor, "loss_floor")
    # Every per-flow statistic below is a masked reduction over the save times, done for all
    # flows at once (a per-flow Python loop cost ~40 us a flow, more than a GPU's integration).
    K = N.shape[0]
    finite_n = np.isfinite(N)
    ok = m & finite_n & np.isfinite(L)  # the tail's usable points
    oks = ms & finite_n  # the settle tail's
    has = ok.sum(axis=1) >= 2
    has_s = oks.sum(axis=1) >= 2
    rows = np.arange(K)
    first, last, _ = _first_last(ok)
    n0, n1 = N[rows, first], N[rows, last]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        change = np.where(has, (n1 - n0) / np.maximum(np.abs(n0), 1e-300), np.nan)
        dec = has & (L[rows, last] <= L[rows, first] * (1 + 1e-12))
        _, last_gi, any_g = _first_last(np.isfinite(G))
        last_g = np.where(has & any_g, G[rows, last_gi], np.nan)
        s0, s1, _ = _first_last(oks)
        ns0, ns1 = N[rows, s0], N[rows, s1]
        # masked max/min: the fill never wins, a NaN loss inside the settle tail propagates
        n_max = np.where(oks, N, -np.inf).max(axis=1)
        n_min = np.where(oks, N, np.inf).min(axis=1)
        settle = np.where(has & has_s, (n_max - n_min) / np.maximum(np.abs(ns1), 1e-300), np.nan)
        # strictly rising over consecutive settle-tail points: each against the previous one
        idx = np.where(oks, np.arange(N.shape[1]), -1)
        prev = np.maximum.accumulate(idx, axis=1)[:, :-1]
        later = oks[:, 1:] & (prev >= 0)
        rising = ~np.any(later & ~(N[:, 1:] > N[rows[:, None], np.maximum(prev, 0)]), axis=1)
        mono = has & has_s & rising & ((ns1 - ns0) > settled * np.abs(ns1))
        l_max = np.where(oks, L, -np.inf).max(axis=1)
        l_min = np.where(oks, L, np.inf).min(axis=1)
        # Round-off-level losses (an interpolating network at its global minimum) have
        # meaningless relative changes: at or below the floor the loss counts as settled.
        rel = (l_max - l_min) / np.maximum(np.abs(L[rows, s1]), 1e-300)
        settle_loss = np.where(has & has_s, np.where(l_max <= loss_floor, 0.0, rel), np.nan)
    label = np.full(K, "undecided", dtype="<U9")
    label[(last_g < converged_grad) & (settle < settled) & (settle_loss < settled)] = "converged"
    label[(label == "undecided") & mono & dec & (change > diverging_growth)] = "diverging"
    return Outcomes(label, change, settle, settle_loss, mono, dec, last_g)


def estimate_limit_loss(t: ArrayLike, loss: ArrayLike) -> NDArray[np.float64]:
    """Estimate ``lim_{t->inf} L(theta(t))`` per flow from its loss trace.

    Aitken's delta-squared extrapolation on each flow's last three recorded values
    ``L1, L2, L3`` (at times ``t1 < t2 < t3``): ``L3 - (L3 - L2)^2 / ((L3 - L2) - (L2 - L1))``.
    At geometrically spaced times (``np.geomspace`` save times) this is exact for any power-law
    approach ``L(t) = L_inf + c t^(-p)``, p > 0, the typical tail of these flows. It is used only
    where the last two differences have the same sign and shrink (an approach to a limit);
    otherwise the estimate is the last value. The estimate is clipped to ``[0, L3]`` (every loss
    of sadfast is >= 0, and a decreasing loss has its limit below its last value).

    A slow plateau reads as a positive limit until the horizon passes it. Measured on tanh
    1-16-1 flows on y = x^2 from the default init times 10 (64 flows, ``auto``, rtol 1e-6, 61
    save times ``geomspace(1e-6 t_end, t_end)``): 22 estimates above 1e-4 at t_end = 1e4, 2 at
    1e5, 0 at 1e6, 1e7 and 1e8; times 30: 60, 54, 19, 2 and 0 (at t = 1e8 every final loss is
    below 6e-8, 4 s for the 64 flows). Before reading a positive estimate as an asymptotic
    critical value, integrate further (``auto`` makes t = 1e8 cheap) and check that it holds.

    Parameters
    ----------
    t
        Save times ``(S,)``, increasing (only the spacing check uses them).
    loss
        Loss traces ``(K, S)`` (or ``(S,)``); NaN after a flow stopped is skipped.

    Returns
    -------
    ndarray
        ``(K,)`` (or a 0-d array for one trace); NaN for a flow with no finite value.
    """
    ts = _save_times(t)
    L = as_real_array(loss, "loss", ndims=(1, 2), finite=False)
    single = L.ndim == 1
    L = L[None] if single else L
    if L.shape[1] != ts.size:
        raise ValueError(f"loss: expected {ts.size} columns to match t, got shape {L.shape}")
    K = L.shape[0]
    out = np.full(K, np.nan)
    for k in range(K):
        v = L[k][np.isfinite(L[k])]
        if v.size == 0:
            continue
        last = v[-1]
        out[k] = last
        if v.size < 3:
            continue
        d1, d2 = v[-2] - v[-3], v[-1] - v[-2]
        if d1 * d2 > 0 and abs(d2) < abs(d1):
            out[k] = min(max(last - d2 * d2 / (d2 - d1), 0.0), max(last, 0.0))
    return out[0] if single else out


@dataclass(frozen=True)
class AttractionThreshold:
    """Which flows reach the optimal level, and the initial-loss level that separates them.

    ``reaches`` ``(K,)``: the flow's limit loss is within ``tol`` of ``optimal_level``.
    ``eps``: the estimate of the attraction threshold above the optimal level: every observed
    flow that started with loss below ``optimal_level + eps`` reaches it (``eps`` is the lowest
    initial loss of a flow that does not, minus the optimal level; ``inf`` if all reach).
    ``highest_reaching``: the highest initial loss among flows that reach it (evidence of how
    far above ``eps`` the basin of the optimum still extends). ``bins`` and ``fraction`` give the
    fraction of flows reaching the optimum per log-spaced initial-loss bin.
    """

    optimal_level: float
    tol: float
    reaches: NDArray[np.bool_]
    eps: float
    highest_reaching: float
    bins: NDArray[np.float64]
    fraction: NDArray[np.float64]

    def summary(self) -> dict[str, Any]:
        return {
            "optimal_level": self.optimal_level,
            "tol": self.tol,
            "flows": int(self.reaches.size),
            "reaching": int(self.reaches.sum()),
            "eps": self.eps,
            "highest_reaching_initial_loss": self.highest_reaching,
        }


def attraction_threshold(
    initial_loss: ArrayLike,
    limit_loss: ArrayLike,
    *,
    optimal_level: float = 0.0,
    tol: float | None = None,
    n_bins: int = 12,
) -> AttractionThreshold:
    """Estimate the attraction threshold of the optimal level from flows' initial and limit losses.

    The theory says there is eps > 0 such that every flow started with loss at most eps above
    the optimal level converges to it. From a sample of flows (e.g. a basin map's ``loss_init``
    and ``limit_loss``): a flow reaches the optimum when ``limit_loss - optimal_level <= tol``
    (default ``1e-3`` times the median initial excess loss); the estimate is the lowest initial
    excess loss among the flows that do not (an upper bound of the true threshold on this
    sample). Flows with a NaN limit (failed) are left out.
    """
    L0 = as_real_array(initial_loss, "initial_loss", ndims=(1,), finite=False)
    Lim = as_real_array(limit_loss, "limit_loss", ndims=(1,), finite=False)
    if L0.shape != Lim.shape:
        raise ValueError(f"limit_loss: expected the shape of initial_loss {L0.shape}, got {Lim.shape}")
    optimal_level = check_finite_float(optimal_level, "optimal_level")
    n_bins = check_int(n_bins, "n_bins", minimum=1)
    ok = np.isfinite(L0) & np.isfinite(Lim)
    if not ok.any():
        raise ValueError("limit_loss: no flow has a finite initial and limit loss")
    excess0 = L0[ok] - optimal_level
    if tol is None:
        tol = 1e-3 * float(np.median(np.abs(excess0)))
    tol = check_nonneg_float(tol, "tol")
    reaches = np.zeros(L0.shape, dtype=bool)
    reaches[ok] = Lim[ok] - optimal_level <= tol
    r = reaches[ok]
    eps = float(excess0[~r].min()) if (~r).any() else math.inf
    high = float(excess0[r].max()) if r.any() else math.nan
    pos = excess0[excess0 > 0]
    if pos.size:
        bins = np.geomspace(pos.min(), pos.max() * (1 + 1e-12), n_bins + 1)
        idx = np.clip(np.searchsorted(bins, excess0, side="right") - 1, 0, n_bins - 1)
        with np.errstate(invalid="ignore"):
            frac = np.array(
                [
                    r[(idx == b) & (excess0 > 0)].mean() if np.any((idx == b) & (excess0 > 0)) else np.nan
                    for b in range(n_bins)
                ]
            )
    else:
        bins, frac = np.zeros(0), np.zeros(0)
    return AttractionThreshold(float(optimal_level), float(tol), reaches, eps, high, bins, frac)


CRITICAL_KINDS = ("minimum", "saddle", "degenerate", "unresolved")


@dataclass(frozen=True)
class HessianExtremes:
    """Extreme Hessian eigenvalues per flow (``(K,)``) and the critical-point type they imply.

    ``kind`` compares lambda_min with ``bound = max(tol * |lambda|_max, resolution)``:
    ``minimum`` (lambda_min > bound), ``saddle`` (lambda_min < -bound), else ``degenerate`` (a
    flat direction: |lambda_min| <= tol * |lambda|_max, where the point is resolved) or
    ``unresolved`` (the residual gradient is too large to tell the sign of lambda_min at the
    critical point the flow approaches). ``resolution`` is ``sqrt(lambda_min_slope *
    grad_norm)``, the second-order stationarity scale of Nesterov & Polyak (2006): near a
    critical point at distance ~ grad_norm / |lambda_min|, lambda_min changes by about
    lambda_min_slope * grad_norm / |lambda_min|, less than |lambda_min| itself exactly when
    |lambda_min| > resolution. ``lambda_min_slope`` is ||grad_theta lambda_min|| = ||D^3 L[u, u, .]||
    for the Ritz vector u of lambda_min (a central difference of two Hessian-vector products).
    Without ``resolve`` those three are NaN and no point is unresolved. ``iterations`` is the
    Krylov dimension used."""

    lambda_min: NDArray[np.float64]
    lambda_max: NDArray[np.float64]
    kind: NDArray[np.str_]
    iterations: NDArray[np.int64]
    grad_norm: NDArray[np.float64]
    lambda_min_slope: NDArray[np.float64]
    resolution: NDArray[np.float64]

    def counts(self) -> dict[str, int]:
        """Flows per kind (``unresolved`` only where the resolution was computed)."""
        return kind_counts(self.kind, resolved=bool(np.isfinite(self.resolution).any()))


def kind_counts(kind: NDArray[np.str_], *, resolved: bool = True) -> dict[str, int]:
    """Flows per critical-point kind: all of CRITICAL_KINDS, or without ``unresolved`` for the
    plain sign test (``resolved=False``)."""
    names = CRITICAL_KINDS if resolved else CRITICAL_KINDS[:3]
    return {name: int(np.count_nonzero(kind == name)) for name in names}


def critical_kind(
    lambda_min: ArrayLike, lambda_max: ArrayLike, resolution: ArrayLike | None = None, *, tol: float = 1e-6
) -> NDArray[np.str_]:
    """The critical-point type of :class:`HessianExtremes` from the extreme eigenvalues and the
    resolution (None or NaN: taken as 0, the plain sign test, as at an exact critical point)."""
    tol = check_nonneg_float(tol, "tol")
    lmin = np.asarray(lambda_min, dtype=np.float64)
    ref = tol * np.maximum(np.abs(lmin), np.abs(np.asarray(lambda_max, dtype=np.float64)))
    res = np.zeros_like(lmin) if resolution is None else np.nan_to_num(np.asarray(resolution, float))
    bound = np.maximum(ref, res)
    kind = np.where(res > ref, "unresolved", "degenerate").astype("<U10")
    kind[lmin > bound] = "minimum"
    kind[lmin < -bound] = "saddle"
    return kind


def hessian_extremes(
    problem: Any,
    theta: ArrayLike,
    *,
    iterations: int = 60,
    tol: float = 1e-6,
    seed: int = 0,
    device: str | None = None,
    max_memory: int = 256 * 2**20,
    start: ArrayLike | None = None,
    resolve: bool = True,
) -> HessianExtremes:
    """Smallest and largest Hessian eigenvalues at each row of ``theta`` ``(K, P)`` by Lanczos on
    exact Hessian-vector products (no dense Hessian), batched over the flows, and the
    critical-point type they imply (:class:`HessianExtremes`).

    Full reorthogonalization keeps the Krylov basis orthogonal to round-off, so the extreme Ritz
    values converge to the extreme eigenvalues (exactly once the Krylov space is invariant, at
    most P iterations). ``tol`` is the relative threshold of a flat direction (``degenerate``).

    ``resolve`` (default): a flow stopped short of its critical point (gradient not zero) is
    only called a minimum or a saddle when |lambda_min| exceeds the resolution
    ``sqrt(||d lambda_min / d theta|| * ||grad L||)``, else ``unresolved``. Costs one gradient
    and two Hessian-vector products per flow. Where the gradient is at round-off level the rule
    is the plain sign test; ``resolve=False`` gives that test everywhere (the spectrum at any
    point, e.g. an initialization).

    Each flow keeps its Krylov basis, ``iterations + 1`` vectors of P numbers. The flows go
    through in chunks whose bases take at most ``max_memory`` bytes (at least one flow per
    chunk), so any number of flows fits; the results do not depend on the chunking (flow k
    starts from row k of one draw of ``seed``, or from row k of ``start`` ``(K, P)`` when given).
    ``device``: where the HVPs run, as in :meth:`Problem.hvp` ("cuda": on the
    GPU, the basis staying in host memory).
    """
    from .mlp import Problem

    if not isinstance(problem, Problem):
        raise TypeError(f"problem: expected sadfast.Problem, got {type(problem).__name__}")
    th = problem.model._theta(theta, "theta")
    th = th[None] if th.ndim == 1 else th
    K, P = th.shape
    m = min(check_int(iterations, "iterations", minimum=1), P)
    tol = check_nonneg_float(tol, "tol")
    resolve = check_bool(resolve, "resolve")
    chunk = max(1, check_int(max_memory, "max_memory", minimum=1) // ((m + 1) * P * 8))
    v = None if start is None else as_real_array(start, "start", ndims=(2,))
    if v is not None and v.shape != (K, P):
        raise ValueError(f"start: expected shape ({K}, {P}), one vector per flow, got {v.shape}")
    rng = np.random.default_rng(seed)  # drawn chunk by chunk: the same start vectors as one draw
    lmin, lmax, size = np.empty(K), np.empty(K), np.empty(K, dtype=np.int64)
    gnorm, slope = np.full(K, np.nan), np.full(K, np.nan)
    for k0 in range(0, K, chunk):
        k1 = min(K, k0 + chunk)
        v0 = rng.standard_normal((k1 - k0, P)) if v is None else v[k0:k1]
        lmin[k0:k1], lmax[k0:k1], size[k0:k1], u = _lanczos_extremes(
            problem, th[k0:k1], v0, m, device, vector=resolve
        )
        if u is not None:  # resolve
            gnorm[k0:k1], slope[k0:k1] = _resolution_inputs(problem, th[k0:k1], u, device)
    resolution = np.sqrt(slope * gnorm)
    kind = critical_kind(lmin, lmax, resolution, tol=tol)
    return HessianExtremes(lmin, lmax, kind, size, gnorm, slope, resolution)


def _resolution_inputs(
    problem: Any, th: NDArray[np.float64], u: NDArray[np.float64], device: str | None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gradient norms and ||D^3 L[u, u, .]|| (the gradient of u^T H u, = d lambda_min / d theta
    for the eigenvector u) by a central difference of H u along u, step 1e-4 (1 + ||theta||)."""
    g = np.asarray(problem.grad(th, device=device), dtype=np.float64)
    eps = 1e-4 * (1.0 + np.linalg.norm(th, axis=1, keepdims=True))
    hu = [np.asarray(problem.hvp(th + s * eps * u, u, device=device), dtype=np.float64) for s in (1, -1)]
    return np.linalg.norm(g, axis=1), np.linalg.norm(hu[0] - hu[1], axis=1) / (2 * eps[:, 0])


def _lanczos_extremes(
    problem: Any,
    th: NDArray[np.float64],
    v: NDArray[np.float64],
    m: int,
    device: str | None,
    *,
    vector: bool = True,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64], NDArray[np.float64] | None]:
    """m Lanczos steps from the start vectors v for each row of th: extreme Ritz values, the
    Krylov dimension reached and (``vector``; else None) the unit Ritz vector of the smallest."""
    K, P = th.shape
    V = np.zeros((K, m + 1, P))
    V[:, 0] = v / np.linalg.norm(v, axis=1, keepdims=True)
    alpha = np.zeros((K, m))
    beta = np.zeros((K, m))
    size = np.full(K, m, dtype=np.int64)  # Krylov dimension reached per flow (smaller after a breakdown)
    active = np.ones(K, dtype=bool)
    for j in range(m):
        w = np.asarray(problem.hvp(th, V[:, j], device=device), dtype=np.float64)
        alpha[:, j] = np.einsum("kp,kp->k", w, V[:, j])
        for _ in range(2):  # full reorthogonalization, twice is enough
            Vj = V[:, : j + 1]  # batched matrix-vector products (matmul: 2x einsum's speed)
            w -= ((Vj @ w[:, :, None])[:, :, 0][:, None, :] @ Vj)[:, 0]
        b = np.linalg.norm(w, axis=1)
        scale = np.maximum(np.abs(alpha[:, : j + 1]).max(axis=1), 1e-300)
        broke = active & (b <= 1e-12 * scale)
        size[broke] = j + 1
        active &= ~broke
        beta[:, j] = np.where(active, b, 0.0)
        V[:, j + 1] = np.where(active[:, None], w / np.where(b > 0, b, 1.0)[:, None], 0.0)
        if not active.any():
            break
    lmin = np.empty(K)
    lmax = np.empty(K)
    u = np.empty((K, P)) if vector else None
    # The tridiagonal matrices, batched by Krylov dimension (and at most 4096 at a time): their
    # eigenvalues (LAPACK without vectors: 6x faster than with), and the eigenvector of the
    # smallest by three steps of inverse iteration shifted just below it.
    for n in np.unique(size):
        for idx in np.array_split(np.flatnonzero(size == n), -(-np.count_nonzero(size == n) // 4096)):
            d = np.arange(n)
            T = np.zeros((idx.size, n, n))
            T[:, d, d] = alpha[idx, :n]
            T[:, d[:-1], d[1:]] = T[:, d[1:], d[:-1]] = beta[idx, : n - 1]
            ev = np.linalg.eigvalsh(T)
            lmin[idx], lmax[idx] = ev[:, 0], ev[:, -1]
            if u is None:
                continue
            spread = np.maximum(np.abs(ev).max(axis=1), 1e-300)
            T[:, d, d] -= (ev[:, 0] - 1e-9 * spread)[:, None]  # T - s I: SPD, lowest eigenvalue 1e-9 spread
            y = np.ones((idx.size, n, 1))
            for _ in range(3):
                y = np.linalg.solve(T, y)
                y /= np.linalg.norm(y, axis=1, keepdims=True)
            u[idx] = np.einsum("kn,knp->kp", y[:, :, 0], V[idx, :n])
    if u is not None:
        u /= np.linalg.norm(u, axis=1, keepdims=True)
    return lmin, lmax, size, u
