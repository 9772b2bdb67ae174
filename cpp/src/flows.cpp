// Per-flow adaptive explicit Runge-Kutta integration of gradient flows (see flows.hpp).
#include "sadfast/flows.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>

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
  std::vector<Real> ytmp, ynew, yout, fout;
  Scratch(const Problem& p)
      : ws(p.arch, p.n_points, false),
        k(ExplicitTableau::kMaxStages * p.arch.n_params()),
        ytmp(p.arch.n_params()),
        ynew(p.arch.n_params()),
        yout(p.arch.n_params()),
        fout(p.arch.n_params()) {}
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

// Save times and t_end inside the accepted step (t, t_new] from y with stages k: recorded from
// the continuous extension (exactly at t_new from the step's own end point).
void emit_outputs(const Problem& p, const ExplicitTableau& tab, const SolverOptions& opt, const SaveSpec& save,
                  FlowBatch& b, Index kk, Real t, const Real* y, const Real* k, Real h, Real t_new, const Real* ynew,
                  Real loss_new, Scratch& sc);

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

// Runs body(k, scratch) for k in [0, K) over OpenMP threads, dynamically scheduled (finished
// flows free their thread); the first exception is rethrown after the loop.
template <class Body>
void parallel_flows(const Problem& p, Index K, Body&& body) {
  std::exception_ptr error;
#pragma omp parallel
  {
    try {
      Scratch sc(p);
#pragma omp for schedule(dynamic, 1)
      for (Index kk = 0; kk < K; ++kk) {
        try {
          body(kk, sc);
        } catch (...) {
#pragma omp critical(sadfast_flow_error)
          if (!error) error = std::current_exception();
        }
      }
    } catch (...) {
#pragma omp critical(sadfast_flow_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

void emit_outputs(const Problem& p, const ExplicitTableau& tab, const SolverOptions& opt, const SaveSpec& save,
                  FlowBatch& b, Index kk, Real t, const Real* y, const Real* k, Real h, Real t_new, const Real* ynew,
                  Real loss_new, Scratch& sc) {
  const Index P = b.P;
  const Real* knew = k + (tab.stages - 1) * P;
  auto at = [&](Real ts, auto&& use) {
    if (ts == t_new) {
      use(ynew, knew, loss_new);
    } else {
      dense(tab, y, k, P, h, (ts - t) / h, sc.yout.data());
      const Real lo = rhs(p, sc.yout.data(), sc.fout.data(), sc.ws);
      b.n_output_evals[kk] += 1;
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

}  // namespace

void flows_initialize(const Problem& p, FlowBatch& b, const Real* theta0, Real t0, Real first_step,
                      const SolverOptions& opt, const SaveSpec& save) {
  const Index P = p.arch.n_params();
  const int order = kDormandPrince54.error_order;
  parallel_flows(p, b.K, [&](Index kk, Scratch& sc) {
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

Index flows_advance(const Problem& p, FlowBatch& b, const SolverOptions& opt, const SaveSpec& save,
                    std::int64_t max_attempts, const ExplicitTableau& tab) {
  const Index P = p.arch.n_params();
  const int ns = tab.stages;
  parallel_flows(p, b.K, [&](Index kk, Scratch& sc) {
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
      Real* fp = sc.fout.data();
      rhs(p, yp, fp, sc.ws);
      const Real hp = b.t[kk] - b.t_prev[kk];
      rk_step(p, tab, yp, fp, hp, k, ytmp, ynew, sc.ws);
      b.n_output_evals[kk] += ns;
      emit_outputs(p, tab, opt, save, b, kk, b.t_prev[kk], yp, k, hp, b.t[kk], y, b.loss[kk], sc);
    }
    std::int64_t attempts = 0;
    while (is_running(b, kk) && attempts < max_attempts) {
      if (b.n_accepted[kk] + b.n_rejected[kk] >= opt.max_steps) {
        set_status(b, kk, FlowStatus::max_steps);
        set_output_current(b, kk);
        break;
      }
      const Real t = b.t[kk];
      const Real hmin = control::min_step(t);
      Real h_abs = b.h[kk];
      if (!b.rejected[kk]) h_abs = h_abs > opt.max_step ? opt.max_step : (h_abs < hmin ? hmin : h_abs);
      if (h_abs < hmin) {
        set_status(b, kk, b.nonfinite[kk] ? FlowStatus::nonfinite : FlowStatus::step_underflow);
        set_output_current(b, kk);
        break;
      }
      ++attempts;
      const Real t_new = t + h_abs;
      const Real h = t_new - t;
      h_abs = std::fabs(h);

      const Real loss_new = rk_step(p, tab, y, f, h, k, ytmp, ynew, sc.ws);
      b.n_grad[kk] += ns - 1;

      // Error norm (RMS of the scaled embedded error), and the norms the events need.
      Real acc_err = 0, ynorm2 = 0, fnorm2 = 0;
      for (Index i = 0; i < P; ++i) {
        Real e = 0;
        for (int j = 0; j < ns; ++j) e += tab.e[j] * k[j * P + i];
        e *= h;
        const Real scale = opt.atol + std::max(std::fabs(y[i]), std::fabs(ynew[i])) * opt.rtol;
        acc_err += (e / scale) * (e / scale);
        ynorm2 += ynew[i] * ynew[i];
        fnorm2 += knew[i] * knew[i];
      }
      const Real err = std::sqrt(acc_err / P);
      const bool finite = std::isfinite(err) && std::isfinite(loss_new) && std::isfinite(ynorm2) && std::isfinite(fnorm2);
      if (!(finite && err < 1)) {
        b.h[kk] = h_abs * control::reject_factor(finite ? err : NAN, tab.error_order);
        b.rejected[kk] = 1;
        b.nonfinite[kk] = finite ? 0 : 1;
        b.n_rejected[kk] += 1;
        continue;
      }

      const Real factor = control::accept_factor(err, tab.error_order, b.rejected[kk] != 0);
      emit_outputs(p, tab, opt, save, b, kk, t, y, k, h, t_new, ynew, loss_new, sc);
      b.t_prev[kk] = t;
      std::memcpy(&b.y_prev[kk * P], y, sizeof(Real) * P);
      b.t[kk] = t_new;
      std::memcpy(y, ynew, sizeof(Real) * P);
      std::memcpy(f, knew, sizeof(Real) * P);
      b.loss[kk] = loss_new;
      b.h[kk] = h_abs * factor;
      b.rejected[kk] = 0;
      b.nonfinite[kk] = 0;
      b.n_accepted[kk] += 1;
      if (is_running(b, kk) && check_events(opt, b, kk, loss_new, std::sqrt(fnorm2), std::sqrt(ynorm2))) {
        set_output_current(b, kk);
      }
    }
  });
  Index running = 0;
  for (Index kk = 0; kk < b.K; ++kk) running += is_running(b, kk) ? 1 : 0;
  return running;
}

}  // namespace sadfast
