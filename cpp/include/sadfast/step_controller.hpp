// Step-size control of the adaptive integrators (shared/CONVENTIONS.md, as scipy's RungeKutta).
#pragma once

#include <cmath>

#include "sadfast/common.hpp"

namespace sadfast::control {

inline constexpr Real kSafety = 0.9;     // scipy's RungeKutta
inline constexpr Real kRkcSafety = 0.8;  // rkc.f (Sommeijer, Shampine, Verwer)
inline constexpr Real kMinFactor = 0.2;
inline constexpr Real kMaxFactor = 10.0;

// Factor for the next step after an accepted step with error norm `err` (< 1).
SADFAST_HD Real accept_factor(Real err, int error_order, bool rejected_before, Real safety = kSafety) {
  Real f = err == 0 ? kMaxFactor : safety * std::pow(err, Real(-1) / (error_order + 1));
  f = f < kMaxFactor ? f : kMaxFactor;
  if (rejected_before && f > 1) f = 1;
  return f;
}

// Factor after a rejected step (err >= 1, or not finite: shrink as much as allowed).
SADFAST_HD Real reject_factor(Real err, int error_order, Real safety = kSafety) {
  if (!(err < INFINITY)) return kMinFactor;
  const Real f = safety * std::pow(err, Real(-1) / (error_order + 1));
  return f > kMinFactor ? f : kMinFactor;
}

// Smallest step allowed at time t: 10 ulp of t (scipy's rule).
SADFAST_HD Real min_step(Real t) { return 10 * std::fabs(std::nextafter(t, INFINITY) - t); }

}  // namespace sadfast::control
