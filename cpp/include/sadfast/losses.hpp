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

template <class T>
SADFAST_HD T elem_value_grad(Loss kind, T z, T t, T& g) {
  using std::exp;
  using std::fabs;
  using std::log1p;
  if (kind == Loss::mse) {
    const T r = z - t;
    g = T(2) * r;
    return r * r;
  }
  if (kind == Loss::huber) {
    const T r = z - t;
    const T a = fabs(r);
    if (a <= T(kHuberDelta)) {
      g = r;
      return T(0.5) * r * r;
    }
    g = r > 0 ? T(kHuberDelta) : -T(kHuberDelta);
    return T(kHuberDelta) * (a - T(0.5) * T(kHuberDelta));
  }
  // bce on logits
  const T e = exp(-fabs(z));
  const T p = T(1) / (T(1) + e);
  g = (z >= 0 ? p : e * p) - t;
  return (z > 0 ? z : T(0)) + log1p(e) - t * z;
}

template <class T>
SADFAST_HD T elem_hess(Loss kind, T z, T t) {
  using std::exp;
  using std::fabs;
  if (kind == Loss::mse) return T(2);
  if (kind == Loss::huber) return fabs(z - t) <= T(kHuberDelta) ? T(1) : T(0);
  const T e = exp(-fabs(z));
  const T p = T(1) / (T(1) + e);
  return e * p * p;  // sigmoid(z) * sigmoid(-z)
}

// Loss of one point (all its d outputs); g[j] = d loss / d z_j.
template <class T>
SADFAST_HD T value_grad(Loss kind, const T* z, const T* t, T* g, Index d) {
  using std::exp;
  using std::log;
  if (is_elementwise(kind)) {
    T ell = 0;
    for (Index j = 0; j < d; ++j) ell += elem_value_grad(kind, z[j], t[j], g[j]);
    return ell;
  }
  T m = z[0];
  for (Index j = 1; j < d; ++j) m = z[j] > m ? z[j] : m;
  T se = 0, tsum = 0, tz = 0;
  for (Index j = 0; j < d; ++j) {
    se += exp(z[j] - m);
    tsum += t[j];
    tz += t[j] * z[j];
  }
  const T lse = m + log(se);
  for (Index j = 0; j < d; ++j) g[j] = tsum * exp(z[j] - lse) - t[j];
  return tsum * lse - tz;
}

// hr = (d^2 loss / dz^2) r for one point.
template <class T>
SADFAST_HD void hess_vec(Loss kind, const T* z, const T* t, const T* r, T* hr, Index d) {
  using std::exp;
  using std::log;
  if (is_elementwise(kind)) {
    for (Index j = 0; j < d; ++j) hr[j] = elem_hess(kind, z[j], t[j]) * r[j];
    return;
  }
  T m = z[0];
  for (Index j = 1; j < d; ++j) m = z[j] > m ? z[j] : m;
  T se = 0, tsum = 0;
  for (Index j = 0; j < d; ++j) {
    se += exp(z[j] - m);
    tsum += t[j];
  }
  const T lse = m + log(se);
  T pr = 0;
  for (Index j = 0; j < d; ++j) pr += exp(z[j] - lse) * r[j];
  for (Index j = 0; j < d; ++j) hr[j] = tsum * exp(z[j] - lse) * (r[j] - pr);
}

}  // namespace loss
}  // namespace sadfast
