// Device state and helpers shared by the per-flow integrators on the GPU: Dormand-Prince
// (rk45.cu), RKC (rkc.cu) and ROSW (rosw.cu), and the automatic method's switching between them.
// All lanes of a warp call the helpers; each lane handles the entries lane, lane + 32, ... of the
// (P) vectors.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "api.hpp"
#include "check.cuh"
#include "launch.cuh"
#include "sadfast/auto_switch.hpp"
#include "sadfast/flows.hpp"
#include "sadfast/step_controller.hpp"
#include "warp_mlp.cuh"

namespace sadfast::gpu {

// ---- device state --------------------------------------------------------------------------------

struct DeviceFlows::Impl {
  Buffer t, h, loss, t_prev, status, rejected, nonfinite, n_grad, n_accepted, n_rejected, n_output_evals,
      next_save, t_out, loss_out, grad_norm_out, theta_norm_out;
  Buffer y, f, y_prev, theta_out;  // (K, P) of the dtype
  // RKC (flows.hpp's FlowBatch): spectral radius estimate, its eigenvector (K, P) of the dtype,
  // Hessian-vector products, accepted steps since the estimate; method of the next / last step.
  Buffer rho, eig, n_hvp, since_rho, mode, last_mode;
  // ROSW (rosw.cu): per flow, rank vectors of P (the dtype) and rank values (float64) of its
  // Hessian approximation, how many of them it holds (int32) and its age (int64; -1: none).
  Buffer jac_v, jac_val, jac_n, jac_age;
  // The automatic method's switching state (FlowBatch's give_ups, stiff_run, switch_run).
  Buffer give_ups, stiff_run, switch_run;
  Buffer counters;                 // [next flow, running flows]
  Buffer scratch;                  // per resident warp: stages and end point; kept across slices
  Buffer workspace;                // per resident warp: WarpSmem, for networks too large for shared memory
};

namespace {

template <class T>
struct FlowsView {
  Index K;
  int P;
  double *t, *h, *loss, *t_prev;
  T *y, *f, *y_prev, *theta_out;
  std::int32_t* status;
  std::int8_t *rejected, *nonfinite;
  std::int64_t *n_grad, *n_accepted, *n_rejected, *n_output_evals, *next_save;
  double *t_out, *loss_out, *grad_norm_out, *theta_norm_out;
  double* rho;
  T* eig;
  std::int64_t *n_hvp, *since_rho;
  std::int8_t *mode, *last_mode, *give_ups;
  std::int32_t *stiff_run, *switch_run;
  std::int32_t* jac_n;   // ROSW's Ritz pairs per flow (methods rosw and auto; else null)
  std::int64_t* jac_age;
  unsigned long long* counters;
};

template <class T>
FlowsView<T> view(DeviceFlows& b) {
  DeviceFlows::Impl& m = b.impl();
  FlowsView<T> v;
  v.K = b.K();
  v.P = static_cast<int>(b.P());
  v.t = static_cast<double*>(m.t.data());
  v.h = static_cast<double*>(m.h.data());
  v.loss = static_cast<double*>(m.loss.data());
  v.t_prev = static_cast<double*>(m.t_prev.data());
  v.y = static_cast<T*>(m.y.data());
  v.f = static_cast<T*>(m.f.data());
  v.y_prev = static_cast<T*>(m.y_prev.data());
  v.theta_out = static_cast<T*>(m.theta_out.data());
  v.status = static_cast<std::int32_t*>(m.status.data());
  v.rejected = static_cast<std::int8_t*>(m.rejected.data());
  v.nonfinite = static_cast<std::int8_t*>(m.nonfinite.data());
  v.n_grad = static_cast<std::int64_t*>(m.n_grad.data());
  v.n_accepted = static_cast<std::int64_t*>(m.n_accepted.data());
  v.n_rejected = static_cast<std::int64_t*>(m.n_rejected.data());
  v.n_output_evals = static_cast<std::int64_t*>(m.n_output_evals.data());
  v.next_save = static_cast<std::int64_t*>(m.next_save.data());
  v.t_out = static_cast<double*>(m.t_out.data());
  v.loss_out = static_cast<double*>(m.loss_out.data());
  v.grad_norm_out = static_cast<double*>(m.grad_norm_out.data());
  v.theta_norm_out = static_cast<double*>(m.theta_norm_out.data());
  v.rho = static_cast<double*>(m.rho.data());
  v.eig = static_cast<T*>(m.eig.data());
  v.n_hvp = static_cast<std::int64_t*>(m.n_hvp.data());
  v.since_rho = static_cast<std::int64_t*>(m.since_rho.data());
  v.mode = static_cast<std::int8_t*>(m.mode.data());
  v.last_mode = static_cast<std::int8_t*>(m.last_mode.data());
  v.give_ups = static_cast<std::int8_t*>(m.give_ups.data());
  v.stiff_run = static_cast<std::int32_t*>(m.stiff_run.data());
  v.switch_run = static_cast<std::int32_t*>(m.switch_run.data());
  v.jac_n = static_cast<std::int32_t*>(m.jac_n.data());
  v.jac_age = static_cast<std::int64_t*>(m.jac_age.data());
  v.counters = static_cast<unsigned long long*>(m.counters.data());
  return v;
}

template <class T>
struct SavesView {
  const double* times;
  Index n;
  double *loss, *grad_norm, *theta_norm;
  T* theta;
};

template <class T>
SavesView<T> view(const DeviceSaves& s) {
  return {s.d_times, s.n, s.d_loss, s.d_grad_norm, s.d_theta_norm, static_cast<T*>(s.d_theta)};
}

struct Opts {
  double rtol, atol, t_end, max_step;
  std::int64_t max_steps;
  double loss_below, grad_norm_below, theta_norm_above;
  bool automatic;  // method "auto": each method's kernel advances the flows in its mode
};

Opts make_opts(const SolverOptions& o) {
  return {o.rtol,       o.atol,          o.t_end,           o.max_step,
          o.max_steps,  o.loss_below,    o.grad_norm_below, o.theta_norm_above,
          o.method == FlowMethod::automatic};
}

constexpr std::int32_t kRunning = static_cast<std::int32_t>(FlowStatus::running);

// begin_step's cap for the methods whose step has no stability limit.
struct NoCap {
  __device__ double operator()(double h) const { return h; }
};

// ---- device helpers (all lanes call them; each lane handles entries lane, lane + 32, ...) ----

// Evaluate at s.theta (already written by this warp): returns the loss; s.grad = grad L.
// M: the kernel instantiation's evaluation mode (lanes, tiled layers, or called; warp_mlp.cuh).
template <class T, EvalMode M = EvalMode::lanes>
__device__ double eval_at(const Arch& A, const T* X, const T* Y, const WarpSmem<T>& s) {
  __syncwarp();
  return static_cast<double>(evaluate<T, false, M>(A, X, Y, s));
}

// Record the values at a save time: theta in s.theta, gradient in s.grad.
template <class T>
__device__ void record(const SavesView<T>& sv, Index kk, Index j, int P, const WarpSmem<T>& s, double loss) {
  const double g2 = warp_sumsq(s.grad, P), y2 = warp_sumsq(s.theta, P);
  const std::size_t at = static_cast<std::size_t>(kk) * sv.n + j;
  if (lane_id() == 0) {
    sv.loss[at] = loss;
    sv.grad_norm[at] = sqrt(g2);
    sv.theta_norm[at] = sqrt(y2);
  }
  if (sv.theta != nullptr) {
    for (int i = static_cast<int>(lane_id()); i < P; i += kWarp) sv.theta[at * P + i] = s.theta[i];
  }
}

// Reported values of a flow: theta in `y` (any memory), f = -grad or grad in `f`.
template <class T>
__device__ void set_output(const FlowsView<T>& b, Index kk, double t, const T* y, const T* f, double loss) {
  const int P = b.P;
  const double g2 = warp_sumsq(f, P), y2 = warp_sumsq(y, P);
  T* out = b.theta_out + static_cast<std::size_t>(kk) * P;
  for (int i = static_cast<int>(lane_id()); i < P; i += kWarp) out[i] = y[i];
  if (lane_id() == 0) {
    b.t_out[kk] = t;
    b.loss_out[kk] = loss;
    b.grad_norm_out[kk] = sqrt(g2);
    b.theta_norm_out[kk] = sqrt(y2);
  }
}

// Cubic Hermite interpolation on [t, t + h] at x = (ts - t) / h from (y, f) and (ynew, fnew), into
// out (flows.cpp's hermite): the continuous extension of the stiff methods' steps.
template <class T>
__device__ void hermite_into(const T* y, const T* f, const T* ynew, const T* fnew, int P, double h, double x, T* out) {
  const double h00 = (1 + 2 * x) * (1 - x) * (1 - x), h10 = x * (1 - x) * (1 - x);
  const double h01 = x * x * (3 - 2 * x), h11 = x * x * (x - 1);
  const T c00 = T(h00), c10 = T(h10 * h), c01 = T(h01), c11 = T(h11 * h);
  for (int i = static_cast<int>(lane_id()); i < P; i += kWarp) {
    out[i] = c00 * y[i] + c10 * f[i] + c01 * ynew[i] + c11 * fnew[i];
  }
}

// Events at an accepted point (as check_events in flows.cpp): the new status or running.
__device__ std::int32_t event_status(const Opts& o, double loss, double gnorm, double tnorm) {
  if (loss <= o.loss_below) return static_cast<std::int32_t>(FlowStatus::loss_below);
  if (gnorm <= o.grad_norm_below) return static_cast<std::int32_t>(FlowStatus::grad_norm_below);
  if (tnorm >= o.theta_norm_above) return static_cast<std::int32_t>(FlowStatus::theta_norm_above);
  return kRunning;
}
// Save times and t_end inside an accepted step ending at (t_new, ynew, fnew = +-f, loss_new), as
// emit_outputs in flows.cpp: the values at an output time ts < t_new come from interp(ts), which
// puts theta into s.theta and +-grad L into s.grad (the sign does not enter the norms) and
// returns the loss. Returns the new status (reached_t_end or `status`).
template <class T, class Interp>
__device__ std::int32_t emit_outputs_with(const Opts& o, const SavesView<T>& sv, const FlowsView<T>& b, Index kk,
                                          double t_new, const T* ynew, const T* fnew, double loss_new,
                                          std::int64_t& next_save, std::int32_t status, const WarpSmem<T>& s,
                                          Interp&& interp) {
  const int P = b.P;
  // One output per pass, save times first and t_end last, so that interp (a network evaluation,
  // inlined) has a single call site: each inlined copy of an evaluation adds ptxas time.
  for (;;) {
    const bool save = next_save < sv.n && sv.times[next_save] <= t_new;
    if (!save && t_new < o.t_end) return status;
    const double ts = save ? sv.times[next_save] : o.t_end;
    double lo = loss_new;
    if (ts != t_new) {
      lo = interp(ts);
    } else {
      for (int i = static_cast<int>(lane_id()); i < P; i += kWarp) {
        s.theta[i] = ynew[i];
        s.grad[i] = fnew[i];
      }
      __syncwarp();
    }
    if (!save) {
      set_output(b, kk, o.t_end, s.theta, s.grad, lo);
      __syncwarp();
      return static_cast<std::int32_t>(FlowStatus::reached_t_end);
    }
    record(sv, kk, next_save, P, s, lo);
    next_save += 1;
    __syncwarp();
  }
}

// A flow's scalars, in registers (the same on all lanes) while a warp advances it.
struct FlowScalars {
  double t, h_next, loss, t_prev, rho;
  bool rejected, nonfinite;
  std::int64_t n_grad, n_acc, n_rej, n_out, next_save, n_hvp, since_rho;
  std::int32_t status;

