// The automatic method's switching between Dormand-Prince, RKC and ROSW, per flow: the rules
// and their constants, shared by the CPU integrator (src/flows.cpp) and the GPU one (cuda/*.cu,
// where each method's kernel applies them to the flows in its mode). Only the flow's own
// history enters, never t_end or the batch, so a resumed or re-batched flow switches as before.
#pragma once

#include <cstdint>

#include "sadfast/common.hpp"

namespace sadfast::autoswitch {

// Switching rules of FlowMethod::automatic (per flow):
//  * Dormand-Prince -> RKC after kStiffRun accepted steps with h * rho_est > kStiffTest (the
//    count is cleared by kNonStiffRun non-stiff steps in a row), rho_est = |k_7 - k_6| / |y_7 - y_6|
//    from the step's last two stages (both at c = 1): Hairer's stiffness test of DOPRI5. DOPRI5
//    tests h * rho_est > 3.25 (the edge of the stability region), but on gradient flows the error
//    controller holds stability-limited steps below the edge: poly1d flows have lambda_max ~ 13
//    from t = 0 and Dormand-Prince steps of h ~ 0.2 (h lambda_max ~ 2.5), so at 3.25 the test
//    fired only near t = 25. kStiffTest = 2 (measured with kRoswAfter = 300, gradient-equivalents
//    per flow, K = 64: poly1d to t = 1e2 / 1e4 1,287 -> 1,144 / 3,563 -> 3,356; no SAD case of a
//    1-16-1 / 2-16-1 / 2-8-8-1 / 1-10-20-10-1 survey at init x1-x10 got worse).
//  * RKC -> ROSW for small networks on long horizons (see kRoswAfter).
//  * RKC -> Dormand-Prince after kStiffRun consecutive accepted steps needing <= 2 stages, ROSW ->
//    Dormand-Prince after kStiffRun steps with h lambda_max <= 3 (the flow is no longer stiff),
//    the step capped at the explicit method's stability edge.
//  * The stiff methods are given up when their rejections pile up (a leaky count reaching
//    kRkcRejectRun / kRoswRejectRun) and their next step is no longer far past Dormand-Prince's
//    stability edge (h lambda_max <= kGiveUpStiffness): non-smooth flows, e.g. ReLU kinks, defeat
//    their error estimates. Not for good: after a give-up Dormand-Prince goes back to them after
//    kStiffRunAfterGiveUp = 60 stiff steps (straight to ROSW if the flow had reached it).
//    Both rules come from a saturated tanh flow (init x10): ROSW rejected a run of steps near
//    t = 1.2e4 at h ~ 45, auto gave up for good and crawled on with Dormand-Prince at h ~ 0.12
//    (1.05 M gradients to t = 3e4 instead of 8.8 k; 64 such flows at init x30 to t = 1e6: 46 s
//    and 8 MAX_STEPS before, 2.1 s after). The way back first grew as kStiffRun * 4^n after the
//    n-th give-up (up to n = 6), so that a flow failing there for good would waste a shrinking
//    share of its steps; but even with a third of its steps rejected ROSW gains on ReLU flows
//    what Dormand-Prince's stability-limited steps lose, and flows ended up in Dormand-Prince for
//    15 k-61 k steps at a time. Growing once (kStiffRunAfterGiveUp), 1-16-1 ReLU flows (32, t = 1e4)
//    took 5.2 / 8.2 / 1.7 M gradient-equivalents at init x1 / x3 / x10 -> 3.9 / 2.5 / 1.1 M
//    (leaky ReLU alike; ROSW alone: 2.8 M at x3); 2 and 3 were in between, 0 worse at x1 and x10;
//    no SAD flow of a 1-16-1 / 2-8-8-1 survey (8 activations, init x1-x10) changed (none gives
//    up); a 2-8-8-1 ReLU net, whose flows stay near Dormand-Prince's cost in any method, +3%.
inline constexpr int kStiffRun = 15;
inline constexpr int kStiffRunAfterGiveUp = 4 * kStiffRun;
// auto: stiff flows start with RKC (no setup cost: best on short horizons); they move on to ROSW
// once t * rho >= kRoswAfter (the Dormand-Prince steps that time would have cost, times 3.3), on
// a Lanczos approximation of rank <= opt.jac_rank for any P, on exact Hessians (P products each)
// only up to kAutoRoswMaxParams parameters. kRoswAfter was 1500 with fixed rank-32 refreshes
// (32 HVPs each); with refreshes that stop once the stiff part is resolved (rosw_lanczos, ~8 HVPs
// on poly1d/poly2d) ROSW pays off sooner: 300 vs 1500 (with kStiffTest = 2), wall time per flow,
// K = 64, rtol 1e-6: poly1d t = 1e2 / 1e3 / 1e4 1.13 / 2.12 / 3.52 ms -> 0.89 / 1.77 / 2.79;
// poly2d 12.3 / 17.0 / 34.6 -> 9.7 / 14.3 / 31.5 ms; poly4d (K = 8) t = 1e3 242 -> 231 ms.
// Exact Hessians from the first stiff step slowed a 128^2 poly1d map to t = 100 from 19 s to
// 26 s. The rule reads only the flow's own history, never t_end, so resuming a solve stays
// bitwise the same as solving at once.
inline constexpr Index kAutoRoswMaxParams = 256;
inline constexpr Real kRoswAfter = 300;
inline constexpr int kNonStiffRun = 6;
inline constexpr Real kStiffTest = 2;
// A stiff method is kept despite its rejections while its next step h has h lambda_max above this
// (Dormand-Prince is stable up to about 3.3).
inline constexpr Real kGiveUpStiffness = 10;
inline constexpr int kRkcRejectRun = 20;
// ROSW's rejections come in bursts (a Hessian grown old, then a refresh), so it gets a longer run.
inline constexpr int kRoswRejectRun = 60;

// A flow's method: the mode of its next step (FlowBatch::mode, last_mode).
inline constexpr int kDopri = 0, kRkc = 1, kRosw = 2;

// A flow's switching state (FlowBatch's mode, give_ups, stiff_run and switch_run).
struct State {
  int mode, give_ups, stiff_run, switch_run;
};

// What after_accepted decided. To a stiff method the caller starts it afresh: a new Hessian
// approximation for ROSW (jac_age = -1), a new spectral radius for RKC (since_rho = 0, from
// Hairer's difference k7 - k6).
enum class Switch { none, to_rkc, to_rosw, to_dopri };

// Hairer's stiffness test on an accepted Dormand-Prince step of size h: dk = |k7 - k6|^2 and
// dy = |y7 - y6|^2, the last two stages (both at c = 1).
SADFAST_HD bool hairer_stiff(Real h, Real dk, Real dy) { return dy > 0 && h * h * dk > kStiffTest * kStiffTest * dy; }

// A rejected step of a stiff mode (RKC or ROSW), whose estimate of lambda_max is `rate` and whose
// next try is h_next: the leaky rejection count (+2 per rejection, -1 per accepted step); the
// stiff methods are given up (true: Dormand-Prince next, h_next capped at its stability edge)
// when the count reaches the mode's limit and h_next is no longer far past that edge.
SADFAST_HD bool stiff_rejected(State& s, Real rate, Real& h_next) {
  s.stiff_run += 2;
  const int limit = s.mode == kRkc ? kRkcRejectRun : kRoswRejectRun;
  if (s.stiff_run < limit) return false;
  if (h_next * rate > kGiveUpStiffness) {
    s.stiff_run = limit - 1;  // still steps far past Dormand-Prince's edge: keep them
    return false;
  }
  s.mode = kDopri;
  s.give_ups = 1;
  s.stiff_run = s.switch_run = 0;
  const Real cap = 3.0 / rate;
  if (cap < h_next) h_next = cap;
  return true;
}

// The tests of an accepted step. Dormand-Prince (stiff: Hairer's test): as DOPRI5, count stiff
// steps and forget them only after kNonStiffRun non-stiff ones in a row (steps right after a
// rejection are shorter and look non-stiff). RKC: not stiff any more when <= 2 stages do. ROSW:
// not stiff any more when Dormand-Prince could take the step, h lambda_max <= 3.
SADFAST_HD void dopri_accepted(State& s, bool stiff) {
  if (stiff) {
    s.stiff_run += 1;
    s.switch_run = 0;
  } else if (++s.switch_run >= kNonStiffRun) {
    s.stiff_run = 0;
    s.switch_run = 0;
  }
}
SADFAST_HD void rkc_accepted(State& s, int stages) {
  s.switch_run = stages <= 2 ? s.switch_run + 1 : 0;
  s.stiff_run = s.stiff_run > 1 ? s.stiff_run - 1 : 0;
}
SADFAST_HD void rosw_accepted(State& s, Real h, Real rate) {
  s.switch_run = h * rate <= 3.0 ? s.switch_run + 1 : 0;
  s.stiff_run = s.stiff_run > 1 ? s.stiff_run - 1 : 0;
}

// After an accepted step to t_new (and its tests): the switch, if any. rate: the stiff mode's
// estimate of lambda_max (RKC's spectral radius, ROSW's largest Ritz value; unused by
// Dormand-Prince); rosw_allowed: whether this flow may use ROSW; has_jac: whether it holds a
// Hessian approximation from an earlier ROSW stretch; h_next: capped on the way back to
// Dormand-Prince.
SADFAST_HD Switch after_accepted(State& s, bool rosw_allowed, bool has_jac, Real t_new, Real rate, Real& h_next) {
  if (s.mode == kDopri) {
    if (s.stiff_run < (s.give_ups > 0 ? kStiffRunAfterGiveUp : kStiffRun)) return Switch::none;
    // RKC first, unless the flow had already moved on to ROSW before a give-up.
    s.mode = s.give_ups > 0 && has_jac ? kRosw : kRkc;
    s.stiff_run = s.switch_run = 0;
    return s.mode == kRkc ? Switch::to_rkc : Switch::to_rosw;
  }
  if (s.mode == kRkc && rosw_allowed && t_new * rate >= kRoswAfter && s.switch_run < kStiffRun) {
    s.mode = kRosw;  // a long stiff flow
    s.stiff_run = s.switch_run = 0;
    return Switch::to_rosw;
  }
  if (s.switch_run >= kStiffRun) {
    s.mode = kDopri;
    s.switch_run = 0;
    const Real cap = 3.0 / rate;
    if (cap < h_next) h_next = cap;
    return Switch::to_dopri;
  }
  return Switch::none;
}

}  // namespace sadfast::autoswitch
