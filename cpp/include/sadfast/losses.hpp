// Per-data-point losses with gradient and Hessian-vector product in the network output z
// (shared/CONVENTIONS.md). The mean over points and weight decay are applied by the caller.
//
// Targets are always a dense row t of length d_out: regression targets for mse/huber,
// probabilities in [0,1] for bce, and class probabilities (one-hot for integer labels) for
// cross_entropy, where the loss is sum_j t_j (logsumexp(z) - z_j).
#pragma once

#include <cmath>

#include "sadfast/common.hpp"

namespace sadfast {

enum class Loss : int { mse = 0, huber, bce, cross_entropy };

inline constexpr int kNumLosses = 4;

inline const char* loss_name(Loss l) {
  switch (l) {
    case Loss::mse: return "mse";
    case Loss::huber: return "huber";
    case Loss::bce: return "bce";
    case Loss::cross_entropy: return "cross_entropy";
  }
  return "?";
}

namespace loss {

inline constexpr Real kHuberDelta = 1.0;

// The elementwise losses (all but cross_entropy) act on each output entry alone: loss of one
// entry z with target t, its derivative g and second derivative h.
SADFAST_HD bool is_elementwise(Loss kind) { return kind != Loss::cross_entropy; }

SADFAST_HD Real elem_value_grad(Loss kind, Real z, Real t, Real& g) {
  using std::exp;
  using std::fabs;
  using std::log1p;
  if (kind == Loss::mse) {
    const Real r = z - t;
    g = Real(2) * r;
    return r * r;
  }
  if (kind == Loss::huber) {
    const Real r = z - t;
    const Real a = fabs(r);
    if (a <= kHuberDelta) {
      g = r;
      return Real(0.5) * r * r;
    }
    g = r > 0 ? kHuberDelta : -kHuberDelta;
    return kHuberDelta * (a - Real(0.5) * kHuberDelta);
  }
  // bce on logits
  const Real e = exp(-fabs(z));
  const Real p = Real(1) / (Real(1) + e);
  g = (z >= 0 ? p : e * p) - t;
  return (z > 0 ? z : Real(0)) + log1p(e) - t * z;
}

SADFAST_HD Real elem_hess(Loss kind, Real z, Real t) {
  using std::exp;
  using std::fabs;
  if (kind == Loss::mse) return Real(2);
  if (kind == Loss::huber) return fabs(z - t) <= kHuberDelta ? Real(1) : Real(0);
  const Real e = exp(-fabs(z));
  const Real p = Real(1) / (Real(1) + e);
  return e * p * p;  // sigmoid(z) * sigmoid(-z)
}

// Loss of one point (all its d outputs); g[j] = d loss / d z_j.
SADFAST_HD Real value_grad(Loss kind, const Real* z, const Real* t, Real* g, Index d) {
  using std::exp;
  using std::log;
  if (is_elementwise(kind)) {
    Real ell = 0;
    for (Index j = 0; j < d; ++j) ell += elem_value_grad(kind, z[j], t[j], g[j]);
    return ell;
  }
  Real m = z[0];
  for (Index j = 1; j < d; ++j) m = z[j] > m ? z[j] : m;
  Real se = 0, tsum = 0, tz = 0;
  for (Index j = 0; j < d; ++j) {
    se += exp(z[j] - m);
    tsum += t[j];
    tz += t[j] * z[j];
  }
  const Real lse = m + log(se);
  for (Index j = 0; j < d; ++j) g[j] = tsum * exp(z[j] - lse) - t[j];
  return tsum * lse - tz;
}

// hr = (d^2 loss / dz^2) r for one point.
SADFAST_HD void hess_vec(Loss kind, const Real* z, const Real* t, const Real* r, Real* hr, Index d) {
  using std::exp;
  using std::log;
  if (is_elementwise(kind)) {
    for (Index j = 0; j < d; ++j) hr[j] = elem_hess(kind, z[j], t[j]) * r[j];
    return;
  }
  Real m = z[0];
  for (Index j = 1; j < d; ++j) m = z[j] > m ? z[j] : m;
  Real se = 0, tsum = 0;
  for (Index j = 0; j < d; ++j) {
    se += exp(z[j] - m);
    tsum += t[j];
  }
  const Real lse = m + log(se);
  Real pr = 0;
  for (Index j = 0; j < d; ++j) pr += exp(z[j] - lse) * r[j];
  for (Index j = 0; j < d; ++j) hr[j] = tsum * exp(z[j] - lse) * (r[j] - pr);
}

}  // namespace loss
}  // namespace sadfast
