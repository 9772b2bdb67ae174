// A CPU stand-in for <cuda_runtime.h>: the part of the CUDA runtime and of the device language
// that sadfast's kernels use, so that cuda/*.cu compile as plain C++ and their kernels run on
// the CPU (CMake option SADFAST_CUDA_EMULATION, module sadfast._cuda_emu; see
// docs/gpu_emulator.md). It exists to test the kernels' logic where there is no GPU: the same
// kernel source, the same launch code, checked against the CPU backend by tests/test_cuda.py.
//
// Execution model. A launch runs its blocks one after another and each block's warps one after
// another; the 32 lanes of a warp are fibers on the calling thread, each on its own stack. A lane
// starts with setcontext (ucontext) and then switches with _setjmp/_longjmp: glibc's swapcontext
// makes a sigprocmask system call per switch, 900 ns a round trip on the 2-core CI machine
// against 79 ns, and a barrier is 32 round trips. _longjmp between stacks is what
// _FORTIFY_SOURCE's longjmp check forbids ("longjmp causes uninitialized stack frame"), so the
// emulator is compiled without it (CMakeLists.txt; an #error below otherwise). A lane runs until
// it reaches a warp barrier (__syncwarp, or a shuffle, which is two), then the next lane runs;
// when all 32 lanes wait at the barrier they are released together, lane 0 first. So:
//  * everything that is warp-synchronous by __syncwarp / shuffles behaves as on a GPU;
//  * a barrier reached by some lanes while others have left the kernel (divergent control
//    flow around a full-mask __syncwarp, undefined behaviour on a GPU) fails the launch with a
//    message (cudaGetLastError) instead of passing silently;
//  * shared memory starts filled with NaN bytes (0xff), so a read before any write shows up in
//    the results;
//  * a lane reading another lane's shared memory without a barrier in between sees the
//    old value (the writer runs later in the phase), as a GPU may too: such races show up
//    as wrong results rather than passing by chance.
// Not emulated: timing, occupancy (beyond the shared-memory and warp-slot limits the launch
// planner asks about), memory coalescing, concurrent warps (atomics are plain
// read-modify-writes: warps never run at the same time), __syncthreads (sadfast's kernels do not
// use it), and the GPU's floating-point details (nvcc contracts a * b + c into FMAs and has its
// own exp/log; results agree with a GPU to rounding, not bitwise).
#pragma once

#include <math.h>  // the global float/double overloads device code calls (sqrt, fabs, isfinite, ...)
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#ifndef SADFAST_CUDA_EMULATION
#define SADFAST_CUDA_EMULATION 1
#endif

#if defined(__USE_FORTIFY_LEVEL) && __USE_FORTIFY_LEVEL > 0
#error "the CUDA emulator's lanes switch stacks with _longjmp, which _FORTIFY_SOURCE forbids: build with -U_FORTIFY_SOURCE"
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

// ---- runtime types ---------------------------------------------------------------------------

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
};

enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3
};

enum cudaDeviceAttr : int {
  cudaDevAttrClockRate = 13,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97
};

