"""The command line, run as a user would: a separate process."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import sadfast


def run(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sadfast", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def _finite_numbers(obj) -> list[float]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _finite_numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _finite_numbers(v)]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return [float(obj)]
    return []


def test_demo_end_to_end(tmp_path) -> None:
    out = tmp_path / "demo"
    p = run("demo", "--flows", "6", "--t-end", "30", "--steps", "300", "--out", str(out), "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stdout
    for name in (
        "report.md",
        "summary.json",
        "timing.json",
        "flows_loss.png",
        "flows_theta_norm.png",
        "growth_by_decade.png",
        "optimizers.png",
    ):
        assert (out / name).stat().st_size > 0, name
    s = json.loads((out / "summary.json").read_text())
    assert s["parameters"]["flows"] == 6
    assert len(s["flow_experiments"]) == 4
    for r in s["flow_experiments"]:
        assert sum(r["outcomes"].values()) == 6
        assert sum(r["status"].values()) == 6
        for key in (
            "initial_loss",
            "final_loss",
            "final_theta_norm",
            "final_grad_norm",
            "grad_evals_per_flow",
        ):
            assert set(r[key]) == {"q10", "median", "q90"}
    assert set(s["optimizers"]["runs"]) == {"gd", "adam"}
    assert all(math.isfinite(x) for x in _finite_numbers(s))
    report = (out / "report.md").read_text()
    assert "flows_theta_norm.png" in report and "| adam |" in report
    # Same seed, same numbers.
    p2 = run(
        "demo",
        "--flows",
        "6",
        "--t-end",
        "30",
        "--steps",
        "300",
        "--out",
        str(tmp_path / "again"),
        "--no-progress",
    )
    assert p2.returncode == 0
    assert (tmp_path / "again" / "summary.json").read_text() == (out / "summary.json").read_text()


def test_bad_options_give_one_clear_line() -> None:
    for args, needle in [
        (("demo", "--flows", "0"), "--flows: expected a positive integer, got '0'"),
        (("demo", "--t-end", "-1"), "--t-end: expected a positive number"),
        (("nonsense",), "invalid choice"),
        (("demo", "--experiments", "sad_tanh,sad_relu"), "experiments: expected names from"),
        (("demo", "--device", "tpu"), "invalid choice: 'tpu'"),
    ]:
        p = run(*args)
        assert p.returncode == 2
        assert needle in p.stderr
    if not sadfast.cuda_available():
        p = run("demo", "--device", "cuda", "--flows", "2")
        assert p.returncode == 2 and "demo: error: device='cuda': no usable CUDA device" in p.stderr
        assert "Traceback" not in p.stderr


def test_info_and_help() -> None:
    p = run("info", "--json")
    assert p.returncode == 0
    info = json.loads(p.stdout)
    assert info["kernel_isa"] in ("avx2", "baseline") and "tanh" in info["activations"]
    assert ("cuda_kernels" in info) == info["cuda_built"]  # which lanes-path variant was built
    h = run("demo", "--help")
    assert h.returncode == 0 and "--flows" in h.stdout and "report.md" in h.stdout


def test_demo_subset_of_experiments(tmp_path) -> None:
    out = tmp_path / "d"
    p = run(
        "demo", "--flows", "3", "--t-end", "10", "--steps", "20", "--experiments", "contrast_relu,sad_tanh",
        "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    s = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in s["flow_experiments"]] == ["sad_tanh", "contrast_relu"]  # the demo's order


def test_quickstart_example_runs(tmp_path) -> None:
    """README's `python examples/quickstart.py`: it runs, and gradient descent lowers the loss."""
    script = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    p = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr
    initial = float(re.search(r"initial loss: median ([0-9.e+-]+)", p.stdout).group(1))
    final = float(re.search(r"GD steps .*: loss median ([0-9.e+-]+)", p.stdout).group(1))
    assert 0 < final < 0.1 * initial, p.stdout
    assert "gradient evaluations per second" in p.stdout
