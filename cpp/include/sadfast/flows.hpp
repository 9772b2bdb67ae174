// Batched gradient flows d theta/dt = -grad L(theta), each flow with its own adaptive step,
// events, status and counters.
//
// Steps are never shortened to land on t_end, a save time or the end of a slice: each flow takes
// exactly the steps an unbounded integration would, and values at t_end and at save times come
// from the method's continuous extension. Hence slicing a solve (for progress and Ctrl-C),
// checkpointing it and resuming it to a later t_end cannot change a single bit of any flow.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "sadfast/kernels.hpp"
#include "sadfast/rk_tableau.hpp"

namespace sadfast {

enum class FlowStatus : std::int32_t {
  running = 0,
  reached_t_end = 1,
  loss_below = 2,
  grad_norm_below = 3,
  theta_norm_above = 4,
  nonfinite = -1,
  step_underflow = -2,
  max_steps = -3,
};

enum class FlowMethod : int {
  dopri5 = 0,  // Dormand-Prince 5(4), explicit
  rkc = 1,     // Runge-Kutta-Chebyshev (2nd order, stabilized explicit; stages from the spectral radius)
  automatic = 2,  // per flow: Dormand-Prince, switching to RKC while the flow is stiff (see flows.cpp)
  rosw = 3,       // Rosenbrock W-method ROS34PW2 (order 3(2), L-stable) on a reused Hessian approximation
  tsit5 = 4,      // Tsitouras 5(4), explicit: the same stepper as dopri5 with another table
};

// The explicit table of a method (Dormand-Prince for every method but tsit5: auto's explicit
// phase is Dormand-Prince).
inline const ExplicitTableau& explicit_tableau(FlowMethod m) {
  return m == FlowMethod::tsit5 ? kTsitouras54 : kDormandPrince54;
}

struct SolverOptions {
  FlowMethod method = FlowMethod::dopri5;
  Real rtol = 1e-6;
  Real atol = 1e-9;
  Real t_end = 0;
  Real max_step = std::numeric_limits<Real>::infinity();
  std::int64_t max_steps = 1000000;  // attempted steps (accepted + rejected) per flow
  // Events; NaN switches one off.
  Real loss_below = std::numeric_limits<Real>::quiet_NaN();
  Real grad_norm_below = std::numeric_limits<Real>::quiet_NaN();
  Real theta_norm_above = std::numeric_limits<Real>::quiet_NaN();
  // ROSW's matrix W = -(Hessian approximation): 0 (or >= P) the exact Hessian through its dense
  // eigendecomposition (P Hessian-vector products per refresh, P x P numbers per flow); m < P the
  // rank-m Lanczos approximation (m products per refresh, m (P + 1) numbers per flow), for any P.
  Index jac_rank = 0;
};

// Where values at the save times go. Times are sorted; traces are (K, S) row-major, theta
// (K, S, P) or null.
struct SaveSpec {
  const Real* times = nullptr;
  Index n = 0;
  Real* loss = nullptr;
  Real* grad_norm = nullptr;
  Real* theta_norm = nullptr;
  Real* theta = nullptr;
};

// Complete state of K flows: enough to continue bitwise. (K, P) arrays are row-major.
struct FlowBatch {
  Index K = 0, P = 0;
  // Integrator state at the last accepted step.
  std::vector<Real> t, h, loss, y, f;     // f = -grad L(y) (first stage of the next step)
  std::vector<Real> t_prev, y_prev;       // start of the last accepted step: lets a resumed solve
                                          // interpolate inside it (new t_end or save times)
  std::vector<std::int32_t> status;       // FlowStatus
  std::vector<std::int8_t> rejected;      // current step has been rejected at least once
  std::vector<std::int8_t> nonfinite;     // last rejection was caused by non-finite values
  std::vector<std::int64_t> n_grad, n_accepted, n_rejected, n_output_evals, next_save;
  // Stabilized methods: spectral radius estimate of H, its eigenvector (warm start), Hessian-
  // vector products spent on it, accepted steps since the estimate.
  std::vector<Real> rho, eig;
  std::vector<std::int64_t> n_hvp, since_rho;
  // Method choice per flow (FlowMethod::automatic): the method of the next step and of the last
  // accepted one, counters of the switching tests, and whether the stiff methods were given up
  // after their rejections piled up (give_ups, 0 or 1: the way back is longer after a give-up).
  std::vector<std::int8_t> mode, last_mode, give_ups;
  std::vector<std::int32_t> stiff_run, switch_run;
  // ROSW: per flow, n orthonormal vectors (P x n, column-major) then the n values (ascending) of
  // its last Hessian approximation H ~ V diag(values) V^T (n = P: the exact eigendecomposition;
  // n < P: Ritz pairs of its last Lanczos run, n <= the rank), allocated by the flow's first ROSW
  // step (empty otherwise: flows that never use the method cost no memory), and accepted steps
  // since that approximation (-1: none).
  std::vector<std::vector<Real>> jac;
  std::vector<std::int64_t> jac_age;
  // Reported values: at t_end, at the event, or at the last accepted step of a failed flow.
  std::vector<Real> t_out, theta_out, loss_out, grad_norm_out, theta_norm_out;

  FlowBatch() = default;
  FlowBatch(Index k, Index p);

};

// Set up flows at time t0 from theta0 (K, P): one gradient for f0, one more for Hairer's initial
// step (skipped when first_step > 0), events and save times at t0.
void flows_initialize(const Problem& p, FlowBatch& b, const Real* theta0, Real t0, Real first_step,
                      const SolverOptions& opt, const SaveSpec& save);

// Advance every running flow by at most `max_attempts` attempted steps (or until it stops).
// Returns the number of flows still running.
Index flows_advance(const Problem& p, FlowBatch& b, const SolverOptions& opt, const SaveSpec& save,
                    std::int64_t max_attempts);

}  // namespace sadfast
