// sadfast._cuda_emu: the GPU backend's bindings (bind_cuda.cpp) over the CUDA kernels compiled
// for the CPU warp emulator (cuda/emulation/cuda_runtime.h). Selected in Python by
// SADFAST_CUDA_EMULATOR=1 (sadfast/cuda.py); built with -DSADFAST_CUDA_EMULATION=ON.
#include <pybind11/pybind11.h>

#include "register.hpp"

PYBIND11_MODULE(_cuda_emu, m) {
  m.doc() = "sadfast's CUDA kernels run on the CPU by a warp emulator (for tests without a GPU)";
  sadfast::bindings::register_cuda(m);
}
