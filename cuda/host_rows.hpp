// Host <-> device copies of batch fields (FlowBatch, TrainBatch): the host keeps float64, the
// device the batch's dtype for (K, P) vectors and the host's own type for everything else.
// Host-only (no CUDA types): shared by rk45.cu and train.cu.
#pragma once

#include <algorithm>
#include <vector>

#include "api.hpp"

namespace sadfast::gpu {

// (K, P) vectors, converted to float32 on the host when the device holds float32.
inline void put_rows(Buffer& dst, const std::vector<Real>& src, DType d) {
  if (d == DType::f64) {
    dst.upload(src.data(), src.size() * 8);
  } else {
    std::vector<float> tmp(src.begin(), src.end());
    dst.upload(tmp.data(), tmp.size() * 4);
  }
}

inline void get_rows(const Buffer& src, std::vector<Real>& dst, DType d) {
  if (d == DType::f64) {
    src.download(dst.data(), dst.size() * 8);
  } else {
    std::vector<float> tmp(dst.size());
    src.download(tmp.data(), tmp.size() * 4);
    std::copy(tmp.begin(), tmp.end(), dst.begin());
  }
}

// Other fields, byte for byte.
template <class V>
void put(Buffer& dst, const std::vector<V>& src) {
  dst.upload(src.data(), src.size() * sizeof(V));
}
template <class V>
void get(const Buffer& src, std::vector<V>& dst) {
  src.download(dst.data(), dst.size() * sizeof(V));
}

}  // namespace sadfast::gpu
