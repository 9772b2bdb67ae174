"""The markdown report and PNG plots of a ``sadfast bench`` run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter


def _fmt_s(x: float) -> str:
    return f"{x:.3g} s"


def _scaling_plot(rows: list[dict[str, Any]], x: str, xlabel: str, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110, constrained_layout=True)
    xs = [r[x] if x in r else r["widths"] for r in rows]
    ax.plot(xs, [r["us_per_flow_grad"] for r in rows], "o-", label="us per flow-gradient")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("us per flow-gradient (median)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path)
    plt.close(fig)
    return path


def _roofline_plot(res: dict[str, Any], path: Path) -> Path:
    peak = res["fp64_peak_gflops"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=110, constrained_layout=True)
    pts = [(r["flops_per_grad"], r["sadfast_gflops"], f"{r['problem']} K={r['K']}") for r in res["kernels"]]
    for group, rows in (("P (width)", res["scaling"]["width"]), ("P (depth)", res["scaling"]["depth"])):
        ax.scatter(
            [r["flops_per_grad"] for r in rows],
            [r["gflops"] for r in rows],
            s=18,
            alpha=0.6,
            label=f"poly1d-like, {group}",
        )
    for f, g, label in pts:
        ax.scatter([f], [g], marker="s", s=40)
        ax.annotate(label, (f, g), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.axhline(peak, color="k", ls="--", lw=1, label=f"measured FP64 peak {peak:.0f} GFLOP/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("flops per flow-gradient (matrix products)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title("sadfast gradient kernels against the machine's FP64 peak", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(res: dict[str, Any], out: Path) -> list[str]:
    """Write ``report.md`` and the figures into ``out``; returns the figure file names."""
    sc = res["scaling"]
    figs = [
        _scaling_plot(sc["K"], "K", "flows per call K", "cost per flow vs K (poly1d)", out / "scaling_K.png"),
        _scaling_plot(
            sc["N"], "N", "data points N", "cost per flow vs N ([1,16,1] tanh, K=256)", out / "scaling_N.png"
        ),
        _scaling_plot(
            sc["width"],
            "P",
            "parameters P (width)",
            "cost vs P: [1,h,1] tanh, N=32, K=256",
            out / "scaling_P_width.png",
        ),
        _scaling_plot(
            sc["depth"],
            "P",
            "parameters P (depth)",
            "cost vs P: [1,16,...,16,1], N=32, K=256",
            out / "scaling_P_depth.png",
        ),
        _roofline_plot(res, out / "roofline.png"),
    ]
    m = res["machine"]
    lines = [
        f"# sadfast bench: suite `{res['suite']['name']}`",
        "",
        f"Machine: {m['cpu_model']} ({m['cpu_count']} cores, flags {', '.join(m['cpu_flags'])}), {m['platform']}; "
        f"sadfast kernels `{m['kernel_isa']}`, {m['threads']} threads. Measured FP64 peak "
        f"**{res['fp64_peak_gflops']:.1f} GFLOP/s** ({res['fp64_peak_method']}). Total wall time "
        f"{res['wall_s']:.0f} s.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items() if v),
        "",
        "Threads: " + "; ".join(f"{k}: {v}" for k, v in res["threads"].items()),
        "",
        "Timing: " + res["timing_discipline"],
        "",
        "## Backends",
        "",
        "| backend | status |",
        "|---|---|",
    ]
    for b, v in res["backends"].items():
        lines.append(f"| {b} | {v['status']}{': ' + v['reason'] if 'reason' in v else ''} |")
    lines += [
        "",
        "## Kernels: one flow's gradient / HVP, microseconds (median), batched over K flows",
        "",
        "| problem | K | sadfast grad | sadfast HVP | GFLOP/s (of peak) | activations/s | vs JAX (grad, HVP) | vs torch.func (grad, HVP) | JAX compile |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["kernels"]:
        vs = []
        for be in ("jax", "torch"):
            sp = r.get(f"speedup_vs_{be}")
            vs.append(f"x{sp['grad']:.1f}, x{sp['hvp']:.1f}" if sp else "skipped")
        comp = r["jax"]["compile_s"]["grad"] if isinstance(r.get("jax"), dict) else None
        lines.append(
            f"| {r['problem']} | {r['K']} | {r['sadfast_grad_us_per_flow']:.3f} | {r['sadfast_hvp_us_per_flow']:.3f} | "
            f"{r['sadfast_gflops']:.2f} ({100 * r['sadfast_fraction_of_peak']:.1f}%) | "
            f"{r['sadfast_activations_per_s'] / 1e9:.2f} G | {vs[0]} | {vs[1]} | "
            f"{_fmt_s(comp) if comp is not None else '-'} |"
        )
    lines += [
        "",
        "## Whole flows: Dormand-Prince 5(4), rtol 1e-6, atol 1e-9, same initial points",
        "",
        "`sadfast_auto` is sadfast's default method on the same flows (Dormand-Prince until a flow "
        "turns stiff, then RKC and ROSW; lower order there, so less accurate at the same rtol): its "
        "speed-up is over sadfast's Dormand-Prince, and its evaluations count an HVP as two.",
        "",
        "| problem | t_end | K | backend | flows run | wall (scaled to K) | sadfast faster by | evals/flow (median) | lockstep waste | compile | final loss vs sadfast |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in res["flows"]:
        for be in ("sadfast", "sadfast_auto", "diffrax", "torchdiffeq", "scipy"):
            r = row.get(be)
            if r is None:
                continue
            if "skipped" in r:
                lines.append(
                    f"| {row['problem']} | {row['t_end']:g} | {row['K']} | {be} | skipped: {r['skipped']} |||||||"
                )
                continue
            scaled = r.get("wall_s_scaled_to_K", r["wall_s"])
            speed = f"x{r['speedup_of_sadfast']:.1f}" if "speedup_of_sadfast" in r else "-"
            evals = r["grad_evals_per_flow"]["median"]
            if be == "sadfast_auto":
                speed = f"x{r['speedup_over_dopri5']:.2f} over sadfast"
                evals = r["grad_equivalents_per_flow"]["median"]
            diff = r.get("final_loss_max_rel_diff_vs_sadfast", r.get("final_loss_max_rel_diff_vs_dopri5"))
            lines.append(
                f"| {row['problem']} | {row['t_end']:g} | {row['K']} | {be} | {r.get('flows', row['K'])} | "
                f"{_fmt_s(scaled)} | {speed} | "
                f"{evals:.0f} | {r.get('lockstep_waste', float('nan')):.2f} | "
                f"{_fmt_s(r['compile_and_first_run_s']) if 'compile_and_first_run_s' in r else '-'} | "
                f"{'-' if diff is None else f'{diff:.1e}'} |"
            )
    if res["accuracy"]:
        lines += [
            "",
            "## Accuracy: final loss against a tight DOP853 solve",
            "",
            "| problem | flows | backend | max relative difference |",
            "|---|---|---|---|",
        ]
        for a in res["accuracy"]:
            for be, d in a["max_rel_diff_vs_reference"].items():
                lines.append(f"| {a['problem']} | {a['flows']} | {be} | {d:.1e} |")
    lines += ["", "## Scaling of sadfast's gradient (us per flow-gradient, median)", ""]
    for key, label in (("K", "K"), ("N", "N"), ("width", "P"), ("depth", "P"), ("threads", "threads")):
        rows = sc[key]
        lines.append(
            f"- vs {key}: "
            + ", ".join(
                f"{label}={r[label if label != 'threads' else 'threads']}: {r['us_per_flow_grad']:.3g}"
                for r in rows
            )
        )
    if len(sc["threads"]) > 1:
        t1 = sc["threads"][0]["us_per_flow_grad"]
        lines.append(
            "- thread speed-up (poly2d, K=1024): "
            + ", ".join(f"{r['threads']} threads x{t1 / r['us_per_flow_grad']:.2f}" for r in sc["threads"])
        )
    lines += ["", *[f"![{f.stem}]({f.name})" for f in figs], ""]
    (out / "report.md").write_text("\n".join(lines))
    return [f.name for f in figs]