enum cudaFuncAttribute : int { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct cudaDeviceProp {
  char name[256] = {};
  int major = 0, minor = 0, multiProcessorCount = 0;
  std::size_t totalGlobalMem = 0;
};

namespace sadfast_emu {

inline constexpr int kLanes = 32;
inline constexpr std::size_t kStackBytes = 256 * 1024;
inline constexpr int kSmemOptin = 232448;  // bytes per block, as an H100 / H200
inline constexpr std::size_t kSmemPerSm = 233472;      // bytes per SM (228 KB), as an H100 / H200
inline constexpr std::size_t kSmemReservedPerBlock = 1024;  // the runtime's reserve per resident block
inline constexpr int kMaxWarpsPerSm = 64, kMaxBlocksPerSm = 32;
inline constexpr const char* kDeviceName = "sadfast CUDA emulator (CPU, serial warps)";

// Device memory: allocations are counted against a capacity, 8 GiB (totalGlobalMem) unless the
// environment variable SADFAST_EMU_DEVICE_MEMORY gives another number of bytes (read at each
// cudaMalloc), so that running out of device memory can be tested here.
inline constexpr std::size_t kDeviceMemory = std::size_t{1} << 33;

struct Memory {
  std::mutex mutex;
  std::map<void*, std::size_t> sizes;
  std::size_t used = 0;
};

inline Memory& memory() {
  static Memory m;
  return m;
}

inline std::size_t device_memory() {
  const char* v = std::getenv("SADFAST_EMU_DEVICE_MEMORY");
  return v != nullptr && *v != '\0' ? static_cast<std::size_t>(std::strtoull(v, nullptr, 10)) : kDeviceMemory;
}

// Free bytes (under m.mutex): none when the capacity was lowered below what is allocated.
inline std::size_t free_memory(const Memory& m, std::size_t cap) { return cap > m.used ? cap - m.used : 0; }

struct Indices {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
};

struct Lane {
  ucontext_t start{};  // where the lane starts, on its own stack (used once)
  jmp_buf at{};        // where it waits at a barrier
  Indices idx;
  bool started = false, waiting = false, done = false;
};

// The warp being run on this thread: its lanes, the scheduler's context and the shuffle slots.
struct Warp {
  Lane lanes[kLanes];
  jmp_buf sched{};  // the scheduler, waiting for the running lane to stop
  int current = 0;
  std::uint64_t slots[kLanes] = {};
  std::function<void()> body;
  std::vector<std::unique_ptr<char[]>> stacks;
};

struct State {
  Warp* warp = nullptr;
  const Indices* idx = nullptr;
  unsigned char* smem = nullptr;
  cudaError_t last_error = cudaSuccess;  // until read by cudaGetLastError
  cudaError_t message_error = cudaSuccess;  // the last failure, described by `message`
  std::string message;
};

inline State& state() {
  thread_local State s;
  return s;
}

inline void fail(cudaError_t e, std::string msg) {
  State& s = state();
  if (s.last_error == cudaSuccess) {
    s.last_error = s.message_error = e;
    s.message = std::move(msg);
  }
}

inline void lane_entry() {
  Warp& w = *state().warp;
  w.body();
  w.lanes[w.current].done = true;
  _longjmp(w.sched, 1);  // back to the scheduler; this stack is not resumed
}

// Barrier of the current warp: the lane waits until all 32 lanes have arrived.
[[gnu::noinline]] inline void warp_barrier(unsigned mask) {
  Warp& w = *state().warp;
  if (mask != 0xffffffffu) fail(cudaErrorLaunchFailure, "emulator: only full-warp masks are supported");
  Lane& me = w.lanes[w.current];
  me.waiting = true;
  if (_setjmp(me.at) == 0) _longjmp(w.sched, 1);
}

// Runs lane L until it waits at a barrier or leaves the kernel.
[[gnu::noinline]] inline void run_lane(Warp& w, Lane& L) {
  if (_setjmp(w.sched) != 0) return;
  if (L.started) _longjmp(L.at, 1);
  L.started = true;
  setcontext(&L.start);
}

// Runs one warp of a launch to its end. Returns false (with the error recorded) on divergence.
inline bool run_warp(Warp& w, const dim3& block, const dim3& grid, unsigned block_x, unsigned warp_in_block) {
  State& s = state();
  if (w.stacks.empty()) {
    for (int l = 0; l < kLanes; ++l) w.stacks.emplace_back(new char[kStackBytes]);
  }
  for (int l = 0; l < kLanes; ++l) {
    Lane& L = w.lanes[l];
    L = Lane{};
    L.idx.thread_idx = dim3(warp_in_block * kLanes + static_cast<unsigned>(l));
    L.idx.block_idx = dim3(block_x);
    L.idx.block_dim = block;
    L.idx.grid_dim = grid;
    getcontext(&L.start);
    L.start.uc_stack.ss_sp = w.stacks[l].get();
    L.start.uc_stack.ss_size = kStackBytes;
    L.start.uc_link = nullptr;  // lane_entry never returns: it jumps back to the scheduler
    makecontext(&L.start, lane_entry, 0);
  }
  for (;;) {
    for (int l = 0; l < kLanes; ++l) {
      Lane& L = w.lanes[l];
      if (L.done || L.waiting) continue;
      w.current = l;
      s.idx = &L.idx;
      run_lane(w, L);
    }
    int waiting = 0, done = 0;
    for (const Lane& L : w.lanes) {
      waiting += L.waiting ? 1 : 0;
      done += L.done ? 1 : 0;
    }
    if (done == kLanes) return true;
    if (waiting == kLanes) {
      for (Lane& L : w.lanes) L.waiting = false;
      continue;
    }
    fail(cudaErrorLaunchFailure, "emulator: a full-warp barrier (__syncwarp or shuffle) was reached by " +
                                     std::to_string(waiting) + " lanes of block " + std::to_string(block_x) +
                                     ", warp " + std::to_string(warp_in_block) + " while " + std::to_string(done) +
                                     " had left the kernel");
    return false;
  }
}

template <class... P>
struct Launcher {
  void (*kernel)(P...);
  dim3 grid, block;
  std::size_t smem;

