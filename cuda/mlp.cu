// GPU runtime, device memory, problems and the batched loss / gradient / Hessian-vector kernels.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "api.hpp"
#include "check.cuh"
#include "launch.cuh"
#include "warp_mlp.cuh"

namespace sadfast::gpu {

// ---- runtime -------------------------------------------------------------------------------------

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error state of this query
    if (why != nullptr) *why = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    return 0;
  }
  if (n == 0 && why != nullptr) *why = "no CUDA device";
  return n;
}

DeviceInfo device_info(int device) {
  cudaDeviceProp prop{};
  SADFAST_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceInfo d;
  d.name = prop.name;
  d.major = prop.major;
  d.minor = prop.minor;
  d.multiprocessors = prop.multiProcessorCount;
  d.total_memory = prop.totalGlobalMem;
  int khz = 0;
  if (cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device) == cudaSuccess) d.clock_ghz = khz * 1e-6;
  return d;
}

int current_device() {
  int d = 0;
  SADFAST_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

int max_smem_optin() {
  int v = 0;
  SADFAST_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, current_device()));
  return v;
}

int multiprocessors() {
  int v = 0;
  SADFAST_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, current_device()));
  return v;
}

void synchronize() { SADFAST_CUDA_CHECK(cudaDeviceSynchronize()); }

namespace {
std::atomic<int> g_layer_kernel{static_cast<int>(LayerKernel::lanes)};
std::mutex g_launch_mutex;
LaunchInfo g_last_launch;
}  // namespace

void record_launch(const char* kernel, const Launch& lc, int sms, Index K) {
  const std::lock_guard<std::mutex> lock(g_launch_mutex);
  g_last_launch =
      LaunchInfo{kernel, K, lc.warps_per_block, lc.blocks, lc.blocks_per_sm, sms, lc.smem_per_warp, lc.global_ws};
}

LaunchInfo last_launch() {
  const std::lock_guard<std::mutex> lock(g_launch_mutex);
  return g_last_launch;
}

KernelOptions kernel_options(DType d) {
  return d == DType::f64 ? KernelOptions{kRowBlock<double>, kActIlp<double>}
                         : KernelOptions{kRowBlock<float>, kActIlp<float>};
}

void set_layer_kernel(LayerKernel k) { g_layer_kernel.store(static_cast<int>(k)); }
LayerKernel layer_kernel() { return static_cast<LayerKernel>(g_layer_kernel.load()); }

// ---- memory --------------------------------------------------------------------------------------

namespace {

std::string human_bytes(std::size_t b) {
  if (b < 1024) return std::to_string(b) + " bytes";
  const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(b) / 1024;
  int u = 0;
  for (; v >= 1024 && u < 4; ++u) v /= 1024;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

}  // namespace

Buffer::Buffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  const cudaError_t err = cudaMalloc(&ptr_, bytes);
  if (err == cudaErrorMemoryAllocation) {
    ptr_ = nullptr;
    std::size_t free_b = 0, total_b = 0;
    const bool known = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
    cudaGetLastError();  // not sticky: cleared, so that later launches are not reported as failed
    throw DeviceOutOfMemory("GPU out of memory: " + human_bytes(bytes) + " asked for" +
                            (known ? ", " + human_bytes(free_b) + " free of " + human_bytes(total_b) : std::string()) +
                            ". Integrate fewer flows at once (sadfast.basins runs any number in chunks), "
                            "or use dtype='float32'.");
  }
  if (err != cudaSuccess) throw_cuda_error(err, "cudaMalloc(&ptr_, bytes)", __FILE__, __LINE__);
}

Buffer::~Buffer() {
  if (ptr_ != nullptr) cudaFree(ptr_);  // never throws from a destructor
}

