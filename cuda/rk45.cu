// Per-flow adaptive Dormand-Prince (and Tsitouras 5(4): the same kernel, another table as its
// argument) integration on the GPU (see flows.hpp / src/flows.cpp, the reference this code
// follows line by line for the "dopri5" and "tsit5" methods), the flows' state on the device for
// all GPU methods (RKC: rkc.cu) and its initialization.
//
// One warp per flow, as DiffEqGPU's EnsembleGPUKernel gives each trajectory its own thread: the
// warp runs its flow's steps inside the kernel, with its own step size, events, status and
// counters, and takes the next unfinished flow from a global counter when its flow stops or
// has used this launch's attempts; finished flows retire and cost nothing. Per-flow scalars
// are held in registers (identical on all lanes); the (P) vectors are spread over the lanes,
// each lane owning the same entries throughout, so only the network evaluation (warp_mlp.cuh)
// exchanges data between lanes. Vector norms are warp butterfly sums: a flow's result depends
// only on its own inputs, never on the batch or the launch shape.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "api.hpp"
#include "check.cuh"
#include "host_rows.hpp"
#include "launch.cuh"
#include "sadfast/rk_tableau.hpp"
#include "sadfast/step_controller.hpp"
#include "flows_device.cuh"
#include "warp_mlp.cuh"

