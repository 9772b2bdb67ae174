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

// Loss of one point; g[j] = d loss / d z_j.
SADFAST_HD Real value_grad(Loss kind, const Real* z, const Real* t, Real* g, Index d) {
  using std::exp;
  using std::fabs;
  using std::log;
  using std::log1p;
  Real ell = 0;
  switch (kind) {
    case Loss::mse:
      for (Index j = 0; j < d; ++j) {
        const Real r = z[j] - t[j];
        ell += r * r;
        g[j] = Real(2) * r;
      }
      break;
    case Loss::huber:
      for (Index j = 0; j < d; ++j) {
        const Real r = z[j] - t[j];
        const Real a = fabs(r);
        if (a <= kHuberDelta) {
          ell += Real(0.5) * r * r;
          g[j] = r;
        } else {
          ell += kHuberDelta * (a - Real(0.5) * kHuberDelta);
          g[j] = r > 0 ? kHuberDelta : -kHuberDelta;
        }
      }
      break;
    case Loss::bce:
      for (Index j = 0; j < d; ++j) {
        const Real e = exp(-fabs(z[j]));
        const Real p = Real(1) / (Real(1) + e);
        const Real s = z[j] >= 0 ? p : e * p;
        ell += (z[j] > 0 ? z[j] : Real(0)) + log1p(e) - t[j] * z[j];
        g[j] = s - t[j];
      }
      break;
    case Loss::cross_entropy: {
      Real m = z[0];
      for (Index j = 1; j < d; ++j) m = z[j] > m ? z[j] : m;
      Real se = 0, tsum = 0, tz = 0;
      for (Index j = 0; j < d; ++j) {
        se += exp(z[j] - m);
        tsum += t[j];
        tz += t[j] * z[j];
      }
      const Real lse = m + log(se);
      ell = tsum * lse - tz;
      for (Index j = 0; j < d; ++j) g[j] = tsum * exp(z[j] - lse) - t[j];
      break;
    }
  }
  return ell;
}

// hr = (d^2 loss / dz^2) r for one point.
SADFAST_HD void hess_vec(Loss kind, const Real* z, const Real* t, const Real* r, Real* hr, Index d) {
  using std::exp;
  using std::fabs;
  using std::log;
  switch (kind) {
    case Loss::mse:
      for (Index j = 0; j < d; ++j) hr[j] = Real(2) * r[j];
      break;
    case Loss::huber:
      for (Index j = 0; j < d; ++j) hr[j] = fabs(z[j] - t[j]) <= kHuberDelta ? r[j] : Real(0);
      break;
    case Loss::bce:
      for (Index j = 0; j < d; ++j) {
        const Real e = exp(-fabs(z[j]));
        const Real p = Real(1) / (Real(1) + e);
        hr[j] = (e * p * p) * r[j];  // sigmoid(z) * sigmoid(-z)
      }
      break;
    case Loss::cross_entropy: {
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
      break;
    }
  }
}

}  // namespace loss
}  // namespace sadfast