  template <class... A>
  void operator()(A&&... args) const {
    State& s = state();
    if (block.x == 0 || block.x % kLanes != 0 || block.y != 1 || block.z != 1 || grid.x == 0 || grid.y != 1 ||
        grid.z != 1) {
      fail(cudaErrorInvalidConfiguration, "emulator: blocks of whole warps in one dimension only");
      return;
    }
    if (smem > static_cast<std::size_t>(kSmemOptin)) {
      fail(cudaErrorInvalidValue, "emulator: dynamic shared memory above the opt-in maximum");
      return;
    }
    const std::tuple<P...> params(std::forward<A>(args)...);
    Warp w;
    w.body = [&] { std::apply(kernel, params); };
    std::vector<unsigned char> shared(std::max<std::size_t>(smem, 16) + 64, 0xff);
    unsigned char* base = shared.data();
    base += (64 - reinterpret_cast<std::uintptr_t>(base) % 64) % 64;
    Warp* outer = s.warp;
    const Indices* outer_idx = s.idx;
    unsigned char* outer_smem = s.smem;
    s.warp = &w;
    s.smem = base;
    for (unsigned b = 0; b < grid.x; ++b) {
      std::fill(shared.begin(), shared.end(), 0xff);
      bool ok = true;
      for (unsigned wb = 0; ok && wb < block.x / kLanes; ++wb) ok = run_warp(w, block, grid, b, wb);
      if (!ok) break;
    }
    s.warp = outer;
    s.idx = outer_idx;
    s.smem = outer_smem;
  }
};

template <class... P>
Launcher<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t smem) {
  return {kernel, grid, block, smem};
}

inline unsigned char* dynamic_smem() { return state().smem; }

}  // namespace sadfast_emu

// ---- the device language --------------------------------------------------------------------------

#define threadIdx (::sadfast_emu::state().idx->thread_idx)
#define blockIdx (::sadfast_emu::state().idx->block_idx)
#define blockDim (::sadfast_emu::state().idx->block_dim)
#define gridDim (::sadfast_emu::state().idx->grid_dim)

inline void __syncwarp(unsigned mask = 0xffffffffu) { ::sadfast_emu::warp_barrier(mask); }

namespace sadfast_emu {
template <class T>
T shuffle(unsigned mask, T v, int src_of_me(int, int), int arg) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(std::uint64_t));
  Warp& w = *state().warp;
  const int me = w.current;
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  w.slots[me] = bits;
  __syncwarp(mask);
  bits = w.slots[src_of_me(me, arg) & (kLanes - 1)];
  __syncwarp(mask);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}
inline int xor_lane(int me, int m) { return me ^ m; }
inline int src_lane(int, int s) { return s; }
}  // namespace sadfast_emu

template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int = 32) {
  return ::sadfast_emu::shuffle(mask, v, ::sadfast_emu::xor_lane, lane_mask);
}

template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int = 32) {
  return ::sadfast_emu::shuffle(mask, v, ::sadfast_emu::src_lane, src_lane);
}

template <class T>
T atomicAdd(T* address, T v) {  // warps never run concurrently here
  const T old = *address;
  *address = old + v;
  return old;
}

