// The CUDA kernels of cuda/rk45.cu compiled as C++ for the CPU warp emulator (cuda_runtime.h here).
#include "rk45.cu"
