#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "sadfast/train.hpp"

namespace sadfast::bindings {

// TrainOptions and the host traces from the flat arguments every optimizer binding takes (CPU
// and CUDA).
inline TrainOptions make_train_options(int method, double lr, double momentum, double beta1,
                                       double beta2, double eps, double weight_decay, std::int64_t steps,
                                       std::int64_t record_every, double loss_below, double grad_norm_below,
                                       double theta_norm_above) {
  if (method < 0 || method > 2) throw pybind11::value_error("method: unknown optimizer code " + std::to_string(method));
  if (record_every < 1 || steps < 0) throw pybind11::value_error("steps/record_every: out of range");
  TrainOptions o;
  o.method = static_cast<Optimizer>(method);
  o.lr = lr;
  o.momentum = momentum;
  o.beta1 = beta1;
  o.beta2 = beta2;
  o.eps = eps;
  o.weight_decay = weight_decay;
  o.steps = steps;
  o.record_every = record_every;
  o.loss_below = loss_below;
  o.grad_norm_below = grad_norm_below;
  o.theta_norm_above = theta_norm_above;
  return o;
}

using TraceArray = pybind11::array_t<double, pybind11::array::c_style>;

inline TrainTraces make_traces(const TrainBatch& b, const TrainOptions& o, TraceArray& loss, TraceArray& gnorm,
                               TraceArray& tnorm) {
  const Index S = o.steps / o.record_every + 1;
  for (const TraceArray* a : {&loss, &gnorm, &tnorm}) {
    if (a->ndim() != 2 || a->shape(0) != b.K || a->shape(1) != S) throw pybind11::value_error("traces: expected (K, S)");
  }
  return TrainTraces{S, loss.mutable_data(), gnorm.mutable_data(), tnorm.mutable_data()};
}

}  // namespace sadfast::bindings
