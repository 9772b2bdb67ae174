// The CUDA kernels of cuda/rosw.cu compiled as C++ for the CPU warp emulator (cuda_runtime.h here).
#include "rosw.cu"
