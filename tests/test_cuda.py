"""The CUDA backend: GPU kernels and integrator against the CPU path (the reference), cupy in
and out, and the errors a machine without a GPU gives. Tests marked ``gpu`` are skipped
automatically where no CUDA device is usable (tests/conftest.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sadfast
from reference import make_data, rel_err, saddle_on_invariant_set
from sadfast import cuda

ALL_ACTIVATIONS = sadfast.ACTIVATIONS
ALL_LOSSES = sadfast.LOSSES


def _problem(widths, activation="tanh", loss="mse", n=50, wd=0.0, seed=0):
    rng = np.random.default_rng(seed)
    model = sadfast.MLP(widths, activation=activation, loss=loss, weight_decay=wd)
    X, Y = make_data(widths, loss, n, rng)
    return model, model.bind(X, Y)


# ---- everywhere ------------------------------------------------------------------------------


def test_device_queries_are_consistent():
    n, _ = cuda.native().cuda_device_count()
    assert cuda.available() == (n > 0)
    assert (cuda.native() is not sadfast._core) == cuda.emulated()
    assert (cuda.why_unavailable() == "") == cuda.available()
    assert len(cuda.devices()) == n
    if not cuda.built():
        assert not cuda.available()


def test_bad_device_and_dtype_names():
    model, prob = _problem([1, 4, 1])
    th = model.init(2)
    with pytest.raises(ValueError, match="device: unknown device 'gpu'"):
        prob.loss(th, device="gpu")
    with pytest.raises(TypeError, match="device: expected one of"):
        prob.loss(th, device=0)
    with pytest.raises(ValueError, match="device: unknown device"):
        sadfast.MLP([1, 2, 1], device="tpu")
    with pytest.raises(ValueError, match="dtype: expected 'float64' or 'float32'"):
        cuda.dtype_code("int8")
    # float32 exists on the GPU only
    with pytest.raises(ValueError, match="dtype: float32 is available on device='cuda' only"):
        prob.loss(th, device="cpu", dtype="float32")


@pytest.mark.skipif(cuda.available(), reason="checks the behaviour without a usable GPU")
def test_without_gpu_cuda_requests_fail_clearly_and_auto_uses_cpu():
    with pytest.raises(RuntimeError, match="device='cuda': no usable CUDA device"):
        sadfast.MLP([1, 4, 1], device="cuda")
    model, prob = _problem([1, 4, 1])
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        prob.loss_and_grad(model.init(2), device="cuda")
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        sadfast.solve_flows(prob, model.init(2), 1.0, device="cuda")
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        sadfast.train(prob, model.init(2), steps=3, device="cuda")
    with pytest.raises(ValueError, match="dtype: float32 is available on device='cuda' only"):
        sadfast.train(prob, model.init(2), steps=3, dtype="float32")
    auto = sadfast.MLP([1, 4, 1], device="auto")
    assert auto.device == "cpu"
    res = sadfast.solve_flows(
        auto.bind(*make_data([1, 4, 1], "mse", 20, np.random.default_rng(1))), auto.init(2), 0.5
    )
    assert res.device == "cpu" and res.dtype == "float64"
    assert np.all(res.status == sadfast.FlowStatus.REACHED_T_END)


@pytest.mark.skipif(not cuda.emulated(), reason="checks the CPU warp emulator of the CUDA kernels")
def test_emulator_checks_itself():
    r = cuda.native().emulator_selftest()
    assert r["shuffles"] is True  # butterfly sums and broadcasts across the 32 fibers
    assert r["smem_starts_nan"] is True
    assert "reached by 16 lanes of block 0, warp 0 while 16 had left the kernel" in r["divergence_error"]
    assert r["after_error_cleared"] is True


# ---- on a GPU ------------------------------------------------------------------------------------

gpu = pytest.mark.gpu


@gpu
@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_gpu_loss_grad_hvp_match_cpu_float64(activation, loss):
    widths = [3, 7, 5, 4] if loss != "bce" else [3, 7, 5, 2]
    model, prob = _problem(widths, activation, loss, n=70, wd=0.01)  # 3 tiles, the last partial
    th = model.init(9, seed=3)
    v = np.random.default_rng(4).normal(size=th.shape)
    l_cpu, g_cpu = prob.loss_and_grad(th)
    hv_cpu = prob.hvp(th, v)
    l_gpu, g_gpu = prob.loss_and_grad(th, device="cuda")
    hv_gpu = prob.hvp(th, v, device="cuda")
    assert isinstance(l_gpu, np.ndarray) and l_gpu.shape == (9,) and g_gpu.shape == th.shape
    np.testing.assert_allclose(l_gpu, l_cpu, rtol=1e-12)
    for k in range(th.shape[0]):
        assert rel_err(g_gpu[k], g_cpu[k]) < 1e-12
        assert rel_err(hv_gpu[k], hv_cpu[k]) < 1e-12


@gpu
@pytest.mark.parametrize("activation", ["tanh", "softplus", "gelu", "swish"])
def test_gpu_float32_close_to_float64(activation):
    model, prob = _problem([2, 16, 16, 1], activation, "mse", n=100)
    th = model.init(16, seed=1)
    v = np.random.default_rng(2).normal(size=th.shape)
    l64, g64 = prob.loss_and_grad(th)
    l32, g32 = prob.loss_and_grad(th, device="cuda", dtype="float32")
    hv32 = prob.hvp(th, v, device="cuda", dtype="float32")
    assert g32.dtype == np.float32
    np.testing.assert_allclose(l32, l64, rtol=1e-5)
    for k in range(th.shape[0]):
        assert rel_err(g32[k], g64[k]) < 1e-5
        assert rel_err(hv32[k], prob.hvp(th[k], v[k])) < 1e-5


@gpu
def test_gpu_cupy_in_cupy_out_and_single_theta():
    cp = pytest.importorskip("cupy")
    model, prob = _problem([1, 16, 1], n=32)
    th = model.init(5, seed=0)
    d_th = cp.asarray(th)
    loss, grad = prob.loss_and_grad(d_th)  # a cupy theta runs on the GPU by default
    assert isinstance(loss, cp.ndarray) and isinstance(grad, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(loss), prob.loss(th), rtol=1e-12)
    hv = prob.hvp(d_th, cp.ones_like(d_th))
    assert isinstance(hv, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(hv), prob.hvp(th, np.ones_like(th)), rtol=1e-11, atol=1e-13)
    one = prob.grad(d_th[0])
    assert one.shape == (model.P,)
    l32 = prob.loss(d_th.astype(cp.float32))
    assert l32.dtype == cp.float32
    with pytest.raises(TypeError, match="cupy array is evaluated on the GPU"):
        prob.loss(d_th, device="cpu")
    with pytest.raises(ValueError, match="theta: expected finite values"):
        prob.loss(d_th * cp.nan)
    with pytest.raises(ValueError, match="theta: expected shape"):
        prob.loss(d_th[:, :3])


def test_layer_kernel_choice_is_validated_and_restored():
    before = cuda.get_layer_kernel()
    assert before in cuda.LAYER_KERNELS
    for bad in ("tile", 1, None):
        with pytest.raises(ValueError, match="kernel: expected one of"):
            cuda.set_layer_kernel(bad)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="inside"), cuda.layer_kernel("tiled"):
        if cuda.built():
            assert cuda.get_layer_kernel() == "tiled"
        raise RuntimeError("inside")
    assert cuda.get_layer_kernel() == before


# Widths for the register-tiled layers (Arch::tiled: both sides >= 16): poly4d's shape, and one
# with widths off multiples of 32 and layers of more than 32 outputs and inputs (two row blocks).
TILED_SHAPES = [([4, 32, 32, 1], "gelu", "mse"), ([3, 20, 40, 37, 5], "tanh", "cross_entropy")]


@gpu
@pytest.mark.parametrize(("widths", "activation", "loss"), TILED_SHAPES)
def test_gpu_tiled_layers_match_cpu_and_the_lanes_path(widths, activation, loss):
    model, prob = _problem(widths, activation, loss, n=70, wd=0.01)  # 3 tiles, the last partial
    th = model.init(5, seed=11)
    v = np.random.default_rng(12).normal(size=th.shape)
    l_cpu, g_cpu = prob.loss_and_grad(th)
    hv_cpu = prob.hvp(th, v)
    native = cuda.native_problem(prob)
    with cuda.layer_kernel("lanes"):
        l_lanes, g_lanes = prob.loss_and_grad(th, device="cuda")
        l32_lanes = prob.loss(th, device="cuda", dtype="float32")
        smem_lanes = native.warp_smem(0, False)
    with cuda.layer_kernel("tiled"):
        # the tiled layers' transposed weights take shared memory: the tiled path is the one run
        extra = sum(a * (b + 1) for a, b in itertools.pairwise(widths) if min(a, b) >= 16)
        assert native.warp_smem(0, False) == smem_lanes + 8 * (extra + extra % 2)
        l_t, g_t = prob.loss_and_grad(th, device="cuda")
        hv_t = prob.hvp(th, v, device="cuda")  # the HVP keeps the lanes path beside the tiles
        l32_t, g32_t = prob.loss_and_grad(th, device="cuda", dtype="float32")
    # the forward pass sums in the lanes path's order: the same losses, bit for bit
    np.testing.assert_array_equal(l_t, l_lanes)
    np.testing.assert_array_equal(l32_t, l32_lanes)
    np.testing.assert_allclose(l_t, l_cpu, rtol=1e-12)
    for k in range(th.shape[0]):
        assert rel_err(g_t[k], g_cpu[k]) < 1e-12
        assert rel_err(g_t[k], g_lanes[k]) < 1e-12
        assert rel_err(hv_t[k], hv_cpu[k]) < 1e-12
        assert rel_err(g32_t[k], g_cpu[k]) < 1e-5


@gpu
def test_gpu_tiled_layers_in_the_integrators():
    """Dormand-Prince's steps with the tiled layers (RKC keeps the lanes path under the setting):
    the CPU's statuses and states."""
    model, prob = _problem([2, 16, 16, 1], "softplus", "mse", n=40)
    th = model.init(6, seed=13)
    with cuda.layer_kernel("tiled"):
        for method, t_end in (("dopri5", 5.0), ("rkc", 50.0)):
            cpu = sadfast.solve_flows(prob, th, t_end, method=method)
            g = sadfast.solve_flows(prob, th, t_end, method=method, device="cuda")
            np.testing.assert_array_equal(g.status, cpu.status)
            assert np.all(cpu.status == sadfast.FlowStatus.REACHED_T_END)
            assert np.mean(g.n_accepted == cpu.n_accepted) >= 0.8
            for k in range(th.shape[0]):
                assert rel_err(g.theta[k], cpu.theta[k]) < 1e-9, (method, k)


