"""Figures of flows and optimizer runs (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _band(ax: Any, x: np.ndarray, Y: np.ndarray, label: str) -> None:
    with np.errstate(all="ignore"):
        ok = np.isfinite(Y).any(axis=0)
        q = np.nanquantile(Y[:, ok], [0.1, 0.5, 0.9], axis=0)
    (line,) = ax.plot(x[ok], q[1], label=label)
    ax.fill_between(x[ok], q[0], q[2], color=line.get_color(), alpha=0.2, linewidth=0)


def _log_x(ax: Any, xlabel: str, ylabel: str) -> None:
    """Log x axis, labels, grid and legend: the panels' common styling."""
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def flow_traces(runs: list[dict[str, Any]], key: str, path: Path) -> Path:
    """Median and 10-90% band over flows of `key` ("loss" or "theta_norm") against t."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for r in runs:
        tr = r["_traces"]
        _band(ax, tr["t"], tr[key], r["description"])
    ax.set_xscale("log")
    if key == "loss":
        ax.set_yscale("log")
        ax.set_ylabel("loss L(theta(t))")
        ax.set_title("Gradient flows: loss (median, 10-90% band)")
    else:
        ax.set_ylabel("||theta(t)||")
        ax.set_title("Gradient flows: parameter norm (median, 10-90% band)")
    ax.set_xlabel("t")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def growth_windows(runs: list[dict[str, Any]], path: Path) -> Path:
    """The diverging flows' local growth per decade (``sadfast.analysis.growth_by_window``):
    the log slope b and the exponent alpha of ||theta||, median and 10-90% band at each decade's
    geometric middle. Experiments without diverging flows are left out."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for r in runs:
        div = r["_diverging"]
        if not div.any():
            continue
        w = r["_windows"]
        mid = np.sqrt(w.t_start * w.t_end)
        _band(a1, mid, w.log_slope[div], r["description"])
        _band(a2, mid, w.alpha[div], r["description"])
    a2.axhline(0.5, color="gray", linestyle=":", linewidth=1, label="sqrt t (alpha = 1/2)")
    _log_x(a1, "t", "b = d||theta|| / d ln t (per decade)")
    _log_x(a2, "t", "alpha = d ln||theta|| / d ln t (per decade)")
    fig.suptitle("Diverging flows: growth decade by decade (median, 10-90% band)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def optimizer_traces(opt: dict[str, Any], path: Path) -> Path:
    """Loss and parameter norm against steps for each optimizer."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for m, r in opt["runs"].items():
        tr = r["_traces"]
        steps = tr["step"].astype(float)
        keep = steps > 0
        _band(a1, steps[keep], tr["loss"][:, keep], f"{m} (lr {r['lr']:g})")
        _band(a2, steps[keep], tr["theta_norm"][:, keep], f"{m} (lr {r['lr']:g})")
    _log_x(a1, "step", "loss")
    _log_x(a2, "step", "||theta||")
    a1.set_yscale("log")
    fig.suptitle("GD and Adam from the same initializations (median, 10-90% band)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def optimizer_norms(runs: list[dict[str, Any]], path: Path) -> Path:
    """Median ||theta|| against steps under GD (dashed) and Adam (solid), one colour per experiment."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for r in runs:
        color = None
        for m, style in (("adam", "-"), ("gd", "--")):
            tr = r["optimizers"][m]["_traces"]
            steps = tr["step"].astype(float)
            keep = steps > 0
            with np.errstate(all="ignore"):
                med = np.nanmedian(tr["theta_norm"][:, keep], axis=0)
            (line,) = ax.plot(steps[keep], med, style, color=color, label=f"{r['description']} ({m})")
            color = line.get_color()
    ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("||theta|| (median)")
    ax.set_title("GD (dashed) and Adam (solid) from the same initializations")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


OUTCOME_COLORS = {
    "converged": "#1f77b4",
    "diverging": "#d62728",
    "undecided": "#bcbd22",
    "optimum": "#2ca02c",
    "failed": "#000000",
}
NOT_COMPUTED_COLOR = "#dddddd"
CRITICAL_COLORS = {
    "minimum": "#1f77b4",
    "saddle": "#ff7f0e",
    "degenerate": "#9467bd",
    "unresolved": "#8c8c8c",
}
NOT_CONVERGED_COLOR = "#f4f4f4"


def _critical_panel(ax: Any, ds: Any, extent: Any) -> None:
    """The (a, b) plane coloured by where each converged flow stopped."""
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    from .basins import CRITICAL_POINTS as names

    code = np.asarray(ds["critical_point"].values)
    rgb = np.empty((*code.shape, 3))
    rgb[...] = to_rgb(NOT_COMPUTED_COLOR)
    rgb[code == 0] = to_rgb(NOT_CONVERGED_COLOR)
    handles = []
    for i, n in enumerate(names):
        sel = code == i
        if i > 0 and sel.any():
            rgb[sel] = to_rgb(CRITICAL_COLORS[n])
            handles.append(Patch(color=CRITICAL_COLORS[n], label=f"{n} ({int(sel.sum())})"))
    ax.imshow(rgb, origin="lower", extent=extent, aspect="auto", interpolation="nearest")
    ax.plot([0], [0], marker="+", color="black", markersize=12, mew=2)
    ax.set_xlabel("b (along d2)")
    ax.set_title("where converged flows stopped (Hessian extremes)", fontsize=9)
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(0.0, -0.1), ncol=3, fontsize=8, frameon=False
    )