  template <class T>
  __device__ static FlowScalars load(const FlowsView<T>& b, Index kk) {
    FlowScalars s;
    s.t = b.t[kk], s.h_next = b.h[kk], s.loss = b.loss[kk], s.t_prev = b.t_prev[kk], s.rho = b.rho[kk];
    s.rejected = b.rejected[kk] != 0, s.nonfinite = b.nonfinite[kk] != 0;
    s.n_grad = b.n_grad[kk], s.n_acc = b.n_accepted[kk], s.n_rej = b.n_rejected[kk];
    s.n_out = b.n_output_evals[kk], s.next_save = b.next_save[kk];
    s.n_hvp = b.n_hvp[kk], s.since_rho = b.since_rho[kk];
    s.status = b.status[kk];
    return s;
  }

  // A resumed flow whose last step already passed the new t_end or a new save time: the outputs
  // inside that step are still to be made, by redoing (part of) it.
  template <class T>
  __device__ bool redo_pending(const Opts& o, const SavesView<T>& sv) const {
    return t > t_prev && (t >= o.t_end || (next_save < sv.n && sv.times[next_save] <= t));
  }

  // Back to the batch (lane 0), counting the flow if it still runs; ends with __syncwarp.
  template <class T>
  __device__ void store(const FlowsView<T>& b, Index kk) const {
    if (lane_id() == 0) {
      b.t[kk] = t, b.h[kk] = h_next, b.loss[kk] = loss, b.t_prev[kk] = t_prev, b.rho[kk] = rho;
      b.rejected[kk] = rejected ? 1 : 0, b.nonfinite[kk] = nonfinite ? 1 : 0;
      b.n_grad[kk] = n_grad, b.n_accepted[kk] = n_acc, b.n_rejected[kk] = n_rej;
      b.n_output_evals[kk] = n_out, b.next_save[kk] = next_save;
      b.n_hvp[kk] = n_hvp, b.since_rho[kk] = since_rho;
      b.status[kk] = status;
      if (status == kRunning) atomicAdd(&b.counters[1], 1ull);
    }
    __syncwarp();
  }

