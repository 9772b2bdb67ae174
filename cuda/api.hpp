// The GPU backend's CUDA-free facade (as tiny-cuda-nn's): the bindings and the rest of the C++
// code include only this header, never <cuda_runtime.h>. Implemented in cuda/*.cu, built when
// CMake finds nvcc (option SADFAST_CUDA); SADFAST_WITH_CUDA is then defined for the bindings.
//
// Every kernel evaluates the same shared math as the CPU path (include/sadfast/activations.hpp,
// losses.hpp, rk_tableau.hpp, step_controller.hpp), so the CPU code is the GPU code's reference.
// Pointers named `d_*` are device pointers; all calls are synchronous on the legacy default
// stream (cupy's default stream too), so device arrays owned by cupy can be passed directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "sadfast/flows.hpp"
#include "sadfast/mlp.hpp"
#include "sadfast/train.hpp"

namespace sadfast::gpu {

enum class DType : int { f64 = 0, f32 = 1 };
inline std::size_t dtype_size(DType d) { return d == DType::f64 ? 8 : 4; }

// Number of CUDA devices; 0 when there is no device or no driver (then `why` says why).
int device_count(std::string* why = nullptr);

struct DeviceInfo {
  std::string name;
  int major = 0, minor = 0, multiprocessors = 0;
  std::size_t total_memory = 0;
  double clock_ghz = 0;  // SM clock
};
DeviceInfo device_info(int device);

// How layers at least kTiledMinWidth (16) wide on both sides are evaluated (process-wide; read
// at each launch): `lanes` runs one data point per lane as the narrow layers do (the default);
// `tiled` runs them as register-tiled warp GEMMs (warp_mlp.cuh), with fewer shared-memory loads
// per FMA but one more (in x (out + 1)) block of shared memory per flow. Same values up to
// rounding in the weight gradients' summation order. Applies to loss_grad and to the explicit
// 5(4) steps (flows_advance with dopri5 or tsit5); the HVP, RKC, flows_initialize and training
// keep the lanes path.
enum class LayerKernel : int { lanes = 0, tiled = 1 };
void set_layer_kernel(LayerKernel k);
LayerKernel layer_kernel();

// The most recent kernel launch this process planned (for benchmarks and tests): the kernel
// ("loss_grad", "hvp", "flows_initialize", "dopri5", "tsit5", "rkc", "rosw" or "train"), its flows, its
// shape and how many of its blocks an SM holds at once. Empty `kernel` before the first launch.
struct LaunchInfo {
  std::string kernel;
  std::int64_t flows = 0;
  int warps_per_block = 0, blocks = 0, blocks_per_sm = 0, multiprocessors = 0;
  std::size_t smem_per_warp = 0;  // bytes of each warp's workspace (WarpSmem)
  bool global_workspace = false;  // that workspace in global memory: too large for shared memory
};
LaunchInfo last_launch();

// The build-time knobs of the lanes path this module was compiled with, for one dtype's kernels
// (cuda/warp_mlp.cuh: SADFAST_ROW_BLOCK and SADFAST_ACT_ILP, or their _F64 / _F32 forms), so that
// a benchmark can say which variant it timed.
struct KernelOptions {
  int row_block = 0;  // neurons (forward) and inputs (backward) per block of FMA chains
  int act_ilp = 0;    // activations evaluated together (0: one at a time, not unrolled)
};
KernelOptions kernel_options(DType d);

// A device allocation that failed for want of memory (cudaErrorMemoryAllocation), with the bytes
// asked for and the device's free and total memory in its message: Python's MemoryError. CUDA's
// last error is cleared before it is thrown, so the device stays usable (smaller batches run).
class DeviceOutOfMemory : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Owned device memory (cudaMalloc; move-only). Throws DeviceOutOfMemory when the device lacks it.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t bytes);
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  void upload(const void* host, std::size_t bytes, std::size_t offset = 0);
  void download(void* host, std::size_t bytes, std::size_t offset = 0) const;
  void zero();

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

void synchronize();

