// Discrete optimizers on the same kernels, batched over K flows: gradient descent, heavy-ball
// momentum and Adam/AdamW exactly as PyTorch's SGD and Adam/AdamW define them. Each flow runs
// alone on one thread with its own optimizer state, events and status.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "sadfast/flows.hpp"

namespace sadfast {

enum class Optimizer : int { gd = 0, momentum = 1, adam = 2 };

struct TrainOptions {
  Optimizer method = Optimizer::gd;
  Real lr = 1e-3;
  Real momentum = 0.9;           // SGD momentum (dampening 0, not Nesterov)
  Real beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  Real weight_decay = 0;         // decoupled (AdamW, and SGDW-style for gd/momentum)
  std::int64_t steps = 0;        // total optimizer steps
  std::int64_t record_every = 1; // traces at steps 0, r, 2r, ...
  Real loss_below = std::numeric_limits<Real>::quiet_NaN();
  Real grad_norm_below = std::numeric_limits<Real>::quiet_NaN();
  Real theta_norm_above = std::numeric_limits<Real>::quiet_NaN();
};

// State of K trainings: parameters, optimizer moments, step counters and results at the stop.
struct TrainBatch {
  Index K = 0, P = 0;
  std::vector<Real> y, m, v;            // (K, P)
  std::vector<std::int64_t> step;       // optimizer steps taken
  std::vector<std::int32_t> status;     // FlowStatus
  std::vector<Real> loss, grad_norm, theta_norm;  // at the current parameters (after the last step)

  TrainBatch(Index k, Index p) : K(k), P(p), y(k * p), m(k * p), v(k * p), step(k), status(k), loss(k), grad_norm(k), theta_norm(k) {}
};

// Traces (K, S) row-major; S = steps / record_every + 1.
struct TrainTraces {
  Index n = 0;
  Real* loss = nullptr;
  Real* grad_norm = nullptr;
  Real* theta_norm = nullptr;
};

void train_initialize(TrainBatch& b, const Real* theta0);

// Advance every running flow by at most `max_steps` optimizer steps. Returns flows still running.
Index train_advance(const Problem& p, TrainBatch& b, const TrainOptions& o, const TrainTraces& tr, std::int64_t max_steps);

}  // namespace sadfast