def _log_loss(loss: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.where(loss > 0, loss, np.nan))


def basin_map(ds: Any, path: Path, *, title: str | None = None) -> Path:
    """Picture of a basin map (an :func:`sadfast.basins.open` dataset) as PNG.

    A slice: left, the ``(a, b)`` plane coloured by outcome, each pixel darker the lower its final
    loss (log scale, over the map's range), the centre marked; right, log10 of the limit-loss
    estimate; for a map with ``critical_points``, a third panel: where converged flows stopped
    (minimum, saddle, degenerate, unresolved). A sample: initial loss against limit loss, coloured by outcome (the evidence for an
    attraction threshold).
    """
    from matplotlib.colors import to_rgb
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    names = list(ds.attrs["outcomes"])
    outcome = np.asarray(ds["outcome"].values)
    computed = outcome < len(names)
    spec = ds.attrs["spec"]
    m = spec["model"]
    head = title or (
        f"{m['widths']} {m['activation']}"
        + (f", weight decay {m['weight_decay']:g}" if m["weight_decay"] else "")
        + f": flows to t = {spec['solver']['t_end']:g} ({spec['solver']['method']})"
    )
    present = [n for i, n in enumerate(names) if np.any(outcome == i)]
    handles: list[Any] = [
        Patch(color=OUTCOME_COLORS[n], label=f"{n} ({int(np.sum(outcome == names.index(n)))})")
        for n in present
    ]
    if not computed.all():
        handles.append(Patch(color=NOT_COMPUTED_COLOR, label=f"not computed ({int(np.sum(~computed))})"))
    if spec["kind"] == "slice":
        a = np.asarray(ds["a"].values)
        b = np.asarray(ds["b"].values)
        ll = _log_loss(np.asarray(ds["loss"].values))
        lo, hi = (np.nanmin(ll), np.nanmax(ll)) if np.isfinite(ll).any() else (0.0, 1.0)
        shade = np.where(np.isfinite(ll), (ll - lo) / max(hi - lo, 1e-12), 1.0)
        light = 0.35 + 0.65 * shade  # darker = lower final loss
        rgb = np.empty((*outcome.shape, 3))
        rgb[...] = to_rgb(NOT_COMPUTED_COLOR)
        for i, n in enumerate(names):
            sel = outcome == i
            rgb[sel] = np.asarray(to_rgb(OUTCOME_COLORS[n])) * light[sel][:, None]
        critical = "critical_point" in ds
        fig, axes = plt.subplots(
            1, 3 if critical else 2, figsize=(18 if critical else 12, 5.2), dpi=110, constrained_layout=True
        )
        ax0, ax1 = axes[0], axes[1]
        extent = (b[0], b[-1], a[0], a[-1]) if b.size > 1 and a.size > 1 else None
        ax0.imshow(rgb, origin="lower", extent=extent, aspect="auto", interpolation="nearest")
        ax0.plot([0], [0], marker="+", color="white", markersize=12, mew=2)
        ax0.set_xlabel("b (along d2)")
        ax0.set_ylabel("a (along d1)")
        ax0.set_title(f"outcome; darker = lower final loss (1e{lo:.1f} .. 1e{hi:.1f})", fontsize=9)
        ax0.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(0.0, -0.1), ncol=3, fontsize=8, frameon=False
        )
        lim = _log_loss(np.asarray(ds["limit_loss"].values))
        im = ax1.imshow(
            lim, origin="lower", extent=extent, aspect="auto", interpolation="nearest", cmap="viridis"
        )
        ax1.plot([0], [0], marker="+", color="white", markersize=12, mew=2)
        ax1.set_xlabel("b (along d2)")
        ax1.set_title("log10 limit-loss estimate (white: extrapolates to 0)", fontsize=9)
        fig.colorbar(im, ax=ax1)
        if critical:
            _critical_panel(axes[2], ds, extent)
    else:
        fig, ax = plt.subplots(figsize=(7, 5), dpi=110, constrained_layout=True)
        x = np.asarray(ds["loss_init"].values)
        y = np.asarray(ds["limit_loss"].values)
        for i, n in enumerate(names):
            sel = (outcome == i) & (x > 0) & (y > 0)
            if sel.any():
                ax.scatter(x[sel], y[sel], s=6, color=OUTCOME_COLORS[n], label=n, alpha=0.7, linewidths=0)
        from .analysis import attraction_threshold

        fin = np.isfinite(x) & np.isfinite(y)
        if fin.any():
            th = attraction_threshold(x[fin], y[fin])
            ax.axhline(th.tol, color="gray", lw=0.8, ls=":")
            if np.isfinite(th.eps):
                ax.axvline(th.eps, color="k", lw=1, ls="--")
                handles.append(
                    Line2D([], [], color="k", ls="--", label=f"attraction threshold estimate {th.eps:.3g}")
                )
            handles.append(Line2D([], [], color="gray", ls=":", label=f"optimum reached below {th.tol:.2g}"))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("initial loss")
        ax.set_ylabel("limit-loss estimate (0 not shown)")
        ax.legend(handles=handles, fontsize=8)
    fig.suptitle(head, fontsize=10)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
