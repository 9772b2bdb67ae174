// The Rosenbrock W-method ROSW's scalar parts, shared by the CPU integrator (src/flows.cpp, which
// explains the method and how its constants were measured) and the GPU one (cuda/rosw.cu): the
// ROS34PW2 table, the refresh rules of the Hessian approximation, the Lanczos run's stopping test
// (a Sturm count) and, for the GPU, the eigendecomposition of the Lanczos tridiagonal matrix.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "sadfast/common.hpp"

namespace sadfast::rosw {

// ROS34PW2 of Rang and Angermann (BIT 45, 2005): 4 stages, order 3 with an embedded order-2
// solution, stiffly accurate, L-stable, a W-method.
struct Table {
  static constexpr int kStages = 4;
  Real gamma;
  Real alpha[kStages][kStages];
  Real gam[kStages][kStages];  // off-diagonal gamma_ij (j < i)
  Real b[kStages], bhat[kStages];
};

inline constexpr Table kRos34PW2 = {
    4.3586652150845900e-01,
    {{0, 0, 0, 0},
     {8.7173304301691801e-01, 0, 0, 0},
     {8.4457060015369423e-01, -1.1299064236484185e-01, 0, 0},
     {0, 0, 1, 0}},
    {{0, 0, 0, 0},
     {-8.7173304301691801e-01, 0, 0, 0},
     {-9.0338057013044082e-01, 5.4180672388095326e-02, 0, 0},
     {2.4212380706095346e-01, -1.2232505839045147e+00, 5.4526025533510214e-01, 0}},
    {2.4212380706095346e-01, -1.2232505839045147e+00, 1.5452602553351020e+00, 4.3586652150845900e-01},
    {3.7810903145819369e-01, -9.6042292212423178e-02, 5.0000000000000000e-01, 2.1793326075422950e-01},
};
inline constexpr int kErrorOrder = 2;
inline constexpr int kGradients = Table::kStages;  // per step: stages 2..4 and the end point

// Refreshes of the approximation (accepted steps since the last one; flows.cpp has the
// measurements): at the first step, after a rejected step taken with one at least kJacMinAgeOnReject
// old, and at kJacMaxAge (exact Hessians) or kJacMaxAgeLanczos (Lanczos) accepted steps.
inline constexpr std::int64_t kJacMaxAge = 100;
inline constexpr std::int64_t kJacMaxAgeLanczos = 20;
inline constexpr std::int64_t kJacMinAgeOnReject = 10;
SADFAST_HD bool needs_refresh(std::int64_t age, bool rejected, bool lanczos) {
  return age < 0 || (rejected && age >= kJacMinAgeOnReject) || age >= (lanczos ? kJacMaxAgeLanczos : kJacMaxAge);
}

// The Lanczos run stops at n = kLanczosMin, kLanczosMin + kLanczosStride, ... steps once at least
// kLanczosSpare Ritz values lie in [0, kStiffCut / h] (flows.cpp's rosw_lanczos explains why).
inline constexpr int kLanczosMin = 8;
inline constexpr int kLanczosStride = 4;
inline constexpr int kLanczosSpare = 4;
inline constexpr Real kStiffCut = 0.05;

// Number of eigenvalues of the symmetric tridiagonal matrix (alpha[0..n), beta[0..n-1)) above x:
// n minus the negative pivots of the LDL^T factorization of T - x I (Sylvester's law of inertia;
// the Sturm count of LAPACK's dstebz). O(n), nothing allocated.
SADFAST_HD int count_above(const Real* alpha, const Real* beta, int n, Real x) {
  int below = 0;
  Real d = 1;
  for (int i = 0; i < n; ++i) {
    d = (alpha[i] - x) - (i > 0 ? beta[i - 1] * beta[i - 1] / d : Real(0));
    if (d == 0) d = -std::numeric_limits<Real>::min();  // T - x I singular here: count x as above
    if (d < 0) ++below;
  }
  return n - below;
}

SADFAST_HD bool stiff_part_resolved(const Real* alpha, const Real* beta, int n, Real lam_cut) {
  return n >= kLanczosMin && (n - kLanczosMin) % kLanczosStride == 0 &&
         count_above(alpha, beta, n, 0) - count_above(alpha, beta, n, lam_cut) >= kLanczosSpare;
}

// Eigenvalues (ascending, into diag) and eigenvectors of the symmetric tridiagonal matrix
// (diag[0..n), sub[0..n-1)), sub destroyed: the implicit symmetric QR algorithm with Wilkinson
// shifts, as Eigen's SelfAdjointEigenSolver::computeFromTridiagonal (tridiagonal_qr_step, Golub
// and Van Loan 8.3; the CPU's Lanczos refreshes call Eigen itself), step for step, so that the
// two agree to rounding. The eigenvector matrix Z (from the identity) is the caller's:
// rotate(k, c, s) applies the Givens rotation Z <- Z G on columns k and k + 1
// (z_k' = c z_k - s z_{k+1}, z_{k+1}' = s z_k + c z_{k+1}), swap(i, k) swaps columns i and k.
// Returns false when it did not converge in 30 n iterations (Eigen's limit; values then unsorted).
template <class Rotate, class Swap>
SADFAST_HD bool tridiagonal_eigen(Real* diag, Real* sub, int n, Rotate&& rotate, Swap&& swap) {
  const Real zero = std::numeric_limits<Real>::min();
  const Real precision_inv = Real(1) / std::numeric_limits<Real>::epsilon();
  int end = n - 1, start = 0, iter = 0;
  while (end > 0) {
    for (int i = start; i < end; ++i) {
      if (std::fabs(sub[i]) < zero) {
        sub[i] = 0;
      } else {
        const Real scaled = precision_inv * sub[i];  // |sub| <= eps sqrt(|d_i| + |d_i+1|), scaled
        if (scaled * scaled <= std::fabs(diag[i]) + std::fabs(diag[i + 1])) sub[i] = 0;
      }
    }
    while (end > 0 && sub[end - 1] == 0) --end;
    if (end <= 0) break;
    if (++iter > 30 * n) return false;
    start = end - 1;
    while (start > 0 && sub[start - 1] != 0) --start;
    // One QR step on rows start..end: the Wilkinson shift, then the bulge chased down.
    const Real td = (diag[end - 1] - diag[end]) * Real(0.5);
    const Real e = sub[end - 1];
    Real mu = diag[end];
    if (td == 0) {
      mu -= std::fabs(e);
    } else if (e != 0) {
      const Real e2 = e * e;
      const Real h = std::hypot(td, e);
      if (e2 == 0) {
        mu -= e / ((td + (td > 0 ? h : -h)) / e);
      } else {
        mu -= e2 / (td + (td > 0 ? h : -h));
      }
    }
    Real x = diag[start] - mu;
    Real z = sub[start];
    for (int k = start; k < end && z != 0; ++k) {
      // Givens rotation with [c -s; s c]^T [x; z] = [r; 0] (Eigen's makeGivens, real case).
      Real c, s;
      if (z == 0) {
        c = x < 0 ? -1 : 1;
        s = 0;
      } else if (x == 0) {
        c = 0;
        s = z < 0 ? 1 : -1;
      } else if (std::fabs(x) > std::fabs(z)) {
        const Real t = z / x;
        Real u = std::sqrt(1 + t * t);
        if (x < 0) u = -u;
        c = 1 / u;
        s = -t * c;
      } else {
        const Real t = x / z;
        Real u = std::sqrt(1 + t * t);
        if (z < 0) u = -u;
        s = -1 / u;
        c = -t * s;
      }
      const Real sdk = s * diag[k] + c * sub[k];
      const Real dkp1 = s * sub[k] + c * diag[k + 1];
      diag[k] = c * (c * diag[k] - s * sub[k]) - s * (c * sub[k] - s * diag[k + 1]);
      diag[k + 1] = s * sdk + c * dkp1;
      sub[k] = c * sdk - s * dkp1;
      if (k > start) sub[k - 1] = c * sub[k - 1] - s * z;
      x = sub[k];
      if (k < end - 1) {
        z = -s * sub[k + 1];
        sub[k + 1] = c * sub[k + 1];
      }
      rotate(k, c, s);
    }
  }
  // Ascending order (selection sort, as Eigen).
  for (int i = 0; i < n - 1; ++i) {
    int k = i;
    for (int j = i + 1; j < n; ++j) {
      if (diag[j] < diag[k]) k = j;
    }
    if (k > i) {
      const Real t = diag[i];
      diag[i] = diag[k];
      diag[k] = t;
      swap(i, k);
    }
  }
  return true;
}

}  // namespace sadfast::rosw
