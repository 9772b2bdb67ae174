"""Experiment suites (`sadfast experiment NAME`): the presets hold the published settings, and a
reduced run writes every promised file with finite numbers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sadfast.experiments import SAD_ACTIVATIONS, SUITES, TARGETS, demo, polynomial_data, run_suite
from test_cli import _finite_numbers


def test_paper_preset_is_the_published_setup() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (5, 4))
    x1, x2, x3, x4 = x.T
    expect = {
        "paper1d": x1**10 - 2 * x1**8 + 2 * x1**5 + 3 * x1**3 - 2 * x1**2 + 5,
        "paper2d": x2**5 - x1**3 * x2**2 - 4 * x1**2 * x2 + 3 * x1**3 - x2**2 + x1 + 2,
        "paper4d": x1**6 * x4**5
        + x2**6
        - x1**3 * x2**2 * x3
        + x4**2
        - 4 * x3**4 * x2**4
        + 3 * x4**3 * x2**3
        - x3**2 * x1
        + x3
        + 3,
    }
    for name, y in expect.items():
        d, f = TARGETS[name]
        np.testing.assert_allclose(f(x[:, :d])[:, 0], y, rtol=1e-14)
    p = SUITES["paper"]
    assert (p.flows, p.steps, p.gd_lr, p.adam_lr) == (20, 500_000, 1e-3, 5e-3)
    assert {e.widths for e in p.experiments} == {(1, 10, 20, 10, 1), (2, 20, 40, 20, 1), (4, 20, 40, 20, 1)}
    assert {e.activation for e in p.experiments} == {"swish", "softplus", "gelu", "elu", "tanh"}
    assert all(e.n_points == 10_000 for e in p.experiments) and len(p.experiments) == 15
    assert {e.activation for e in SUITES["sad"].experiments} == set(SAD_ACTIVATIONS)
    X, Y = polynomial_data("paper2d", 10_000, 0)
    assert X.shape == (10_000, 2) and Y.shape == (10_000, 1) and X.min() >= -1 and X.max() <= 1


def test_reduced_paper_run(tmp_path: Path) -> None:
    s = run_suite("paper", tmp_path, flows=2, t_end=1.0, steps=20, n_points=64, only="1d_tanh")
    (r,) = s["experiments"]
    assert r["name"] == "1d_tanh" and r["n_points"] == 64 and r["flows"] == 2
    assert set(r["optimizers"]) == {"gd", "adam"} and r["optimizers"]["adam"]["steps"] == 20
    assert "days" in (tmp_path / "report.md").read_text()


def test_experiment_cli_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "sadfast", "experiment", "contrasts", "--flows", "3", "--t-end", "20"]
    p = subprocess.run(
        [*cmd, "--steps", "50", "--only", "1d", "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    s = json.loads((out / "summary.json").read_text())
    assert [e["name"] for e in s["experiments"]] == ["1d_tanh", "1d_relu", "1d_tanh_wd"]
    assert [e["t_end"] for e in s["experiments"]] == [20.0, 20.0, 20.0]  # --t-end sets every horizon
    for e in s["experiments"]:
        assert sum(e["outcomes"].values()) == 3 and sum(e["status"].values()) == 3
        assert e["attraction_threshold"]["flows"] == 3
        assert set(e["optimizers"]) == {"gd", "adam"}
    assert all(math.isfinite(x) for x in _finite_numbers(s))
    for fig in s["figures"].values():
        assert (out / fig).stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "contrast: ReLU 1-16-1 on x^2 (t_end 100)" in report and "## GD and Adam" in report
    for f in s["figures"].values():
        assert f in report
    # One clear line for a bad suite name.
    p = subprocess.run(
        [sys.executable, "-m", "sadfast", "experiment", "nope"], capture_output=True, text=True
    )
    assert p.returncode == 2 and "invalid choice: 'nope'" in p.stderr


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="suite: unknown name 'big'"):
        run_suite("big", "x")
    with pytest.raises(ValueError, match="only: no experiment of suite 'sad'"):
        run_suite("sad", "x", only="7d")
    # the GPU's integrator is checked first, whatever the device
    with pytest.raises(
        ValueError,
        match=r"gpu_method: unknown name 'radau'; expected one of \['dopri5', 'tsit5', 'rkc', 'rosw', 'auto'\]",
    ):
        run_suite("sad", "x", gpu_method="radau")
    with pytest.raises(ValueError, match="gpu_method: unknown name 'radau'"):
        demo("x", gpu_method="radau")


def test_heat_labels_are_unbiased_samples_of_the_solution() -> None:
    from sadfast.experiments import HEAT_DIM, HEAT_T, heat_data

    X, Y = heat_data(200_000, seed=3)
    resid = Y[:, 0] - (np.sum(X**2, axis=1) + 2 * HEAT_DIM * HEAT_T)
    # The label noise has mean 0; its standard deviation is O(10), so 200,000 samples pin the mean
    # to ~0.03: 5 standard errors.
    assert abs(resid.mean()) < 5 * resid.std() / np.sqrt(resid.size)


def test_reduced_tasks_run(tmp_path: Path) -> None:
    s = run_suite("tasks", tmp_path, flows=2, t_end=2.0, steps=10, n_points=64)
    heat, digits = s["experiments"]
    assert heat["name"] == "heat10d_gelu" and digits["name"] == "digits_gelu"
    assert "cross_entropy" in digits["model"] and digits["n_points"] == 64
    # Cross-entropy starts near log(10) for small logits and decreases along the flow.
    assert digits["initial_loss"]["median"] > digits["final_loss"]["median"]
    assert (tmp_path / "report.md").is_file()


def test_flow_experiment_reports_growth_by_decade() -> None:
    from sadfast.experiments import DEMO_FLOWS, run_flow_experiment

    r = run_flow_experiment(DEMO_FLOWS[0], 8, 1e4, 0)  # tanh 1-16-1 on x^2: every flow diverges
    div = r["_diverging"]
    assert div.sum() == r["outcomes"]["diverging"] > 0
    rows = r["growth_by_decade_of_diverging_flows"]
    assert (
        len(rows) == 6
        and rows[0]["t_start"] == pytest.approx(1e-2)
        and rows[-1]["t_end"] == pytest.approx(1e4)
    )
    w = r["_windows"]
    assert w.log_slope.shape == (8, 6)
    for row, b in zip(rows, w.log_slope.T, strict=True):
        assert row["log_slope"]["median"] == pytest.approx(np.median(b[div]), rel=1e-12)
        assert row["max_bound_ratio"] <= 1 + 1e-6  # the gradient-flow bound holds on every decade
    # after the transient the norm keeps growing, far slower than sqrt t
    assert all(row["log_slope"]["q10"] > 0.05 for row in rows[-2:])
    assert all(row["alpha"]["q90"] < 0.2 for row in rows[-2:])


def test_suite_report_has_the_decade_table(tmp_path: Path) -> None:
    s = run_suite("sad", tmp_path, flows=4, t_end=1e4, steps=0, only="1d_tanh")
    (r,) = s["experiments"]
    assert r["outcomes"]["diverging"] > 0 and len(r["growth_by_decade_of_diverging_flows"]) == 6
    fig = s["figures"]["1d_x2_growth_by_decade"]
    assert (tmp_path / fig).stat().st_size > 10_000
    report = (tmp_path / "report.md").read_text()
    assert "## Growth decade by decade (diverging flows)" in report and fig in report
    table = report.split("## Growth decade by decade (diverging flows)")[1]
    row = next(line for line in table.splitlines() if line.startswith("| tanh 1-16-1 on x^2 |"))
    last = r["growth_by_decade_of_diverging_flows"][-1]
    assert f"{last['log_slope']['median']:.2f} / {last['alpha']['median']:.3f}" in row


def test_flow_experiment_reports_critical_points_both_ways() -> None:
    """The weight-decay contrast's converged flows: resolved types (minimum / unresolved here)
    and the sign of lambda_min where they stopped, both over the same converged flows."""
    from sadfast.experiments import DEMO_FLOWS, run_flow_experiment

    exp = next(e for e in DEMO_FLOWS if e.weight_decay > 0)
    r = run_flow_experiment(exp, 16, 1e4, 0)
    h = r["hessian_at_converged_endpoints"]
    assert h["flows"] == r["outcomes"]["converged"] > 0
    assert sum(h["types"].values()) == sum(h["types_at_stop"].values()) == h["flows"]
    assert set(h["types"]) == {"minimum", "saddle", "degenerate", "unresolved"}
    assert set(h["types_at_stop"]) == {"minimum", "saddle", "degenerate"}
    assert h["resolution"]["median"] > 0
    # a resolved minimum has lambda_min > 0 where it stopped: never more of them than signs say
    assert h["types"]["minimum"] + h["types"]["unresolved"] == h["flows"]
    assert h["types"]["minimum"] <= h["types_at_stop"]["minimum"]
