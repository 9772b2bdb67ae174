// Shapes of a batched MLP problem and the per-thread workspace its kernels use.
//
// Memory layout (the same on CPU and GPU):
//   * theta: flat, layer by layer; within layer l, W_l (out x in, row-major) then b_l (out).
//     A batch of K flows is a row-major (K, P) array.
//   * data as given by the user: X (N, d_in) and targets T (N, d_out), row-major.
//   * inside the kernels everything is feature-major: a layer's values are (width, N) row-major,
//     one feature's N values contiguous, so products and activations vectorize over the data
//     points. Problem keeps X and T transposed that way.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "sadfast/activations.hpp"
#include "sadfast/aligned_buffer.hpp"
#include "sadfast/common.hpp"
#include "sadfast/losses.hpp"

namespace sadfast {

struct LayerShape {
  Index in, out;    // W_l is out x in
  Index w_offset;   // offset of W_l in theta
  Index b_offset;   // offset of b_l in theta
};

class Architecture {
 public:
  Architecture(std::vector<Index> widths, Activation activation, Loss loss, Real weight_decay)
      : widths_(std::move(widths)), activation_(activation), loss_(loss), weight_decay_(weight_decay) {
    if (widths_.size() < 2) throw std::invalid_argument("widths: need at least [d_in, d_out]");
    Index off = 0;
    for (std::size_t l = 0; l + 1 < widths_.size(); ++l) {
      if (widths_[l] < 1 || widths_[l + 1] < 1) throw std::invalid_argument("widths: every width must be >= 1");
      LayerShape s{widths_[l], widths_[l + 1], off, off + widths_[l] * widths_[l + 1]};
      off = s.b_offset + s.out;
      layers_.push_back(s);
      if (l + 2 < widths_.size() && widths_[l + 1] > max_hidden_) max_hidden_ = widths_[l + 1];
    }
    n_params_ = off;
  }

  const std::vector<Index>& widths() const { return widths_; }
  const std::vector<LayerShape>& layers() const { return layers_; }
  Index n_layers() const { return static_cast<Index>(layers_.size()); }
  Index n_params() const { return n_params_; }
  Index d_in() const { return widths_.front(); }
  Index d_out() const { return widths_.back(); }
  Index max_hidden() const { return max_hidden_; }
  Index max_width() const {
    Index m = 0;
    for (Index w : widths_) m = w > m ? w : m;
    return m;
  }
  Activation activation() const { return activation_; }
  Loss loss() const { return loss_; }
  Real weight_decay() const { return weight_decay_; }

 private:
  std::vector<Index> widths_;
  std::vector<LayerShape> layers_;
  Activation activation_;
  Loss loss_;
  Real weight_decay_;
  Index n_params_ = 0;
  Index max_hidden_ = 0;
};

// A model bound to one data set. Immutable after construction; shared by all threads.
struct Problem {
  Architecture arch;
  Index n_points;
  AlignedBuffer x;  // (d_in, N) feature-major
  AlignedBuffer t;  // (d_out, N) feature-major

  // x_data (N, d_in) and t_data (N, d_out) row-major, as given by the user.
  Problem(Architecture a, const Real* x_data, const Real* t_data, Index n)
      : arch(std::move(a)), n_points(n), x(n * arch.d_in()), t(n * arch.d_out()) {
    const Index di = arch.d_in(), dout = arch.d_out();
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < di; ++j) x.data()[j * n + i] = x_data[i * di + j];
      for (Index j = 0; j < dout; ++j) t.data()[j * n + i] = t_data[i * dout + j];
    }
  }
};

// Scratch memory for evaluating one flow at a time; one per thread, sized once per problem.
struct Workspace {
  Index n_points = 0;
  AlignedBuffer theta, v, grad, hv;        // aligned copies of one flow's vectors (P)
  std::vector<AlignedBuffer> act, d1, d2;  // per layer l = 1..L: (out_l, N); act[L-1] = output
  std::vector<AlignedBuffer> rz, ra;       // R-operator forward values per layer
  AlignedBuffer g0, g1, rg0, rg1;          // back-propagated signals (max width, N)
  AlignedBuffer da, rda, tmp0, tmp1;       // (max width, N)
  AlignedBuffer point;                     // one data point's outputs, targets, gradients (4 d_out)

  Workspace(const Architecture& arch, Index n, bool with_hvp) : n_points(n) {
    const Index P = arch.n_params();
    const Index wmax = arch.max_width();
    theta = AlignedBuffer(P);
    grad = AlignedBuffer(P);
    for (const LayerShape& s : arch.layers()) {
      act.emplace_back(s.out * n);
      d1.emplace_back(s.out * n);
      if (with_hvp) {
        d2.emplace_back(s.out * n);
        rz.emplace_back(s.out * n);
        ra.emplace_back(s.out * n);
      }
    }
    g0 = AlignedBuffer(wmax * n);
    g1 = AlignedBuffer(wmax * n);
    da = AlignedBuffer(wmax * n);
    tmp0 = AlignedBuffer(wmax * n);
    tmp1 = AlignedBuffer(wmax * n);
    point = AlignedBuffer(4 * arch.d_out());
    if (with_hvp) {
      v = AlignedBuffer(P);
      hv = AlignedBuffer(P);
      rg0 = AlignedBuffer(wmax * n);
      rg1 = AlignedBuffer(wmax * n);
      rda = AlignedBuffer(wmax * n);
    }
  }
};

}  // namespace sadfast
