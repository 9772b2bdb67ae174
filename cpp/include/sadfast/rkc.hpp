// The Runge-Kutta-Chebyshev method's scalar parts (rkc.f of Sommeijer, Shampine and Verwer,
// damping eps = 2/13), shared by the CPU integrator (src/flows.cpp) and the GPU one (cuda/rkc.cu):
// stage counts, the stability-limited step, the coefficients of the three-term recurrence and
// the error estimate. A step of s stages from (y_n, f_n = f(y_n)):
//   Y_0 = y_n,  Y_1 = y_n + h mus_1 f_n,
//   Y_j = mu_j Y_{j-1} + nu_j Y_{j-2} + (1 - mu_j - nu_j) y_n + h mus_j (f(Y_{j-1}) - a_{j-1} f_n),
//   y_{n+1} = Y_s.
#pragma once

#include <cmath>

#include "sadfast/common.hpp"

namespace sadfast::rkc {

inline constexpr int kMaxStages = 1000;
inline constexpr int kErrorOrder = 2;
// Accepted steps between spectral-radius estimates (and after every rejection).
inline constexpr int kRhoEvery = 25;
// Outputs inside an accepted step: cubic Hermite interpolation while h * rho <= this, beyond a
// sub-step of the method itself (flows.cpp's stiff_outputs explains why).
inline constexpr Real kHermiteMaxStiffness = 100;

// Stages for a step h with spectral radius rho (the stability interval ~0.65 s^2 covers h rho).
SADFAST_HD int stages(Real h, Real rho) { return 1 + static_cast<int>(std::ceil(std::sqrt(1 + 1.54 * h * rho))); }

// The longest step kMaxStages stages keep stable.
SADFAST_HD Real max_stable_step(Real rho) {
  const Real s_max = kMaxStages;
  return ((s_max - 1) * (s_max - 1) - 1) / (1.54 * rho);
}

// One stage's coefficients.
struct Stage {
  Real mu, nu, mus, ajm1;
};

// The recurrence's scalars for an s-stage step: mus1() for Y_1, then next() for j = 2, ..., s.
class Recurrence {
 public:
  SADFAST_HD explicit Recurrence(int s) {
    w0_ = 1 + 2.0 / (13.0 * s * s);
    const Real temp1 = w0_ * w0_ - 1, temp2 = std::sqrt(temp1);
    const Real arg = s * std::log(w0_ + temp2);
    w1_ = std::sinh(arg) * temp1 / (std::cosh(arg) * s * temp2 - w0_ * std::sinh(arg));
    bjm1_ = bjm2_ = 1 / ((2 * w0_) * (2 * w0_));
    zjm1_ = w0_;
  }
  SADFAST_HD Real mus1() const { return w1_ * bjm1_; }
  SADFAST_HD Stage next() {
    const Real zj = 2 * w0_ * zjm1_ - zjm2_;
    const Real dzj = 2 * w0_ * dzjm1_ - dzjm2_ + 2 * zjm1_;
    const Real d2zj = 2 * w0_ * d2zjm1_ - d2zjm2_ + 4 * dzjm1_;
    const Real bj = d2zj / (dzj * dzj);
    Stage st;
    st.ajm1 = 1 - zjm1_ * bjm1_;
    st.mu = 2 * w0_ * bj / bjm1_;
    st.nu = -bj / bjm2_;
    st.mus = st.mu * w1_ / w0_;
    bjm2_ = bjm1_;
    bjm1_ = bj;
    zjm2_ = zjm1_;
    zjm1_ = zj;
    dzjm2_ = dzjm1_;
    dzjm1_ = dzj;
    d2zjm2_ = d2zjm1_;
    d2zjm1_ = d2zj;
    return st;
  }

 private:
  Real w0_ = 0, w1_ = 0, bjm1_ = 0, bjm2_ = 0;
  Real zjm1_ = 0, zjm2_ = 1, dzjm1_ = 1, dzjm2_ = 0, d2zjm1_ = 0, d2zjm2_ = 0;
};

// Component of the local error estimate (rkc.f): from the step's ends and their derivatives.
template <class T>
SADFAST_HD T error_component(T y, T ynew, T f, T fnew, T h) {
  return (12 * (y - ynew) + 6 * h * (f + fnew)) / 15;
}

}  // namespace sadfast::rkc
