// Per-flow adaptive explicit Runge-Kutta integration of gradient flows (see flows.hpp).
#include "sadfast/flows.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <optional>

#include <Eigen/Dense>

#include "parallel.hpp"
#include "sadfast/auto_switch.hpp"
#include "sadfast/rkc.hpp"
#include "sadfast/rosw.hpp"
#include "sadfast/step_controller.hpp"

namespace sadfast {

FlowBatch::FlowBatch(Index k, Index p)
    : K(k),
      P(p),
      t(k),
      h(k),
      loss(k),
      y(k * p),
      f(k * p),
      t_prev(k),
      y_prev(k * p),
      status(k),
      rejected(k),
      nonfinite(k),
      n_grad(k),
      n_accepted(k),
      n_rejected(k),
      n_output_evals(k),
      next_save(k),
      rho(k),
      eig(k * p),
      n_hvp(k),
      since_rho(k),
      mode(k),
      last_mode(k),
      give_ups(k),
      stiff_run(k),
      switch_run(k),
      jac(k),
      jac_age(k, -1),
      t_out(k),
      theta_out(k * p),
      loss_out(k),
      grad_norm_out(k),
      theta_norm_out(k) {}

namespace {

// Per-thread scratch, allocated once per call, reused for every flow and step.
struct Scratch {
  Workspace ws;
  std::vector<Real> k;  // stage derivatives (kMaxStages, P)
  std::vector<Real> ytmp, ynew, yout, fout, y1, y2, hv;
  // ROSW: clipped values and 1 + gamma h lambda of the step, the stage coefficients in the basis
  // of W (m x 4), and the Lanczos vectors of a rank-m refresh (P x m; empty for the exact path).
  std::vector<Real> lam, den, coef, lanczos;
  // ROSW refreshes: the tridiagonal matrix of a Lanczos run, or the dense Hessian (sized by the
  // thread's first exact refresh: only small networks take that path), and the eigensolver
  // (made in place: Eigen leaves a solver's info unset until compute(), so moving or copying an
  // unused one reads an indeterminate enum, undefined behaviour that UBSan reports).
  Eigen::VectorXd diag, subdiag;
  Eigen::MatrixXd hess;
  std::optional<Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>> eig;
  // Eigensolvers of the n x n tridiagonal matrices of Lanczos runs stopped after n steps, made on
  // first use for each n (so a refresh allocates only the first time a thread meets its size).
  std::vector<std::unique_ptr<Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>>> eig_n;
  Scratch(const Problem& p, bool with_hvp, Index jac_rank)
      : ws(p.arch, p.n_points, with_hvp),
        k(ExplicitTableau::kMaxStages * p.arch.n_params()),
        ytmp(p.arch.n_params()),
        ynew(p.arch.n_params()),
        yout(p.arch.n_params()),
        fout(p.arch.n_params()),
        y1(p.arch.n_params()),
        y2(p.arch.n_params()),
        hv(p.arch.n_params()),
        lam(with_hvp ? p.arch.n_params() : 0),
        den(with_hvp ? p.arch.n_params() : 0),
        coef(with_hvp ? 4 * p.arch.n_params() : 0),
        lanczos(with_hvp && jac_rank > 0 && jac_rank < p.arch.n_params() ? jac_rank * p.arch.n_params() : 0) {
    if (!lanczos.empty()) {
      diag.resize(jac_rank);
      subdiag.resize(jac_rank - 1);
      eig_n.resize(jac_rank + 1);
    }
  }
};

// f = -grad L(y); returns L(y).
Real rhs(const Problem& p, const Real* y, Real* f, Workspace& ws) {
  const Real loss = kernels().loss_grad_one(p, y, f, ws);
  const Index P = p.arch.n_params();
  for (Index i = 0; i < P; ++i) f[i] = -f[i];
  return loss;
}

Real sumsq(const Real* x, Index n) {
  Real s = 0;
  for (Index i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

bool is_running(const FlowBatch& b, Index kk) { return b.status[kk] == static_cast<std::int32_t>(FlowStatus::running); }
void set_status(FlowBatch& b, Index kk, FlowStatus s) { b.status[kk] = static_cast<std::int32_t>(s); }

void set_output(FlowBatch& b, Index kk, Real t, const Real* y, const Real* f, Real loss) {
  const Index P = b.P;
  b.t_out[kk] = t;
  std::memcpy(&b.theta_out[kk * P], y, sizeof(Real) * P);
  b.loss_out[kk] = loss;
  b.grad_norm_out[kk] = std::sqrt(sumsq(f, P));
  b.theta_norm_out[kk] = std::sqrt(sumsq(y, P));
}

void set_output_current(FlowBatch& b, Index kk) {
  set_output(b, kk, b.t[kk], &b.y[kk * b.P], &b.f[kk * b.P], b.loss[kk]);
}

void record(const SaveSpec& s, Index kk, Index j, Index P, const Real* y, const Real* f, Real loss) {
  const Index at = kk * s.n + j;
  s.loss[at] = loss;
  s.grad_norm[at] = std::sqrt(sumsq(f, P));
  s.theta_norm[at] = std::sqrt(sumsq(y, P));
  if (s.theta != nullptr) std::memcpy(s.theta + at * P, y, sizeof(Real) * P);
}

// Continuous extension: out = y + h sum_j w_j(x) k_j with w_j(x) = sum_q p[j][q] x^(q+1).
void dense(const ExplicitTableau& tab, const Real* y, const Real* k, Index P, Real h, Real x, Real* out) {
  Real w[ExplicitTableau::kMaxStages];
  for (int j = 0; j < tab.stages; ++j) {
    Real acc = 0;
    for (int q = tab.dense_order - 1; q >= 0; --q) acc = (acc + tab.p[j][q]) * x;
    w[j] = acc;
  }
  for (Index i = 0; i < P; ++i) {
    Real s = 0;
    for (int j = 0; j < tab.stages; ++j) s += w[j] * k[j * P + i];
    out[i] = y[i] + h * s;
  }
}

// One step of size h from (y, f = k_0): fills the stages k (stages, P) and ynew; returns L(ynew)
// (k's last row is -grad L(ynew), the FSAL derivative).
Real rk_step(const Problem& p, const ExplicitTableau& tab, const Real* y, const Real* f, Real h, Real* k, Real* ytmp,
             Real* ynew, Workspace& ws) {
  const Index P = p.arch.n_params();
  const int ns = tab.stages;
  std::memcpy(k, f, sizeof(Real) * P);
  for (int s = 1; s < ns - 1; ++s) {
    for (Index i = 0; i < P; ++i) {
      Real acc = 0;
      for (int j = 0; j < s; ++j) acc += tab.a[s][j] * k[j * P + i];
      ytmp[i] = y[i] + acc * h;
    }
    rhs(p, ytmp, k + s * P, ws);
  }
  for (Index i = 0; i < P; ++i) {
    Real acc = 0;
    for (int j = 0; j < ns - 1; ++j) acc += tab.b[j] * k[j * P + i];
    ynew[i] = y[i] + h * acc;
  }
  return rhs(p, ynew, k + (ns - 1) * P, ws);
}

// Save times and t_end inside the accepted step (t, t_new]: recorded from the values
// interp(ts, out, fout) gives there (theta into out, -grad L into fout, returning L; exactly at
// t_new from the step's own end point, whose derivative is fnew = -grad L(ynew)).
template <class Interp>
void emit_outputs(const Problem& p, const SolverOptions& opt, const SaveSpec& save, FlowBatch& b, Index kk,
                  Real t_new, const Real* ynew, const Real* fnew, Real loss_new, Scratch& sc, Interp&& interp) {
  const Index P = b.P;
  auto at = [&](Real ts, auto&& use) {
    if (ts == t_new) {
      use(ynew, fnew, loss_new);
    } else {
      const Real lo = interp(ts, sc.yout.data(), sc.fout.data());
      use(sc.yout.data(), sc.fout.data(), lo);
    }
  };
  while (b.next_save[kk] < save.n && save.times[b.next_save[kk]] <= t_new) {
    at(save.times[b.next_save[kk]],
       [&](const Real* yy, const Real* ff, Real lo) { record(save, kk, b.next_save[kk], P, yy, ff, lo); });
    b.next_save[kk] += 1;
  }
  if (t_new >= opt.t_end) {
    at(opt.t_end, [&](const Real* yy, const Real* ff, Real lo) { set_output(b, kk, opt.t_end, yy, ff, lo); });
    set_status(b, kk, FlowStatus::reached_t_end);
  }
}

// An interp for emit_outputs from a continuous extension write(ts, out) of theta: the loss and
// gradient at the interpolated point are one more evaluation.
template <class Write>
auto evaluated(const Problem& p, FlowBatch& b, Index kk, Scratch& sc, Write write) {
  return [&p, &b, kk, &sc, write](Real ts, Real* out, Real* fout) {
    write(ts, out);
    b.n_output_evals[kk] += 1;
    return rhs(p, out, fout, sc.ws);
  };
}

// Cubic Hermite interpolation on [t0, t0 + h] from values and derivatives at both ends (3rd
// order; the continuous extension of the 2nd-order stabilized methods).
void hermite(const Real* y0, const Real* f0, const Real* y1, const Real* f1, Index P, Real h, Real x, Real* out) {
  const Real h00 = (1 + 2 * x) * (1 - x) * (1 - x), h10 = x * (1 - x) * (1 - x);
  const Real h01 = x * x * (3 - 2 * x), h11 = x * x * (x - 1);
  for (Index i = 0; i < P; ++i) out[i] = h00 * y0[i] + h10 * h * f0[i] + h01 * y1[i] + h11 * h * f1[i];
}

// Events at an accepted point; returns true if one fired.
bool check_events(const SolverOptions& opt, FlowBatch& b, Index kk, Real loss, Real gnorm, Real tnorm) {
  if (loss <= opt.loss_below) {
    set_status(b, kk, FlowStatus::loss_below);
  } else if (gnorm <= opt.grad_norm_below) {
    set_status(b, kk, FlowStatus::grad_norm_below);
  } else if (tnorm >= opt.theta_norm_above) {
    set_status(b, kk, FlowStatus::theta_norm_above);
  } else {
    return false;
  }
  return true;
}

template <class Body>
void for_each_flow(const Problem& p, Index K, bool with_hvp, Body&& body, Index jac_rank = 0) {
  parallel_flows(K, [&] { return Scratch(p, with_hvp, jac_rank); }, body);
}

}  // namespace

void flows_initialize(const Problem& p, FlowBatch& b, const Real* theta0, Real t0, Real first_step,
                      const SolverOptions& opt, const SaveSpec& save) {
  const Index P = p.arch.n_params();
  const int order = explicit_tableau(opt.method).error_order;
  for_each_flow(p, b.K, false, [&](Index kk, Scratch& sc) {
    Real* y = &b.y[kk * P];
    Real* f = &b.f[kk * P];
    std::memcpy(y, theta0 + kk * P, sizeof(Real) * P);
    b.t[kk] = t0;
    b.t_prev[kk] = t0;
    std::memcpy(&b.y_prev[kk * P], y, sizeof(Real) * P);
    b.loss[kk] = rhs(p, y, f, sc.ws);
    b.n_grad[kk] = 1;
    b.n_accepted[kk] = b.n_rejected[kk] = b.n_output_evals[kk] = 0;
    b.next_save[kk] = 0;
    b.rejected[kk] = b.nonfinite[kk] = 0;
    b.rho[kk] = 0;
    b.n_hvp[kk] = 0;
    b.since_rho[kk] = 0;
    b.mode[kk] = b.last_mode[kk] = opt.method == FlowMethod::rkc ? 1 : 0;
    b.give_ups[kk] = 0;
    b.stiff_run[kk] = b.switch_run[kk] = 0;
    b.jac_age[kk] = -1;
    b.jac[kk].clear();
    b.jac[kk].shrink_to_fit();
    std::fill(&b.eig[kk * P], &b.eig[kk * P] + P, Real(0));
    set_status(b, kk, FlowStatus::running);
    const Real f2 = sumsq(f, P);
    if (!std::isfinite(b.loss[kk]) || !std::isfinite(f2)) {
      set_status(b, kk, FlowStatus::nonfinite);
      set_output_current(b, kk);
      return;
    }
    while (b.next_save[kk] < save.n && save.times[b.next_save[kk]] <= t0) {
      record(save, kk, b.next_save[kk]++, P, y, f, b.loss[kk]);
    }
    if (opt.t_end <= t0) {
      set_status(b, kk, FlowStatus::reached_t_end);
    } else {
      check_events(opt, b, kk, b.loss[kk], std::sqrt(f2), std::sqrt(sumsq(y, P)));
    }
    set_output_current(b, kk);
    if (!is_running(b, kk)) return;
    if (first_step > 0) {
      b.h[kk] = first_step;
      return;
    }
    // Hairer's initial step (scipy's select_initial_step with an unbounded interval).
    Real d0 = 0, d1 = 0;
    for (Index i = 0; i < P; ++i) {
      const Real sc_i = opt.atol + std::fabs(y[i]) * opt.rtol;
      d0 += (y[i] / sc_i) * (y[i] / sc_i);
      d1 += (f[i] / sc_i) * (f[i] / sc_i);
    }
    d0 = std::sqrt(d0 / P);
    d1 = std::sqrt(d1 / P);
    const Real h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
    Real* y1 = sc.ytmp.data();
    Real* f1 = sc.fout.data();
    for (Index i = 0; i < P; ++i) y1[i] = y[i] + h0 * f[i];
    rhs(p, y1, f1, sc.ws);
    b.n_grad[kk] += 1;
    Real d2 = 0;
    for (Index i = 0; i < P; ++i) {
      const Real sc_i = opt.atol + std::fabs(y[i]) * opt.rtol;
      d2 += ((f1[i] - f[i]) / sc_i) * ((f1[i] - f[i]) / sc_i);
    }
    d2 = std::sqrt(d2 / P) / h0;
    const Real h1 = (d1 <= 1e-15 && d2 <= 1e-15) ? std::max(1e-6, h0 * 1e-3)
                                                 : std::pow(0.01 / std::max(d1, d2), 1.0 / (order + 1));
    Real h = std::min(100 * h0, h1);
    h = std::min(h, opt.max_step);
    b.h[kk] = std::isfinite(h) && h > 0 ? h : 1e-6;
  });
}

namespace {

// Largest |eigenvalue| of H(y) by power iteration on the exact Hessian-vector product, warm
// started from the flow's previous eigenvector; returns a safety-inflated estimate.
Real spectral_radius(const Problem& p, FlowBatch& b, Index kk, const Real* y, Scratch& sc) {
  const Index P = b.P;
  Real* v = &b.eig[kk * P];
  Real n2 = sumsq(v, P);
  int iters = 5;
  if (!(n2 > 0) || !std::isfinite(n2)) {
    // Deterministic start with components in every direction.
    for (Index i = 0; i < P; ++i) v[i] = 1.0 + 0.5 * std::sin(1.0 + static_cast<Real>(i));
    n2 = sumsq(v, P);
    iters = 20;
  }
  Real inv = 1 / std::sqrt(n2);
  for (Index i = 0; i < P; ++i) v[i] *= inv;
  Real lam = 0;
  for (int it = 0; it < iters; ++it) {
    kernels().hvp_one(p, y, v, sc.hv.data(), nullptr, sc.ws);
    lam = std::sqrt(sumsq(sc.hv.data(), P));
    b.n_hvp[kk] += 1;
    if (!(lam > 0) || !std::isfinite(lam)) break;
    for (Index i = 0; i < P; ++i) v[i] = sc.hv[i] / lam;
  }
  return 1.2 * lam + 1e-12;
}

// One RKC step (sadfast/rkc.hpp) for the autonomous f = -grad L: s stages, s - 1 new
// evaluations plus f(ynew). Returns L(ynew); fnew = f(ynew).
Real rkc_step(const Problem& p, const Real* yn, const Real* fn, Real h, int s, Real* ynew, Real* fnew, Scratch& sc) {
  const Index P = p.arch.n_params();
  rkc::Recurrence rec(s);
  // Three rotating stage buffers: Y_{j-2}, Y_{j-1}, Y_j.
  Real* yjm2 = sc.y1.data();
  Real* yjm1 = sc.y2.data();
  Real* yj = sc.ytmp.data();
  std::memcpy(yjm2, yn, sizeof(Real) * P);
  const Real mus1 = rec.mus1();
  for (Index i = 0; i < P; ++i) yjm1[i] = yn[i] + h * mus1 * fn[i];
  Real* ft = sc.fout.data();
  for (int j = 2; j <= s; ++j) {
    const rkc::Stage c = rec.next();
    const Real mu = c.mu, nu = c.nu, mus = c.mus, ajm1 = c.ajm1;
    rhs(p, yjm1, ft, sc.ws);
    for (Index i = 0; i < P; ++i) {
      yj[i] = mu * yjm1[i] + nu * yjm2[i] + (1 - mu - nu) * yn[i] + h * mus * (ft[i] - ajm1 * fn[i]);
    }
    Real* old = yjm2;
    yjm2 = yjm1;
    yjm1 = yj;
    yj = old;
  }
  std::memcpy(ynew, yjm1, sizeof(Real) * P);
  return rhs(p, ynew, fnew, sc.ws);
}

int rkc_stages(Real h, Real rho) { return rkc::stages(h, rho); }

// ---- ROSW: a Rosenbrock W-method on a reused Hessian approximation ----------------------------
//
// ROS34PW2 of Rang and Angermann (BIT 45, 2005): 4 stages, order 3 with an embedded order-2
// solution, stiffly accurate, L-stable, and a W-method (order 3 kept with any matrix W in place
// of the Jacobian, which here is f'(y) = -H). For y' = f(y):
//   (I - gamma h W) k_i = f(Y_i) + h W sum_{j<i} gamma_ij k_j,  Y_i = y + h sum_{j<i} alpha_ij k_j,
//   y_new = y + h sum b_i k_i,   error estimate h sum (b_i - bhat_i) k_i.
// Each flow keeps W = -V diag(max(lambda, 0)) V^T with V (P x m) orthonormal:
//  * m = P: the eigendecomposition of its exact Hessian (P Hessian-vector products on the unit
//    vectors, Eigen's self-adjoint solver);
//  * m < P: the Ritz pairs of m Lanczos steps on exact Hessian-vector products (full
//    reorthogonalization, started from f(y)): the projection of H on a Krylov space, which
//    holds the extreme (here: the stiff) eigenpairs first. Matrix-free, m (P + 1) numbers per flow,
//    any P. Directions outside span(V) are treated explicitly (W is 0 there), which a W-method
//    allows; when stiff directions are missed the error control shortens the step.
// With a = V^T k the stages split exactly, for any h and with no factorization per step:
//   a_i = (V^T f(Y_i) - h lambda * sum_j gamma_ij a_j) / (1 + gamma h lambda),
//   k_i = f(Y_i) + V (a_i - V^T f(Y_i))      (the part outside span(V) is f(Y_i)'s own).
// Negative eigenvalues are clipped to 0 in W: saddle directions (the flow leaving a saddle) are
// treated explicitly, and 1 + gamma h lambda >= 1, so the stages are always solvable.
// The approximation is refreshed at the first step, after a rejected step taken with one at least
// kJacMinAgeOnReject accepted steps old, and after kJacMaxAge accepted steps for exact Hessians
// (measured on poly1d and poly2d to t = 1e4: refreshing after every rejection costs 1.5-3x more,
// keeping a Hessian 300-1000 steps makes the steps stability-limited again), kJacMaxAgeLanczos for
// the cheaper rank-32 Lanczos ones (measured, gradient-equivalents per flow, max age 100 -> 35:
// poly1d t = 1e4 5,836 -> 5,026; poly2d 7,286 -> 6,264; poly4d t = 3e3 8,570 -> 7,014; ages 12-50
// and min ages 3-20 were worse or equal). With refreshes that stop once the stiff part is resolved
// (8-16 HVPs instead of 32, rosw_lanczos) a younger W pays: max age 35 -> 20, auto, K = 64 (poly4d
// K = 8), gradient-equivalents per flow (median): poly1d t = 1e2 / 1e3 / 1e4 1,164 / 2,232 / 3,439
// -> 1,144 / 2,124 / 3,209; poly2d 1,561 / 2,278 / 5,096 -> 1,530 / 2,182 / 4,724; poly4d
// t = 1e2 / 1e3 2,206 / 4,414 -> 2,004 / 4,163 (ages 10, 15, 25, 60 and min age 5 were worse or
// equal).
// Costs per step: 4 gradients (3 stages + the end point, whose gradient is the next step's first
// stage) and about 8 m P flops.
// Other tableaux measured in this stepper (same W, refresh rules and controller; 32 poly1d flows to
// t = 1e4, 16 poly2d flows to 1e3, rtol 1e-6 / 1e-7 / 1e-8; median gradient-equivalents per flow
// and the final loss's error against Dormand-Prince at rtol 1e-12) were worse at equal error:
//  * ROS34PW3 (Rang-Angermann; order 4 with an exact Jacobian, order 3 as a W-method, A-stable,
//    embedded order 3): 2x the steps of ROS34PW2 at equal rtol and still 2.2x more per decade of
//    rtol (the reused W costs it the 4th order); auto poly1d 10,460 gradient-equivalents at error
//    3.0e-6, ROS34PW2 9,465 at 1.2e-6.
//  * RA3PW (3 stages, 3 gradients per step, order 3 W-method, R(inf) = 0.73): 3x the steps at
//    rtol 1e-6 growing ~3x per decade of rtol (the stiff components, damped only by 0.73 per
//    step, drive its error estimate); auto poly1d 8,608 at error 1.4e-4.
// A higher order needs conditions that hold for any W. For scale: scipy's Radau IIA (order 5,
// exact Hessians) takes 37-52 steps per decade of t from t = 1e3 (ROS34PW2: ~216) and 400-700
// gradients, but recomputes its Jacobian at ~70% of the steps (P products each); in log-time
// (d theta / d ln t = -t grad L) 25-35% fewer steps on poly1d, none fewer on poly2d. Not tried
// here: Radau's Newton on the eigendecomposed, reused W.
// (The table rosw::kRos34PW2 and the refresh rules are in sadfast/rosw.hpp, shared with the GPU's
// ROSW.)

// The rank of W for this problem: P (exact) unless opt.jac_rank asks for fewer.
Index rosw_rank(const SolverOptions& opt, Index P) { return opt.jac_rank > 0 && opt.jac_rank < P ? opt.jac_rank : P; }

void rosw_store_nan(std::vector<Real>& J, Index P, Index m) {
  J.assign(m * P + m, Real(0));
  std::fill(J.begin() + m * P, J.end(), std::numeric_limits<Real>::quiet_NaN());
}

void rosw_exact(const Problem& p, FlowBatch& b, Index kk, const Real* y, Scratch& sc) {
  const Index P = b.P;
  if (sc.hess.rows() != P) {  // once per thread
    sc.hess.resize(P, P);
    sc.eig.emplace(P);
  }
  Eigen::MatrixXd& H = sc.hess;
  Real* e = sc.y1.data();
  std::fill(e, e + P, Real(0));
  for (Index i = 0; i < P; ++i) {
    e[i] = 1;
    kernels().hvp_one(p, y, e, sc.hv.data(), nullptr, sc.ws);
    e[i] = 0;
    for (Index j = 0; j < P; ++j) H(j, i) = sc.hv[j];
  }
  b.n_hvp[kk] += P;
  // Symmetrize into the lower triangle, the part the eigensolver reads.
  for (Index j = 0; j < P; ++j) {
    for (Index i = j + 1; i < P; ++i) H(i, j) = Real(0.5) * (H(i, j) + H(j, i));
  }
  std::vector<Real>& J = b.jac[kk];  // only this flow's thread touches it
  const bool finite = H.allFinite();
  if (finite) sc.eig->compute(H);
  if (!finite || sc.eig->info() != Eigen::Success) {
    rosw_store_nan(J, P, P);
    return;
  }
  J.resize(P * P + P);
  Eigen::Map<Eigen::MatrixXd>(J.data(), P, P) = sc.eig->eigenvectors();
  Eigen::Map<Eigen::VectorXd>(J.data() + P * P, P) = sc.eig->eigenvalues();
}

// The Lanczos run of a refresh stops early once the stiff part of H's spectrum is resolved: at
// n = kLanczosMin, kLanczosMin + kLanczosStride, ... steps, when at least kLanczosSpare Ritz
// values lie in [0, lambda_cut], below the stiff cut lambda_cut = kStiffCut / h (h: the flow's
// next step). Ritz values interlace with H's eigenvalues and Lanczos resolves the top of the
// spectrum first, so once it has reached positive values below the cut, the eigenvalues above it
// are captured. (Negative Ritz values do not count: the run resolves the bottom of the spectrum
// as early as the top.) Directions outside span(V) are treated explicitly, which is stable while
// h lambda stays well inside the explicit stability interval (~2): the cut leaves a margin of 40
// for the step to grow before the next refresh, and a direction that does turn stiff causes
// rejections, which trigger a refresh at the then current step.
// (kLanczosMin = 8, kLanczosStride = 4, kLanczosSpare = 4 and kStiffCut = 0.05 in sadfast/rosw.hpp;
// kStiffCut 0.01-0.25 measured within noise of each other.)

// At most m Lanczos steps on H(y) from f = f(y) (fewer when the stiff part is resolved, above),
// each new vector orthogonalized twice against all earlier ones (classical Gram-Schmidt, twice is
// enough); W from the Ritz pairs. On an invariant subspace (beta ~ 0) the run stops there. Columns
// that stay unused hold 0 with value 0 (they add nothing).
// Why f: where the gradient field leaves a linear subspace S invariant (zero units, units that are
// copies of each other) and y is in S, H(y) maps S to itself, so the Krylov space of f lies in S,
// and so do W and every stage: the flow stays in S exactly, as the exact flow does (also from a
// saddle in S, which any departure leaves). From a fixed generic vector W mixed S with the rest,
// and a flow started at such a saddle left it within t ~ 10 (measured: 1-8-1 tanh, y = x^2 + x,
// auto rank 8: the saddle's loss 0.49 -> 0.042 by t = 5e3). Costs measured against the fixed
// vector: 0.95-1.01x the gradient-equivalents on poly1d/poly2d to 1e4 and poly4d to 1e3.
// A zero or non-finite f falls back to the fixed vector below.
void rosw_lanczos(const Problem& p, FlowBatch& b, Index kk, const Real* y, const Real* fy, Index m, Scratch& sc) {
  const Index P = b.P;
  Eigen::Map<Eigen::MatrixXd> Q(sc.lanczos.data(), P, m);
  Eigen::Map<Eigen::VectorXd> w(sc.hv.data(), P), c(sc.coef.data(), m);
  Eigen::VectorXd& alpha = sc.diag;  // (m) and (m - 1): the tridiagonal matrix
  Eigen::VectorXd& beta = sc.subdiag;
  const Real fnorm = Eigen::Map<const Eigen::VectorXd>(fy, P).norm();
  if (fnorm > 0 && std::isfinite(fnorm)) {
    for (Index i = 0; i < P; ++i) Q(i, 0) = fy[i] / fnorm;
  } else {
    for (Index i = 0; i < P; ++i) Q(i, 0) = 1.0 + 0.5 * std::sin(1.0 + static_cast<Real>(i));
    Q.col(0).normalize();
  }
  const Real lam_cut = rosw::kStiffCut / b.h[kk];
  Index n = 0;
  bool finite = true;
  Real scale = 0;
  for (Index j = 0; j < m; ++j) {
    kernels().hvp_one(p, y, Q.col(j).data(), w.data(), nullptr, sc.ws);
    ++n;
    alpha[j] = Q.col(j).dot(w);
    if (!w.allFinite() || !std::isfinite(alpha[j])) {
      finite = false;
      break;
    }
    scale = std::max(scale, std::fabs(alpha[j]));
    if (j + 1 == m) break;  // the last vector's residual is not needed
    if (rosw::stiff_part_resolved(alpha.data(), beta.data(), static_cast<int>(n), lam_cut)) {
      break;  // the stiff part is resolved
    }
    for (int pass = 0; pass < 2; ++pass) {
      c.head(j + 1).noalias() = Q.leftCols(j + 1).transpose() * w;
      w.noalias() -= Q.leftCols(j + 1) * c.head(j + 1);
    }
    beta[j] = w.norm();
    scale = std::max(scale, beta[j]);
    if (!(beta[j] > 1e-12 * scale)) break;  // span(Q) is invariant under H
    Q.col(j + 1) = w / beta[j];
  }
  b.n_hvp[kk] += n;
  std::vector<Real>& J = b.jac[kk];
  if (!finite) {
    rosw_store_nan(J, P, 1);
    return;
  }
  std::unique_ptr<Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>>& slot = sc.eig_n[n];
  if (!slot) slot = std::make_unique<Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>>(n);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>& es = *slot;
  es.computeFromTridiagonal(alpha.head(n), beta.head(n - 1), Eigen::ComputeEigenvectors);
  // The n Ritz pairs only (values ascending, so J.back() is the largest): a flow keeps n (P + 1)
  // numbers, what its refresh needed, not m (P + 1). (Checkpoints pad to a common width with
  // leading all-zero columns of value 0, which rosw_step skips; jac_import strips them again.)
  J.resize(n * P + n);
  Eigen::Map<Eigen::MatrixXd>(J.data(), P, n).noalias() = Q.leftCols(n) * es.eigenvectors();
  Eigen::Map<Eigen::VectorXd>(J.data() + n * P, n) = es.eigenvalues();
}

void rosw_jacobian(const Problem& p, FlowBatch& b, Index kk, const Real* y, const Real* fy, Index m, Scratch& sc) {
  if (m >= b.P) {
    rosw_exact(p, b, kk, y, sc);
  } else {
    rosw_lanczos(p, b, kk, y, fy, m, sc);
  }
  b.jac_age[kk] = 0;
}

// One ROS34PW2 step of size h from (y, f = f(y)): ynew, fnew = f(ynew), the error norm (RMS,
// scaled) and the squared norms of ynew and fnew; returns L(ynew). It evaluates rosw::kGradients
// gradients (the caller counts them, as for rkc_step); `ok` is false when the flow's Hessian
// approximation was not finite, and then nothing is evaluated.
Real rosw_step(const Problem& p, FlowBatch& b, Index kk, const SolverOptions& opt, const Real* y, const Real* f,
               Real h, Real* ynew, Real* fnew, Scratch& sc, Real& err, Real& ynorm2, Real& fnorm2, bool& ok) {
  const rosw::Table& tab = rosw::kRos34PW2;
  constexpr int S = rosw::Table::kStages;
  const Index P = b.P;
  const std::vector<Real>& J = b.jac[kk];
  const Index m_all = static_cast<Index>(J.size()) / (P + 1);
  const Real* vals = J.data() + P * m_all;
  ok = Eigen::Map<const Eigen::ArrayXd>(vals, m_all).allFinite();
  if (!ok) return std::numeric_limits<Real>::quiet_NaN();
  // Only W's positive eigenvalues act: they are a trailing block (values ascending after the
  // unused columns, whose values are 0). Columns with value <= 0 (clipped to 0) would add exactly
  // nothing to the stages (a = V^T f, k = f + V (a - V^T f) = f), so they are skipped.
  Index j0 = m_all;
  while (j0 > 0 && vals[j0 - 1] > 0) --j0;
  const Index m = m_all - j0;
  Eigen::Map<const Eigen::MatrixXd> V(J.data() + j0 * P, P, m);
  // (In the thread's scratch: nothing in a step allocates.)
  Eigen::Map<Eigen::ArrayXd> lam(sc.lam.data(), m), d(sc.den.data(), m);
  lam = Eigen::Map<const Eigen::ArrayXd>(vals + j0, m);
  d = Real(1) + tab.gamma * h * lam;
  ok = d.allFinite();
  if (!ok) return std::numeric_limits<Real>::quiet_NaN();
  Eigen::Map<Eigen::MatrixXd> kf(sc.k.data(), P, S);    // stage derivatives k_i
  Eigen::Map<Eigen::MatrixXd> a(sc.coef.data(), m, S);  // their coordinates V^T k_i
  Eigen::Map<Eigen::VectorXd> g(sc.y1.data(), m), acc(sc.y2.data(), m);
  Eigen::Map<Eigen::VectorXd> Y(sc.ytmp.data(), P), fY(sc.fout.data(), P);
  Eigen::Map<const Eigen::VectorXd> yv(y, P), fv(f, P);
  for (int i = 0; i < S; ++i) {
    if (i == 0) {
      fY = fv;
    } else {
      Y = yv;
      for (int j = 0; j < i; ++j) {
        if (tab.alpha[i][j] != 0) Y += (h * tab.alpha[i][j]) * kf.col(j);
      }
      rhs(p, Y.data(), fY.data(), sc.ws);
    }
    g.noalias() = V.transpose() * fY;
    acc.setZero();
    for (int j = 0; j < i; ++j) acc += tab.gam[i][j] * a.col(j);
    a.col(i) = (g.array() - h * lam * acc.array()) / d;
    g = a.col(i) - g;
    kf.col(i) = fY;
    kf.col(i).noalias() += V * g;
  }
  Eigen::Map<Eigen::VectorXd> yn(ynew, P);
  yn = yv;
  Y.setZero();  // the error vector
  for (int i = 0; i < S; ++i) {
    yn += (h * tab.b[i]) * kf.col(i);
    Y += (h * (tab.b[i] - tab.bhat[i])) * kf.col(i);
  }
  Real sq = 0;
  for (Index i = 0; i < P; ++i) {
    const Real scale = opt.atol + std::max(std::fabs(y[i]), std::fabs(ynew[i])) * opt.rtol;
    sq += (Y[i] / scale) * (Y[i] / scale);
  }
  err = std::sqrt(sq / P);
  const Real loss = rhs(p, ynew, fnew, sc.ws);
  ynorm2 = sumsq(ynew, P);
  fnorm2 = sumsq(fnew, P);
  return loss;
}

// The stiff mode's estimate of lambda_max(H): RKC's spectral radius, or the largest eigenvalue
// of the ROSW Hessian (0 when it has none yet).
Real stiff_rate(const FlowBatch& b, Index kk, bool rkc) {
  if (rkc) return b.rho[kk];
  const std::vector<Real>& J = b.jac[kk];
  if (J.empty()) return 0;
  const Real top = J.back();  // eigenvalues ascending, after the P x P eigenvectors
  return std::isfinite(top) && top > 0 ? top : 0;
}

// A flow's switching state (auto_switch.hpp) from the batch and back.
autoswitch::State switching(const FlowBatch& b, Index kk) {
  return {b.mode[kk], b.give_ups[kk], b.stiff_run[kk], b.switch_run[kk]};
}
void set_switching(FlowBatch& b, Index kk, const autoswitch::State& st) {
  b.mode[kk] = static_cast<std::int8_t>(st.mode);
  b.give_ups[kk] = static_cast<std::int8_t>(st.give_ups);
  b.stiff_run[kk] = st.stiff_run;
  b.switch_run[kk] = st.switch_run;
}

// Outputs inside an accepted RKC or ROSW step (t, t + h] from (y, f) to (ynew, fnew): cubic
// Hermite interpolation while the step is moderately stiff, h * lambda_max <= kHermiteMaxStiffness;
// beyond, a sub-step of the same method from (y, f) to the output time (RKC: its stage count for
// that step; ROSW: 4 gradients on the step's W). Hermite's h f terms multiply what is left in the
// stiff directions by h lambda: on tanh 1-16-1 flows at init x10 to t = 1e8 (rtol 1e-6, steps
// h ~ 1e5, h lambda ~ 1e6) the interpolated loss at t_end reached 5.4e-5 where the integrated
// state's was 2.7e-8 (63 of 64 flows showed loss increases between save times; at rtol 1e-8,
// none). Sub-steps keep the outputs at the accuracy of the steps and independent of where the
// save times fall, at a cost only where steps are long.
inline constexpr Real kHermiteMaxStiffness = rkc::kHermiteMaxStiffness;  // 100; the GPU's RKC uses it too
void stiff_outputs(const Problem& p, const SolverOptions& opt, const SaveSpec& save, FlowBatch& b, Index kk,
                   bool rkc, Real t, Real h, const Real* y, const Real* f, Real t_new, const Real* ynew,
                   const Real* fnew, Real loss_new, Scratch& sc) {
  const Index P = b.P;
  if (h * stiff_rate(b, kk, rkc) <= kHermiteMaxStiffness) {
    emit_outputs(p, opt, save, b, kk, t_new, ynew, fnew, loss_new, sc, evaluated(p, b, kk, sc, [&](Real ts, Real* out) {
                   hermite(y, f, ynew, fnew, P, h, (ts - t) / h, out);
                 }));
    return;
  }
  // The sub-steps use the thread's stage buffers (k's first 4 rows, y1, y2, ytmp, coef, fout):
  // none holds y, f, ynew or fnew here (fnew is k's last row, ynew the scratch ynew).
  emit_outputs(p, opt, save, b, kk, t_new, ynew, fnew, loss_new, sc, [&](Real ts, Real* out, Real* fout) {
    const Real dt = ts - t;
    if (rkc) {
      const int s = rkc_stages(dt, b.rho[kk]);
      b.n_output_evals[kk] += s;
      return rkc_step(p, y, f, dt, s, out, fout, sc);
    }
    Real err = 0, yn2 = 0, fn2 = 0;
    bool ok = true;
    const Real lo = rosw_step(p, b, kk, opt, y, f, dt, out, fout, sc, err, yn2, fn2, ok);
    if (ok) b.n_output_evals[kk] += rosw::kGradients;
    return lo;
  });
}

}  // namespace

Index flows_advance(const Problem& p, FlowBatch& b, const SolverOptions& opt, const SaveSpec& save,
                    std::int64_t max_attempts) {
  const ExplicitTableau& tab = explicit_tableau(opt.method);
  const Index P = p.arch.n_params();
  const int ns = tab.stages;
  const bool automatic = opt.method == FlowMethod::automatic;
  const bool stiff_capable = opt.method != FlowMethod::dopri5 && opt.method != FlowMethod::tsit5;
  for_each_flow(p, b.K, stiff_capable, [&](Index kk, Scratch& sc) {
    Real* y = &b.y[kk * P];
    Real* f = &b.f[kk * P];
    Real* k = sc.k.data();
    Real* ytmp = sc.ytmp.data();
    Real* ynew = sc.ynew.data();
    Real* knew = k + (ns - 1) * P;
    // A resumed flow whose last step already passed the new t_end or a new save time: redo that
    // step (deterministically, bitwise as before) to interpolate inside it.
    if (is_running(b, kk) && b.t[kk] > b.t_prev[kk] &&
        (b.t[kk] >= opt.t_end || (b.next_save[kk] < save.n && save.times[b.next_save[kk]] <= b.t[kk]))) {
      const Real* yp = &b.y_prev[kk * P];
      const Real hp = b.t[kk] - b.t_prev[kk];
      const Real tp = b.t_prev[kk];
      if (b.last_mode[kk] != 0) {  // RKC and ROSW steps: as stiff_outputs below
        Real* fp = knew;  // free here (a ROSW sub-step uses k's first 4 rows): f(y_prev)
        rhs(p, yp, fp, sc.ws);
        b.n_output_evals[kk] += 1;
        stiff_outputs(p, opt, save, b, kk, b.last_mode[kk] == 1, tp, hp, yp, fp, b.t[kk], y, f, b.loss[kk], sc);
      } else {
        Real* fp = sc.fout.data();
        rhs(p, yp, fp, sc.ws);
        rk_step(p, tab, yp, fp, hp, k, ytmp, ynew, sc.ws);
        b.n_output_evals[kk] += ns;
        emit_outputs(p, opt, save, b, kk, b.t[kk], y, f, b.loss[kk], sc, evaluated(p, b, kk, sc, [&](Real ts, Real* out) {
                       dense(tab, yp, k, P, hp, (ts - tp) / hp, out);
                     }));
      }
    }
    std::int64_t attempts = 0;
    while (is_running(b, kk) && attempts < max_attempts) {
      if (b.n_accepted[kk] + b.n_rejected[kk] >= opt.max_steps) {
        set_status(b, kk, FlowStatus::max_steps);
        set_output_current(b, kk);
        break;
      }
      const bool rkc = b.mode[kk] == 1;
      const bool ros = opt.method == FlowMethod::rosw || b.mode[kk] == 2;
      const bool dp = !rkc && !ros;
      const Real t = b.t[kk];
      const Real hmin = control::min_step(t);
      Real h_abs = b.h[kk];
      if (!b.rejected[kk]) h_abs = h_abs > opt.max_step ? opt.max_step : (h_abs < hmin ? hmin : h_abs);
      if (rkc) {
        if (b.since_rho[kk] == 0 || b.rho[kk] <= 0) {
          b.rho[kk] = spectral_radius(p, b, kk, y, sc);
        }
        // At most rkc::kMaxStages stages: cap the step where the stability interval ends.
        const Real h_stab = rkc::max_stable_step(b.rho[kk]);
        if (h_abs > h_stab) h_abs = h_stab;
      }
      if (h_abs < hmin) {
        set_status(b, kk, b.nonfinite[kk] ? FlowStatus::nonfinite : FlowStatus::step_underflow);
        set_output_current(b, kk);
        break;
      }
      ++attempts;
      const Real t_new = t + h_abs;
      const Real h = t_new - t;
      h_abs = std::fabs(h);

      Real loss_new, err = std::numeric_limits<Real>::quiet_NaN();
      Real ynorm2 = 0, fnorm2 = 0;
      const Real* fnew;
      int s_st = 0;
      bool solvable = true;
      if (ros) {
        if (rosw::needs_refresh(b.jac_age[kk], b.rejected[kk] != 0, rosw_rank(opt, P) < P)) {
          rosw_jacobian(p, b, kk, y, f, rosw_rank(opt, P), sc);
        }
        fnew = knew;
        loss_new = rosw_step(p, b, kk, opt, y, f, h, ynew, knew, sc, err, ynorm2, fnorm2, solvable);
        if (solvable) b.n_grad[kk] += rosw::kGradients;
      } else if (rkc) {
        s_st = rkc_stages(h, b.rho[kk]);
        Real* fn1 = knew;  // scratch row for f(ynew)
        loss_new = rkc_step(p, y, f, h, s_st, ynew, fn1, sc);
        b.n_grad[kk] += s_st;
        fnew = fn1;
        Real acc = 0;
        for (Index i = 0; i < P; ++i) {
          const Real e = rkc::error_component(y[i], ynew[i], f[i], fn1[i], h);
          const Real scale = opt.atol + std::max(std::fabs(y[i]), std::fabs(ynew[i])) * opt.rtol;
          acc += (e / scale) * (e / scale);
          ynorm2 += ynew[i] * ynew[i];
          fnorm2 += fn1[i] * fn1[i];
        }
        err = std::sqrt(acc / P);
      } else {
        loss_new = rk_step(p, tab, y, f, h, k, ytmp, ynew, sc.ws);
        b.n_grad[kk] += ns - 1;
        fnew = knew;
        // Error norm (RMS of the scaled embedded error), and the norms the events need.
        Real acc_err = 0;
        for (Index i = 0; i < P; ++i) {
          Real e = 0;
          for (int j = 0; j < ns; ++j) e += tab.e[j] * k[j * P + i];
          e *= h;
          const Real scale = opt.atol + std::max(std::fabs(y[i]), std::fabs(ynew[i])) * opt.rtol;
          acc_err += (e / scale) * (e / scale);
          ynorm2 += ynew[i] * ynew[i];
          fnorm2 += knew[i] * knew[i];
        }
        err = std::sqrt(acc_err / P);
      }
      const int err_order = rkc ? rkc::kErrorOrder : (ros ? rosw::kErrorOrder : tab.error_order);
      const Real safety = rkc ? control::kRkcSafety : control::kSafety;
      const bool finite =
          solvable && std::isfinite(err) && std::isfinite(loss_new) && std::isfinite(ynorm2) && std::isfinite(fnorm2);
      if (!(finite && err < 1)) {
        b.h[kk] = h_abs * control::reject_factor(finite ? err : NAN, err_order, safety);
        b.rejected[kk] = 1;
        b.nonfinite[kk] = finite ? 0 : 1;
        b.n_rejected[kk] += 1;
        if (rkc) b.since_rho[kk] = 0;  // re-estimate the spectral radius after a rejection
        if (automatic && !dp) {
          // A sustained rejection rate above 1/3 gives the stiff methods up for a while.
          autoswitch::State st = switching(b, kk);
          autoswitch::stiff_rejected(st, stiff_rate(b, kk, rkc), b.h[kk]);
          set_switching(b, kk, st);
        }
        continue;
      }

      const Real factor = control::accept_factor(err, err_order, b.rejected[kk] != 0, safety);
      if (rkc || ros) {
        stiff_outputs(p, opt, save, b, kk, rkc, t, h, y, f, t_new, ynew, fnew, loss_new, sc);
        if (rkc) b.since_rho[kk] = (b.since_rho[kk] + 1) % rkc::kRhoEvery;
        if (ros) b.jac_age[kk] += 1;
      } else {
        emit_outputs(p, opt, save, b, kk, t_new, ynew, fnew, loss_new, sc,
                     evaluated(p, b, kk, sc, [&](Real ts, Real* out) { dense(tab, y, k, P, h, (ts - t) / h, out); }));
      }
      autoswitch::State st{};
      if (automatic) {
        st = switching(b, kk);
        if (rkc) {
          autoswitch::rkc_accepted(st, s_st);
        } else if (ros) {
          autoswitch::rosw_accepted(st, h, stiff_rate(b, kk, false));
        } else {
          // Hairer's test: ytmp holds the argument of k_6, ynew that of k_7 (both at c = 1).
          Real dk = 0, dy = 0;
          const Real* k6 = k + (ns - 2) * P;
          for (Index i = 0; i < P; ++i) {
            dk += (knew[i] - k6[i]) * (knew[i] - k6[i]);
            dy += (ynew[i] - ytmp[i]) * (ynew[i] - ytmp[i]);
          }
          autoswitch::dopri_accepted(st, autoswitch::hairer_stiff(h, dk, dy));
        }
      }
      b.last_mode[kk] = rkc ? 1 : (ros ? 2 : 0);
      b.t_prev[kk] = t;
      std::memcpy(&b.y_prev[kk * P], y, sizeof(Real) * P);
      b.t[kk] = t_new;
      std::memcpy(y, ynew, sizeof(Real) * P);
      std::memcpy(f, fnew, sizeof(Real) * P);
      b.loss[kk] = loss_new;
      b.h[kk] = h_abs * factor;
      b.rejected[kk] = 0;
      b.nonfinite[kk] = 0;
      b.n_accepted[kk] += 1;
      if (automatic) {
        // Exact Hessians only for small networks (kAutoRoswMaxParams).
        const bool rosw_allowed = P <= autoswitch::kAutoRoswMaxParams || rosw_rank(opt, P) < P;
        const autoswitch::Switch sw = autoswitch::after_accepted(st, rosw_allowed, !b.jac[kk].empty(), t_new,
                                                                 stiff_rate(b, kk, rkc), b.h[kk]);
        set_switching(b, kk, st);
        if (sw == autoswitch::Switch::to_rkc || sw == autoswitch::Switch::to_rosw) {
          b.jac_age[kk] = -1;  // a fresh Hessian approximation
          if (dp) b.since_rho[kk] = 0;
        }
        if (sw == autoswitch::Switch::to_rkc) {
          // RKC's power iteration starts from Hairer's difference k7 - k6 (~ -H (y7 - y6), the
          // stiff directions that fired the test): 5 Hessian-vector products instead of the 20
          // of a cold start, with the same stage counts (poly1d to t = 10: auto's HVPs 1,410 ->
          // 675 for 64 flows, its cost over Dormand-Prince's +8% -> +3%).
          Real* v = &b.eig[kk * P];
          const Real* k6 = k + (ns - 2) * P;
          for (Index i = 0; i < P; ++i) v[i] = knew[i] - k6[i];
        }
      }
      if (is_running(b, kk) && check_events(opt, b, kk, loss_new, std::sqrt(fnorm2), std::sqrt(ynorm2))) {
        set_output_current(b, kk);
      }
    }
  }, opt.jac_rank);
  Index running = 0;
  for (Index kk = 0; kk < b.K; ++kk) running += is_running(b, kk) ? 1 : 0;
  return running;
}

}  // namespace sadfast