  // The start of an attempted step (flows.cpp's step loop): false when the flow stops here, with
  // MAX_STEPS once its attempts are used up, or with STEP_UNDERFLOW (NONFINITE after a non-finite
  // rejection) when its next step, clamped to [min_step(t), max_step] unless it retries a
  // rejection and then capped by cap(h) (RKC: its stability limit), is below min_step(t). Else the
  // step as taken: t_new = t + h_abs, h = t_new - t, and h_abs = |h|.
  template <class T, class Cap>
  __device__ bool begin_step(const Opts& o, const FlowsView<T>& b, Index kk, const T* y, const T* f, Cap&& cap,
                             double& t_new, double& h, double& h_abs) {
    if (n_acc + n_rej >= o.max_steps) {
      status = static_cast<std::int32_t>(FlowStatus::max_steps);
      set_output(b, kk, t, y, f, loss);
      return false;
    }
    const double hmin = control::min_step(t);
    h_abs = h_next;
    if (!rejected) h_abs = h_abs > o.max_step ? o.max_step : (h_abs < hmin ? hmin : h_abs);
    h_abs = cap(h_abs);
    if (h_abs < hmin) {
      status = static_cast<std::int32_t>(nonfinite ? FlowStatus::nonfinite : FlowStatus::step_underflow);
      set_output(b, kk, t, y, f, loss);
      return false;
    }
    t_new = t + h_abs;
    h = t_new - t;
    h_abs = fabs(h);
    return true;
  }

