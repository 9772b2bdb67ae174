"""Basin maps: the store, resume after SIGKILL, chunking and distribution invariance, errors.

The reference for every map is the flow engine itself run on all initial points in one batch
(flows are bitwise independent of their batch), classified by sadfast.analysis; the store must
hold exactly those values whatever the chunking, the interruptions or the workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sadfast
import zarr
from sadfast import basins
from sadfast.analysis import classify_outcomes, critical_kind, estimate_limit_loss
from sadfast.experiments import polynomial_data

OUT_NAMES = list(basins.OUTPUTS)


@pytest.fixture(scope="module")
def model() -> sadfast.MLP:
    return sadfast.MLP([1, 8, 1], "tanh")


@pytest.fixture(scope="module")
def problem(model: sadfast.MLP) -> sadfast.Problem:
    X, Y = polynomial_data("x^2", 16, 0)
    return model.bind(X, Y)


def small_spec(problem: sadfast.Problem, n: int = 10, **kw) -> basins.BasinSpec:
    sl = basins.Slice.random(problem.model, seed=3, a=(-2.0, 2.0, n), b=(-1.5, 1.5, n + 1))
    return basins.BasinSpec(problem, sl, **{"t_end": 20.0, "n_save": 16, **kw})


def outputs(path: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(g[name][...]) for name in g.array_keys()}


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], names) -> None:
    for n in names:
        assert a[n].dtype == b[n].dtype, n
        assert np.array_equal(a[n], b[n], equal_nan=True), n


# ---- the initial points ------------------------------------------------------------------------


def test_slice_points_follow_the_formula(model: sadfast.MLP) -> None:
    sl = basins.Slice.random(model, seed=1, a=(-1.0, 2.0, 4), b=(0.0, 1.0, 3), normalization="none")
    D = np.random.default_rng([1, 1]).standard_normal((2, model.P))
    np.testing.assert_array_equal(sl.center, model.init(seed=1))
    np.testing.assert_array_equal(sl.d1, D[0])
    np.testing.assert_array_equal(sl.d2, D[1])
    th = sl.thetas(slice(1, 3))
    expect = [sl.center + a * sl.d1 + b * sl.d2 for a in sl.a[1:3] for b in sl.b]
    np.testing.assert_allclose(th, np.array(expect), rtol=0, atol=1e-15)


def test_filter_normalization_as_li_et_al(model: sadfast.MLP) -> None:
    center = model.init(seed=2)
    for bias in ("zero", "copy", "random"):
        sl = basins.Slice.random(model, seed=5, center=center, bias=bias)
        raw = np.random.default_rng([5, 1]).standard_normal((2, model.P))
        for d, r in ((sl.d1, raw[0]), (sl.d2, raw[1])):
            for ly in model.layers:
                W = d[ly.weight].reshape(ly.weight_shape)
                C = center[ly.weight].reshape(ly.weight_shape)
                np.testing.assert_allclose(np.linalg.norm(W, axis=1), np.linalg.norm(C, axis=1), rtol=1e-12)
                # Each row keeps its direction: a positive multiple of the raw draw.
                R = r[ly.weight].reshape(ly.weight_shape)
                assert np.all(np.sum(W * R, axis=1) > 0)
                expect_b = {"zero": 0 * center[ly.bias], "copy": center[ly.bias], "random": r[ly.bias]}[bias]
                np.testing.assert_array_equal(d[ly.bias], expect_b)


def test_estimate_limit_loss_is_exact_for_power_laws() -> None:
    t = np.geomspace(1.0, 1e3, 20)
    L_inf = np.array([0.0, 1e-3, 0.25])
    L = L_inf[:, None] + np.array([[2.0], [0.5], [3.0]]) * t[None, :] ** -np.array([[0.5], [1.0], [2.0]])
    np.testing.assert_allclose(estimate_limit_loss(t, L), L_inf, rtol=1e-8, atol=1e-12)
    # NaN after the flow stopped: the estimate uses the last recorded values.
    L2 = L.copy()
    L2[:, 15:] = np.nan
    est = estimate_limit_loss(t, L2)
    np.testing.assert_allclose(est, L_inf, rtol=1e-8, atol=1e-12)
    # Not an approach to a limit (differences grow): the last value. Never below 0.
    assert estimate_limit_loss(t[:3], np.array([1.0, 0.9, 0.5])) == 0.5
    assert estimate_limit_loss(t[:3], np.array([1.0, 0.1, 0.09])) >= 0.0
    assert np.isnan(estimate_limit_loss(t[:3], np.full(3, np.nan)))
    with pytest.raises(ValueError, match="loss: expected 3 columns"):
        estimate_limit_loss(t[:3], np.ones((2, 4)))


# ---- the map equals the flow engine --------------------------------------------------------------


def test_map_equals_one_batch_of_the_flow_engine(problem: sadfast.Problem, tmp_path: Path) -> None:
    spec = small_spec(problem)
    rep = basins.run(spec, tmp_path / "m.zarr", chunk_flows=33, progress=False)
    assert rep.n_chunks == 4 and rep.computed == [0, 1, 2, 3] and rep.flows == spec.n_flows
    ds = basins.open(tmp_path / "m.zarr")
    assert ds["outcome"].dims == ("a", "b") and ds["outcome"].shape == (10, 11)
    np.testing.assert_array_equal(ds["a"].values, np.linspace(-2, 2, 10))

    theta0 = spec.points.thetas(slice(0, 10))
    ts = spec.save_times
    res = sadfast.solve_flows(problem, theta0, 20.0, save_at=ts, method=spec.method)
    out = classify_outcomes(ts, res.trace_loss, res.trace_theta_norm, res.trace_grad_norm)
    expect = {
        "outcome": np.array([basins.OUTCOMES.index(x) for x in out.label], dtype=np.uint8),
        "status": res.status.astype(np.int8),
        "loss_init": problem.loss(theta0),
        "loss": res.loss,
        "limit_loss": estimate_limit_loss(ts, res.trace_loss),
        "theta_norm": res.theta_norm,
        "grad_norm": res.grad_norm,
        "norm_change": out.norm_change,
        "t_stop": res.t,
        "n_grad_evals": res.n_grad_evals,
        "n_hvp": res.n_hvp,
    }
    assert set(expect) == set(OUT_NAMES)
    for name, v in expect.items():
        np.testing.assert_array_equal(ds[name].values.ravel(), v, err_msg=name)
    assert (ds["status"].values == sadfast.FlowStatus.REACHED_T_END).all()
    assert set(np.unique(ds["outcome"].values)) <= {0, 1, 2}
    inf = basins.info(tmp_path / "m.zarr", verify=True)
    assert inf.missing == [] and inf.corrupted == [] and inf.flows_done() == 110
    assert sum(inf.outcome_counts.values()) == 110
    assert inf.grad_evals == int(res.n_grad_evals.sum())


def test_chunking_threads_and_workers_do_not_change_values(problem: sadfast.Problem, tmp_path: Path) -> None:
    spec = small_spec(problem, n=9, method="auto", t_end=60.0)
    ref = basins.run(spec, tmp_path / "a.zarr", chunk_flows=10_000, progress=False)
    assert ref.n_chunks == 1
    basins.run(spec, tmp_path / "b.zarr", chunk_flows=20, workers=3, progress=False)
    before = sadfast.get_num_threads()
    sadfast.set_num_threads(1)
    try:
        basins.run(spec, tmp_path / "c.zarr", chunk_flows=45, progress=False)
    finally:
        sadfast.set_num_threads(before)
    a, b, c = (outputs(tmp_path / f"{x}.zarr") for x in "abc")
    assert_same(a, b, OUT_NAMES)
    assert_same(a, c, OUT_NAMES)
    assert a["n_hvp"].sum() > 0  # the stiff method was used, and is chunk-invariant too


def test_events_and_failures_have_their_own_outcome(problem: sadfast.Problem, tmp_path: Path) -> None:
    spec = small_spec(problem, n=6, theta_norm_above=9.0, loss_below=4e-3, max_steps=70)
    basins.run(spec, tmp_path / "e.zarr", progress=False)
    o = outputs(tmp_path / "e.zarr")
    st, oc = o["status"], o["outcome"]
    names = basins.OUTCOMES
    for code, outcome in (
        (sadfast.FlowStatus.THETA_NORM_ABOVE, "diverging"),
        (sadfast.FlowStatus.LOSS_BELOW, "optimum"),
        (sadfast.FlowStatus.MAX_STEPS, "failed"),
    ):
        sel = st == code
        assert sel.any(), code.name  # the settings above make each of these happen
        assert (oc[sel] == names.index(outcome)).all()
    fail = st < 0
    assert np.isnan(o["limit_loss"][fail]).all()
    ev = (st == sadfast.FlowStatus.LOSS_BELOW) | (st == sadfast.FlowStatus.THETA_NORM_ABOVE)
    np.testing.assert_array_equal(o["limit_loss"][ev], o["loss"][ev])
    assert (o["t_stop"][ev] < 20.0).all()


def test_sample_map(problem: sadfast.Problem, tmp_path: Path) -> None:
    model = problem.model
    spec = basins.BasinSpec(problem, basins.Sample.init(model, 50, seed=4), t_end=10.0)
    basins.run(spec, tmp_path / "s.zarr", chunk_flows=16, progress=False)
    ds = basins.open(tmp_path / "s.zarr")
    assert ds["outcome"].dims == ("flow",) and ds.attrs["layout"]["n_chunks"] == 4
    np.testing.assert_array_equal(ds["theta0"].values, model.init(50, seed=4))
    res = sadfast.solve_flows(
        problem, model.init(50, seed=4), 10.0, save_at=spec.save_times, method=spec.method
    )
    np.testing.assert_array_equal(ds["loss"].values, res.loss)
    png = basins.plot(tmp_path / "s.zarr", tmp_path / "s.png")
    assert png.stat().st_size > 10_000


# ---- resume ------------------------------------------------------------------------------------

# 24 chunks of one grid row: enough that a SIGKILL after the third chunk cannot race the end of the run.
CLI_MAP = ["--widths", "1,8,1", "--grid", "24", "--range=-2,2", "--t-end", "400", "--n-points", "16"]


def cli(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sadfast", *args], capture_output=True, text=True, timeout=300, **kw
    )


def test_sigkill_then_rerun_equals_one_run(tmp_path: Path) -> None:
    one = tmp_path / "one.zarr"
    p = cli("basins", "run", "--store", str(one), *CLI_MAP, "--chunk-flows", "24", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "computed 24 chunks" in p.stdout

    two = tmp_path / "two.zarr"
    cmd = [sys.executable, "-m", "sadfast", "basins", "run", "--store", str(two), *CLI_MAP]
    proc = subprocess.Popen([*cmd, "--chunk-flows", "24", "--no-progress"], stdout=subprocess.DEVNULL)
    marks = two / "chunk_done" / "c"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        # >= 5 marker files: at least 3 complete, since each of the 2 local workers may be in the
        # middle of writing one (a marker caught half-written is not a done chunk: seen once)
        if marks.is_dir() and len(os.listdir(marks)) >= 5:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed: make the map bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = basins.info(two)
    assert 3 <= int(partial.done.sum()) < 24
    # The same command again computes only what is missing.
    p = cli("basins", "run", "--store", str(two), *CLI_MAP, "--no-progress")
    assert p.returncode == 0, p.stderr
    assert f"computed {24 - int(partial.done.sum())} chunks" in p.stdout
    # Without a progress bar (a batch job) a progress line goes to stderr, at least when done.
    assert "basins: 24/24 chunks, 576/576 flows (100.0%)" in p.stderr
    a, b = outputs(one), outputs(two)
    assert set(a) == set(b)
    assert_same(a, b, sorted(a))  # every array, inputs and done markers included

    # info and plot of the finished map, as a user runs them.
    p = cli("basins", "info", str(two), "--verify", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["chunks_done"] == 24 and d["missing_chunks"] == "" and d["corrupted_chunks"] == ""
    assert sum(d["outcomes"].values()) == 576
    p = cli("basins", "plot", str(two), "-o", str(tmp_path / "map.png"))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "map.png").stat().st_size > 10_000


def test_spec_file_and_options_build_the_same_map(tmp_path: Path) -> None:
    spec = {
        "model": {"widths": [1, 8, 1], "activation": "softplus"},
        "data": {"n_points": 16},
        "points": {"kind": "slice", "a": [-1, 1, 5], "b": [-1, 1, 5], "seed": 2},
        "solver": {"t_end": 5.0},
    }
    f = tmp_path / "spec.json"
    f.write_text(json.dumps(spec))
    p = cli("basins", "run", str(f), "--store", str(tmp_path / "f.zarr"), "--no-progress")
    assert p.returncode == 0, p.stderr
    p = cli(
        "basins", "run", "--store", str(tmp_path / "o.zarr"), "--widths", "1,8,1", "--activation", "softplus",
        "--n-points", "16", "--grid", "5", "--seed", "2", "--t-end", "5", "--no-progress",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    a, b = outputs(tmp_path / "f.zarr"), outputs(tmp_path / "o.zarr")
    assert_same(a, b, sorted(a))
    # The file with an option changed is another map: a clear error, nothing written.
    p = cli("basins", "run", str(f), "--store", str(tmp_path / "f.zarr"), "--t-end", "6")
    assert p.returncode == 2
    assert "holds a different map" in p.stderr and "solver.t_end: store has 5.0, asked 6.0" in p.stderr
    f.write_text(json.dumps({**spec, "solver": {"t_end": 5.0, "tolerance": 1}}))
    p = cli("basins", "run", str(f), "--store", str(tmp_path / "x.zarr"))
    assert p.returncode == 2 and "unknown key solver.'tolerance'" in p.stderr
    f.write_text('{"model": {"widths": [1, 8, 1]},')  # cut short
    p = cli("basins", "run", str(f), "--store", str(tmp_path / "x.zarr"))
    assert p.returncode == 2 and f"spec: {f} is not valid JSON" in p.stderr
    assert not (tmp_path / "x.zarr").exists()


# ---- Dask --------------------------------------------------------------------------------------


def test_local_cluster_equals_local_run(problem: sadfast.Problem, tmp_path: Path) -> None:
    import distributed

    spec = small_spec(problem, n=8)
    basins.run(spec, tmp_path / "local.zarr", chunk_flows=18, progress=False)
    # The same map as a JSON spec file, for the command line.
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(
        json.dumps(
            {
                "model": {"widths": [1, 8, 1]},
                "data": {"n_points": 16},
                "points": {"seed": 3, "a": [-2.0, 2.0, 8], "b": [-1.5, 1.5, 9]},
                "solver": {"t_end": 20.0},
                "n_save": 16,
            }
        )
    )
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        rep = basins.run(spec, tmp_path / "dask.zarr", chunk_flows=18, client=client, progress=False)
        workers = client.run(os.getpid)
        # A separate process connecting by address, as `--scheduler tcp://...` on a real cluster.
        p = cli(
            "basins", "run", str(spec_file), "--store", str(tmp_path / "addr.zarr"), "--chunk-flows", "18",
            "--scheduler", cluster.scheduler_address, "--no-progress",
        )  # fmt: skip
    assert rep.scheduler.startswith("dask") and len(rep.computed) == rep.n_chunks == 4
    assert len(set(workers.values())) == 2 and os.getpid() not in workers.values()
    assert p.returncode == 0, p.stderr
    assert f"dask ({cluster.scheduler_address})" in p.stdout and "computed 4 chunks" in p.stdout
    a, b, c = (outputs(tmp_path / f"{n}.zarr") for n in ("local", "dask", "addr"))
    assert_same(a, b, sorted(a))
    assert_same(a, c, sorted(a))


# ---- bad stores and specs ------------------------------------------------------------------------


def test_foreign_damaged_and_mismatched_stores(problem: sadfast.Problem, tmp_path: Path) -> None:
    spec = small_spec(problem, n=4)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(basins.BasinStoreError, match="not a Zarr v3 group"):
        basins.run(spec, plain)
    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w").attrs["format"] = "something else"
    with pytest.raises(basins.BasinStoreError, match=r"not a sadfast basin map \(format 'something else'"):
        basins.open(other)
    good = tmp_path / "good.zarr"
    basins.run(spec, good, chunk_flows=8, progress=False)
    # Same shape and settings, other directions: caught by the fingerprint, with the recipe's diff.
    spec2 = basins.BasinSpec(
        problem,
        basins.Slice.random(problem.model, seed=4, a=(-2.0, 2.0, 4), b=(-1.5, 1.5, 5)),
        t_end=20.0,
        n_save=16,
    )
    with pytest.raises(basins.BasinStoreError, match=r"points\.seed: store has 3, asked 4"):
        basins.run(spec2, good)
    with pytest.raises(basins.BasinStoreError, match="chunks of 5 flows"):
        basins.run(spec, good, chunk_flows=100)
    # A damaged chunk is found by verify and recomputed by run(verify=True).
    clean = outputs(good)
    chunk_file = good / "loss" / "c" / "1" / "0"
    chunk_file.write_bytes(b"\x00garbage" * 7)
    inf = basins.info(good, verify=True)
    assert inf.corrupted == [1]
    assert "corrupted chunks: 1" in str(inf)
    rep = basins.run(spec, good, verify=True, progress=False)
    assert rep.computed == [1]
    assert_same(clean, outputs(good), sorted(clean))
    # Missing arrays and unreadable metadata.
    (good / "zarr.json").write_text("{not json")
    with pytest.raises(basins.BasinStoreError, match="damaged"):
        basins.info(good)
    bad_input = [
        (lambda: basins.BasinSpec(problem, "grid"), TypeError, "points: expected"),
        (
            lambda: basins.BasinSpec(problem, basins.Sample(np.zeros((3, 2)))),
            ValueError,
            r"points.theta0: expected \(M, 25\)",
        ),
        (lambda: small_spec(problem, method="euler"), ValueError, "method: unknown name 'euler'"),
        (lambda: small_spec(problem, rtol=-1.0), ValueError, "rtol"),
        (lambda: small_spec(problem, n_save=3), ValueError, "n_save"),
        (lambda: basins.Slice.random(problem.model, normalization="layer"), ValueError, "normalization"),
        (
            lambda: basins.Slice.random(problem.model, a=(0, 1)),
            ValueError,
            r"a: expected \(start, stop, count\)",
        ),
        (lambda: basins.run(None, tmp_path / "nothing.zarr"), ValueError, "spec: needed"),
        (lambda: basins.run(None, good, progress="on"), TypeError, "progress: expected True, False or None"),
        (lambda: basins.run(None, good, log_every=-1.0), ValueError, "log_every: expected a positive"),
    ]
    for make, exc, msg in bad_input:
        with pytest.raises(exc, match=msg):
            make()


def test_user_directions_from_a_file(problem: sadfast.Problem, tmp_path: Path) -> None:
    """A slice through the user's own centre and directions (e.g. two coordinate axes), given to
    the command line as an .npz, is the map the Python API builds from the same arrays."""
    model = problem.model
    center = model.init(seed=7)
    d1, d2 = np.eye(model.P)[0], np.eye(model.P)[model.layers[0].bias.start]
    np.savez(tmp_path / "dirs.npz", center=center, d1=d1, d2=d2)
    p = cli(
        "basins", "run", "--store", str(tmp_path / "cli.zarr"), "--widths", "1,8,1", "--n-points", "16",
        "--points-file", str(tmp_path / "dirs.npz"), "--grid", "5x4", "--range=-1,1", "--t-end", "5",
        "--no-progress",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    sl = basins.Slice(center, d1, d2, np.linspace(-1, 1, 5), np.linspace(-1, 1, 4))
    basins.run(basins.BasinSpec(problem, sl, t_end=5.0), tmp_path / "api.zarr", progress=False)
    a, b = outputs(tmp_path / "cli.zarr"), outputs(tmp_path / "api.zarr")
    assert_same(a, b, sorted(a))
    np.testing.assert_array_equal(a["d2"], d2)
    assert basins.open(tmp_path / "cli.zarr").attrs["recipe"]["kind"] == "file"
    np.savez(tmp_path / "bad.npz", center=center)
    p = cli(
        "basins", "run", "--store", str(tmp_path / "bad.zarr"), "--points-file", str(tmp_path / "bad.npz")
    )
    assert p.returncode == 2 and "must hold arrays ['center', 'd1', 'd2']; missing ['d1', 'd2']" in p.stderr


def test_sample_from_a_zarr_array_and_normalized_settings(problem: sadfast.Problem, tmp_path: Path) -> None:
    """Initial points too large for memory can stay in a Zarr array (read chunk by chunk); the map
    is the one the same points in a NumPy array give. Settings are normalized: 20 and 20.0 are
    the same map."""
    theta0 = problem.model.init(30, seed=5)
    zarr.open_array(str(tmp_path / "th.zarr"), mode="w", shape=theta0.shape, dtype="float64")[...] = theta0
    lazy = basins.Sample(zarr.open_array(str(tmp_path / "th.zarr"), mode="r"))
    s_np = basins.BasinSpec(problem, basins.Sample(theta0), t_end=20.0)
    s_lazy = basins.BasinSpec(problem, lazy, t_end=20)
    assert s_lazy.t_end == 20.0 and isinstance(s_lazy.t_end, float)
    assert s_np.fingerprint() == s_lazy.fingerprint()
    basins.run(s_np, tmp_path / "np.zarr", chunk_flows=8, progress=False)
    basins.run(s_lazy, tmp_path / "lazy.zarr", chunk_flows=8, progress=False)
    a, b = outputs(tmp_path / "np.zarr"), outputs(tmp_path / "lazy.zarr")
    assert_same(a, b, sorted(a))
    with pytest.raises(ValueError, match="points: center, d1 and d2 must have one length"):
        basins.Slice(np.zeros(3), np.zeros(3), np.zeros(4), np.zeros(2), np.zeros(2))


def test_device_and_dtype_are_part_of_a_spec_only_when_not_default() -> None:
    model = sadfast.MLP([1, 4, 1])
    prob = model.bind(np.linspace(-1, 1, 8), np.linspace(-1, 1, 8) ** 2)
    sl = basins.Slice.random(model, seed=0, a=(-1.0, 1.0, 4))
    cpu = basins.BasinSpec(prob, sl, t_end=5.0)
    assert "device" not in cpu.settings()["solver"] and "dtype" not in cpu.settings()["solver"]
    # A GPU spec can be made (and fingerprinted) on a machine without a GPU; it is a different map.
    gpu = basins.BasinSpec(prob, sl, t_end=5.0, device="cuda", dtype="float32")
    assert gpu.settings()["solver"]["device"] == "cuda" and gpu.settings()["solver"]["dtype"] == "float32"
    assert gpu.fingerprint() != cpu.fingerprint()
    d = basins.spec_from_dict({"solver": {"device": "cuda", "t_end": 5.0}, "points": {"a": [-1, 1, 4]}})
    assert d.device == "cuda" and d.dtype == "float64"
    with pytest.raises(ValueError, match="device: unknown name 'gpu'"):
        basins.BasinSpec(prob, sl, device="gpu")
    with pytest.raises(ValueError, match="dtype: float32 maps need device='cuda'"):
        basins.BasinSpec(prob, sl, dtype="float32")
    # ROSW and auto maps on the GPU: a Lanczos rank within the GPU's (P = 13: exact by default here)
    with pytest.raises(
        ValueError, match=r"hessian_rank: ROSW maps on device='cuda' take a Lanczos rank 1\.\.12 "
    ):
        basins.BasinSpec(prob, sl, device="cuda", method="rosw")
    with pytest.raises(
        ValueError, match=r"hessian_rank: auto maps on device='auto' take a Lanczos rank 1\.\.12 "
    ):
        basins.BasinSpec(prob, sl, device="auto", method="auto")
    with pytest.raises(ValueError, match=r"rank 1\.\.12 \(P = 13\); this one resolves to 0"):
        basins.BasinSpec(prob, sl, device="auto", method="rosw", hessian_rank=13)
    methods = ("dopri5", "tsit5", "rkc", "rosw", "auto")
    rank = {"rosw": {"hessian_rank": 8}, "auto": {"hessian_rank": 8}}
    specs = [
        basins.BasinSpec(prob, sl, t_end=5.0, device="cuda", method=m, **rank.get(m, {})) for m in methods
    ]
    assert [s.settings()["solver"]["method"] for s in specs] == list(methods)
    assert len({s.fingerprint() for s in specs}) == 5
    with pytest.raises(ValueError, match="dtype: float32 maps need device='cuda'"):
        basins.BasinSpec(prob, sl, device="auto", dtype="float32")


def test_auto_device_map_uses_each_workers_gpu_or_cpu(problem: sadfast.Problem, tmp_path: Path) -> None:
    # "auto": a process with a GPU integrates its chunks there, one without on its CPU; here
    # (whichever this machine is) the values equal the map of that device, in another map identity.
    auto = small_spec(problem, device="auto")
    here = "cuda" if sadfast.cuda_available() else "cpu"
    fixed = small_spec(problem, device=here)
    assert auto.settings()["solver"]["device"] == "auto" and auto.fingerprint() != fixed.fingerprint()
    basins.run(auto, tmp_path / "auto.zarr", chunk_flows=33, progress=False)
    basins.run(fixed, tmp_path / "fixed.zarr", chunk_flows=33, progress=False)
    assert_same(outputs(tmp_path / "auto.zarr"), outputs(tmp_path / "fixed.zarr"), OUT_NAMES)


def critical_slice(n: int = 5) -> tuple[sadfast.Problem, basins.Slice]:
    """1-8-1 tanh, weight decay 0.01, on y = x^2 + x; an n x n slice (n odd) centred on a strict saddle:
    all hidden weights and biases zero is an invariant set of the flow (the output weights get no
    gradient there), which the centre's flow converges in, to a point whose Hessian has
    lambda_min = -0.75; the other flows go to a minimum."""
    model = sadfast.MLP([1, 8, 1], "tanh", weight_decay=1e-2)  # P = 25: Lanczos is exact here
    X = np.linspace(-1, 1, 16)[:, None]
    center = np.zeros(model.P)
    center[-1] = 0.3  # the output bias
    rng = np.random.default_rng(0)
    grid = np.linspace(-1, 1, n)
    return model.bind(X, X**2 + X), basins.Slice(center, *rng.standard_normal((2, model.P)), grid, grid)


def test_critical_points_of_converged_flows(tmp_path: Path) -> None:
    """critical_points=True: every converged flow's Hessian extremes and type, checked against a
    dense eigendecomposition where it stopped and an independent gradient of lambda_min; the same
    whatever the chunks; counted by info."""
    prob, sl = critical_slice()
    model = prob.model
    kw = {"t_end": 5e3, "method": "auto"}  # long enough for most flows to resolve their minimum
    spec = basins.BasinSpec(prob, sl, critical_points=True, **kw)
    plain = basins.BasinSpec(prob, sl, **kw)
    assert "critical_points" not in plain.settings()  # off: old stores keep their fingerprints
    assert spec.settings()["critical_points"] == basins.CRITICAL_REVISION == 2
    assert spec.fingerprint() != plain.fingerprint()
    basins.run(spec, tmp_path / "a.zarr", chunk_flows=10, progress=False)
    basins.run(spec, tmp_path / "b.zarr", chunk_flows=15, progress=False)
    basins.run(plain, tmp_path / "p.zarr", progress=False)
    a, b, p = outputs(tmp_path / "a.zarr"), outputs(tmp_path / "b.zarr"), outputs(tmp_path / "p.zarr")
    names = ("critical_point", "hessian_min", "hessian_max", "hessian_resolution")
    assert_same(a, b, names)  # each flow seeds its own start vector: chunking changes nothing
    assert_same(a, p, list(basins.OUTPUTS))  # the integration is the plain map's
    assert not any(n in p for n in names)
    # where the flows stopped (compute_chunk is solve_flows with the spec's settings)
    res = sadfast.solve_flows(prob, sl.thetas(slice(0, 5)), 5e3, method="auto", save_at=spec.save_times)
    conv = a["outcome"].ravel() == basins.OUTCOMES.index("converged")
    code, lo, hi, resolution = (a[n].ravel() for n in names)
    assert conv.sum() >= 20 and np.all(code[~conv] == 0)
    assert all(np.all(np.isnan(x[~conv])) for x in (lo, hi, resolution))
    eye = np.eye(model.P)

    def eigen(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        H = prob.hvp(np.repeat(theta[None], model.P, axis=0), eye)
        return np.linalg.eigh((H + H.T) / 2)

    checked = 0
    for k in np.flatnonzero(conv):
        ev, vec = eigen(res.theta[k])
        scale = np.abs(ev).max()
        assert abs(lo[k] - ev[0]) <= 1e-10 * scale and abs(hi[k] - ev[-1]) <= 1e-10 * scale
        bound = max(1e-6 * scale, resolution[k])
        want = "minimum" if ev[0] > bound else "saddle" if ev[0] < -bound else "unresolved"
        assert basins.CRITICAL_POINTS[code[k]] == want, (k, ev[0], resolution[k])
        if ev[1] - ev[0] > 1e-8 * scale:  # a simple lambda_min: its eigenvector u is determined
            # resolution = sqrt(|D^3 L[u, u, .]| |grad L|), D^3 L[u, u, .] = grad of u^T H u
            u, h = vec[:, 0], 1e-5
            d3 = (prob.hvp(res.theta[k] + h * u, u) - prob.hvp(res.theta[k] - h * u, u)) / (2 * h)
            g = np.linalg.norm(prob.grad(res.theta[k]))
            np.testing.assert_allclose(resolution[k], np.sqrt(np.linalg.norm(d3) * g), rtol=1e-5)
            checked += 1
    assert checked >= 20
    kinds = [basins.CRITICAL_POINTS[c] for c in code[conv]]
    assert set(kinds) == {"minimum", "saddle", "unresolved"}, kinds  # this slice reaches all three
    assert basins.CRITICAL_POINTS[a["critical_point"][2, 2]] == "saddle"  # the centre, on the invariant set
    assert a["hessian_min"][2, 2] < -0.7
    info = basins.info(tmp_path / "a.zarr", verify=True)
    assert info.corrupted == [] and sum(info.critical_counts.values()) == conv.sum()
    assert info.critical_counts == {k: kinds.count(k) for k in set(kinds)}
    assert "critical points of converged flows: minimum" in str(info) and "unresolved" in str(info)
    assert basins.info(tmp_path / "p.zarr").critical_counts is None
    # the picture gets a third panel, where converged flows stopped
    import matplotlib.image

    wide = matplotlib.image.imread(basins.plot(tmp_path / "a.zarr")).shape[1]
    assert wide > 1.4 * matplotlib.image.imread(basins.plot(tmp_path / "p.zarr")).shape[1]
    # resumed from the store alone: the same spec
    meta = json.loads(json.dumps(dict(zarr.open_group(str(tmp_path / "a.zarr"), mode="r").attrs)))
    again = basins._spec_from_store(str(tmp_path / "a.zarr"), meta["fingerprint"])
    assert again.critical_points and again.fingerprint() == spec.fingerprint()
    d = basins.spec_from_dict({"model": {"widths": [1, 8, 1]}, "critical_points": True})
    assert d.critical_points
    with pytest.raises(TypeError, match="critical_points: expected True or False, got str"):
        basins.spec_from_dict({"critical_points": "yes"})
    c = cli("basins", "run", "--store", str(tmp_path / "c.zarr"), "--widths", "1,4,1", "--grid", "3",
            "--t-end", "5", "--critical-points", "--no-progress")  # fmt: skip
    assert c.returncode == 0, c.stderr
    c = cli("basins", "info", str(tmp_path / "c.zarr"))
    assert c.returncode == 0 and "critical points of converged flows: " in c.stdout, c.stdout
    assert zarr.open_group(str(tmp_path / "c.zarr"), mode="r").attrs["spec"]["critical_points"] == 2


def test_a_critical_point_map_is_only_continued_by_the_same_rule(tmp_path: Path) -> None:
    """Maps of revision 1 of the critical-point rule (spec value true, no 'unresolved', no
    hessian_resolution) stay readable but are not continued with the labels of revision 2."""
    prob, sl = critical_slice()
    spec = basins.BasinSpec(prob, sl, t_end=5e3, method="auto", critical_points=True)
    path = tmp_path / "old.zarr"
    basins.run(spec, path, chunk_flows=10, progress=False)
    g = zarr.open_group(str(path), mode="r+")
    meta = json.loads(json.dumps(dict(g.attrs)))
    meta["spec"]["critical_points"] = True  # as revision 1 wrote it (and so another fingerprint)
    meta["fingerprint"] = "0" * 64
    g.attrs.update(meta)
    del g["hessian_resolution"]
    v1 = {**basins.OUTPUTS, **basins._CRITICAL_OUTPUTS_V1}  # its checksums covered these
    layout = basins.Layout.from_meta(meta)
    for c in range(2):
        rows = layout.rows(c)
        g["chunk_done"][c] = basins._checksum({n: np.asarray(g[n][rows]).ravel() for n in v1}, v1)
    g["chunk_done"][2] = 0  # a chunk left to compute
    before = outputs(path)
    info = basins.info(path, verify=True)  # readable: the outputs of its revision
    assert info.corrupted == [] and sum(info.critical_counts.values()) > 0
    assert basins.open(path)["critical_point"].shape == (5, 5)
    with pytest.raises(basins.BasinStoreError, match=r"revision 1 of the rule; .* uses revision 2"):
        basins.run(spec, path, progress=False)
    basins._spec_from_store.cache_clear()
    with pytest.raises(basins.BasinStoreError, match=r"revision 1 of the rule"):
        basins.run_chunk(path, 2)  # what a Dask worker does
    assert_same(before, outputs(path), sorted(before))  # nothing was written


def test_hessian_rank_is_part_of_rosenbrock_specs(tmp_path: Path) -> None:
    model = sadfast.MLP([1, 16, 1])  # P = 49 > 32: the default is Lanczos, at most 48 steps
    X, Y = polynomial_data("x^2", 16, 0)
    prob = model.bind(X, Y)
    sl = basins.Slice.random(model, seed=0, a=(-1.0, 1.0, 4))
    auto = basins.BasinSpec(prob, sl, t_end=5.0, method="auto")
    assert auto.hessian_rank == 48 and auto.settings()["solver"]["hessian_rank"] == 48
    exact = basins.BasinSpec(prob, sl, t_end=5.0, method="auto", hessian_rank=0)
    # exact Hessians were all a spec had before the field existed: such stores keep their fingerprint
    assert "hessian_rank" not in exact.settings()["solver"]
    assert exact.fingerprint() != auto.fingerprint()
    assert basins.BasinSpec(prob, sl, t_end=5.0, method="auto", hessian_rank=500).hessian_rank == 0  # >= P
    with pytest.raises(ValueError, match=r"hessian_rank: only methods .* method='dopri5' would ignore"):
        basins.BasinSpec(prob, sl, t_end=5.0, hessian_rank=8)  # dopri5 has none: refused, not dropped
    assert basins.BasinSpec(prob, sl, t_end=5.0).hessian_rank is None
    with pytest.raises(ValueError, match="hessian_rank: expected an integer >= 0, got -2"):
        basins.BasinSpec(prob, sl, method="rosw", hessian_rank=-2)
    # The map is computed with the spec's rank, exact (0) included: its chunks are what
    # solve_flows gives at that rank (exact: P = 49 products per refresh), not its default.
    rows = slice(0, 2)
    for rank, hvps_per_refresh in ((0, 49), (None, None)):
        spec = basins.BasinSpec(prob, sl, t_end=5.0, method="rosw", hessian_rank=rank)
        chunk = basins.compute_chunk(spec, rows)
        direct = sadfast.solve_flows(
            prob, sl.thetas(rows), 5.0, method="rosw", hessian_rank=spec.hessian_rank, save_at=spec.save_times
        )
        np.testing.assert_array_equal(chunk["n_hvp"].ravel(), direct.n_hvp)
        np.testing.assert_array_equal(chunk["loss"].ravel(), direct.loss)
        if hvps_per_refresh:
            assert np.all(direct.n_hvp % hvps_per_refresh == 0) and np.all(direct.n_hvp > 0)
    big = sadfast.MLP([4, 32, 32, 1], activation="gelu")  # P = 1249: too many for exact Hessians
    big_prob = big.bind(np.zeros((4, 4)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"exact Hessian \(0\) keeps P x P numbers .* P = 1249"):
        basins.BasinSpec(big_prob, basins.Slice.random(big, seed=0), method="auto", hessian_rank=0)
    # a store rebuilt from its metadata (what a resuming run or a worker does) has the same spec
    for spec in (auto, exact):
        path = tmp_path / f"r{spec.hessian_rank}.zarr"
        basins.run(spec, path, progress=False)
        meta = json.loads(json.dumps(dict(zarr.open_group(str(path), mode="r").attrs)))
        again = basins._spec_from_store(str(path), meta["fingerprint"])
        assert again.hessian_rank == spec.hessian_rank and again.fingerprint() == spec.fingerprint()
        ds = basins.open(path)
        assert np.all(ds["status"].values == 1)
    d = basins.spec_from_dict(
        {
            "model": {"widths": [1, 16, 1]},
            "solver": {"method": "rosw", "hessian_rank": 8},
            "points": {"a": [-1, 1, 4]},
        }
    )
    assert d.hessian_rank == 8


def test_a_store_is_only_continued_by_the_same_integrator_revision(tmp_path: Path) -> None:
    # Stores whose numbers came from an earlier revision of a method's integrator (here: auto
    # before session 6's changes, whose specs had no revision) are refused, not silently mixed.
    model = sadfast.MLP([1, 16, 1])
    X, Y = polynomial_data("x^2", 16, 0)
    prob = model.bind(X, Y)
    sl = basins.Slice.random(model, seed=0, a=(-1.0, 1.0, 4))
    auto = basins.BasinSpec(prob, sl, t_end=5.0, method="auto")
    revision = sadfast.flows.INTEGRATOR_REVISION["auto"]
    assert revision >= 2
    assert auto.settings()["solver"]["integrator_revision"] == revision
    dp = basins.BasinSpec(prob, sl, t_end=5.0)
    assert "integrator_revision" not in dp.settings()["solver"]  # unchanged numbers, old fingerprints
    path = tmp_path / "old.zarr"
    basins.run(auto, path, chunk_flows=4, progress=False)
    before = outputs(path)
    g = zarr.open_group(str(path), mode="r+")
    meta = json.loads(json.dumps(dict(g.attrs)))
    del meta["spec"]["solver"]["integrator_revision"]  # as a store of revision 1 was written
    meta["fingerprint"] = "0" * 64
    g.attrs.update(meta)
    with pytest.raises(
        basins.BasinStoreError, match=rf"revision 1 of the 'auto' integrator; .* computes revision {revision}"
    ):
        basins.run(auto, path, progress=False)
    basins._spec_from_store.cache_clear()
    with pytest.raises(basins.BasinStoreError, match=r"revision 1 of the 'auto' integrator"):
        basins.run_chunk(path, 0)  # what a Dask worker does
    assert_same(before, outputs(path), sorted(before))  # nothing was written


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rkc", "rosw", "auto"])  # rosw, auto: P = 49, rank 48
def test_gpu_basin_map_matches_the_cpu_map(tmp_path: Path, method: str) -> None:
    model = sadfast.MLP([1, 16, 1], activation="tanh")
    X = np.linspace(-1, 1, 32)
    p = model.bind(X, X**2)
    sl = basins.Slice.random(model, seed=0, a=(-1.0, 1.0, 16))
    cpu = basins.BasinSpec(p, sl, t_end=50.0, method=method)
    gpu = basins.BasinSpec(p, sl, t_end=50.0, method=method, device="cuda")
    basins.run(cpu, tmp_path / "cpu.zarr", chunk_flows=64, progress=False)
    basins.run(gpu, tmp_path / "gpu.zarr", chunk_flows=64, progress=False)
    a, b = basins.open(tmp_path / "cpu.zarr"), basins.open(tmp_path / "gpu.zarr")
    np.testing.assert_array_equal(a["outcome"].values, b["outcome"].values)
    np.testing.assert_array_equal(a["status"].values, b["status"].values)
    np.testing.assert_allclose(b["loss"].values, a["loss"].values, rtol=1e-8)


@pytest.mark.gpu
def test_gpu_critical_point_map_matches_the_cpu_map(tmp_path: Path) -> None:
    # On device="cuda" the Lanczos HVPs, the gradient and the two resolution HVPs run on the GPU
    # at the GPU flows' end points: the same labels as the CPU map (minimum, saddle, unresolved).
    # Dormand-Prince keeps the centre's flow exactly on its invariant set on both devices (a
    # W-method's stages can leave it by a rounding, and from a saddle any departure grows).
    prob, sl = critical_slice(3)  # 9 flows, the saddle at the centre
    kw = {"t_end": 5e3, "method": "dopri5", "critical_points": True}
    cpu = basins.BasinSpec(prob, sl, **kw)
    gpu = basins.BasinSpec(prob, sl, device="cuda", **kw)
    basins.run(cpu, tmp_path / "cpu.zarr", progress=False)
    basins.run(gpu, tmp_path / "gpu.zarr", progress=False)
    a, b = outputs(tmp_path / "cpu.zarr"), outputs(tmp_path / "gpu.zarr")
    np.testing.assert_array_equal(a["outcome"], b["outcome"])
    # Each map's labels follow its stored eigenvalues and resolutions.
    for m in (a, b):
        conv = m["critical_point"] > 0
        kind = critical_kind(m["hessian_min"][conv], m["hessian_max"][conv], m["hessian_resolution"][conv])
        np.testing.assert_array_equal(np.array(basins.CRITICAL_POINTS)[m["critical_point"][conv]], kind)
    # The GPU flows end where the CPU's do to the integration tolerance; the extremes agree to that
    # level, but the residual gradients (~1e-9-1e-6) and so the resolutions only to a factor of a
    # few: labels are compared where |lambda_min| is 4x beyond the resolution either way.
    scale = np.nanmax(np.abs(a["hessian_max"]))
    np.testing.assert_allclose(b["hessian_min"], a["hessian_min"], atol=1e-5 * scale)
    np.testing.assert_allclose(b["hessian_max"], a["hessian_max"], rtol=1e-5)
    conv = a["critical_point"] > 0  # resolutions: within a factor of 10 (here up to 2.8 apart)
    assert np.all(np.abs(np.log10(b["hessian_resolution"][conv] / a["hessian_resolution"][conv])) < 1)
    clear = np.abs(np.log(np.abs(a["hessian_min"]) / a["hessian_resolution"])) > np.log(4)
    assert basins.CRITICAL_POINTS[a["critical_point"][1, 1]] == "saddle" and clear[1, 1]  # the centre
    np.testing.assert_array_equal(a["critical_point"][clear], b["critical_point"][clear])
