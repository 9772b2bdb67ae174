#include "sadfast/train.hpp"

#include "parallel.hpp"

#include <cmath>
#include <cstring>

namespace sadfast {

void train_initialize(TrainBatch& b, const Real* theta0) {
  std::memcpy(b.y.data(), theta0, sizeof(Real) * b.K * b.P);
  std::fill(b.m.begin(), b.m.end(), Real(0));
  std::fill(b.v.begin(), b.v.end(), Real(0));
  std::fill(b.step.begin(), b.step.end(), 0);
  std::fill(b.status.begin(), b.status.end(), static_cast<std::int32_t>(FlowStatus::running));
}

namespace {

void train_one(const Problem& p, TrainBatch& b, Index kk, const TrainOptions& o, const TrainTraces& tr,
               std::int64_t budget, Workspace& ws, std::vector<Real>& g) {
  const Index P = b.P;
  Real* y = &b.y[kk * P];
  Real* m = &b.m[kk * P];
  Real* v = &b.v[kk * P];
  auto set = [&](FlowStatus s) { b.status[kk] = static_cast<std::int32_t>(s); };
  for (std::int64_t done = 0;; ++done) {
    const std::int64_t s = b.step[kk];
    const Real loss = kernels().loss_grad_one(p, y, g.data(), ws);
    Real g2 = 0, y2 = 0;
    for (Index i = 0; i < P; ++i) {
      g2 += g[i] * g[i];
      y2 += y[i] * y[i];
    }
    b.loss[kk] = loss;
    b.grad_norm[kk] = std::sqrt(g2);
    b.theta_norm[kk] = std::sqrt(y2);
    if (s % o.record_every == 0) {
      const Index at = kk * tr.n + s / o.record_every;
      tr.loss[at] = loss;
      tr.grad_norm[at] = b.grad_norm[kk];
      tr.theta_norm[at] = b.theta_norm[kk];
    }
    if (!std::isfinite(loss) || !std::isfinite(g2) || !std::isfinite(y2)) return set(FlowStatus::nonfinite);
    if (loss <= o.loss_below) return set(FlowStatus::loss_below);
    if (b.grad_norm[kk] <= o.grad_norm_below) return set(FlowStatus::grad_norm_below);
    if (b.theta_norm[kk] >= o.theta_norm_above) return set(FlowStatus::theta_norm_above);
    if (s >= o.steps) return set(FlowStatus::reached_t_end);
    if (done >= budget) return;  // evaluated again (identically) at the start of the next slice

    const Real lr = o.lr;
    if (o.weight_decay != 0) {
      const Real shrink = Real(1) - lr * o.weight_decay;
      for (Index i = 0; i < P; ++i) y[i] *= shrink;
    }
    switch (o.method) {
      case Optimizer::gd:
        for (Index i = 0; i < P; ++i) y[i] -= lr * g[i];
        break;
      case Optimizer::momentum:
        for (Index i = 0; i < P; ++i) {
          m[i] = s == 0 ? g[i] : o.momentum * m[i] + g[i];
          y[i] -= lr * m[i];
        }
        break;
      case Optimizer::adam: {
        // torch.optim.Adam (non-fused, non-amsgrad) arithmetic.
        const Real t = static_cast<Real>(s + 1);
        const Real bc1 = Real(1) - std::pow(o.beta1, t);
        const Real bc2_sqrt = std::sqrt(Real(1) - std::pow(o.beta2, t));
        const Real step_size = lr / bc1;
        for (Index i = 0; i < P; ++i) {
          m[i] += (g[i] - m[i]) * (Real(1) - o.beta1);
          v[i] = v[i] * o.beta2 + (Real(1) - o.beta2) * g[i] * g[i];
          const Real denom = std::sqrt(v[i]) / bc2_sqrt + o.eps;
          y[i] -= step_size * m[i] / denom;
        }
        break;
      }
    }
    b.step[kk] = s + 1;
  }
}

}  // namespace

Index train_advance(const Problem& p, TrainBatch& b, const TrainOptions& o, const TrainTraces& tr, std::int64_t budget) {
  struct Scratch {
    Workspace ws;
    std::vector<Real> g;
  };
  parallel_flows(
      b.K, [&] { return Scratch{Workspace(p.arch, p.n_points, false), std::vector<Real>(b.P)}; },
      [&](Index kk, Scratch& sc) {
        if (b.status[kk] == static_cast<std::int32_t>(FlowStatus::running)) train_one(p, b, kk, o, tr, budget, sc.ws, sc.g);
      });
  Index running = 0;
  for (Index kk = 0; kk < b.K; ++kk) running += b.status[kk] == static_cast<std::int32_t>(FlowStatus::running);
  return running;
}

}  // namespace sadfast
