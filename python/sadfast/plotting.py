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


def optimizer_traces(opt: dict[str, Any], path: Path) -> Path:
    """Loss and parameter norm against steps for each optimizer."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for m, r in opt["runs"].items():
        tr = r["_traces"]
        steps = tr["step"].astype(float)
        keep = steps > 0
        _band(a1, steps[keep], tr["loss"][:, keep], f"{m} (lr {r['lr']:g})")
        _band(a2, steps[keep], tr["theta_norm"][:, keep], f"{m} (lr {r['lr']:g})")
    for ax, lab in ((a1, "loss"), (a2, "||theta||")):
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(lab)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    a1.set_yscale("log")
    fig.suptitle("GD and Adam from the same initializations (median, 10-90% band)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
