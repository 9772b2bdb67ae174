// Shared definitions for the CPU and CUDA code paths.
//
// Everything in include/sadfast/ that is marked SADFAST_HD is plain arithmetic usable from host
// and device code alike, so the CPU implementation is the reference for the GPU one.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define SADFAST_HD __host__ __device__ __forceinline__
#else
#define SADFAST_HD inline
#endif

namespace sadfast {

using Real = double;
using Index = std::ptrdiff_t;

}  // namespace sadfast