// ---- the runtime API -------------------------------------------------------------------------------

inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

inline const char* cudaGetErrorString(cudaError_t e) {
  const auto& s = ::sadfast_emu::state();
  if (e != cudaSuccess && e == s.message_error) return s.message.c_str();
  return e == cudaSuccess ? "no error" : "emulated CUDA error";
}

inline cudaError_t cudaGetLastError() {
  auto& s = ::sadfast_emu::state();
  const cudaError_t e = s.last_error;
  s.last_error = cudaSuccess;
  return e;
}

inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}

inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}

inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  *p = cudaDeviceProp{};
  std::strncpy(p->name, ::sadfast_emu::kDeviceName, sizeof p->name - 1);
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 1;
  p->totalGlobalMem = ::sadfast_emu::kDeviceMemory;
  return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  switch (a) {
    case cudaDevAttrClockRate: *v = 1000000; return cudaSuccess;  // kHz
    case cudaDevAttrMultiProcessorCount: *v = 1; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = ::sadfast_emu::kSmemOptin; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}

template <class F>
cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute, int value) {
  return value >= 0 && value <= ::sadfast_emu::kSmemOptin ? cudaSuccess : cudaErrorInvalidValue;
}

// An H100 / H200 SM's shared-memory and warp-slot limits (registers are not modelled: the
// emulator compiles no PTX), so that the launch planner's choices can be tested here.
template <class F>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, F*, int threads, std::size_t smem) {
  if (threads <= 0 || threads > 1024 || smem > static_cast<std::size_t>(::sadfast_emu::kSmemOptin)) {
    *n = 0;
    return cudaErrorInvalidValue;
  }
  const int warps = (threads + ::sadfast_emu::kLanes - 1) / ::sadfast_emu::kLanes;
  const int by_smem = static_cast<int>(::sadfast_emu::kSmemPerSm / (smem + ::sadfast_emu::kSmemReservedPerBlock));
  *n = std::min({by_smem, ::sadfast_emu::kMaxWarpsPerSm / warps, ::sadfast_emu::kMaxBlocksPerSm});
  return cudaSuccess;
}

inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

inline cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  *p = nullptr;
  auto& m = ::sadfast_emu::memory();
  const std::lock_guard<std::mutex> lock(m.mutex);
  const std::size_t free_bytes = ::sadfast_emu::free_memory(m, ::sadfast_emu::device_memory());
  const std::size_t rounded = (bytes + 255) / 256 * 256;
  if (bytes > free_bytes - free_bytes % 256) {  // as CUDA: the failure is also the last error
    ::sadfast_emu::fail(cudaErrorMemoryAllocation, "out of memory");
    return cudaErrorMemoryAllocation;
  }
  *p = std::aligned_alloc(256, rounded);
  if (*p == nullptr) {
    ::sadfast_emu::fail(cudaErrorMemoryAllocation, "out of memory");
    return cudaErrorMemoryAllocation;
  }
  std::memset(*p, 0xff, rounded);  // as uninitialized device memory: NaN where read before written
  m.sizes[*p] = rounded;
  m.used += rounded;
  return cudaSuccess;
}

inline cudaError_t cudaFree(void* p) {
  if (p == nullptr) return cudaSuccess;
  auto& m = ::sadfast_emu::memory();
  const std::lock_guard<std::mutex> lock(m.mutex);
  const auto it = m.sizes.find(p);
  if (it == m.sizes.end()) return cudaErrorInvalidValue;
  m.used -= it->second;
  m.sizes.erase(it);
  std::free(p);
  return cudaSuccess;
}

inline cudaError_t cudaMemGetInfo(std::size_t* free_bytes, std::size_t* total) {
  auto& m = ::sadfast_emu::memory();
  const std::lock_guard<std::mutex> lock(m.mutex);
  *total = ::sadfast_emu::device_memory();
  *free_bytes = ::sadfast_emu::free_memory(m, *total);
  return cudaSuccess;
}

inline cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind) {
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaMemset(void* p, int v, std::size_t bytes) {
  std::memset(p, v, bytes);
  return cudaSuccess;
}
