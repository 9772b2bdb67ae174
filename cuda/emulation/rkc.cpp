// The CUDA kernels of cuda/rkc.cu compiled as C++ for the CPU warp emulator (cuda_runtime.h here).
#include "rkc.cu"
