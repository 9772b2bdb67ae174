// Every CUDA runtime call is checked: a failure becomes a C++ exception with file, line and
// CUDA's message (pybind11 turns it into a Python RuntimeError), as tiny-cuda-nn's
// CUDA_CHECK_THROW.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace sadfast::gpu {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  // A failed call also sets CUDA's last error; unless cleared, a non-sticky one (a failed
  // allocation, a bad launch configuration) would be reported again by the next launch's check.
  cudaGetLastError();
  throw std::runtime_error(std::string("CUDA error at ") + file + ":" + std::to_string(line) + ": " + expr +
                           " failed: " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

}  // namespace sadfast::gpu

#define SADFAST_CUDA_CHECK(expr)                                                              \
  do {                                                                                        \
    const cudaError_t sadfast_err_ = (expr);                                                  \
    if (sadfast_err_ != cudaSuccess) ::sadfast::gpu::throw_cuda_error(sadfast_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch errors now, execution errors at the next synchronization.
#define SADFAST_CUDA_CHECK_LAUNCH() SADFAST_CUDA_CHECK(cudaGetLastError())
