// GD, heavy-ball momentum and Adam/AdamW on the GPU (see train.hpp / src/train.cpp, the
// reference this code follows line by line): one warp per flow, whole slices of optimizer steps
// inside one kernel, flows taken from a global counter as in rk45.cu. Each lane owns the same
// parameter entries (lane, lane + 32, ...) of theta and of the optimizer moments throughout;
// only the network evaluation (warp_mlp.cuh) exchanges data between lanes, and norms are warp
// butterfly sums, so a flow's result depends only on its own inputs.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "api.hpp"
#include "check.cuh"
#include "host_rows.hpp"
#include "launch.cuh"
#include "warp_mlp.cuh"

namespace sadfast::gpu {
namespace {

constexpr std::int32_t kRun = static_cast<std::int32_t>(FlowStatus::running);

template <class T>
struct TrainView {
  Index K;
  int P;
  T *y, *m, *v;  // (K, P)
  std::int64_t* step;
  std::int32_t* status;
  double *loss, *grad_norm, *theta_norm;
  Index S;  // traces (K, S)
  double *tr_loss, *tr_grad_norm, *tr_theta_norm;
  unsigned long long* counters;  // [next flow, running flows]
};

struct TrainOpts {
  int method;
  double lr, momentum, beta1, beta2, eps, weight_decay;
  std::int64_t steps, record_every;
  double loss_below, grad_norm_below, theta_norm_above;
};

template <class T, bool Global = false>
__global__ void train_kernel(Arch A, const T* __restrict__ X, const T* __restrict__ Y, TrainView<T> b, TrainOpts o,
                             std::int64_t budget) {
  const int lane = static_cast<int>(lane_id());
  const WarpSmem<T> s = this_warp_smem<T, Global>(A, false);
  const int P = A.P;
  for (;;) {
    const Index kk = static_cast<Index>(next_flow(&b.counters[0]));
    if (kk >= b.K) break;
    std::int32_t status = b.status[kk];
    if (status != kRun) continue;
    const std::size_t off = static_cast<std::size_t>(kk) * P;
    T* y = b.y + off;
    T* m = b.m + off;
    T* v = b.v + off;
    std::int64_t st = b.step[kk];
    double loss = 0, gnorm = 0, tnorm = 0;
    for (std::int64_t done = 0;; ++done) {
      for (int i = lane; i < P; i += kWarp) s.theta[i] = y[i];
      __syncwarp();
      loss = static_cast<double>(evaluate<T, false, kEvalMode<false, Global>>(A, X, Y, s));
      const double g2 = warp_sumsq(s.grad, P), y2 = warp_sumsq(s.theta, P);
      gnorm = sqrt(g2);
      tnorm = sqrt(y2);
      if (st % o.record_every == 0 && lane == 0) {
        const std::size_t at = static_cast<std::size_t>(kk) * b.S + st / o.record_every;
        b.tr_loss[at] = loss;
        b.tr_grad_norm[at] = gnorm;
        b.tr_theta_norm[at] = tnorm;
      }
      if (!isfinite(loss) || !isfinite(g2) || !isfinite(y2)) {
        status = static_cast<std::int32_t>(FlowStatus::nonfinite);
        break;
      }
      if (loss <= o.loss_below) {
        status = static_cast<std::int32_t>(FlowStatus::loss_below);
        break;
      }
      if (gnorm <= o.grad_norm_below) {
        status = static_cast<std::int32_t>(FlowStatus::grad_norm_below);
        break;
      }
      if (tnorm >= o.theta_norm_above) {
        status = static_cast<std::int32_t>(FlowStatus::theta_norm_above);
        break;
      }
      if (st >= o.steps) {
        status = static_cast<std::int32_t>(FlowStatus::reached_t_end);
        break;
      }
      if (done >= budget) break;  // evaluated again (identically) at the start of the next slice

      const T lr = T(o.lr);
      const T shrink = T(1.0 - o.lr * o.weight_decay);
      // Adam's bias corrections (as torch.optim.Adam, non-fused): the same on every lane.
      const double tt = static_cast<double>(st + 1);
      const T step_size = T(o.lr / (1.0 - pow(o.beta1, tt)));
      const T bc2_sqrt = T(sqrt(1.0 - pow(o.beta2, tt)));
      for (int i = lane; i < P; i += kWarp) {
        const T g = s.grad[i];
        T yi = y[i];
        if (o.weight_decay != 0) yi *= shrink;
        if (o.method == static_cast<int>(Optimizer::gd)) {
          yi -= lr * g;
        } else if (o.method == static_cast<int>(Optimizer::momentum)) {
          const T mi = st == 0 ? g : T(o.momentum) * m[i] + g;
          m[i] = mi;
          yi -= lr * mi;
        } else {
          T mi = m[i];
          mi += (g - mi) * T(1.0 - o.beta1);
          const T vi = v[i] * T(o.beta2) + T(1.0 - o.beta2) * g * g;
          m[i] = mi;
          v[i] = vi;
          const T denom = sqrt(vi) / bc2_sqrt + T(o.eps);
          yi -= step_size * mi / denom;
        }
        y[i] = yi;
      }
      ++st;
    }
    if (lane == 0) {
      b.step[kk] = st;
      b.status[kk] = status;
      b.loss[kk] = loss;
      b.grad_norm[kk] = gnorm;
      b.theta_norm[kk] = tnorm;
      if (status == kRun) atomicAdd(&b.counters[1], 1ull);
    }
    __syncwarp();
  }
}

template <class T>
Index train_typed(const DeviceProblem& p, DType dt, TrainBatch& b, const TrainOptions& o, const TrainTraces& tr,
                  std::int64_t budget) {
  KernelArch<T> ka(p.arch(), p.n_points(), false, false);
  const Arch& A = ka.A;
  const std::size_t K = static_cast<std::size_t>(b.K), S = static_cast<std::size_t>(tr.n);
  const std::size_t kp = K * static_cast<std::size_t>(b.P) * sizeof(T);
  Buffer y(kp), m(kp), v(kp), step(K * 8), status(K * 4), loss(K * 8), gnorm(K * 8), tnorm(K * 8);
  put_rows(y, b.y, dt), put_rows(m, b.m, dt), put_rows(v, b.v, dt);
  put(step, b.step), put(status, b.status), put(loss, b.loss), put(gnorm, b.grad_norm), put(tnorm, b.theta_norm);
  Buffer tl(K * S * 8), tg(K * S * 8), tt(K * S * 8);
  tl.upload(tr.loss, K * S * 8), tg.upload(tr.grad_norm, K * S * 8), tt.upload(tr.theta_norm, K * S * 8);
  Buffer counters(2 * sizeof(unsigned long long));
  counters.zero();
  TrainView<T> view{b.K,
                    static_cast<int>(b.P),
                    static_cast<T*>(y.data()),
                    static_cast<T*>(m.data()),
                    static_cast<T*>(v.data()),
                    static_cast<std::int64_t*>(step.data()),
                    static_cast<std::int32_t*>(status.data()),
                    static_cast<double*>(loss.data()),
                    static_cast<double*>(gnorm.data()),
                    static_cast<double*>(tnorm.data()),
                    tr.n,
                    static_cast<double*>(tl.data()),
                    static_cast<double*>(tg.data()),
                    static_cast<double*>(tt.data()),
                    static_cast<unsigned long long*>(counters.data())};
  const TrainOpts opts{static_cast<int>(o.method), o.lr, o.momentum, o.beta1, o.beta2, o.eps, o.weight_decay,
                       o.steps, o.record_every, o.loss_below, o.grad_norm_below, o.theta_norm_above};
  auto kernel = ka.global ? train_kernel<T, true> : train_kernel<T>;
  const Launch lc = plan_launch(kernel, ka, b.K, "train");
  Buffer ws;
  ka.bind_workspace(lc, ws);
  SADFAST_LAUNCH(kernel, lc)(A, static_cast<const T*>(p.x(dt)),
                                                               static_cast<const T*>(p.t(dt)), view, opts, budget);
  SADFAST_CUDA_CHECK_LAUNCH();
  synchronize();
  get_rows(y, b.y, dt), get_rows(m, b.m, dt), get_rows(v, b.v, dt);
  get(step, b.step), get(status, b.status), get(loss, b.loss), get(gnorm, b.grad_norm), get(tnorm, b.theta_norm);
  tl.download(tr.loss, K * S * 8), tg.download(tr.grad_norm, K * S * 8), tt.download(tr.theta_norm, K * S * 8);
  unsigned long long c[2] = {0, 0};
  counters.download(c, sizeof c);
  return static_cast<Index>(c[1]);
}

}  // namespace

Index train_advance(const DeviceProblem& p, DType d, TrainBatch& b, const TrainOptions& o, const TrainTraces& tr,
                    std::int64_t max_steps) {
  if (b.P != p.arch().n_params()) throw std::invalid_argument("batch: parameter count does not match the problem");
  if (b.K == 0) return 0;
  if (d == DType::f64) return train_typed<double>(p, d, b, o, tr, max_steps);
  return train_typed<float>(p, d, b, o, tr, max_steps);
}

}  // namespace sadfast::gpu
