// The CUDA kernels of cuda/train.cu compiled as C++ for the CPU warp emulator (cuda_runtime.h here).
#include "train.cu"
