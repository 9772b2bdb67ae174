// sadfast._cuda_emu: the GPU backend's bindings (bind_cuda.cpp) over the CUDA kernels compiled
// for the CPU warp emulator (cuda/emulation/cuda_runtime.h). Selected in Python by
// SADFAST_CUDA_EMULATOR=1 (sadfast/cuda.py); built with -DSADFAST_CUDA_EMULATION=ON.
#include <cuda_runtime.h>  // the emulator's
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "register.hpp"

namespace py = pybind11;

namespace {

// Kernels that check the emulator itself (tests/test_cuda.py::test_emulator_checks_itself).

// Butterfly sum of lane + 1 over the warp, and a broadcast of lane 5's value.
__global__ void warp_sum_kernel(double* out) {
  const unsigned lane = threadIdx.x & 31u;
  double x = lane + 1.0;
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  const double five = __shfl_sync(0xffffffffu, static_cast<double>(lane), 5);
  out[blockIdx.x * blockDim.x + threadIdx.x] = x * 100 + five;
}

// Lanes 0-15 leave, lanes 16-31 wait at a full-warp barrier: undefined on a GPU, an error here.
__global__ void divergent_kernel(int* out) {
  if ((threadIdx.x & 31u) < 16) return;
  __syncwarp();
  out[threadIdx.x] = 1;
}

// Shared memory is NaN until written.
__global__ void smem_kernel(double* out) {
  const double* s = reinterpret_cast<const double*>(sadfast_emu::dynamic_smem());
  out[threadIdx.x] = s[threadIdx.x];
}

py::dict selftest() {
  py::dict r;
  {
    std::vector<double> out(2 * 64, 0);
    sadfast_emu::launch(warp_sum_kernel, 2, 64, 0)(out.data());
    bool ok = cudaGetLastError() == cudaSuccess;
    for (double v : out) ok = ok && v == 528 * 100 + 5;
    r["shuffles"] = ok;
  }
  {
    std::vector<int> out(32, 0);
    sadfast_emu::launch(divergent_kernel, 1, 32, 0)(out.data());
    const cudaError_t e = cudaGetLastError();
    r["divergence_error"] = std::string(e == cudaSuccess ? "" : cudaGetErrorString(e));
    r["after_error_cleared"] = cudaGetLastError() == cudaSuccess;
  }
  {
    std::vector<double> out(32, 0);
    sadfast_emu::launch(smem_kernel, 1, 32, 32 * sizeof(double))(out.data());
    bool nan = true;
    for (double v : out) nan = nan && v != v;
    r["smem_starts_nan"] = nan;
  }
  return r;
}

}  // namespace

PYBIND11_MODULE(_cuda_emu, m) {
  m.doc() = "sadfast's CUDA kernels run on the CPU by a warp emulator (for tests without a GPU)";
  sadfast::bindings::register_cuda(m);
  m.def("emulator_selftest", &selftest, "Checks of the emulator itself: shuffles, divergence, shared memory.");
}
