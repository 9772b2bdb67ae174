// Per-flow adaptive ROSW (the Rosenbrock W-method ROS34PW2 on a rank-m Lanczos approximation of
// the Hessian) on the GPU: the "rosw" method of src/flows.cpp with hessian_rank = m < P
// (rosw_lanczos, rosw_step, stiff_outputs and its step loop), which is this code's reference line
// by line, with the table, the refresh rules and the Lanczos stopping test of sadfast/rosw.hpp
// shared. The exact-Hessian variant (P products and a dense P x P eigendecomposition per refresh)
// stays on the CPU.
//
// On long horizons gradient flows are stiff: RKC's stage count grows like sqrt(h rho), while ROSW
// takes 4 gradients per step whatever the stiffness. On the CPU (benchmarks/results/long_horizons.*,
// median gradient-equivalents per flow, rtol 1e-6) ROSW needs 3.0x fewer than RKC on poly1d and
// 3.7x fewer on poly2d at t = 1e4, and a rank-8 Lanczos approximation does as well there as the
// CPU's default rank. It maps onto the GPU as RKC does: one warp per flow, whole flows inside
// one kernel, the flow's m Ritz pairs (m (P + 1) numbers) in global memory. Per refresh: at most m
// Hessian-vector products, a twice-orthogonalized Lanczos basis (this warp's scratch), and the
// eigendecomposition of the small tridiagonal matrix, computed by every lane alike (the rows of
// its eigenvector matrix split over the lanes) with the algorithm of the Eigen call the CPU makes.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "api.hpp"
#include "check.cuh"
#include "flows_device.cuh"
#include "launch.cuh"
#include "sadfast/rkc.hpp"
#include "sadfast/rosw.hpp"
#include "sadfast/step_controller.hpp"
#include "warp_mlp.cuh"

namespace sadfast::gpu {

namespace {

constexpr int kS = rosw::Table::kStages;

// Per-warp global scratch: (8 + m) rows of P of the dtype (stages k_1..k_4, the step's end point
// and its f, an output point and its f, the m Lanczos vectors), then m^2 + 3 m + 4 kMaxGpuRank
// doubles (the tridiagonal matrix's eigenvectors Z, Gram-Schmidt coefficients, the stages'
// coordinates a (4 rows of kMaxGpuRank), their corrections, the denominators 1 + gamma h lambda).
template <class T>
struct Rows {
  T *k, *ynew, *fnew, *yout, *fout, *q;
  double *z, *c, *a, *g, *den;
};

template <class T>
__host__ __device__ std::size_t scratch_t_elems(int P, int m) {
  const std::size_t n = static_cast<std::size_t>(8 + m) * P;
  return (n * sizeof(T) + 7) / 8 * 8 / sizeof(T);  // the doubles after them 8-byte aligned
}
__host__ __device__ inline std::size_t scratch_d_elems(int m) {
  return static_cast<std::size_t>(m) * m + 3 * m + 4 * kMaxGpuRank;
}
template <class T>
__host__ __device__ std::size_t scratch_bytes(int P, int m) {
  return scratch_t_elems<T>(P, m) * sizeof(T) + scratch_d_elems(m) * sizeof(double);
}

template <class T>
__device__ Rows<T> rows_of(unsigned char* base, int P, int m) {
  T* t = reinterpret_cast<T*>(base);
  const std::size_t p = static_cast<std::size_t>(P);
  double* d = reinterpret_cast<double*>(base + scratch_t_elems<T>(P, m) * sizeof(T));
  const std::size_t mm = static_cast<std::size_t>(m);
  double* a = d + mm * mm + mm;
  double* g = a + 4 * kMaxGpuRank;
  return {t, t + 4 * p, t + 5 * p, t + 6 * p, t + 7 * p, t + 8 * p, d, d + mm * mm, a, g, g + mm};
}

// A flow's Hessian approximation: n <= m orthonormal vectors (rows of P) and their values,
// ascending; age: accepted steps since the refresh (-1: none yet).
template <class T>
struct Jac {
  T* v;
  double* val;
  int n;
  std::int64_t age;
};

template <class T>
struct JacView {
  T* v;            // (K, m, P)
  double* val;     // (K, m)
  std::int32_t* n;  // (K)
  std::int64_t* age;  // (K)
  int m;