  // An accepted step to (t_new, ynew, fnew) of size h_abs: y_prev = y, y = ynew, f = fnew, the
  // next step h_abs * factor, then the events at the new point (norms of fnew and ynew squared).
  template <class T>
  __device__ void accept(const Opts& o, const FlowsView<T>& b, Index kk, T* y, T* f, T* yprev, const T* ynew,
                         const T* fnew, double t_new, double loss_new, double h_abs, double factor, double fnorm2,
                         double ynorm2) {
    t_prev = t;
    for (int i = static_cast<int>(lane_id()); i < b.P; i += kWarp) {
      yprev[i] = y[i];
      y[i] = ynew[i];
      f[i] = fnew[i];
    }
    t = t_new;
    loss = loss_new;
    h_next = h_abs * factor;
    rejected = false;
    nonfinite = false;
    n_acc += 1;
    if (status == kRunning) {
      const std::int32_t ev = event_status(o, loss_new, sqrt(fnorm2), sqrt(ynorm2));
      if (ev != kRunning) {
        status = ev;
        __syncwarp();
        set_output(b, kk, t, y, f, loss);
      }
    }
  }
};

// ---- the automatic method (sadfast/auto_switch.hpp) ----------------------------------------------
// Each method's kernel advances the flows in its mode and leaves a flow when it switches; the
// host runs the three kernels in turn (flows_advance), so a switching flow goes on in the next
// one. A step's redo for a resumed flow's outputs (redo_pending) belongs to the kernel of the
// method that took the step (last_mode).

// Whether the kernel of mode `mode` takes flow kk now (always outside auto); a flow it leaves is
// counted as running (it is) and the warp moves on.
template <class T>
__device__ bool takes_flow(const Opts& o, const SavesView<T>& sv, const FlowsView<T>& b, Index kk,
                           const FlowScalars& fs, int mode) {
  if (!o.automatic) return true;
  const int m = fs.redo_pending(o, sv) ? b.last_mode[kk] : b.mode[kk];
  if (m == mode) return true;
  if (lane_id() == 0) atomicAdd(&b.counters[1], 1ull);
  __syncwarp();
  return false;
}

// A flow's switching state lives in the batch, not in registers (the stiff methods' kernels have
// none to spare): update_switching applies `rule` to it there (all lanes compute, lane 0 writes)
// and says whether the flow stays in `mode`. With `accepted`, the step just accepted was of
// `mode` (last_mode).
template <class T, class Rule>
__device__ bool update_switching(const FlowsView<T>& b, Index kk, int mode, bool accepted, Rule&& rule) {
  autoswitch::State st{b.mode[kk], b.give_ups[kk], b.stiff_run[kk], b.switch_run[kk]};
  rule(st);
  __syncwarp();
  if (lane_id() == 0) {
    b.mode[kk] = static_cast<std::int8_t>(st.mode);
    b.give_ups[kk] = static_cast<std::int8_t>(st.give_ups);
    b.stiff_run[kk] = st.stiff_run;
    b.switch_run[kk] = st.switch_run;
    if (accepted) b.last_mode[kk] = static_cast<std::int8_t>(mode);
  }
  __syncwarp();
  return st.mode == mode;
}

// ---- host: one launch of an integrator kernel over a batch ---------------------------------------

// Plans `kernel`'s launch over b's flows (named `name` in last_launch()), points ka.A at the global
// workspace when the kernel needs one, grows b's per-warp scratch to `scratch_per_warp` bytes per
// launched warp and resets the work queue; then launch(lc, scratch) launches the kernel
// (SADFAST_LAUNCH, with ka.A) and the host waits for it. Returns the number of flows still running.
template <class T, class Kernel, class Launcher>
Index run_flows(Kernel kernel, KernelArch<T>& ka, DeviceFlows& b, const char* name, std::size_t scratch_per_warp,
                Launcher&& launch) {
  DeviceFlows::Impl& m = b.impl();
  const Launch lc = plan_launch(kernel, ka, b.K(), name);
  ka.bind_workspace(lc, m.workspace);
  const std::size_t need = static_cast<std::size_t>(lc.warps()) * scratch_per_warp;
  if (m.scratch.bytes() < need) m.scratch = Buffer(need);
  m.counters.zero();
  launch(lc, m.scratch.data());
  SADFAST_CUDA_CHECK_LAUNCH();
  synchronize();
  unsigned long long counters[2] = {0, 0};
  m.counters.download(counters, sizeof counters);
  return static_cast<Index>(counters[1]);
}

}  // namespace

// RKC (rkc.cu) and ROSW (rosw.cu): advance every running flow of `b` as flows_advance does for
// "dopri5".
Index rkc_advance(const DeviceProblem& p, DeviceFlows& b, const SolverOptions& opt, const DeviceSaves& save,
                  std::int64_t max_attempts);
Index rosw_advance(const DeviceProblem& p, DeviceFlows& b, const SolverOptions& opt, const DeviceSaves& save,
                   std::int64_t max_attempts);

}  // namespace sadfast::gpu