Buffer::Buffer(Buffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
  o.ptr_ = nullptr;
  o.bytes_ = 0;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void Buffer::upload(const void* host, std::size_t bytes, std::size_t offset) {
  if (offset + bytes > bytes_) throw std::out_of_range("Buffer::upload: past the end of the buffer");
  if (bytes > 0) SADFAST_CUDA_CHECK(cudaMemcpy(static_cast<char*>(ptr_) + offset, host, bytes, cudaMemcpyHostToDevice));
}

void Buffer::download(void* host, std::size_t bytes, std::size_t offset) const {
  if (offset + bytes > bytes_) throw std::out_of_range("Buffer::download: past the end of the buffer");
  if (bytes > 0) {
    SADFAST_CUDA_CHECK(cudaMemcpy(host, static_cast<const char*>(ptr_) + offset, bytes, cudaMemcpyDeviceToHost));
  }
}

void Buffer::zero() {
  if (bytes_ > 0) SADFAST_CUDA_CHECK(cudaMemset(ptr_, 0, bytes_));
}

// ---- problems ------------------------------------------------------------------------------------

namespace {
template <class T>
Buffer upload_as(const Real* host, std::size_t n) {
  std::vector<T> tmp(host, host + n);
  Buffer b(n * sizeof(T));
  b.upload(tmp.data(), n * sizeof(T));
  return b;
}
}  // namespace

DeviceProblem::DeviceProblem(const Problem& p) : arch_(p.arch), n_(p.n_points) {
  (void)make_arch(arch_, n_);  // fail early on unsupported shapes
  const std::size_t nx = static_cast<std::size_t>(n_ * arch_.d_in()), nt = static_cast<std::size_t>(n_ * arch_.d_out());
  x64_ = upload_as<double>(p.x.data(), nx);
  t64_ = upload_as<double>(p.t.data(), nt);
  x32_ = upload_as<float>(p.x.data(), nx);
  t32_ = upload_as<float>(p.t.data(), nt);
}

std::size_t DeviceProblem::warp_smem(DType d, bool hvp) const {
  // the gradient kernels have tiled instantiations
  return d == DType::f64 ? KernelArch<double>(arch_, n_, hvp, !hvp).bytes : KernelArch<float>(arch_, n_, hvp, !hvp).bytes;
}

// ---- batched kernels -----------------------------------------------------------------------------

namespace {

template <class T, bool HVP, bool Tiled, bool Global = false>
__global__ void batch_kernel(Arch A, const T* __restrict__ X, const T* __restrict__ Y, const T* __restrict__ theta,
                             const T* __restrict__ v, Index K, T* __restrict__ loss, T* __restrict__ grad,
                             T* __restrict__ hv) {
  const int warp = static_cast<int>(threadIdx.x / kWarp);
  const int lane = static_cast<int>(lane_id());
  const WarpSmem<T> s = this_warp_smem<T, Global>(A, HVP);
  const Index wpb = blockDim.x / kWarp;
  for (Index k = blockIdx.x * wpb + warp; k < K; k += static_cast<Index>(gridDim.x) * wpb) {
    const std::size_t off = static_cast<std::size_t>(k) * A.P;
    for (int i = lane; i < A.P; i += kWarp) {
      s.theta[i] = theta[off + i];
      if constexpr (HVP) s.v[i] = v[off + i];
    }
    __syncwarp();
    const T lo = evaluate<T, HVP, kEvalMode<Tiled, Global>>(A, X, Y, s);
    if (loss != nullptr && lane == 0) loss[k] = lo;
    for (int i = lane; i < A.P; i += kWarp) {
      if (grad != nullptr) grad[off + i] = s.grad[i];
      if constexpr (HVP) hv[off + i] = s.hv[i];
    }
    __syncwarp();
  }
}

template <class T, bool HVP>
void run_batch(const DeviceProblem& p, DType d, const void* theta, const void* v, Index K, void* loss, void* grad,
               void* hv) {
  if (K <= 0) return;
  KernelArch<T> ka(p.arch(), p.n_points(), HVP, !HVP);
  const Arch& A = ka.A;
  auto kernel = ka.global         ? batch_kernel<T, HVP, false, true>
                : A.wt_elems > 0 ? batch_kernel<T, false, true>
                                 : batch_kernel<T, HVP, false>;
  const Launch lc = plan_launch(kernel, ka, K, HVP ? "hvp" : "loss_grad");
  Buffer ws;
  ka.bind_workspace(lc, ws);
  SADFAST_LAUNCH(kernel, lc)(
      A, static_cast<const T*>(p.x(d)), static_cast<const T*>(p.t(d)), static_cast<const T*>(theta),
      static_cast<const T*>(v), K, static_cast<T*>(loss), static_cast<T*>(grad), static_cast<T*>(hv));
  SADFAST_CUDA_CHECK_LAUNCH();
  synchronize();
}

}  // namespace

void loss_grad(const DeviceProblem& p, DType d, const void* d_theta, Index K, void* d_loss, void* d_grad) {
  if (d == DType::f64) run_batch<double, false>(p, d, d_theta, nullptr, K, d_loss, d_grad, nullptr);
  else run_batch<float, false>(p, d, d_theta, nullptr, K, d_loss, d_grad, nullptr);
}

void hvp(const DeviceProblem& p, DType d, const void* d_theta, const void* d_v, Index K, void* d_hv, void* d_loss,
         void* d_grad) {
  if (d == DType::f64) run_batch<double, true>(p, d, d_theta, d_v, K, d_loss, d_grad, d_hv);
  else run_batch<float, true>(p, d, d_theta, d_v, K, d_loss, d_grad, d_hv);
}

}  // namespace sadfast::gpu
