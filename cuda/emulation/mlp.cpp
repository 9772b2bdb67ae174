// The CUDA kernels of cuda/mlp.cu compiled as C++ for the CPU warp emulator (cuda_runtime.h here).
#include "mlp.cu"