  __device__ Jac<T> load(Index kk, int P) const {
    return {v + static_cast<std::size_t>(kk) * m * P, val + static_cast<std::size_t>(kk) * m, n[kk], age[kk]};
  }
};

// The approximation's largest eigenvalue, 0 when it has none (or none finite and positive):
// lambda_max for the outputs' choice and auto's switching (flows.cpp's stiff_rate).
template <class T>
__device__ double stiff_rate(const Jac<T>& J) {
  const double top = J.n > 0 ? J.val[J.n - 1] : 0;
  return isfinite(top) && top > 0 ? top : 0;
}

// Lanczos on H(y) from f = f(y): at most m steps (fewer once the stiff part of the spectrum below
// kStiffCut / h_next is resolved), each new vector orthogonalized twice against all earlier ones;
// the Ritz pairs into J (n of them; a non-finite run leaves one zero vector of value NaN, as the
// CPU). Started from f so that a flow on an invariant subspace of the gradient field stays in it
// (flows.cpp's rosw_lanczos); a zero or non-finite f: the CPU's fixed vector.
// alpha and beta are this lane's copies of the tridiagonal matrix (every lane has the same).
template <class T>
__device__ void lanczos(const Arch& A, const T* X, const T* Y, const T* y, const T* f, int m, double h_next,
                        Jac<T>& J, std::int64_t& n_hvp, const Rows<T>& r, const WarpSmem<T>& s) {
  const int P = A.P;
  const int lane = static_cast<int>(lane_id());
  double alpha[kMaxGpuRank], beta[kMaxGpuRank];
  T* q0 = r.q;
  const double fnorm = sqrt(warp_sumsq(f, P));
  const bool from_f = fnorm > 0 && isfinite(fnorm);
  for (int i = lane; i < P; i += kWarp) q0[i] = from_f ? f[i] : T(1.0 + 0.5 * sin(1.0 + static_cast<double>(i)));
  const double nrm = from_f ? fnorm : sqrt(warp_sumsq(q0, P));
  for (int i = lane; i < P; i += kWarp) q0[i] = T(static_cast<double>(q0[i]) / nrm);
  const double lam_cut = rosw::kStiffCut / h_next;
  int n = 0;
  bool finite = true;
  double scale = 0;
  for (int i = lane; i < P; i += kWarp) s.theta[i] = y[i];  // (evaluations leave theta as it is)
  for (int j = 0; j < m; ++j) {
    const T* qj = r.q + static_cast<std::size_t>(j) * P;
    for (int i = lane; i < P; i += kWarp) s.v[i] = qj[i];
    __syncwarp();
    // Called, not inlined, as RKC's power iteration: refreshes are rare next to the steps.
    evaluate<T, true, EvalMode::called>(A, X, Y, s);
    ++n;
    T dot_p = T(0);
    bool fin_p = true;
    for (int i = lane; i < P; i += kWarp) {
      dot_p += qj[i] * s.hv[i];
      fin_p = fin_p && isfinite(s.hv[i]);
    }
    alpha[j] = static_cast<double>(warp_sum(dot_p));
    if (warp_sum(fin_p ? 0 : 1) != 0 || !isfinite(alpha[j])) {
      finite = false;
      break;
    }
    scale = fmax(scale, fabs(alpha[j]));
    if (j + 1 == m) break;  // the last vector's residual is not needed
    if (rosw::stiff_part_resolved(alpha, beta, n, lam_cut)) break;
    T* w = s.hv;
    for (int pass = 0; pass < 2; ++pass) {
      // Classical Gram-Schmidt: all coefficients first (r.c, 8 at a time, written by lanes 0..7),
      // then the update.
      for (int l0 = 0; l0 <= j; l0 += 8) {
        const T cl = warp_dots8(r.q, P, l0, j + 1, w);
        if (lane < 8 && l0 + lane <= j) r.c[l0 + lane] = static_cast<double>(cl);
      }
      __syncwarp();
      for (int i = lane; i < P; i += kWarp) {
        T acc = T(0);
        for (int l = 0; l <= j; ++l) acc += T(r.c[l]) * r.q[static_cast<std::size_t>(l) * P + i];
        w[i] -= acc;
      }
      __syncwarp();
    }
    beta[j] = sqrt(warp_sumsq(w, P));
    scale = fmax(scale, beta[j]);
    if (!(beta[j] > 1e-12 * scale)) break;  // span(Q) is invariant under H
    T* qn = r.q + static_cast<std::size_t>(j + 1) * P;
    for (int i = lane; i < P; i += kWarp) qn[i] = T(static_cast<double>(w[i]) / beta[j]);
  }
  n_hvp += n;
  J.age = 0;
  if (!finite) {
    for (int i = lane; i < P; i += kWarp) J.v[i] = T(0);
    if (lane == 0) J.val[0] = NAN;
    J.n = 1;
    __syncwarp();
    return;
  }
  // Z = I (n x n, row-major; lane l owns rows l, l + 32), rotated as the QR algorithm goes.
  double* Z = r.z;
  for (int i = lane; i < n; i += kWarp) {
    for (int c = 0; c < n; ++c) Z[i * n + c] = i == c ? 1.0 : 0.0;
  }
  rosw::tridiagonal_eigen(
      alpha, beta, n,
      [&](int k, double c, double sn) {
        for (int i = lane; i < n; i += kWarp) {
          const double x = Z[i * n + k], z = Z[i * n + k + 1];
          Z[i * n + k] = c * x - sn * z;
          Z[i * n + k + 1] = sn * x + c * z;
        }
      },
      [&](int a, int b) {
        for (int i = lane; i < n; i += kWarp) {
          const double t = Z[i * n + a];
          Z[i * n + a] = Z[i * n + b];
          Z[i * n + b] = t;
        }
      });
  __syncwarp();
  // Ritz vectors V = Q Z (rows of P), values ascending.
  for (int i = lane; i < P; i += kWarp) {
    for (int l = 0; l < n; ++l) {
      double acc = 0;
      for (int q = 0; q < n; ++q) acc += static_cast<double>(r.q[static_cast<std::size_t>(q) * P + i]) * Z[q * n + l];
      J.v[static_cast<std::size_t>(l) * P + i] = T(acc);
    }
  }
  if (lane == 0) {
    for (int l = 0; l < n; ++l) J.val[l] = alpha[l];
  }
  J.n = n;
  __syncwarp();
}

// One ROS34PW2 step of size h from (y, f = f(y)) on the flow's W: ynew, fnew = f(ynew), the error
// norm and the squared norms of ynew and fnew; returns L(ynew) and leaves s.theta = ynew,
// s.grad = grad L(ynew). ok = false (nothing evaluated, NaN returned) when W is not finite.
// Not inlined: the step loop and the outputs' sub-steps share one copy of its evaluation.
template <class T, EvalMode M>
__device__ SADFAST_NOINLINE double rosw_step(const Arch& A, const T* X, const T* Y, const Opts& o,
                                             const rosw::Table& tab, const Jac<T>& J,
                                             const T* y, const T* f, double h, T* ynew, T* fnew, const Rows<T>& r,
                                             const WarpSmem<T>& s, double& err, double& ynorm2, double& fnorm2,
                                             bool& ok) {
  const int P = A.P;
  const int lane = static_cast<int>(lane_id());
  ok = true;
  for (int l = 0; l < J.n; ++l) ok = ok && isfinite(J.val[l]);
  // Only the positive values act (a trailing block: ascending); the others add exactly nothing.
  int j0 = J.n;
  while (j0 > 0 && J.val[j0 - 1] > 0) --j0;
  const int mp = J.n - j0;
  const T* V = J.v + static_cast<std::size_t>(j0) * P;
  const double* lam = J.val + j0;
  for (int l = 0; l < mp; ++l) ok = ok && isfinite(1 + tab.gamma * h * lam[l]);
  if (!ok) return NAN;
  if (lane == 0) {
    for (int l = 0; l < mp; ++l) r.den[l] = 1 + tab.gamma * h * lam[l];
  }
  __syncwarp();
  double loss = 0;
  // Stages 1..3 and the end point (pass kS) share one evaluation site.
  for (int st = 0; st <= kS; ++st) {
    if (st == kS) {
      T acc_p = T(0);
      for (int i = lane; i < P; i += kWarp) {
        T yn = y[i], e = T(0);
        for (int j = 0; j < kS; ++j) {
          const T kj = r.k[static_cast<std::size_t>(j) * P + i];
          yn += T(h * tab.b[j]) * kj;
          e += T(h * (tab.b[j] - tab.bhat[j])) * kj;
        }
        ynew[i] = yn;
        s.theta[i] = yn;
        const T scale = T(o.atol) + fmax(fabs(y[i]), fabs(yn)) * T(o.rtol);
        acc_p += (e / scale) * (e / scale);
      }
      err = sqrt(static_cast<double>(warp_sum(acc_p)) / P);
    } else if (st > 0) {
      for (int i = lane; i < P; i += kWarp) {
        T yi = y[i];
        for (int j = 0; j < st; ++j) {
          if (tab.alpha[st][j] != 0) yi += T(h * tab.alpha[st][j]) * r.k[static_cast<std::size_t>(j) * P + i];
        }
        s.theta[i] = yi;
      }
    }
    if (st > 0) loss = eval_at<T, M>(A, X, Y, s);
    if (st == kS) break;
    // f(Y_st): f itself for the first stage, else -grad; its coordinates g = V^T f(Y_st) (8 at a
    // time, lane l < 8 holding g_{l0 + l}), then a_st = (g - h lambda sum_j gamma_st,j a_j) /
    // (1 + gamma h lambda) and the correction a_st - g, by the lane that holds g (the one that
    // wrote the a_j of the earlier stages).
    for (int l0 = 0; l0 < mp; l0 += 8) {
      const T gd = warp_dots8(V, P, l0, mp, st == 0 ? f : s.grad);
      const int l = l0 + lane;
      if (lane < 8 && l < mp) {
        const double g = st == 0 ? static_cast<double>(gd) : -static_cast<double>(gd);  // V^T (-grad)
        double acc = 0;
        for (int j = 0; j < st; ++j) acc += tab.gam[st][j] * r.a[j * kMaxGpuRank + l];
        const double a = (g - h * lam[l] * acc) / r.den[l];
        r.a[st * kMaxGpuRank + l] = a;
        r.g[l] = a - g;
      }
    }
    __syncwarp();
    T* kst = r.k + static_cast<std::size_t>(st) * P;
    for (int i = lane; i < P; i += kWarp) {
      T acc = T(0);
      for (int l = 0; l < mp; ++l) acc += T(r.g[l]) * V[static_cast<std::size_t>(l) * P + i];
      kst[i] = (st == 0 ? f[i] : -s.grad[i]) + acc;
    }
    __syncwarp();
  }
  T fn_p = T(0), yn_p = T(0);
  for (int i = lane; i < P; i += kWarp) {
    const T fi = -s.grad[i];
    fnew[i] = fi;
    fn_p += fi * fi;
    yn_p += ynew[i] * ynew[i];
  }
  ynorm2 = static_cast<double>(warp_sum(yn_p));
  fnorm2 = static_cast<double>(warp_sum(fn_p));
  __syncwarp();
  return loss;
}

// Save times and t_end inside the accepted step (t, t_new] (flows.cpp's stiff_outputs for ROSW):
// cubic Hermite interpolation plus one evaluation while h lambda_max <= kHermiteMaxStiffness,
// beyond a sub-step of ROSW on the same W from (y, f) to the output time. Returns the new status.
template <class T, EvalMode M>
__device__ std::int32_t rosw_outputs(const Arch& A, const T* X, const T* Y, const Opts& o,
                                     const rosw::Table& tab, const SavesView<T>& sv,
                                     const FlowsView<T>& b, Index kk, const Jac<T>& J, double t, double h, const T* y,
                                     const T* f, double t_new, const T* ynew, const T* fnew, double loss_new,
                                     std::int64_t& next_save, std::int64_t& n_out, std::int32_t status,
                                     const Rows<T>& r, const WarpSmem<T>& s) {
  const bool hermite = h * stiff_rate(J) <= rkc::kHermiteMaxStiffness;
  return emit_outputs_with(o, sv, b, kk, t_new, ynew, fnew, loss_new, next_save, status, s, [&](double ts) {
    if (hermite) {
      hermite_into(y, f, ynew, fnew, A.P, h, (ts - t) / h, s.theta);
      n_out += 1;
      return eval_at<T, EvalMode::called>(A, X, Y, s);
    }
    double err = 0, yn2 = 0, fn2 = 0;
    bool ok = true;
    const double lo = rosw_step<T, M>(A, X, Y, o, tab, J, y, f, ts - t, r.yout, r.fout, r, s, err, yn2, fn2, ok);
    if (ok) n_out += rosw::kGradients;
    return lo;
  });
}

template <class T, bool Global = false>
__global__ void rosw_kernel(Arch A, const T* __restrict__ X, const T* __restrict__ Y, FlowsView<T> b, Opts o,
                            SavesView<T> sv, JacView<T> jv, rosw::Table tab, std::int64_t max_attempts,
                            unsigned char* scratch) {
  constexpr EvalMode M = kEvalMode<false, Global>;
  const int warp = static_cast<int>(threadIdx.x / kWarp);
  const int lane = static_cast<int>(lane_id());
  const WarpSmem<T> s = this_warp_smem<T, Global>(A, true);
  const int P = A.P;
  const std::size_t gwarp = static_cast<std::size_t>(blockIdx.x) * (blockDim.x / kWarp) + warp;
  const Rows<T> r = rows_of<T>(scratch + gwarp * scratch_bytes<T>(P, jv.m), P, jv.m);
  for (;;) {
    const Index kk = static_cast<Index>(next_flow(&b.counters[0]));
    if (kk >= b.K) break;
    FlowScalars fs = FlowScalars::load(b, kk);
    if (fs.status != kRunning || !takes_flow(o, sv, b, kk, fs, autoswitch::kRosw)) continue;
    Jac<T> J = jv.load(kk, P);
    const std::size_t off = static_cast<std::size_t>(kk) * P;
    T* y = b.y + off;
    T* f = b.f + off;
    T* yprev = b.y_prev + off;
    // auto: the flow is (still) in ROSW mode; not when it is here only to redo a step of ROSW
    bool stays = !o.automatic || b.mode[kk] == autoswitch::kRosw;
    // A resumed flow whose last step already passed the new t_end or a new save time: outputs
    // inside that step, as on the CPU (f(y_prev) is one more evaluation).
    if (fs.redo_pending(o, sv)) {
      for (int i = lane; i < P; i += kWarp) s.theta[i] = yprev[i];
      eval_at<T, EvalMode::called>(A, X, Y, s);
      for (int i = lane; i < P; i += kWarp) r.fnew[i] = -s.grad[i];
      fs.n_out += 1;
      fs.status = rosw_outputs<T, M>(A, X, Y, o, tab, sv, b, kk, J, fs.t_prev, fs.t - fs.t_prev, yprev, r.fnew, fs.t, y, f,
                                     fs.loss, fs.next_save, fs.n_out, fs.status, r, s);
    }
    std::int64_t attempts = 0;
    while (fs.status == kRunning && attempts < max_attempts && stays) {
      double t_new, h, h_abs;
      if (!fs.begin_step(o, b, kk, y, f, NoCap{}, t_new, h, h_abs)) break;
      ++attempts;
      if (rosw::needs_refresh(J.age, fs.rejected, true)) lanczos<T>(A, X, Y, y, f, jv.m, fs.h_next, J, fs.n_hvp, r, s);
      double err = NAN, ynorm2 = 0, fnorm2 = 0;
      bool ok = true;
      const double loss_new = rosw_step<T, M>(A, X, Y, o, tab, J, y, f, h, r.ynew, r.fnew, r, s, err, ynorm2, fnorm2, ok);
      if (ok) fs.n_grad += rosw::kGradients;
      const bool finite = ok && isfinite(err) && isfinite(loss_new) && isfinite(ynorm2) && isfinite(fnorm2);
      if (!(finite && err < 1)) {
        fs.h_next = h_abs * control::reject_factor(finite ? err : NAN, rosw::kErrorOrder, control::kSafety);
        fs.rejected = true;
        fs.nonfinite = !finite;
        fs.n_rej += 1;
        if (o.automatic) {
          stays = update_switching(b, kk, autoswitch::kRosw, false,
                                   [&](autoswitch::State& sw) { autoswitch::stiff_rejected(sw, stiff_rate(J), fs.h_next); });
        }
        continue;
      }
      const double factor = control::accept_factor(err, rosw::kErrorOrder, fs.rejected, control::kSafety);
      fs.status = rosw_outputs<T, M>(A, X, Y, o, tab, sv, b, kk, J, fs.t, h, y, f, t_new, r.ynew, r.fnew, loss_new,
                                     fs.next_save, fs.n_out, fs.status, r, s);
      J.age += 1;
      fs.accept(o, b, kk, y, f, yprev, r.ynew, r.fnew, t_new, loss_new, h_abs, factor, fnorm2, ynorm2);
      if (o.automatic) {
        stays = update_switching(b, kk, autoswitch::kRosw, true, [&](autoswitch::State& sw) {
          const double rate = stiff_rate(J);
          autoswitch::rosw_accepted(sw, h, rate);
          autoswitch::after_accepted(sw, true, J.n > 0, t_new, rate, fs.h_next);  // to Dormand-Prince or none
        });
      }
    }
    if (lane == 0) {
      jv.n[kk] = J.n;
      jv.age[kk] = J.age;
      if (!o.automatic && fs.t > fs.t_prev) b.last_mode[kk] = 2;  // a ROSW step was taken (as the CPU's last_mode)
    }
    fs.store(b, kk);
  }
}

template <class T>
Index rosw_typed(const DeviceProblem& p, DeviceFlows& b, const SolverOptions& opt, const DeviceSaves& save,
                 std::int64_t max_attempts) {
  KernelArch<T> ka(p.arch(), p.n_points(), true, false);
  const Arch& A = ka.A;
  auto kernel = ka.global ? rosw_kernel<T, true> : rosw_kernel<T>;
  const int m = static_cast<int>(b.rank());
  DeviceFlows::Impl& im = b.impl();
  const JacView<T> jv{static_cast<T*>(im.jac_v.data()), static_cast<double*>(im.jac_val.data()),
                      static_cast<std::int32_t*>(im.jac_n.data()), static_cast<std::int64_t*>(im.jac_age.data()), m};
  const std::size_t per_warp = scratch_bytes<T>(static_cast<int>(b.P()), m);
  return run_flows(kernel, ka, b, "rosw", per_warp, [&](const Launch& lc, void* scratch) {
    SADFAST_LAUNCH(kernel, lc)(A, static_cast<const T*>(p.x(b.dtype())), static_cast<const T*>(p.t(b.dtype())),
                               view<T>(b), make_opts(opt), view<T>(save), jv, rosw::kRos34PW2, max_attempts,
                               static_cast<unsigned char*>(scratch));
  });
}

}  // namespace

Index rosw_advance(const DeviceProblem& p, DeviceFlows& b, const SolverOptions& opt, const DeviceSaves& save,
                   std::int64_t max_attempts) {
  if (b.dtype() == DType::f64) return rosw_typed<double>(p, b, opt, save, max_attempts);
  return rosw_typed<float>(p, b, opt, save, max_attempts);
}

}  // namespace sadfast::gpu
