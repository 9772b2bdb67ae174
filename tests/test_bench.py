"""`sadfast bench --suite smoke` as a user runs it: the JSON it writes has the promised schema,
every skipped backend says why, and the report and plots exist."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sadfast.bench import BACKENDS, SUITES, backend_status, run


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _timing_ok(t: dict) -> None:
    assert set(t) >= {"median_s", "min_s", "max_s", "repeats"}
    assert 0 < t["min_s"] <= t["median_s"] <= t["max_s"]


def test_smoke_suite_writes_json_report_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    p = subprocess.run(
        [sys.executable, "-m", "sadfast", "bench", "--suite", "smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "bench.json").read_text())
    assert res["schema"] == "sadfast.bench/1" and res["suite"]["name"] == "smoke" and res["device"] == "cpu"
    assert set(res["machine"]) >= {"cpu_model", "cpu_count", "cpu_flags", "threads", "kernel_isa", "python"}
    assert res["versions"]["sadfast"] and res["versions"]["numpy"]
    assert set(res["threads"]) >= {"sadfast", "torch", "jax"}
    assert _number(res["fp64_peak_gflops"]) and res["fp64_peak_gflops"] > 0
    # Every backend is either measured or skipped with the reason and the install hint.
    assert set(res["backends"]) == set(BACKENDS)
    for name, st in res["backends"].items():
        installed = all(importlib.util.find_spec(m) is not None for m in {"jax": ["jax"], "torch": ["torch"], "diffrax": ["jax", "diffrax"], "torchdiffeq": ["torch", "torchdiffeq"], "scipy": ["scipy"]}.get(name, []))  # fmt: skip
        if installed:
            assert st == {"status": "ok"}, name
        else:
            assert st["status"] == "skipped" and "pip install 'sadfast[bench]'" in st["reason"], name
            assert f"{name}: skipped" in p.stdout
    # Kernels: sadfast always, the installed peers beside it, with timings and ratios.
    (k,) = res["kernels"]
    assert k["problem"] == "poly1d" and k["K"] == 16
    _timing_ok(k["sadfast"]["grad"])
    _timing_ok(k["sadfast"]["hvp"])
    assert 0 < k["sadfast_fraction_of_peak"] < 1.5 and k["sadfast_activations_per_s"] > 0
    for be in ("jax", "torch"):
        if res["backends"][be]["status"] == "ok":
            _timing_ok(k[be]["grad"])
            assert k[f"speedup_vs_{be}"]["grad"] > 0
        else:
            assert be not in k
    if res["backends"]["jax"]["status"] == "ok":
        assert k["jax"]["compile_s"]["grad"] > 0  # compile time shown, not hidden
    # Flows: same initial points and settings; peers agree with sadfast on the final loss.
    (f,) = res["flows"]
    assert f["problem"] == "poly1d" and f["K"] == 8 and f["t_end"] == 2.0
    assert f["sadfast"]["lockstep_waste"] == 1.0 and len(f["sadfast"]["final_loss"]) == 8
    assert f["sadfast"]["status"] == {"REACHED_T_END": 8}
    auto = f["sadfast_auto"]  # the default method on the same flows (Dormand-Prince to t = 2 here)
    assert (
        auto["method"] == "auto"
        and auto["status"] == {"REACHED_T_END": 8}
        and auto["speedup_over_dopri5"] > 0
    )
    assert auto["final_loss_max_rel_diff_vs_dopri5"] < 1e-5
    assert "| sadfast_auto |" in (out / "report.md").read_text()
    for be in ("diffrax", "torchdiffeq", "scipy"):
        if res["backends"][be]["status"] == "ok":
            assert f[be]["final_loss_max_rel_diff_vs_sadfast"] < 1e-5, be
            assert f[be]["speedup_of_sadfast"] > 0
    if importlib.util.find_spec("scipy") is not None:
        (a,) = res["accuracy"]
        assert a["max_rel_diff_vs_reference"]["sadfast"] < 1e-5
    # Scaling curves and the roofline inputs.
    sc = res["scaling"]
    assert [r["K"] for r in sc["K"]] == list(SUITES["smoke"].scale_k)
    assert [r["N"] for r in sc["N"]] == list(SUITES["smoke"].scale_n)
    assert [r["threads"] for r in sc["threads"]] == [1, 2]
    assert sc["width"][1]["P"] > sc["width"][0]["P"] and sc["depth"][1]["P"] > sc["depth"][0]["P"]
    for rows in sc.values():
        for r in rows:
            _timing_ok(r["timing"])
            assert r["gflops"] > 0
    report = (out / "report.md").read_text()
    assert "## Kernels" in report and "## Whole flows" in report and "FP64 peak" in report
    for fig in res["figures"]:
        assert (out / fig).stat().st_size > 5_000, fig
        assert f"]({fig})" in report


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="suite: unknown name 'huge'"):
        run("huge", out=tmp_path)
    with pytest.raises(ValueError, match="backends: unknown"):
        run("smoke", backends=("sadfast", "numba"), out=tmp_path)
    with pytest.raises(ValueError, match="device: expected 'cpu', got 'cuda'"):
        run("smoke", device="cuda", out=tmp_path)
    assert backend_status(("sadfast",)) == {"sadfast": {"status": "ok"}}
    from sadfast.bench.peers import run_diffrax
    from sadfast.bench.problems import PROBLEMS

    with pytest.raises(ValueError, match="solver: expected 'dopri5' or 'tsit5', got 'rk4'"):
        run_diffrax(PROBLEMS["poly1d"], np.zeros((2, 49)), 1.0, solver="rk4")


def test_size_budget_caps_every_measurement() -> None:
    s = SUITES["quick"].capped(100)
    assert max(s.kernel_ks) <= 100 and max(s.scale_k) <= 100
    assert all(k <= 100 for _, _, k in s.flows)


@pytest.mark.parametrize("name", ["poly1d", "poly2d", "poly4d"])
def test_peer_losses_are_the_same_function(name: str) -> None:
    """The JAX (and torch) losses the peers differentiate equal sadfast's loss to round-off, so the
    benchmark compares the same computation."""
    import numpy as np
    from sadfast.bench.problems import PROBLEMS, jax_loss, torch_loss

    p = PROBLEMS[name]
    theta = p.model().init(3, seed=1)
    ref = p.model().bind(*p.data()).loss(theta)
    got = np.array([float(jax_loss(p)(t)) for t in theta])
    np.testing.assert_allclose(got, ref, rtol=1e-13)
    if importlib.util.find_spec("torch") is not None:
        import torch

        got = np.array([float(torch_loss(p)(torch.as_tensor(t))) for t in theta])
        np.testing.assert_allclose(got, ref, rtol=1e-13)
