// Shared launch helpers of the GPU kernels: the architecture as a kernel argument and the
// warps-per-block / grid choice from each warp's shared memory.
#pragma once

#include <algorithm>
#include <stdexcept>
#include <string>

#include "api.hpp"
#include "check.cuh"
#include "warp_mlp.cuh"

namespace sadfast::gpu {

// `tiled`: whether the kernel it is for has a tiled instantiation; the layers to tile are then
// those of at least kTiledMinWidth on both sides when layer_kernel() is `tiled`.
inline Arch make_arch(const Architecture& a, Index n_points, bool tiled = false) {
  if (a.n_layers() > kMaxLayers) {
    throw std::invalid_argument("device='cuda': networks of at most " + std::to_string(kMaxLayers) +
                                " layers are supported, this one has " + std::to_string(a.n_layers()));
  }
  if (a.loss() == Loss::cross_entropy && a.d_out() > kMaxOutCE) {
    throw std::invalid_argument("device='cuda': cross_entropy supports at most " + std::to_string(kMaxOutCE) +
                                " classes, this model has " + std::to_string(a.d_out()));
  }
  Arch r;
  r.L = static_cast<int>(a.n_layers());
  int row = 0;
  for (int l = 0; l <= r.L; ++l) {
    r.width[l] = static_cast<int>(a.widths()[l]);
    r.row[l] = row;
    row += r.width[l];
  }
  r.rows = row;
  for (int l = 0; l < r.L; ++l) {
    r.w_off[l] = static_cast<int>(a.layers()[l].w_offset);
    r.b_off[l] = static_cast<int>(a.layers()[l].b_offset);
  }
  r.P = static_cast<int>(a.n_params());
  r.N = static_cast<int>(n_points);
  r.act = a.activation();
  r.loss = a.loss();
  r.wd = a.weight_decay();
  if (tiled && layer_kernel() == LayerKernel::tiled) {
    for (int l = 0; l < r.L; ++l) {
      r.tiled[l] = r.width[l] >= kTiledMinWidth && r.width[l + 1] >= kTiledMinWidth;
      if (r.tiled[l]) {
        r.wt_off[l] = r.wt_elems;
        r.wt_elems += r.width[l] * (r.width[l + 1] + 1);
      }
    }
  }
  return r;
}

// `SADFAST_LAUNCH(kernel, lc)(args...)` is `kernel<<<blocks, threads, smem>>>(args...)` of a
// Launch; in the CPU emulator's build (cuda/emulation) the emulator's launch of the same kernel.
#ifdef SADFAST_CUDA_EMULATION
#define SADFAST_LAUNCH(kernel, lc) \
  ::sadfast_emu::launch(kernel, (lc).blocks, (lc).warps_per_block * ::sadfast::gpu::kWarp, (lc).smem())
#else
#define SADFAST_LAUNCH(kernel, lc) kernel<<<(lc).blocks, (lc).warps_per_block * ::sadfast::gpu::kWarp, (lc).smem()>>>
#endif

struct Launch {
  int warps_per_block = 1;
  int blocks = 1;
  std::size_t smem_per_warp = 0;  // bytes
  std::size_t smem() const { return smem_per_warp * warps_per_block; }
  int warps() const { return warps_per_block * blocks; }
};

int current_device();
int max_smem_optin();
int multiprocessors();

// Up to 4 warps per block within the opt-in shared memory per block; as many blocks as fit
// on the device at once (work is then distributed over flows inside the kernel), but never more
// warps than flows.
template <class Kernel>
Launch plan_launch(Kernel kernel, std::size_t smem_per_warp, Index K) {
  Launch lc;
  lc.smem_per_warp = smem_per_warp;
  const std::size_t optin = static_cast<std::size_t>(max_smem_optin());
  if (smem_per_warp > optin) {
    throw std::invalid_argument("device='cuda': this network needs " + std::to_string(smem_per_warp) +
                                " bytes of shared memory per flow, the device has " + std::to_string(optin) +
                                " per block; use the CPU or float32");
  }
  lc.warps_per_block = static_cast<int>(std::min<std::size_t>(4, optin / smem_per_warp));
  SADFAST_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(lc.smem())));
  int per_sm = 0;
  SADFAST_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, lc.warps_per_block * kWarp,
                                                                   lc.smem()));
  per_sm = std::max(per_sm, 1);
  const Index need = (K + lc.warps_per_block - 1) / lc.warps_per_block;
  lc.blocks = static_cast<int>(std::max<Index>(1, std::min<Index>(need, static_cast<Index>(per_sm) * multiprocessors())));
  return lc;
}

}  // namespace sadfast::gpu
