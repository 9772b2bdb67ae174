#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "sadfast/flows.hpp"

namespace sadfast::bindings {

// SolverOptions from the flat arguments every integrator binding takes (CPU and CUDA).
inline SolverOptions make_options(int method, double rtol, double atol, double t_end, double max_step,
                                  std::int64_t max_steps, double loss_below, double grad_norm_below,
                                  double theta_norm_above, std::int64_t jac_rank = 0) {
  if (method < 0 || method > 4) {
    throw pybind11::value_error("method: unknown integrator code " + std::to_string(method));
  }
  SolverOptions o;
  o.method = static_cast<FlowMethod>(method);
  o.rtol = rtol;
  o.atol = atol;
  o.t_end = t_end;
  o.max_step = max_step;
  o.max_steps = max_steps;
  o.loss_below = loss_below;
  o.grad_norm_below = grad_norm_below;
  o.theta_norm_above = theta_norm_above;
  if (jac_rank < 0) throw pybind11::value_error("jac_rank: expected >= 0, got " + std::to_string(jac_rank));
  o.jac_rank = static_cast<Index>(jac_rank);
  return o;
}

}  // namespace sadfast::bindings