# An H100 / H200 SM as the emulator models it (cuda/emulation/cuda_runtime.h): shared memory per
# SM and per block (opt-in), the runtime's reserve per block, warp and block slots.
H100_SMEM_SM, H100_SMEM_BLOCK, H100_RESERVE, H100_WARPS, H100_BLOCKS = 233472, 232448, 1024, 64, 32


def _h100_resident(smem_per_warp: int, w: int, K: int, sms: int) -> int:
    """Flows resident at once with blocks of w warps, from the SM's limits (registers aside)."""
    if w * smem_per_warp > H100_SMEM_BLOCK:
        return -1
    per_sm = min(H100_SMEM_SM // (w * smem_per_warp + H100_RESERVE), H100_WARPS // w, H100_BLOCKS)
    return min(K, w * per_sm * sms)


@gpu
def test_gpu_launch_keeps_the_most_flows_resident():
    """The block shape (cuda/launch.cuh): the one with the most flows resident at once, reported
    by sadfast.cuda.last_launch(); flows' results do not depend on it (bitwise)."""
    model, prob = _problem([4, 32, 32, 1], "gelu", "mse", n=40)
    native = cuda.native_problem(prob)
    th = model.init(64, seed=3)
    cases = [
        ("lanes", "float64", 64),
        ("tiled", "float64", 64),
        ("tiled", "float32", 64),
        ("lanes", "float64", 2),
    ]
    grads = {}
    for kernel, dtype, K in cases:
        with cuda.layer_kernel(kernel):
            grads[kernel, dtype, K] = prob.grad(th[:K], device="cuda", dtype=dtype)
            smem = native.warp_smem(cuda.DTYPES[dtype], False)
        launch = cuda.last_launch()
        assert launch["kernel"] == "loss_grad" and launch["flows"] == K
        assert launch["smem_per_warp"] == smem
        w, blocks, sms = launch["warps_per_block"], launch["blocks"], launch["multiprocessors"]
        assert 1 <= w <= 4 and 1 <= blocks <= launch["blocks_per_sm"] * sms
        assert w * blocks >= min(K, w * launch["blocks_per_sm"] * sms)  # as many warps as fit or needed
        assert w * (blocks - 1) < K  # no block without a flow
        if cuda.emulated():  # the emulator's SM limits are known: no other shape keeps more flows resident
            best = max(_h100_resident(smem, v, K, sms) for v in range(1, 5))
            assert min(K, w * blocks) == best, (kernel, dtype, K, launch)
    if cuda.emulated():
        # poly4d float32 with the tiled 32 x 32 layer takes 32,440 B per flow: 4 such warps fit in
        # an SM's 228 KB once (4 resident), 3 twice (6 resident)
        with cuda.layer_kernel("tiled"):
            prob.grad(th, device="cuda", dtype="float32")
        launch = cuda.last_launch()
        assert launch["smem_per_warp"] == 32440
        assert (launch["warps_per_block"], launch["blocks_per_sm"]) == (3, 2)
        prob.grad(th[:2], device="cuda")  # 2 flows: one block of 2 warps, none idle
        assert (cuda.last_launch()["warps_per_block"], cuda.last_launch()["blocks"]) == (2, 1)
    # each flow's gradient does not depend on the launch's shape
    np.testing.assert_array_equal(grads["lanes", "float64", 2], grads["lanes", "float64", 64][:2])
    one = prob.grad(th[5], device="cuda")
    assert cuda.last_launch()["warps_per_block"] == 1
    np.testing.assert_array_equal(one, grads["lanes", "float64", 64][5])
    sadfast.solve_flows(prob, th[:3], 1.0, device="cuda")
    assert cuda.last_launch()["kernel"] == "dopri5"


@gpu
def test_gpu_networks_too_large_for_shared_memory_run_from_global_memory():
    """A network whose per-flow workspace exceeds a block's shared memory (H100: 227 KB) keeps it
    in global memory (the kernels' Global instantiations): same values as the CPU, in every kernel."""
    model, prob = _problem([3, 128, 128, 2], "tanh", "mse", n=40, wd=0.01)  # P = 17,282
    native = cuda.native_problem(prob)
    assert native.warp_smem(0, False) > H100_SMEM_BLOCK  # float64: global
    assert (
        native.warp_smem(1, False) < H100_SMEM_BLOCK < native.warp_smem(1, True)
    )  # float32: shared / global
    th = model.init(3, seed=1)
    v = np.random.default_rng(2).normal(size=th.shape)
    l_cpu, g_cpu = prob.loss_and_grad(th)
    l_g, g_g = prob.loss_and_grad(th, device="cuda")
    assert cuda.last_launch()["global_workspace"] and cuda.last_launch()["smem_per_warp"] == native.warp_smem(
        0, False
    )
    hv_g = prob.hvp(th, v, device="cuda")
    assert cuda.last_launch()["kernel"] == "hvp" and cuda.last_launch()["global_workspace"]
    hv_cpu = prob.hvp(th, v)
    g32 = prob.grad(th, device="cuda", dtype="float32")
    assert not cuda.last_launch()["global_workspace"]
    np.testing.assert_allclose(l_g, l_cpu, rtol=1e-12)
    for k in range(th.shape[0]):
        assert rel_err(g_g[k], g_cpu[k]) < 1e-12
        assert rel_err(hv_g[k], hv_cpu[k]) < 1e-12
        assert rel_err(g32[k], g_cpu[k]) < 1e-5
    for method, t_end in (("dopri5", 0.5), ("rkc", 2.0), ("auto", 2.0)):  # auto: the last kernel is rosw's
        cpu = sadfast.solve_flows(prob, th, t_end, method=method)
        g = sadfast.solve_flows(prob, th, t_end, method=method, device="cuda")
        assert cuda.last_launch()["kernel"] == {"auto": "rosw"}.get(method, method)
        assert cuda.last_launch()["global_workspace"]
        np.testing.assert_array_equal(g.status, cpu.status)
        assert np.all(cpu.status == sadfast.FlowStatus.REACHED_T_END)
        np.testing.assert_array_equal(g.n_accepted, cpu.n_accepted)
        for k in range(th.shape[0]):
            assert rel_err(g.theta[k], cpu.theta[k]) < 1e-9, (method, k)
    args = {"method": "adam", "steps": 20, "lr": 1e-3}
    cpu_t = sadfast.train(prob, th, **args)
    g_t = sadfast.train(prob, th, device="cuda", **args)
    assert cuda.last_launch()["kernel"] == "train" and cuda.last_launch()["global_workspace"]
    for k in range(th.shape[0]):
        assert rel_err(g_t.theta[k], cpu_t.theta[k]) < 1e-10


def test_kernel_options_name_the_build_knobs():
    if not cuda.built():
        with pytest.raises(RuntimeError, match="CUDA"):
            cuda.kernel_options()
        return
    opts = cuda.kernel_options()
    assert set(opts) == {"float64", "float32"}
    for o in opts.values():
        assert set(o) == {"row_block", "act_ilp"}
        assert o["row_block"] in (4, 8)
        assert o["act_ilp"] in (0, 1, 2, 4)
        assert o["act_ilp"] <= o["row_block"]


def test_last_launch_without_cuda_says_why():
    if cuda.built():
        assert set(cuda.last_launch()) >= {"kernel", "flows", "warps_per_block", "blocks", "blocks_per_sm"}
    else:
        with pytest.raises(RuntimeError, match="CUDA"):
            cuda.last_launch()


def _solve_both(prob, th, t_end, method="dopri5", **kw):
    cpu = sadfast.solve_flows(prob, th, t_end, method=method, **kw)
    gpu_ = sadfast.solve_flows(prob, th, t_end, device="cuda", method=method, **kw)
    return cpu, gpu_


def _assert_states_and_traces_close(g, cpu) -> None:
    """A GPU solve (store="trajectory") against the CPU's: final states and every trace."""
    for k in range(cpu.theta.shape[0]):
        assert rel_err(g.theta[k], cpu.theta[k]) < 1e-9
    np.testing.assert_allclose(g.loss, cpu.loss, rtol=1e-8)
    np.testing.assert_allclose(g.trace_loss, cpu.trace_loss, rtol=1e-8)
    np.testing.assert_allclose(g.trace_theta_norm, cpu.trace_theta_norm, rtol=1e-9)
    assert g.trace_theta is not None and cpu.trace_theta is not None
    np.testing.assert_allclose(g.trace_theta, cpu.trace_theta, rtol=1e-8, atol=1e-10)


@gpu
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_gpu_flows_match_cpu(method):
    """Dormand-Prince and Tsitouras 5(4) (rk45.cu: one kernel, the table its argument) against
    flows.cpp's stepper with the same table: steps, states, every trace."""
    model, prob = _problem([1, 16, 1], "tanh", "mse", n=32)
    th = model.init(64, seed=5)
    save = np.geomspace(1e-2, 20.0, 7)
    cpu, g = _solve_both(prob, th, 20.0, method=method, save_at=save, store="trajectory")
    assert g.device == "cuda" and g.dtype == "float64" and g.settings.method == method
    assert cuda.last_launch()["kernel"] == method
    np.testing.assert_array_equal(g.status, cpu.status)
    same_steps = np.mean((g.n_accepted == cpu.n_accepted) & (g.n_rejected == cpu.n_rejected))
    assert same_steps >= 0.9, same_steps
    _assert_states_and_traces_close(g, cpu)
    np.testing.assert_array_equal(
        g.n_grad_evals - cpu.n_grad_evals, 6 * (g.n_accepted + g.n_rejected - cpu.n_accepted - cpu.n_rejected)
    )


@gpu
def test_gpu_flows_events_failures_and_isolation():
    model, prob = _problem([2, 8, 1], "softplus", "mse", n=40)
    th = model.init(32, seed=2)
    th[3] *= 1e200  # its loss overflows: a failure (NONFINITE) of its own
    kw = {"loss_below": 0.05, "theta_norm_above": 50.0, "max_steps": 400}
    cpu, g = _solve_both(prob, th, 50.0, **kw)
    np.testing.assert_array_equal(g.status, cpu.status)
    assert g.status[3] < 0
    assert len(set(g.status.tolist())) >= 2
    # The other flows do not depend on flow 3 or on the batch: bitwise on the GPU.
    alone = sadfast.solve_flows(prob, np.delete(th, 3, axis=0)[::-1].copy(), 50.0, device="cuda", **kw)
    rest = np.delete(np.arange(32), 3)[::-1]
    np.testing.assert_array_equal(alone.theta, g.theta[rest])
    np.testing.assert_array_equal(alone.n_accepted, g.n_accepted[rest])
    np.testing.assert_array_equal(alone.t, g.t[rest])


@gpu
def test_gpu_resume_is_bitwise_and_interrupt_safe():
    model, prob = _problem([1, 16, 1], "tanh", "mse", n=32)
    th = model.init(16, seed=9)
    save = np.array([1.0, 5.0, 30.0])
    whole = sadfast.solve_flows(prob, th, 30.0, save_at=save, device="cuda")
    part = sadfast.solve_flows(prob, th, 5.0, save_at=save[:2], device="cuda")
    rest = sadfast.resume(part, 30.0, save_at=save)
    assert rest.device == "cuda"
    np.testing.assert_array_equal(rest.theta, whole.theta)
    np.testing.assert_array_equal(rest.trace_loss, whole.trace_loss)
    np.testing.assert_array_equal(rest.n_accepted, whole.n_accepted)


@gpu
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rkc", "rosw", "auto"])
def test_gpu_resume_inside_the_last_step_redoes_it(method):
    """A resume whose new t_end and save time lie inside the step that crossed the old t_end
    redoes that step from y_prev to interpolate in it (rk45.cu, rkc.cu, rosw.cu): as one solve,
    bitwise."""
    model, prob = _problem([1, 16, 1], "tanh", "mse", n=32)
    th = model.init(8, seed=4)
    a = sadfast.solve_flows(prob, th, 10.0, save_at=[2.0], device="cuda", method=method)
    t_step = a._batch.array("t")  # where each flow's last step ended, past t_end
    assert np.all(t_step > 10.0)
    t2 = 10.0 + 0.5 * (t_step.min() - 10.0)
    save = [2.0, 10.0 + 0.25 * (t_step.min() - 10.0)]
    before = a.n_output_evals.copy()
    b = sadfast.resume(a, t2, save_at=save)
    assert np.all(b.n_output_evals > before)  # the redone steps' evaluations
    ref = sadfast.solve_flows(prob, th, t2, save_at=save, device="cuda", method=method)
    for name in ("theta", "t", "loss", "trace_loss", "trace_theta_norm", "n_grad_evals", "n_accepted"):
        np.testing.assert_array_equal(getattr(b, name), getattr(ref, name), err_msg=name)


@gpu
def test_gpu_auto_resume_redoes_a_step_of_the_mode_it_left():
    """auto: flows whose last step was RKC and which then switched to ROSW, resumed with a save
    time inside that step and a later t_end: RKC's kernel redoes the step for the save, and the
    flow goes on in ROSW, as in one solve (bitwise) and on the CPU (same steps)."""
    model, prob = _problem([1, 16, 1], "tanh", "mse", n=32)
    th = model.init(8, seed=4)
    kw = {"method": "auto", "hessian_rank": 16}
    a = sadfast.solve_flows(prob, th, 15.5, device="cuda", **kw)
    left = a._batch.array("mode") != a._batch.array("last_mode")
    assert np.any(left)  # (flows 2 and 3 here)
    save = [15.5 + 0.5 * (a._batch.array("t").min() - 15.5)]
    b = sadfast.resume(a, 40.0, save_at=save)
    once = sadfast.solve_flows(prob, th, 40.0, save_at=save, device="cuda", **kw)
    for name in ("theta", "trace_loss", "n_accepted", "n_hvp", "n_grad_evals"):
        np.testing.assert_array_equal(getattr(b, name), getattr(once, name), err_msg=name)
    cpu = sadfast.solve_flows(prob, th, 40.0, save_at=save, **kw)
    np.testing.assert_array_equal(b.n_accepted, cpu.n_accepted)


@gpu
@pytest.mark.parametrize(
    ("method", "t_end"), [("dopri5", 10.0), ("tsit5", 10.0), ("rkc", 200.0), ("rosw", 200.0), ("auto", 200.0)]
)
def test_gpu_float32_flows_follow_float64(method, t_end):
    """float32 on the GPU follows the CPU's float64 with the same method (RKC and ROSW: into the
    stiff range, where stage counts and W come from float32 Hessian-vector products)."""
    model, prob = _problem([1, 16, 1], "tanh", "mse", n=32)
    th = model.init(32, seed=1)
    kw = {"rtol": 1e-5, "atol": 1e-7, "method": method}
    if method in ("rosw", "auto"):
        kw["hessian_rank"] = 8
    f64 = sadfast.solve_flows(prob, th, t_end, **kw)
    f32 = sadfast.solve_flows(prob, th, t_end, device="cuda", dtype="float32", **kw)
    assert f32.dtype == "float32"
    np.testing.assert_array_equal(f32.status, f64.status)
    np.testing.assert_allclose(f32.loss, f64.loss, rtol=1e-3)


@gpu
def test_gpu_cupy_theta0():
    cp = pytest.importorskip("cupy")
    model, prob = _problem([1, 16, 1], n=32)
    th = model.init(8, seed=0)
    a = sadfast.solve_flows(prob, cp.asarray(th), 3.0)
    b = sadfast.solve_flows(prob, th, 3.0, device="cuda")
    np.testing.assert_array_equal(a.theta, b.theta)


@gpu
def test_gpu_lanczos_ranks_and_moves_between_devices():
    model, prob = _problem([1, 16, 1], n=32)  # P = 49
    th = model.init(8, seed=0)
    # ROSW and auto on the GPU: Lanczos ranks 1..min(P - 1, 64) only, the exact Hessian is the CPU's
    for method in ("rosw", "auto"):
        for rank in (0, 49, 100):
            with pytest.raises(
                ValueError,
                match=rf"hessian_rank: method='{method}' on device='cuda' takes a Lanczos rank 1\.\.48",
            ):
                sadfast.solve_flows(prob, th, 3.0, device="cuda", method=method, hessian_rank=rank)
    big, big_prob = _problem([1, 64, 1], n=32)  # P = 193: at most 64 there
    with pytest.raises(ValueError, match=r"rank 1\.\.64 \(P = 193\), got 65"):
        sadfast.solve_flows(big_prob, big.init(2, seed=0), 3.0, device="cuda", method="rosw", hessian_rank=65)
    # a CPU solve on exact Hessians does not continue on the GPU
    for method in ("rosw", "auto"):
        exact = sadfast.solve_flows(prob, th, 1.0, method=method, hessian_rank=0)
        with pytest.raises(
            ValueError, match=rf"hessian_rank: method='{method}' on device='cuda' .*got 0 \(the exact"
        ):
            sadfast.resume(exact, 2.0, device="cuda")
        assert np.all(exact.status == sadfast.FlowStatus.REACHED_T_END)  # untouched by the refusal
    # tsit5, Lanczos ROSW and auto solves move between the devices: resumed on the GPU as one
    # solve, to rounding (the CPU's Ritz pairs, switching state and RKC estimates carried over);
    # auto to t = 30 has switched to the stiff methods on the CPU first
    for method, kw, t1, t2 in (
        ("tsit5", {}, 1.0, 3.0),
        ("rosw", {"hessian_rank": 12}, 1.0, 3.0),
        ("auto", {"hessian_rank": 12}, 30.0, 300.0),
    ):
        part = sadfast.solve_flows(prob, th, t1, method=method, **kw)
        rest = sadfast.resume(part, t2, device="cuda")
        whole = sadfast.solve_flows(prob, th, t2, method=method, **kw)
        assert rest.device == "cuda"
        np.testing.assert_allclose(rest.theta, whole.theta, rtol=1e-9)
        np.testing.assert_array_equal(rest.n_accepted, whole.n_accepted)
        np.testing.assert_array_equal(rest.n_hvp, whole.n_hvp)
    assert np.any(part._batch.array("mode") != 0)  # auto's flows were stiff when they moved


def _stiff_solves_match_cpu(method: str, **kw):
    """16 tanh 1-16-1 flows to t = 1000 (stiff from t ~ 10) with `method` on the GPU and the CPU:
    the same statuses, for >= 90% of the flows the same steps, Hessian-vector products and
    evaluations (`same`, returned), states and traces to rounding."""
    model, prob = _problem([1, 16, 1], "tanh", "mse", n=32)
    th = model.init(16, seed=7)
    save = np.geomspace(0.05, 1000.0, 9)
    kw = {"method": method, "save_at": save, "store": "trajectory", **kw}
    cpu = sadfast.solve_flows(prob, th, 1000.0, **kw)
    g = sadfast.solve_flows(prob, th, 1000.0, device="cuda", **kw)
    assert cuda.last_launch()["kernel"] == ("rosw" if method == "auto" else method)  # auto: the last of three
    assert (g.device, g.dtype, g.settings.method) == ("cuda", "float64", method)
    assert np.all(cpu.status == sadfast.FlowStatus.REACHED_T_END)
    np.testing.assert_array_equal(g.status, cpu.status)
    same = (g.n_accepted == cpu.n_accepted) & (g.n_rejected == cpu.n_rejected) & (g.n_hvp == cpu.n_hvp)
    assert np.mean(same) >= 0.9, np.mean(same)
    np.testing.assert_array_equal(g.n_grad_evals[same], cpu.n_grad_evals[same])
    np.testing.assert_array_equal(g.n_output_evals[same], cpu.n_output_evals[same])
    _assert_states_and_traces_close(g, cpu)
    # stiff steps, far longer than Dormand-Prince's stability edge allows
    dp = sadfast.solve_flows(prob, th[:4], 1000.0, method="dopri5")
    assert np.median(g.n_grad_evals + 2 * g.n_hvp) < 0.3 * np.median(dp.n_grad_evals)
    return model, prob, th, save, cpu, g, same


@gpu
def test_gpu_rosw_flows_match_cpu():
    """ROSW on the GPU (cuda/rosw.cu: Lanczos, the tridiagonal eigensolver, the W-method's stages)
    against flows.cpp's with the same rank: steps, Hessian-vector products, Ritz values, states and
    traces, with save times interpolated (Hermite) and sub-stepped (h lambda_max > 100)."""
    model, _, _, save, cpu, g, same = _stiff_solves_match_cpu("rosw", hessian_rank=10)
    assert g.settings.hessian_rank == 10
    # some outputs were ROSW sub-steps (4 gradients), not Hermite points (1 per save time or t_end)
    assert np.max(cpu.n_output_evals) > save.size + 1
    # the last refresh's Ritz pairs (values ascending): as many, with the same values to rounding
    gi, gp = g._batch.jac_export()
    ci, cp_ = cpu._batch.jac_export()
    np.testing.assert_array_equal(gi >= 0, ci >= 0)
    assert gp.shape == cp_.shape
    P = model.P
    for k in np.flatnonzero(same):
        m = gp.shape[1] // (P + 1)
        np.testing.assert_allclose(gp[gi[k], m * P :], cp_[ci[k], m * P :], rtol=1e-8, atol=1e-10)


@gpu
def test_gpu_rkc_flows_match_cpu():
    """RKC on the GPU (cuda/rkc.cu) against flows.cpp's: steps, spectral-radius estimates, states
    and traces, with save times interpolated (Hermite) and sub-stepped (h rho > 100)."""
    _, _, _, _, cpu, g, _ = _stiff_solves_match_cpu("rkc")
    # power-iteration estimates, warm started from the last one over the whole flow: the rounding
    # of two summation orders accumulates in the eigenvector (measured: up to 4e-8)
    np.testing.assert_allclose(g._batch.array("rho"), cpu._batch.array("rho"), rtol=1e-6)


@gpu
def test_gpu_auto_flows_match_cpu():
    """auto on the GPU (the kernels of rk45.cu, rkc.cu and rosw.cu in turn, each on the flows in
    its mode, with sadfast/auto_switch.hpp's rules) against flows.cpp's auto at the same rank:
    every flow goes Dormand-Prince -> RKC -> ROSW with the same steps, Hessian-vector products
    and switching state; states and traces to rounding."""
    _, prob, th, _, cpu, g, same = _stiff_solves_match_cpu("auto", hessian_rank=10)
    assert g.settings.hessian_rank == 10
    for field in ("mode", "last_mode", "give_ups", "stiff_run", "switch_run"):
        np.testing.assert_array_equal(
            g._batch.array(field)[same], cpu._batch.array(field)[same], err_msg=field
        )
    assert np.all(cpu._batch.array("last_mode") == 2)  # every flow reached ROSW ...
    assert np.all(cpu.n_hvp > 0)
    # ... through RKC: without it (ROSW from the start) the same flows take other steps
    rosw = sadfast.solve_flows(prob, th, 1000.0, device="cuda", method="rosw", hessian_rank=10)
    assert np.any(rosw.n_accepted != g.n_accepted)
    # shallow ReLU flows: the stiff methods given up after their rejections piled up, and taken
    # up again; kinks make steps depend on rounding, so only most flows keep the CPU's steps
    relu = sadfast.MLP([1, 16, 1], activation="relu")
    X = np.random.default_rng(0).uniform(-1, 1, (32, 1))
    relu_prob = relu.bind(X, X**2)
    th_r = 3 * relu.init(8, seed=3)
    kw_r = {"method": "auto", "hessian_rank": 16}
    cpu_r = sadfast.solve_flows(relu_prob, th_r, 300.0, **kw_r)
    g_r = sadfast.solve_flows(relu_prob, th_r, 300.0, device="cuda", **kw_r)
    np.testing.assert_array_equal(g_r.status, cpu_r.status)
    assert g_r._batch.array("give_ups").sum() > 0 and cpu_r._batch.array("give_ups").sum() > 0
    same_r = (g_r.n_accepted == cpu_r.n_accepted) & (g_r.n_hvp == cpu_r.n_hvp)
    assert np.mean(same_r) >= 0.5, np.mean(same_r)
    for k in np.flatnonzero(same_r):
        assert rel_err(g_r.theta[k], cpu_r.theta[k]) < 1e-8


@gpu
@pytest.mark.parametrize("method", ["rkc", "rosw", "auto"])
def test_gpu_stiff_resume_events_and_isolation(method):
    model, prob = _problem([2, 8, 1], "softplus", "mse", n=40)
    th = model.init(12, seed=2)
    th[3] *= 1e200  # its loss overflows: NONFINITE, alone
    save = np.array([1.0, 20.0, 150.0])
    kw = {"method": method, "theta_norm_above": 8.0}
    if method != "rkc":
        kw["hessian_rank"] = 8
    whole = sadfast.solve_flows(prob, th, 150.0, save_at=save, device="cuda", **kw)
    cpu = sadfast.solve_flows(prob, th, 150.0, save_at=save, **kw)
    np.testing.assert_array_equal(whole.status, cpu.status)
    assert whole.status[3] == sadfast.FlowStatus.NONFINITE
    assert len(set(whole.status.tolist())) >= 2
    ok = whole.status != sadfast.FlowStatus.NONFINITE
    np.testing.assert_allclose(whole.loss[ok], cpu.loss[ok], rtol=1e-8)
    # resumed on the GPU: bitwise as at once; resumed on the CPU: the CPU's numbers
    part = sadfast.solve_flows(prob, th, 20.0, save_at=save[:2], device="cuda", **kw)
    rest = sadfast.resume(part, 150.0, save_at=save)
    np.testing.assert_array_equal(rest.theta, whole.theta)
    np.testing.assert_array_equal(rest.trace_loss, whole.trace_loss)
    np.testing.assert_array_equal(rest.n_hvp, whole.n_hvp)
    on_cpu = sadfast.resume(part, 150.0, save_at=save, device="cpu")
    assert on_cpu.device == "cpu"
    np.testing.assert_array_equal(on_cpu.status, cpu.status)
    np.testing.assert_allclose(on_cpu.loss[ok], cpu.loss[ok], rtol=1e-8)
    # the other flows do not depend on flow 3 or on the batch: bitwise on the GPU
    rest_idx = np.delete(np.arange(12), 3)[::-1]
    alone = sadfast.solve_flows(prob, th[rest_idx].copy(), 150.0, save_at=save, device="cuda", **kw)
    np.testing.assert_array_equal(alone.theta, whole.theta[rest_idx])
    np.testing.assert_array_equal(alone.n_accepted, whole.n_accepted[rest_idx])
    f32 = sadfast.solve_flows(
        prob, th[rest_idx].copy(), 150.0, device="cuda", dtype="float32", rtol=1e-5, atol=1e-7, **kw
    )
    ref = sadfast.solve_flows(prob, th[rest_idx].copy(), 150.0, rtol=1e-5, atol=1e-7, **kw)
    np.testing.assert_array_equal(f32.status, ref.status)
    np.testing.assert_allclose(f32.loss, ref.loss, rtol=1e-3)


@gpu
@pytest.mark.parametrize(
    ("method", "kw"),
    [("gd", {}), ("momentum", {"momentum": 0.8}), ("adam", {"lr": 5e-3}), ("adam", {"weight_decay": 0.1})],
)
def test_gpu_train_matches_cpu(method, kw):
    model, prob = _problem([2, 8, 8, 1], "softplus", "mse", n=40)
    th = model.init(24, seed=3)
    args = {"method": method, "steps": 300, "record_every": 7, **kw}
    cpu = sadfast.train(prob, th, **args)
    g = sadfast.train(prob, th, device="cuda", **args)
    assert g.device == "cuda" and g.dtype == "float64" and cpu.device == "cpu"
    np.testing.assert_array_equal(g.status, cpu.status)
    np.testing.assert_array_equal(g.steps, cpu.steps)
    for k in range(th.shape[0]):  # the GPU sums in another order: rounding, compounded over 300 steps
        assert rel_err(g.theta[k], cpu.theta[k]) < 1e-10
    np.testing.assert_allclose(g.trace_loss, cpu.trace_loss, rtol=1e-9)
    np.testing.assert_allclose(g.trace_theta_norm, cpu.trace_theta_norm, rtol=1e-10)
    f32 = sadfast.train(prob, th, device="cuda", dtype="float32", **args)
    assert f32.dtype == "float32"
    np.testing.assert_allclose(f32.loss, cpu.loss, rtol=1e-3)


@gpu
def test_gpu_train_events_failures_and_isolation():
    model, prob = _problem([2, 8, 1], "tanh", "mse", n=40)
    th = model.init(16, seed=4)
    th[5] *= 1e200  # overflows: NONFINITE, alone
    free = sadfast.train(prob, th, method="adam", lr=0.05, steps=600)
    ok = np.isfinite(free.loss)
    # event levels that some runs reach and others do not (measured: 6 reach the loss, 3 the norm)
    kw = {
        "method": "adam",
        "lr": 0.05,
        "steps": 600,
        "loss_below": float(np.quantile(free.loss[ok], 0.4)),
        "theta_norm_above": float(np.quantile(free.theta_norm[ok], 0.7)),
    }
    cpu = sadfast.train(prob, th, **kw)
    assert len(set(cpu.status.tolist())) >= 3
    g = sadfast.train(prob, th, device="cuda", **kw)
    np.testing.assert_array_equal(g.status, cpu.status)
    assert g.status[5] == sadfast.FlowStatus.NONFINITE
    np.testing.assert_array_equal(g.steps, cpu.steps)
    rest = np.delete(np.arange(16), 5)[::-1]
    alone = sadfast.train(prob, th[rest].copy(), device="cuda", **kw)
    np.testing.assert_array_equal(alone.theta, g.theta[rest])  # bitwise: no dependence on the batch


@gpu
@pytest.mark.skipif(cuda.emulated(), reason="a test of GPU memory: 10^6 flows take hours on the CPU emulator")
def test_gpu_million_flows_fit():
    model, prob = _problem([1, 16, 1], "tanh", "mse", n=32)
    th = model.init(1_000_000, seed=0)
    res = sadfast.solve_flows(prob, th, 0.5, device="cuda")
    assert np.all(res.status == sadfast.FlowStatus.REACHED_T_END)
    ref = sadfast.solve_flows(prob, th[::100_000], 0.5, method="dopri5")
    for i, k in enumerate(range(0, 1_000_000, 100_000)):
        assert rel_err(res.theta[k], ref.theta[i]) < 1e-9


@gpu
def test_gpu_out_of_memory_is_a_memory_error_and_the_device_stays_usable(monkeypatch):
    """A failed device allocation is a MemoryError saying what was asked for and what is free,
    and leaves no error behind: a failed cudaMalloc also sets CUDA's last error, which the next
    launch's check would otherwise report as that launch's failure."""
    model, prob = _problem([1, 16, 1], "tanh", "mse", n=32)
    th = model.init(64, seed=3)
    before = sadfast.solve_flows(prob, th, 2.0, device="cuda")
    with pytest.raises(MemoryError, match=r"GPU out of memory: 1024\.00 PiB asked for"):
        cuda.native().CudaBuffer(2**60)
    if cuda.emulated():  # the emulator's device memory, lowered: the flows' state no longer fits
        monkeypatch.setenv("SADFAST_EMU_DEVICE_MEMORY", str(64 * 1024))
        with pytest.raises(MemoryError, match=r"asked for, .* free of 64\.00 KiB"):
            sadfast.solve_flows(prob, th, 2.0, device="cuda")
        with pytest.raises(MemoryError, match="fewer flows at once"):
            prob.loss_and_grad(model.init(4096, seed=0), device="cuda")
        # the state fits, ROSW's Hessian approximations (32 x 50 numbers per flow) do not
        monkeypatch.setenv("SADFAST_EMU_DEVICE_MEMORY", str(512 * 1024))
        sadfast.solve_flows(prob, th, 0.5, device="cuda", method="rkc")
        with pytest.raises(MemoryError, match=r"hessian_rank x \(P \+ 1\) = 32 x 50 numbers per flow"):
            sadfast.solve_flows(prob, th, 0.5, device="cuda", method="rosw")
        monkeypatch.delenv("SADFAST_EMU_DEVICE_MEMORY")
    after = sadfast.solve_flows(prob, th, 2.0, device="cuda")
    np.testing.assert_array_equal(after.theta, before.theta)
    np.testing.assert_array_equal(after.n_accepted, before.n_accepted)


def _close_quantiles(a: dict, b: dict, rtol: float) -> None:
    assert a.keys() == b.keys()
    for q, v in b.items():
        assert abs(a[q] - v) <= rtol * abs(v), (q, a[q], v)


@gpu
def test_gpu_experiments_match_the_cpu(tmp_path):
    """The experiments' GPU path (`sadfast demo --device cuda`): Dormand-Prince flows and GD/Adam
    on the device give the CPU's outcomes, and the demo writes its whole report from there."""
    import dataclasses
    import json

    from sadfast import experiments as ex

    # tanh and softplus (diverging flows), weight decay (converged: Hessians at the endpoints)
    for e in ex.DEMO_FLOWS[:3]:
        cpu = ex.run_flow_experiment(dataclasses.replace(e, method="dopri5"), 8, 50.0, 0)
        g = ex.run_flow_experiment(e, 8, 50.0, 0, device="cuda")
        assert (g["method"], g["device"]) == ("dopri5", "cuda")
        assert g["status"] == cpu["status"]
        assert g["outcomes"] == cpu["outcomes"]
        assert g["hessian_at_converged_endpoints"].get("types") == cpu["hessian_at_converged_endpoints"].get(
            "types"
        )
        _close_quantiles(g["final_loss"], cpu["final_loss"], 1e-8)
        _close_quantiles(g["final_theta_norm"], cpu["final_theta_norm"], 1e-9)
        np.testing.assert_allclose(g["_traces"]["loss"], cpu["_traces"]["loss"], rtol=1e-7)
    opt_cpu = ex.run_optimizer_comparison(8, 300, 0)
    opt_gpu = ex.run_optimizer_comparison(8, 300, 0, device="cuda")
    for m in ("gd", "adam"):
        assert opt_gpu["runs"][m]["status"] == opt_cpu["runs"][m]["status"]
        _close_quantiles(opt_gpu["runs"][m]["final_loss"], opt_cpu["runs"][m]["final_loss"], 1e-10)
    summary = ex.demo(tmp_path, flows=8, t_end=50.0, steps=300, device="cuda")
    assert summary["parameters"]["device"] == "cuda"
    assert [r["device"] for r in summary["flow_experiments"]] == ["cuda"] * len(ex.DEMO_FLOWS)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    for name in ["report.md", "timing.json", *summary["figures"].values()]:
        assert (tmp_path / name).stat().st_size > 0


@gpu
def test_gpu_experiments_with_another_gpu_method(tmp_path):
    """`--gpu-method rkc` (long horizons): the smooth networks' flows are RKC on the GPU, with the
    outcomes of the CPU's RKC; ReLU keeps Dormand-Prince; the summary says which ran."""
    import dataclasses
    import json

    from sadfast import experiments as ex

    tanh, relu = ex.DEMO_FLOWS[0], ex.DEMO_FLOWS[3]
    cpu = ex.run_flow_experiment(dataclasses.replace(tanh, method="rkc"), 8, 50.0, 0)
    g = ex.run_flow_experiment(tanh, 8, 50.0, 0, device="cuda", gpu_method="rkc")
    assert (g["method"], g["device"]) == ("rkc", "cuda")
    assert g["status"] == cpu["status"] and g["outcomes"] == cpu["outcomes"]
    np.testing.assert_allclose(g["_traces"]["loss"], cpu["_traces"]["loss"], rtol=1e-7)
    assert ex.run_flow_experiment(relu, 4, 1.0, 0, device="cuda", gpu_method="rkc")["method"] == "dopri5"
    # the CPU's own method, auto, on the GPU (there at rank min(P - 1, 32), here min(P - 1, 256))
    cpu_auto = ex.run_flow_experiment(tanh, 8, 50.0, 0)
    g_auto = ex.run_flow_experiment(tanh, 8, 50.0, 0, device="cuda", gpu_method="auto")
    assert (g_auto["method"], cpu_auto["method"]) == ("auto", "auto")
    assert g_auto["status"] == cpu_auto["status"] and g_auto["outcomes"] == cpu_auto["outcomes"]
    np.testing.assert_allclose(g_auto["_traces"]["loss"], cpu_auto["_traces"]["loss"], rtol=1e-7)
    s = ex.run_suite(
        "sad", tmp_path, flows=4, t_end=5.0, steps=0, only="1d_tanh", device="cuda", gpu_method="tsit5"
    )
    assert s["parameters"]["gpu_method"] == "tsit5"
    assert {r["method"] for r in s["experiments"]} == {"tsit5"}
    assert json.loads((tmp_path / "summary.json").read_text())["parameters"]["gpu_method"] == "tsit5"


@pytest.mark.gpu
def test_gpu_hessian_extremes_match_cpu(monkeypatch):
    from sadfast.analysis import hessian_extremes

    model, prob = _problem([2, 5, 1], activation="softplus", n=40)
    theta = model.init(5, seed=1)
    cpu = hessian_extremes(prob, theta, iterations=model.P)
    native, calls = cuda.native(), []
    gpu_hvp = native.cuda_hvp
    monkeypatch.setattr(native, "cuda_hvp", lambda *a: calls.append(a[4]) or gpu_hvp(*a))
    gpu = hessian_extremes(prob, theta, iterations=model.P, device="cuda", max_memory=1)
    assert calls and set(calls) == {1}  # the HVPs ran on the GPU, one flow per chunk
    scale = np.maximum(np.abs(cpu.lambda_min), np.abs(cpu.lambda_max))
    assert np.all(np.abs(gpu.lambda_min - cpu.lambda_min) <= 1e-9 * scale)
    assert np.all(np.abs(gpu.lambda_max - cpu.lambda_max) <= 1e-9 * scale)
    assert list(gpu.kind) == list(cpu.kind)
    np.testing.assert_allclose(
        gpu.grad_norm, cpu.grad_norm, rtol=1e-12
    )  # the resolution's inputs, on the GPU
    np.testing.assert_allclose(gpu.lambda_min_slope, cpu.lambda_min_slope, rtol=1e-8)


@gpu
@pytest.mark.parametrize("method", ["rosw", "auto"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gpu_stiff_methods_keep_flows_on_invariant_sets(method, dtype):
    # As on the CPU (test_stiff): the GPU's Lanczos starts from f(y), so a flow in an invariant
    # set of the gradient field stays exactly in it, here at a saddle, in float32 too.
    prob, theta0 = saddle_on_invariant_set()
    r = sadfast.solve_flows(prob, theta0, 5e3, method=method, hessian_rank=8, device="cuda", dtype=dtype)
    assert np.all(r.status == sadfast.FlowStatus.REACHED_T_END) and r.n_hvp[0] > 0
    theta = np.asarray(r.theta)
    np.testing.assert_array_equal(theta[0, :-1], 0.0)
    assert float(r.loss[0]) == pytest.approx(0.491317, rel=1e-6)