namespace sadfast::gpu {

namespace {

// ---- initialization --------------------------------------------------------------------------

template <class T, bool Global = false>
__global__ void init_kernel(Arch A, const T* __restrict__ X, const T* __restrict__ Y, FlowsView<T> b,
                            const T* __restrict__ theta0, double t0, double first_step, Opts o, SavesView<T> sv,
                            int error_order, std::int8_t mode) {
  const int warp = static_cast<int>(threadIdx.x / kWarp);
  const int lane = static_cast<int>(lane_id());
  const WarpSmem<T> s = this_warp_smem<T, Global>(A, false);
  const int P = A.P;
  const Index wpb = blockDim.x / kWarp;
  for (Index kk = blockIdx.x * wpb + warp; kk < b.K; kk += static_cast<Index>(gridDim.x) * wpb) {
    const std::size_t off = static_cast<std::size_t>(kk) * P;
    T* y = b.y + off;
    T* f = b.f + off;
    for (int i = lane; i < P; i += kWarp) {
      const T v = theta0[off + i];
      y[i] = v;
      b.y_prev[off + i] = v;
      if (b.eig != nullptr) b.eig[off + i] = T(0);
      s.theta[i] = v;
    }
    const double loss = eval_at<T, kEvalMode<false, Global>>(A, X, Y, s);
    for (int i = lane; i < P; i += kWarp) f[i] = -s.grad[i];
    std::int32_t status = kRunning;
    std::int64_t next_save = 0;
    const double f2 = warp_sumsq(s.grad, P);
    const double y2 = warp_sumsq(s.theta, P);
    double h = 0;
    std::int64_t n_grad = 1;
    if (!isfinite(loss) || !isfinite(f2)) {
      status = static_cast<std::int32_t>(FlowStatus::nonfinite);
    } else {
      while (next_save < sv.n && sv.times[next_save] <= t0) record(sv, kk, next_save++, P, s, loss);
      if (o.t_end <= t0) status = static_cast<std::int32_t>(FlowStatus::reached_t_end);
      else status = event_status(o, loss, sqrt(f2), sqrt(y2));
    }
    __syncwarp();
    set_output(b, kk, t0, y, f, loss);
    if (status == kRunning) {
      if (first_step > 0) {
        h = first_step;
      } else {
        // Hairer's initial step (scipy's select_initial_step with an unbounded interval).
        T d0p = T(0), d1p = T(0);
        for (int i = lane; i < P; i += kWarp) {
          const T sc = T(o.atol) + fabs(y[i]) * T(o.rtol);
          d0p += (y[i] / sc) * (y[i] / sc);
          d1p += (f[i] / sc) * (f[i] / sc);
        }
        const double d0 = sqrt(static_cast<double>(warp_sum(d0p)) / P);
        const double d1 = sqrt(static_cast<double>(warp_sum(d1p)) / P);
        const double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
        __syncwarp();
        for (int i = lane; i < P; i += kWarp) s.theta[i] = y[i] + T(h0) * f[i];
        eval_at<T, kEvalMode<false, Global>>(A, X, Y, s);
        n_grad += 1;
        T d2p = T(0);
        for (int i = lane; i < P; i += kWarp) {
          const T sc = T(o.atol) + fabs(y[i]) * T(o.rtol);
          const T df = -s.grad[i] - f[i];
          d2p += (df / sc) * (df / sc);
        }
        const double d2 = sqrt(static_cast<double>(warp_sum(d2p)) / P) / h0;
        const double h1 = (d1 <= 1e-15 && d2 <= 1e-15) ? fmax(1e-6, h0 * 1e-3)
                                                       : pow(0.01 / fmax(d1, d2), 1.0 / (error_order + 1));
        double hh = fmin(100 * h0, h1);
        hh = fmin(hh, o.max_step);
        h = isfinite(hh) && hh > 0 ? hh : 1e-6;
      }
    }
    if (lane == 0) {
      b.t[kk] = t0;
      b.t_prev[kk] = t0;
      b.h[kk] = h;
      b.loss[kk] = loss;
      b.status[kk] = status;
      b.rejected[kk] = 0;
      b.nonfinite[kk] = 0;
      b.n_grad[kk] = n_grad;
      b.n_accepted[kk] = 0;
      b.n_rejected[kk] = 0;
      b.n_output_evals[kk] = 0;
      b.next_save[kk] = next_save;
      b.rho[kk] = 0;
      b.n_hvp[kk] = 0;
      b.since_rho[kk] = 0;
      b.mode[kk] = b.last_mode[kk] = mode;
      b.give_ups[kk] = 0;
      b.stiff_run[kk] = b.switch_run[kk] = 0;
    }
    __syncwarp();
  }
}

// ---- stepping ------------------------------------------------------------------------------------

// One Dormand-Prince step of size h from (y, f = k_0): stages into k (7, P) (global, this
// warp's scratch; k[6] = f(ynew)), ynew into `ynew`; returns L(ynew). s.theta holds ynew after.
// f == nullptr: k_0 = f(y) is evaluated first (a resumed flow redoing its last step). f is read
// only before ynew is written, so the two may alias. The stages, the end point included, share
// one evaluation site: each inlined copy of an evaluation adds to ptxas's time and to the
// kernel's code (advance_kernel inlines rk_step twice: a redone step and the step loop).
template <class T, EvalMode M>
__device__ double rk_step(const Arch& A, const T* X, const T* Y, const ExplicitTableau& tab, const T* y, const T* f,
                          double h, T* k, T* ynew, const WarpSmem<T>& s) {
  const int P = A.P;
  const int lane = static_cast<int>(lane_id());
  const int ns = tab.stages;
  if (f != nullptr) {
    for (int i = lane; i < P; i += kWarp) k[i] = f[i];
  }
  double loss = 0;
  for (int st = f != nullptr ? 1 : 0; st < ns; ++st) {
    const bool last = st == ns - 1;  // the end point: the weights b, FSAL
    const Real* c = last ? tab.b : tab.a[st];
    for (int i = lane; i < P; i += kWarp) {
      T acc = T(0);
      for (int j = 0; j < st; ++j) acc += T(c[j]) * k[j * P + i];
      const T yi = st == 0 ? y[i] : y[i] + acc * T(h);
      if (last) ynew[i] = yi;
      s.theta[i] = yi;
    }
    loss = eval_at<T, M>(A, X, Y, s);
    T* kst = k + st * P;
    for (int i = lane; i < P; i += kWarp) kst[i] = -s.grad[i];
  }
  return loss;
}

// Continuous extension into s.theta: y + h sum_j w_j(x) k_j.
template <class T>
__device__ void dense_into(const ExplicitTableau& tab, const T* y, const T* k, int P, double h, double x,
                           const WarpSmem<T>& s) {
  T w[ExplicitTableau::kMaxStages];
  for (int j = 0; j < tab.stages; ++j) {
    double acc = 0;
    for (int q = tab.dense_order - 1; q >= 0; --q) acc = (acc + tab.p[j][q]) * x;
    w[j] = T(acc);
  }
  for (int i = static_cast<int>(lane_id()); i < P; i += kWarp) {
    T acc = T(0);
    for (int j = 0; j < tab.stages; ++j) acc += w[j] * k[j * P + i];
    s.theta[i] = y[i] + T(h) * acc;
  }
}

// Save times and t_end inside the accepted step (t, t_new] (as emit_outputs in flows.cpp).
// Returns the new status (reached_t_end or unchanged); adds output evaluations to n_out.
template <class T, EvalMode M>
__device__ std::int32_t emit_outputs(const Arch& A, const T* X, const T* Y, const ExplicitTableau& tab,
                                     const Opts& o, const SavesView<T>& sv, const FlowsView<T>& b, Index kk,
                                     double t, double h, const T* y, const T* k, double t_new, const T* ynew,
                                     const T* fnew, double loss_new, std::int64_t& next_save, std::int64_t& n_out,
                                     std::int32_t status, const WarpSmem<T>& s) {
  return emit_outputs_with(o, sv, b, kk, t_new, ynew, fnew, loss_new, next_save, status, s, [&](double ts) {
    dense_into(tab, y, k, A.P, h, (ts - t) / h, s);
    n_out += 1;
    return eval_at<T, M>(A, X, Y, s);
  });
}

// (__launch_bounds__(128, 4), capping registers at 128 for occupancy, was measured slower on an
// H200: the spills cost more than the extra warps gained; see benchmarks/results/bench_gpu_*.)
// Auto: method "auto", the flows in Dormand-Prince mode (a separate instantiation, so that
// dopri5 and tsit5 keep their registers: a runtime flag took the float64 lanes kernel from 184 to
// 222 on sm_90).
template <class T, bool Tiled, bool Global = false, bool Auto = false>
__global__ void advance_kernel(Arch A, const T* __restrict__ X, const T* __restrict__ Y, FlowsView<T> b, Opts o,
                               SavesView<T> sv, ExplicitTableau tab, std::int64_t max_attempts, T* scratch) {
  constexpr EvalMode M = kEvalMode<Tiled, Global>;
  const int warp = static_cast<int>(threadIdx.x / kWarp);
  const int lane = static_cast<int>(lane_id());
  const WarpSmem<T> s = this_warp_smem<T, Global>(A, false);
  const int P = A.P;
  const int ns = tab.stages;
  const std::size_t gwarp = static_cast<std::size_t>(blockIdx.x) * (blockDim.x / kWarp) + warp;
  T* k = scratch + gwarp * static_cast<std::size_t>(ns + 1) * P;  // (ns, P) stages, then ynew
  T* ynew = k + static_cast<std::size_t>(ns) * P;
  T* knew = k + static_cast<std::size_t>(ns - 1) * P;
  for (;;) {
    const Index kk = static_cast<Index>(next_flow(&b.counters[0]));
    if (kk >= b.K) break;
    FlowScalars fs = FlowScalars::load(b, kk);
    if (fs.status != kRunning || (Auto && !takes_flow(o, sv, b, kk, fs, autoswitch::kDopri))) continue;
    const std::size_t off = static_cast<std::size_t>(kk) * P;
    T* y = b.y + off;
    T* f = b.f + off;
    T* yprev = b.y_prev + off;
    bool stays = !Auto || b.mode[kk] == autoswitch::kDopri;  // auto: not when here only for a redo
    // A resumed flow whose last step already passed the new t_end or a new save time: redo that
    // step (bitwise as before, f(y_prev) evaluated again as its stage 0) to interpolate inside it.
    if (fs.redo_pending(o, sv)) {
      const double hp = fs.t - fs.t_prev;
      rk_step<T, M>(A, X, Y, tab, yprev, nullptr, hp, k, ynew, s);  // ynew: y, bitwise (unused)
      fs.n_out += ns;
      fs.status = emit_outputs<T, M>(A, X, Y, tab, o, sv, b, kk, fs.t_prev, hp, yprev, k, fs.t, y, f, fs.loss,
                                     fs.next_save, fs.n_out, fs.status, s);
    }
    std::int64_t attempts = 0;
    while (fs.status == kRunning && attempts < max_attempts && stays) {
      double t_new, h, h_abs;
      if (!fs.begin_step(o, b, kk, y, f, NoCap{}, t_new, h, h_abs)) break;
      ++attempts;
      const double loss_new = rk_step<T, M>(A, X, Y, tab, y, f, h, k, ynew, s);
      fs.n_grad += ns - 1;
      T acc_p = T(0), yn_p = T(0), fn_p = T(0);
      for (int i = lane; i < P; i += kWarp) {
        T e = T(0);
        for (int j = 0; j < ns; ++j) e += T(tab.e[j]) * k[j * P + i];
        e *= T(h);
        const T yi = y[i], yn = ynew[i];
        const T scale = T(o.atol) + fmax(fabs(yi), fabs(yn)) * T(o.rtol);
        acc_p += (e / scale) * (e / scale);
        yn_p += yn * yn;
        fn_p += knew[i] * knew[i];
      }
      const double err = sqrt(static_cast<double>(warp_sum(acc_p)) / P);
      const double ynorm2 = static_cast<double>(warp_sum(yn_p));
      const double fnorm2 = static_cast<double>(warp_sum(fn_p));
      const int err_order = tab.error_order;
      const bool finite = isfinite(err) && isfinite(loss_new) && isfinite(ynorm2) && isfinite(fnorm2);
      if (!(finite && err < 1)) {
        fs.h_next = h_abs * control::reject_factor(finite ? err : NAN, err_order, control::kSafety);
        fs.rejected = true;
        fs.nonfinite = !finite;
        fs.n_rej += 1;
        continue;
      }
      const double factor = control::accept_factor(err, err_order, fs.rejected, control::kSafety);
      fs.status = emit_outputs<T, M>(A, X, Y, tab, o, sv, b, kk, fs.t, h, y, k, t_new, ynew, knew, loss_new,
                                         fs.next_save, fs.n_out, fs.status, s);
      const T* k6 = k + static_cast<std::size_t>(ns - 2) * P;
      bool stiff = false;
      if (Auto) {
        // Hairer's test on the last two stages (both at c = 1): k7 - k6 against y7 - y6, y6 the
        // argument of k6 formed again as rk_step formed it (y is still the step's start).
        const Real* a6 = tab.a[ns - 2];
        T dk_p = T(0), dy_p = T(0);
        for (int i = lane; i < P; i += kWarp) {
          T acc = T(0);
          for (int j = 0; j < ns - 2; ++j) acc += T(a6[j]) * k[j * P + i];
          const T dk = knew[i] - k6[i], dy = ynew[i] - (y[i] + acc * T(h));
          dk_p += dk * dk;
          dy_p += dy * dy;
        }
        const double dk2 = static_cast<double>(warp_sum(dk_p)), dy2 = static_cast<double>(warp_sum(dy_p));
        stiff = autoswitch::hairer_stiff(h, dk2, dy2);
      }
      fs.accept(o, b, kk, y, f, yprev, ynew, knew, t_new, loss_new, h_abs, factor, fnorm2, ynorm2);
      if (Auto) {
        autoswitch::Switch to = autoswitch::Switch::none;
        stays = update_switching(b, kk, autoswitch::kDopri, true, [&](autoswitch::State& sw) {
          autoswitch::dopri_accepted(sw, stiff);
          to = autoswitch::after_accepted(sw, true, b.jac_n[kk] > 0, t_new, 0.0, fs.h_next);
        });
        if (to != autoswitch::Switch::none) {  // to RKC or ROSW, started afresh
          if (lane == 0) b.jac_age[kk] = -1;
          fs.since_rho = 0;
        }
        if (to == autoswitch::Switch::to_rkc) {
          // RKC's power iteration starts from Hairer's difference k7 - k6 (flows.cpp).
          T* v = b.eig + off;
          for (int i = lane; i < P; i += kWarp) v[i] = knew[i] - k6[i];
        }
      }
    }
    fs.store(b, kk);
  }
}

}  // namespace

// ---- host side -----------------------------------------------------------------------------------

DeviceFlows::DeviceFlows(Index K, Index P, DType d, FlowMethod method, Index rank)
    : K_(K), P_(P), dtype_(d), method_(method),
      rank_(method == FlowMethod::rosw || method == FlowMethod::automatic ? rank : 0), impl_(std::make_unique<Impl>()) {
  const bool rosw = method == FlowMethod::rosw || method == FlowMethod::automatic;  // ROSW's state
  const bool rkc = method == FlowMethod::rkc || method == FlowMethod::automatic;    // RKC's
  if (method != FlowMethod::dopri5 && method != FlowMethod::tsit5 && !rosw && !rkc) {
    throw std::invalid_argument("method: device='cuda' supports 'dopri5', 'tsit5', 'rkc', 'rosw' and 'auto'");
  }
  if (rosw && !(rank >= 1 && rank < P && rank <= kMaxGpuRank)) {
    throw std::invalid_argument("hessian_rank: device='cuda' runs ROSW on a Lanczos approximation of rank 1.." +
                                std::to_string(std::min<Index>(P - 1, kMaxGpuRank)) + " (P = " + std::to_string(P) +
                                "), got " + std::to_string(rank) + " (the exact Hessian runs on the CPU)");
  }
  const std::size_t k = static_cast<std::size_t>(K), kp = k * static_cast<std::size_t>(P) * dtype_size(d);
  Impl& m = *impl_;
  for (Buffer* b : {&m.t, &m.h, &m.loss, &m.t_prev, &m.t_out, &m.loss_out, &m.grad_norm_out, &m.theta_norm_out}) {
    *b = Buffer(k * 8);
  }
  for (Buffer* b : {&m.n_grad, &m.n_accepted, &m.n_rejected, &m.n_output_evals, &m.next_save}) *b = Buffer(k * 8);
  m.status = Buffer(k * 4);
  m.rejected = Buffer(k);
  m.nonfinite = Buffer(k);
  for (Buffer* b : {&m.y, &m.f, &m.y_prev, &m.theta_out}) *b = Buffer(kp);
  if (rkc) m.eig = Buffer(kp);
  m.rho = Buffer(k * 8);
  m.n_hvp = Buffer(k * 8);
  m.since_rho = Buffer(k * 8);
  m.mode = Buffer(k);
  m.last_mode = Buffer(k);
  m.give_ups = Buffer(k);
  m.stiff_run = Buffer(k * 4);
  m.switch_run = Buffer(k * 4);
  m.counters = Buffer(2 * sizeof(unsigned long long));
  if (rosw) {
    const std::size_t km = k * static_cast<std::size_t>(rank_);
    try {
      m.jac_v = Buffer(km * static_cast<std::size_t>(P) * dtype_size(d));
    } catch (const DeviceOutOfMemory& e) {
      throw DeviceOutOfMemory(std::string(e.what()) +
                              " ROSW keeps its Hessian approximation on the GPU, hessian_rank x (P + 1) = " +
                              std::to_string(rank_) + " x " + std::to_string(P + 1) +
                              " numbers per flow: a smaller hessian_rank needs less.");
    }
    m.jac_val = Buffer(km * 8);
    m.jac_n = Buffer(k * 4);
    m.jac_age = Buffer(k * 8);
  }
}

DeviceFlows::~DeviceFlows() = default;


void DeviceFlows::upload(const FlowBatch& b) {
  if (b.K != K_ || b.P != P_) throw std::invalid_argument("DeviceFlows::upload: batch shape mismatch");
  Impl& m = *impl_;
  put(m.t, b.t), put(m.h, b.h), put(m.loss, b.loss), put(m.t_prev, b.t_prev), put(m.status, b.status);
  put(m.rejected, b.rejected), put(m.nonfinite, b.nonfinite), put(m.n_grad, b.n_grad);
  put(m.n_accepted, b.n_accepted), put(m.n_rejected, b.n_rejected), put(m.n_output_evals, b.n_output_evals);
  put(m.next_save, b.next_save), put(m.t_out, b.t_out), put(m.loss_out, b.loss_out);
  put(m.grad_norm_out, b.grad_norm_out), put(m.theta_norm_out, b.theta_norm_out);
  put_rows(m.y, b.y, dtype_), put_rows(m.f, b.f, dtype_), put_rows(m.y_prev, b.y_prev, dtype_);
  put_rows(m.theta_out, b.theta_out, dtype_);
  put(m.rho, b.rho), put(m.n_hvp, b.n_hvp), put(m.since_rho, b.since_rho), put(m.mode, b.mode);
  put(m.last_mode, b.last_mode), put(m.give_ups, b.give_ups), put(m.stiff_run, b.stiff_run);
  put(m.switch_run, b.switch_run);
  if (m.eig.bytes() > 0) put_rows(m.eig, b.eig, dtype_);
  if (m.jac_n.bytes() > 0) {
    // The flows' Ritz pairs (n_k <= rank each) into fixed slots of `rank` vectors and values.
    const std::size_t R = static_cast<std::size_t>(rank_), P = static_cast<std::size_t>(P_);
    std::vector<Real> v(static_cast<std::size_t>(K_) * R * P, 0.0), val(static_cast<std::size_t>(K_) * R, 0.0);
    std::vector<std::int32_t> n(static_cast<std::size_t>(K_), 0);
    for (Index k = 0; k < K_; ++k) {
      const std::vector<Real>& J = b.jac[k];
      const std::size_t nk = J.size() / (P + 1);
      if (nk > R) {
        throw std::invalid_argument("hessian_rank: flow " + std::to_string(k) + " holds a Hessian approximation of rank " +
                                    std::to_string(nk) + ", more than this GPU solve's " + std::to_string(R));
      }
      std::copy(J.begin(), J.begin() + nk * P, v.begin() + k * R * P);
      std::copy(J.begin() + nk * P, J.end(), val.begin() + k * R);
      n[k] = static_cast<std::int32_t>(nk);
    }
    put_rows(m.jac_v, v, dtype_), put(m.jac_val, val), put(m.jac_n, n), put(m.jac_age, b.jac_age);
  }
}

void DeviceFlows::download(FlowBatch& b) const {
  if (b.K != K_ || b.P != P_) throw std::invalid_argument("DeviceFlows::download: batch shape mismatch");
  const Impl& m = *impl_;
  get(m.t, b.t), get(m.h, b.h), get(m.loss, b.loss), get(m.t_prev, b.t_prev), get(m.status, b.status);
  get(m.rejected, b.rejected), get(m.nonfinite, b.nonfinite), get(m.n_grad, b.n_grad);
  get(m.n_accepted, b.n_accepted), get(m.n_rejected, b.n_rejected), get(m.n_output_evals, b.n_output_evals);
  get(m.next_save, b.next_save), get(m.t_out, b.t_out), get(m.loss_out, b.loss_out);
  get(m.grad_norm_out, b.grad_norm_out), get(m.theta_norm_out, b.theta_norm_out);
  get_rows(m.y, b.y, dtype_), get_rows(m.f, b.f, dtype_), get_rows(m.y_prev, b.y_prev, dtype_);
  get_rows(m.theta_out, b.theta_out, dtype_);
  get(m.rho, b.rho), get(m.n_hvp, b.n_hvp), get(m.since_rho, b.since_rho), get(m.mode, b.mode);
  get(m.last_mode, b.last_mode), get(m.give_ups, b.give_ups), get(m.stiff_run, b.stiff_run);
  get(m.switch_run, b.switch_run);
  if (m.eig.bytes() > 0) get_rows(m.eig, b.eig, dtype_);
  else std::fill(b.eig.begin(), b.eig.end(), 0.0);
  if (m.jac_n.bytes() > 0) {
    const std::size_t R = static_cast<std::size_t>(rank_), P = static_cast<std::size_t>(P_);
    std::vector<Real> v(static_cast<std::size_t>(K_) * R * P), val(static_cast<std::size_t>(K_) * R);
    std::vector<std::int32_t> n(static_cast<std::size_t>(K_));
    get_rows(m.jac_v, v, dtype_), get(m.jac_val, val), get(m.jac_n, n), get(m.jac_age, b.jac_age);
    for (Index k = 0; k < K_; ++k) {
      const std::size_t nk = static_cast<std::size_t>(n[k]);
      std::vector<Real>& J = b.jac[k];
      J.resize(nk * (P + 1));
      std::copy(v.begin() + k * R * P, v.begin() + k * R * P + nk * P, J.begin());
      std::copy(val.begin() + k * R, val.begin() + k * R + nk, J.begin() + nk * P);
    }
  }
}

namespace {

template <class T>
void init_typed(const DeviceProblem& p, DeviceFlows& b, const void* theta0, Real t0, Real first_step,
                const SolverOptions& opt, const DeviceSaves& save) {
  KernelArch<T> ka(p.arch(), p.n_points(), false, false);
  const Arch& A = ka.A;
  auto kernel = ka.global ? init_kernel<T, true> : init_kernel<T>;
  const Launch lc = plan_launch(kernel, ka, b.K(), "flows_initialize");
  ka.bind_workspace(lc, b.impl().workspace);
  SADFAST_LAUNCH(kernel, lc)(
      A, static_cast<const T*>(p.x(b.dtype())), static_cast<const T*>(p.t(b.dtype())), view<T>(b),
      static_cast<const T*>(theta0), t0, first_step, make_opts(opt), view<T>(save),
      explicit_tableau(opt.method).error_order,
      static_cast<std::int8_t>(opt.method == FlowMethod::rkc ? 1 : 0));
  SADFAST_CUDA_CHECK_LAUNCH();
  synchronize();
}

template <class T>
Index advance_typed(const DeviceProblem& p, DeviceFlows& b, const SolverOptions& opt, const DeviceSaves& save,
                    std::int64_t max_attempts) {
  KernelArch<T> ka(p.arch(), p.n_points(), false, true);
  const Arch& A = ka.A;
  const bool automatic = opt.method == FlowMethod::automatic;
  auto kernel = ka.global         ? (automatic ? advance_kernel<T, false, true, true> : advance_kernel<T, false, true>)
                : A.wt_elems > 0 ? (automatic ? advance_kernel<T, true, false, true> : advance_kernel<T, true>)
                                 : (automatic ? advance_kernel<T, false, false, true> : advance_kernel<T, false>);
  // The method's table (dopri5 or tsit5) is a kernel argument: one compiled kernel for both.
  const ExplicitTableau& tab = explicit_tableau(opt.method);
  const std::size_t per_warp = static_cast<std::size_t>(tab.stages + 1) * b.P() * sizeof(T);
  return run_flows(kernel, ka, b, tab.name, per_warp, [&](const Launch& lc, void* scratch) {
    SADFAST_LAUNCH(kernel, lc)(A, static_cast<const T*>(p.x(b.dtype())), static_cast<const T*>(p.t(b.dtype())),
                               view<T>(b), make_opts(opt), view<T>(save), tab, max_attempts, static_cast<T*>(scratch));
  });
}

void check_method(const DeviceFlows& b, const SolverOptions& opt) {
  if (opt.method != b.method()) throw std::invalid_argument("method: the flows' device state is for another method");
}

}  // namespace

void flows_initialize(const DeviceProblem& p, DeviceFlows& b, const void* d_theta0, Real t0, Real first_step,
                      const SolverOptions& opt, const DeviceSaves& save) {
  check_method(b, opt);
  if (b.K() == 0) return;
  if (b.dtype() == DType::f64) init_typed<double>(p, b, d_theta0, t0, first_step, opt, save);
  else init_typed<float>(p, b, d_theta0, t0, first_step, opt, save);
  if (b.impl().jac_n.bytes() > 0) {  // rosw, auto: no Hessian approximation yet
    b.impl().jac_n.zero();
    const std::vector<std::int64_t> none(static_cast<std::size_t>(b.K()), -1);
    put(b.impl().jac_age, none);
  }
}

Index flows_advance(const DeviceProblem& p, DeviceFlows& b, const SolverOptions& opt, const DeviceSaves& save,
                    std::int64_t max_attempts) {
  check_method(b, opt);
  if (b.K() == 0) return 0;
  if (opt.method == FlowMethod::rkc) return rkc_advance(p, b, opt, save, max_attempts);
  if (opt.method == FlowMethod::rosw) return rosw_advance(p, b, opt, save, max_attempts);
  const Index running = b.dtype() == DType::f64 ? advance_typed<double>(p, b, opt, save, max_attempts)
                                                : advance_typed<float>(p, b, opt, save, max_attempts);
  if (opt.method != FlowMethod::automatic) return running;
  // auto: each method's kernel advances the flows in its mode; a flow that switches goes on in
  // the next kernel, or in the next call (back to Dormand-Prince). The last kernel counts every
  // running flow, the ones it left included.
  rkc_advance(p, b, opt, save, max_attempts);
  return rosw_advance(p, b, opt, save, max_attempts);
}

}  // namespace sadfast::gpu
