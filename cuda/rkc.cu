// Per-flow adaptive RKC (Runge-Kutta-Chebyshev) integration on the GPU: the "rkc" method of
// src/flows.cpp (rkc_step, spectral_radius, stiff_outputs and its step loop), which is this
// code's reference line by line, with the scalar recurrences of sadfast/rkc.hpp shared.
//
// RKC is explicit and stabilized: its stage count grows like sqrt(h rho) with the spectral
// radius rho of the Hessian, so on long horizons, where Dormand-Prince's steps stay at its
// stability edge, it takes steps set by accuracy (8-69x fewer gradients than Dormand-Prince on
// poly1d/poly2d at t = 1e3-1e4 on the CPU, benchmarks/results/long_horizons.txt). It needs no
// linear algebra beyond vector updates and a power iteration on Hessian-vector products, and only
// 7 (P) vectors per flow whatever its stage count, so it maps onto the GPU as Dormand-Prince
// does: one warp per flow (rk45.cu), whole flows inside one kernel.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "api.hpp"
#include "check.cuh"
#include "flows_device.cuh"
#include "launch.cuh"
#include "sadfast/rkc.hpp"
#include "sadfast/step_controller.hpp"
#include "warp_mlp.cuh"

namespace sadfast::gpu {

namespace {

// Per-warp global scratch: three rotating stage buffers, the step's end point and its f, an
// output point and its f.
constexpr int kScratchRows = 7;

template <class T>
struct Rows {
  T *b0, *b1, *b2, *ynew, *fnew, *yout, *fout;
};

template <class T>
__device__ Rows<T> rows_of(T* base, int P) {
  const std::size_t p = static_cast<std::size_t>(P);
  return {base, base + p, base + 2 * p, base + 3 * p, base + 4 * p, base + 5 * p, base + 6 * p};
}

// Largest |eigenvalue| of H(y) by power iteration on exact Hessian-vector products, warm started
// from the flow's previous eigenvector v (global, updated); returns a safety-inflated estimate.
template <class T>
__device__ double spectral_radius(const Arch& A, const T* X, const T* Y, const T* y, T* v, std::int64_t& n_hvp,
                                  const WarpSmem<T>& s) {
  const int P = A.P;
  const int lane = static_cast<int>(lane_id());
  double n2 = warp_sumsq(v, P);
  int iters = 5;
  if (!(n2 > 0) || !isfinite(n2)) {
    // Deterministic start with components in every direction.
    for (int i = lane; i < P; i += kWarp) v[i] = T(1.0 + 0.5 * sin(1.0 + static_cast<double>(i)));
    n2 = warp_sumsq(v, P);
    iters = 20;
  }
  const double inv = 1 / sqrt(n2);
  for (int i = lane; i < P; i += kWarp) {
    v[i] *= T(inv);
    s.theta[i] = y[i];
    s.v[i] = v[i];
  }
  double lam = 0;
  for (int it = 0; it < iters; ++it) {
    __syncwarp();
    // Called, not inlined (whatever the kernel's mode M): the HVP's registers then do not add to
    // the step loop's, whose gradient evaluations are far more frequent (ptxas sm_90, lanes
    // kernel: spills 114/136 B instead of 252/524 B in float64, 32/32 instead of 100/116 B in
    // float32; rkc.cu 26 s instead of 38 s).
    evaluate<T, true, EvalMode::called>(A, X, Y, s);
    lam = sqrt(warp_sumsq(s.hv, P));
    n_hvp += 1;
    if (!(lam > 0) || !isfinite(lam)) break;
    for (int i = lane; i < P; i += kWarp) {
      v[i] = s.hv[i] / T(lam);
      s.v[i] = v[i];
    }
  }
  return 1.2 * lam + 1e-12;
}

// One RKC step of s stages and size h from (yn, fn = f(yn)): ynew and fnew = f(ynew), returns
// L(ynew). Leaves s.theta = ynew and s.grad = grad L(ynew). Uses r.b0-b2 (not yn, fn, ynew, fnew).
// st == 0: no step, only the evaluation at the point the caller put into r.b1 (an output point).
// The stages and the end point share one evaluation site (one inlined copy per call of rkc_step).
template <class T, EvalMode M>
__device__ double rkc_step(const Arch& A, const T* X, const T* Y, const T* yn, const T* fn, double h, int st, T* ynew,
                           T* fnew, const Rows<T>& r, const WarpSmem<T>& s) {
  const int P = A.P;
  const int lane = static_cast<int>(lane_id());
  rkc::Recurrence rec(st > 0 ? st : 1);
  T* yjm2 = r.b0;
  T* yjm1 = r.b1;
  T* yj = r.b2;
  if (st > 0) {
    const T hmus1 = T(h * rec.mus1());
    for (int i = lane; i < P; i += kWarp) {
      yjm2[i] = yn[i];
      yjm1[i] = yn[i] + hmus1 * fn[i];
    }
  }
  for (int j = 2;; ++j) {
    const bool end = j > st;  // the last pass evaluates at the end point yjm1 = ynew
    for (int i = lane; i < P; i += kWarp) {
      const T v = yjm1[i];
      if (end) ynew[i] = v;
      s.theta[i] = v;
    }
    const double loss = eval_at<T, M>(A, X, Y, s);
    if (end) {
      for (int i = lane; i < P; i += kWarp) fnew[i] = -s.grad[i];
      return loss;
    }
    const rkc::Stage c = rec.next();
    const T mu = T(c.mu), nu = T(c.nu), rest = T(1 - c.mu - c.nu), hmus = T(h * c.mus), ajm1 = T(c.ajm1);
    for (int i = lane; i < P; i += kWarp) {
      const T ft = -s.grad[i];
      yj[i] = mu * yjm1[i] + nu * yjm2[i] + rest * yn[i] + hmus * (ft - ajm1 * fn[i]);
    }
    T* old = yjm2;
    yjm2 = yjm1;
    yjm1 = yj;
    yj = old;
  }
}

// Save times and t_end inside the accepted step (t, t_new] (flows.cpp's stiff_outputs for RKC):
// cubic Hermite interpolation plus one evaluation while h rho <= kHermiteMaxStiffness, beyond a
// sub-step of RKC from (y, f) to the output time. Returns the new status.
template <class T, EvalMode M>
__device__ std::int32_t rkc_outputs(const Arch& A, const T* X, const T* Y, const Opts& o, const SavesView<T>& sv,
                                    const FlowsView<T>& b, Index kk, double rho, double t, double h, const T* y,
                                    const T* f, double t_new, const T* ynew, const T* fnew, double loss_new,
                                    std::int64_t& next_save, std::int64_t& n_out, std::int32_t status,
                                    const Rows<T>& r, const WarpSmem<T>& s) {
  const bool hermite = h * rho <= rkc::kHermiteMaxStiffness;
  return emit_outputs_with(o, sv, b, kk, t_new, ynew, fnew, loss_new, next_save, status, s, [&](double ts) {
    if (hermite) {
      hermite_into(y, f, ynew, fnew, A.P, h, (ts - t) / h, r.b1);
      n_out += 1;
    }
    // One site for both: the Hermite point is evaluated as an RKC step of no stages.
    const double dt = ts - t;
    const int st = hermite ? 0 : rkc::stages(dt, rho);
    n_out += st;
    return rkc_step<T, M>(A, X, Y, y, f, dt, st, r.yout, r.fout, r, s);
  });
}

template <class T, bool Global = false>
__global__ void rkc_kernel(Arch A, const T* __restrict__ X, const T* __restrict__ Y, FlowsView<T> b, Opts o,
                           SavesView<T> sv, std::int64_t max_attempts, T* scratch) {
  constexpr EvalMode M = kEvalMode<false, Global>;
  const int warp = static_cast<int>(threadIdx.x / kWarp);
  const int lane = static_cast<int>(lane_id());
  const WarpSmem<T> s = this_warp_smem<T, Global>(A, true);
  const int P = A.P;
  const std::size_t gwarp = static_cast<std::size_t>(blockIdx.x) * (blockDim.x / kWarp) + warp;
  const Rows<T> r = rows_of(scratch + gwarp * kScratchRows * static_cast<std::size_t>(P), P);
  for (;;) {
    const Index kk = static_cast<Index>(next_flow(&b.counters[0]));
    if (kk >= b.K) break;
    FlowScalars fs = FlowScalars::load(b, kk);
    if (fs.status != kRunning || !takes_flow(o, sv, b, kk, fs, autoswitch::kRkc)) continue;
    const std::size_t off = static_cast<std::size_t>(kk) * P;
    T* y = b.y + off;
    T* f = b.f + off;
    T* yprev = b.y_prev + off;
    T* v = b.eig + off;
    // auto: the flow is (still) in RKC mode; not when it is here only to redo a step of RKC
    bool stays = !o.automatic || b.mode[kk] == autoswitch::kRkc;
    // A resumed flow whose last step already passed the new t_end or a new save time: outputs
    // inside that step, as on the CPU (f(y_prev) is one more evaluation).
    if (fs.redo_pending(o, sv)) {
      for (int i = lane; i < P; i += kWarp) s.theta[i] = yprev[i];
      eval_at<T, M>(A, X, Y, s);
      for (int i = lane; i < P; i += kWarp) r.fnew[i] = -s.grad[i];
      fs.n_out += 1;
      fs.status = rkc_outputs<T, M>(A, X, Y, o, sv, b, kk, fs.rho, fs.t_prev, fs.t - fs.t_prev, yprev, r.fnew, fs.t,
                                    y, f, fs.loss, fs.next_save, fs.n_out, fs.status, r, s);
    }
    std::int64_t attempts = 0;
    while (fs.status == kRunning && attempts < max_attempts && stays) {
      double t_new, h, h_abs;
      const auto stable = [&](double h_try) {
        if (fs.since_rho == 0 || fs.rho <= 0) fs.rho = spectral_radius<T>(A, X, Y, y, v, fs.n_hvp, s);
        // At most rkc::kMaxStages stages: cap the step where the stability interval ends.
        const double h_stab = rkc::max_stable_step(fs.rho);
        return h_try > h_stab ? h_stab : h_try;
      };
      if (!fs.begin_step(o, b, kk, y, f, stable, t_new, h, h_abs)) break;
      ++attempts;
      const int st = rkc::stages(h, fs.rho);
      const double loss_new = rkc_step<T, M>(A, X, Y, y, f, h, st, r.ynew, r.fnew, r, s);
      fs.n_grad += st;
      T acc_p = T(0), yn_p = T(0), fn_p = T(0);
      for (int i = lane; i < P; i += kWarp) {
        const T yn = r.ynew[i], fn = r.fnew[i];
        const T e = rkc::error_component(y[i], yn, f[i], fn, T(h));
        const T scale = T(o.atol) + fmax(fabs(y[i]), fabs(yn)) * T(o.rtol);
        acc_p += (e / scale) * (e / scale);
        yn_p += yn * yn;
        fn_p += fn * fn;
      }
      const double err = sqrt(static_cast<double>(warp_sum(acc_p)) / P);
      const double ynorm2 = static_cast<double>(warp_sum(yn_p));
      const double fnorm2 = static_cast<double>(warp_sum(fn_p));
      const bool finite = isfinite(err) && isfinite(loss_new) && isfinite(ynorm2) && isfinite(fnorm2);
      if (!(finite && err < 1)) {
        fs.h_next = h_abs * control::reject_factor(finite ? err : NAN, rkc::kErrorOrder, control::kRkcSafety);
        fs.rejected = true;
        fs.nonfinite = !finite;
        fs.n_rej += 1;
        fs.since_rho = 0;  // re-estimate the spectral radius after a rejection
        if (o.automatic) {
          stays = update_switching(b, kk, autoswitch::kRkc, false,
                                   [&](autoswitch::State& sw) { autoswitch::stiff_rejected(sw, fs.rho, fs.h_next); });
        }
        continue;
      }
      const double factor = control::accept_factor(err, rkc::kErrorOrder, fs.rejected, control::kRkcSafety);
      fs.status = rkc_outputs<T, M>(A, X, Y, o, sv, b, kk, fs.rho, fs.t, h, y, f, t_new, r.ynew, r.fnew, loss_new,
                                    fs.next_save, fs.n_out, fs.status, r, s);
      fs.since_rho = (fs.since_rho + 1) % rkc::kRhoEvery;
      fs.accept(o, b, kk, y, f, yprev, r.ynew, r.fnew, t_new, loss_new, h_abs, factor, fnorm2, ynorm2);
      if (o.automatic) {
        stays = update_switching(b, kk, autoswitch::kRkc, true, [&](autoswitch::State& sw) {
          autoswitch::rkc_accepted(sw, st);
          const autoswitch::Switch to = autoswitch::after_accepted(sw, true, b.jac_n[kk] > 0, t_new, fs.rho, fs.h_next);
          if (to == autoswitch::Switch::to_rosw && lane == 0) b.jac_age[kk] = -1;  // a fresh approximation
        });
      }
    }
    fs.store(b, kk);
  }
}

template <class T>
Index rkc_typed(const DeviceProblem& p, DeviceFlows& b, const SolverOptions& opt, const DeviceSaves& save,
                std::int64_t max_attempts) {
  KernelArch<T> ka(p.arch(), p.n_points(), true, false);
  const Arch& A = ka.A;
  auto kernel = ka.global ? rkc_kernel<T, true> : rkc_kernel<T>;
  const std::size_t per_warp = static_cast<std::size_t>(kScratchRows) * b.P() * sizeof(T);
  return run_flows(kernel, ka, b, "rkc", per_warp, [&](const Launch& lc, void* scratch) {
    SADFAST_LAUNCH(kernel, lc)(A, static_cast<const T*>(p.x(b.dtype())), static_cast<const T*>(p.t(b.dtype())),
                               view<T>(b), make_opts(opt), view<T>(save), max_attempts, static_cast<T*>(scratch));
  });
}

}  // namespace

Index rkc_advance(const DeviceProblem& p, DeviceFlows& b, const SolverOptions& opt, const DeviceSaves& save,
                  std::int64_t max_attempts) {
  if (b.dtype() == DType::f64) return rkc_typed<double>(p, b, opt, save, max_attempts);
  return rkc_typed<float>(p, b, opt, save, max_attempts);
}

}  // namespace sadfast::gpu