// A problem's data on the device in both precisions (feature-major, as Problem keeps them).
class DeviceProblem {
 public:
  explicit DeviceProblem(const Problem& p);
  const Architecture& arch() const { return arch_; }
  Index n_points() const { return n_; }
  const void* x(DType d) const { return d == DType::f64 ? x64_.data() : x32_.data(); }
  const void* t(DType d) const { return d == DType::f64 ? t64_.data() : t32_.data(); }
  // The workspace one warp needs to evaluate one flow (WarpSmem, bytes): in shared memory, or in
  // global memory when it exceeds a block's shared memory (launch.cuh's KernelArch).
  std::size_t warp_smem(DType d, bool hvp) const;

 private:
  Architecture arch_;
  Index n_;
  Buffer x64_, t64_, x32_, t32_;
};

// Batched kernels on device arrays: theta, v, grad, hv (K, P) row-major; loss (K); grad / loss
// may be null. One warp per flow, the data points of a 32-point tile across its lanes.
void loss_grad(const DeviceProblem& p, DType d, const void* d_theta, Index K, void* d_loss, void* d_grad);
void hvp(const DeviceProblem& p, DType d, const void* d_theta, const void* d_v, Index K, void* d_hv, void* d_loss,
         void* d_grad);

// The largest Lanczos rank of ROSW on the GPU (hessian_rank): each lane keeps the tridiagonal
// matrix (2 x kMaxGpuRank doubles of local memory) and each warp its eigenvectors (rank^2).
inline constexpr int kMaxGpuRank = 64;

// Device state of K flows (Dormand-Prince, Tsitouras, RKC, ROSW or auto): the fields of FlowBatch
// those methods use. Scalars are float64 in both precisions; the (K, P) vectors are of `dtype`.
// RKC's eigenvector estimates (K, P) exist only for methods rkc and auto; ROSW's Hessian
// approximations (K, rank, P vectors of `dtype`, K x rank float64 values) only for methods rosw
// and auto, with 1 <= rank < P and rank <= kMaxGpuRank (a Lanczos approximation; the exact
// Hessian is the CPU's).
class DeviceFlows {
 public:
  DeviceFlows(Index K, Index P, DType d, FlowMethod method = FlowMethod::dopri5, Index rank = 0);
  Index K() const { return K_; }
  Index P() const { return P_; }
  DType dtype() const { return dtype_; }
  FlowMethod method() const { return method_; }
  Index rank() const { return rank_; }
  // Host <-> device copies of the whole state (float32 vectors are converted on the host).
  void upload(const FlowBatch& b);
  void download(FlowBatch& b) const;
  struct Impl;
  Impl& impl() const { return *impl_; }
  ~DeviceFlows();

 private:
  Index K_, P_;
  DType dtype_;
  FlowMethod method_;
  Index rank_;
  std::unique_ptr<Impl> impl_;
};

// Save times and traces on the device: times (S) float64, loss/grad_norm/theta_norm (K, S)
// float64, theta (K, S, P) of the flows' dtype or null.
struct DeviceSaves {
  const double* d_times = nullptr;
  Index n = 0;
  double* d_loss = nullptr;
  double* d_grad_norm = nullptr;
  double* d_theta_norm = nullptr;
  void* d_theta = nullptr;
};

// As flows_initialize / flows_advance in flows.hpp for the methods "dopri5" and "tsit5" (rk45.cu,
// one kernel: the table is an argument), "rkc" (rkc.cu), "rosw" with a Lanczos rank (rosw.cu) and
// "auto" (the three kernels in turn, each advancing the flows in its mode), one warp per flow,
// whole flows inside one kernel (no host round trip per step).
// d_theta0 is (K, P) of the flows' dtype on the device. Returns the number of flows still running.
void flows_initialize(const DeviceProblem& p, DeviceFlows& b, const void* d_theta0, Real t0, Real first_step,
                      const SolverOptions& opt, const DeviceSaves& save);
Index flows_advance(const DeviceProblem& p, DeviceFlows& b, const SolverOptions& opt, const DeviceSaves& save,
                    std::int64_t max_attempts);

// As train_advance in train.hpp (GD, momentum, Adam/AdamW), one warp per flow, a whole slice of
// optimizer steps inside one kernel. The host batch and traces are copied to the device and back
// around the launch (optimizer state and traces: (3 P + 3 S) numbers per flow); the (K, P)
// vectors live on the device in `d`'s precision. Returns the number of flows still running.
Index train_advance(const DeviceProblem& p, DType d, TrainBatch& b, const TrainOptions& o, const TrainTraces& tr,
                    std::int64_t max_steps);

}  // namespace sadfast::gpu
