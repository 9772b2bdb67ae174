// A fixed-size, 64-byte aligned array of Real. Workspaces are made of these so that every flow
// sees the same alignment whatever its position in the batch: vectorized sums then add in the
// same order, which keeps results bitwise independent of batching and threads.
#pragma once

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "sadfast/common.hpp"

namespace sadfast {

class AlignedBuffer {
 public:
  static constexpr std::size_t kAlign = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(Index n) : n_(n) {
    if (n_ > 0) {
      const std::size_t bytes = ((static_cast<std::size_t>(n_) * sizeof(Real) + kAlign - 1) / kAlign) * kAlign;
      data_ = static_cast<Real*>(std::aligned_alloc(kAlign, bytes));
      if (data_ == nullptr) throw std::bad_alloc();
      std::memset(data_, 0, bytes);
    }
  }
  AlignedBuffer(const AlignedBuffer& o) : AlignedBuffer(o.n_) {
    if (n_ > 0) std::memcpy(data_, o.data_, static_cast<std::size_t>(n_) * sizeof(Real));
  }
  AlignedBuffer(AlignedBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer o) noexcept {
    std::swap(data_, o.data_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~AlignedBuffer() { std::free(data_); }

  Real* data() { return data_; }
  const Real* data() const { return data_; }
  Index size() const { return n_; }

 private:
  Real* data_ = nullptr;
  Index n_ = 0;
};

}  // namespace sadfast
