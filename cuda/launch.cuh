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
  int blocks_per_sm = 1;          // resident at once, from the occupancy calculator
  std::size_t smem_per_warp = 0;  // bytes of WarpSmem per warp
  bool global_ws = false;         // WarpSmem in global memory (Arch::global_ws), none in shared memory
  std::size_t smem() const { return global_ws ? 0 : smem_per_warp * warps_per_block; }
  int warps() const { return warps_per_block * blocks; }
};

// The most global memory a launch takes for the warps' WarpSmem when it does not fit in shared
// memory (fewer warps are launched rather than more memory taken).
inline constexpr std::size_t kMaxGlobalWorkspace = std::size_t{1} << 30;

int current_device();
int max_smem_optin();
int multiprocessors();
void record_launch(const char* kernel, const Launch& lc, int sms, Index K);

// The block shape for K flows, one warp each, given the most warps a block can hold
// (`max_wpb`, from shared memory) and `blocks_per_sm(w)`, how many blocks of w warps an SM
// holds at once (shared memory with its per-block reserve, registers, warp slots). Of
// w = 1..max_wpb it keeps the one with the most flows resident at once (min(K, w x blocks
// per SM x SMs)); on a tie the one spread over more SMs (small K), then the one launching fewer
// idle warps, then the larger block. A fixed 4 warps per block left an SM's shared memory
// partly unused: 4 x 32,440 B per block fits once in an H100 SM's 228 KB (4 warps), 3 x 32,440 B
// twice (6 warps).
template <class BlocksPerSm>
Launch choose_launch(std::size_t smem_per_warp, int max_wpb, Index K, int sms, BlocksPerSm blocks_per_sm) {
  Launch best;
  best.smem_per_warp = smem_per_warp;
  Index best_resident = -1, best_sms = -1, best_idle = 0;
  for (int w = 1; w <= max_wpb; ++w) {
    const int per_sm = std::max(blocks_per_sm(w), 1);
    const Index blocks = std::max<Index>(1, std::min<Index>((K + w - 1) / w, static_cast<Index>(per_sm) * sms));
    const Index resident = std::min<Index>(K, blocks * w);
    const Index used_sms = std::min<Index>(blocks, sms);
    const Index idle = blocks * w - resident;
    const bool better = resident != best_resident ? resident > best_resident
                        : used_sms != best_sms   ? used_sms > best_sms
                                                 : idle <= best_idle;
    if (better) {
      best.warps_per_block = w;
      best.blocks = static_cast<int>(blocks);
      best.blocks_per_sm = per_sm;
      best_resident = resident;
      best_sms = used_sms;
      best_idle = idle;
    }
  }
  return best;
}

// A kernel's Arch and where its warps' WarpSmem lies. Layers are tiled when the kernel has a tiled
// instantiation (`tiled`), layer_kernel() says so and their transposed weights still fit in a
// block's shared memory; the WarpSmem lies in global memory (`global`, the kernels' Global
// instantiations, lanes path) when even the untiled one exceeds a block's shared memory: any
// width then runs, its per-flow vectors and tiles cached in L1/L2 instead of shared memory.
template <class T>
struct KernelArch {
  Arch A;
  std::size_t bytes = 0;  // WarpSmem per warp
  bool global = false;

  KernelArch(const Architecture& a, Index n_points, bool hvp, bool tiled) : A(make_arch(a, n_points, tiled)) {
    const std::size_t optin = static_cast<std::size_t>(max_smem_optin());
    bytes = WarpSmem<T>::elems(A, hvp) * sizeof(T);
    if (bytes > optin && A.wt_elems > 0) {
      A = make_arch(a, n_points);
      bytes = WarpSmem<T>::elems(A, hvp) * sizeof(T);
    }
    global = bytes > optin;
  }

  // For a launch with its WarpSmem in global memory: grows `ws` to the launch's warps and points
  // A at it. Nothing to do (and `ws` untouched) when the WarpSmem is in shared memory.
  void bind_workspace(const Launch& lc, Buffer& ws) {
    if (!global) return;
    const std::size_t need = static_cast<std::size_t>(lc.warps()) * bytes;
    if (ws.bytes() < need) ws = Buffer(need);
    A.global_ws = ws.data();
  }
};

// The launch of `kernel` for K flows (named `name` in last_launch()): warps per block as
// choose_launch says, as many blocks as are resident on the device at once (work is then
// distributed over flows inside the kernel), never more warps than flows need. With the
// WarpSmem in global memory, at most kMaxGlobalWorkspace of it.
template <class Kernel, class T>
Launch plan_launch(Kernel kernel, const KernelArch<T>& ka, Index K, const char* name) {
  const std::size_t optin = static_cast<std::size_t>(max_smem_optin());
  const int max_wpb = ka.global ? 4 : static_cast<int>(std::min<std::size_t>(4, optin / ka.bytes));
  const std::size_t dyn_per_warp = ka.global ? 0 : ka.bytes;  // dynamic shared memory
  // The attribute allows launches up to the largest candidate; each smaller one is then allowed too.
  SADFAST_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(dyn_per_warp * max_wpb)));
  const int sms = multiprocessors();
  Launch lc = choose_launch(ka.bytes, max_wpb, K, sms, [&](int w) {
    int per_sm = 0;
    SADFAST_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, w * kWarp, dyn_per_warp * w));
    return per_sm;
  });
  if (ka.global) {
    lc.global_ws = true;
    const std::size_t max_warps = std::max<std::size_t>(1, kMaxGlobalWorkspace / ka.bytes);
    lc.blocks = static_cast<int>(std::max<std::size_t>(
        1, std::min<std::size_t>(lc.blocks, max_warps / static_cast<std::size_t>(lc.warps_per_block))));
  }
  record_launch(name, lc, sms, K);
  return lc;
}

}  // namespace sadfast::gpu
