// ISA dispatch and the OpenMP-parallel batched drivers.
#include "sadfast/kernels.hpp"

#include <omp.h>

#include <atomic>

namespace sadfast {
namespace {

bool cpu_has_avx2() {
#if defined(SADFAST_HAVE_AVX2_VARIANT) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

const KernelTable* pick_default() {
#if defined(SADFAST_HAVE_AVX2_VARIANT)
  if (cpu_has_avx2()) return &isa_avx2::table();
#endif
  return &isa_baseline::table();
}

std::atomic<const KernelTable*>& current() {
  static std::atomic<const KernelTable*> t{pick_default()};
  return t;
}

}  // namespace

const KernelTable& kernels() { return *current().load(std::memory_order_relaxed); }

std::vector<std::string> available_isas() {
  std::vector<std::string> out{"baseline"};
  if (cpu_has_avx2()) out.emplace_back("avx2");
  return out;
}

bool set_kernel_isa(const std::string& name) {
  if (name == "baseline") {
    current().store(&isa_baseline::table());
    return true;
  }
#if defined(SADFAST_HAVE_AVX2_VARIANT)
  if (name == "avx2" && cpu_has_avx2()) {
    current().store(&isa_avx2::table());
    return true;
  }
#endif
  return false;
}

int max_threads() { return omp_get_max_threads(); }
void set_threads(int n) { omp_set_num_threads(n); }

// Flows are handed out dynamically in small chunks: the work per flow is equal here, but the
// same drivers serve callers whose threads are unevenly loaded.
void batch_loss_grad(const Problem& p, const Real* theta, Index K, Real* loss, Real* grad) {
  const KernelTable& kt = kernels();
  const Index P = p.arch.n_params();
#pragma omp parallel if (K > 1)
  {
    Workspace ws(p.arch, p.n_points, false);
#pragma omp for schedule(dynamic, 4)
    for (Index k = 0; k < K; ++k) {
      loss[k] = kt.loss_grad_one(p, theta + k * P, grad == nullptr ? nullptr : grad + k * P, ws);
    }
  }
}

void batch_hvp(const Problem& p, const Real* theta, const Real* v, Index K, Real* hv, Real* loss, Real* grad) {
  const KernelTable& kt = kernels();
  const Index P = p.arch.n_params();
#pragma omp parallel if (K > 1)
  {
    Workspace ws(p.arch, p.n_points, true);
#pragma omp for schedule(dynamic, 4)
    for (Index k = 0; k < K; ++k) {
      const Real l = kt.hvp_one(p, theta + k * P, v + k * P, hv + k * P, grad == nullptr ? nullptr : grad + k * P, ws);
      if (loss != nullptr) loss[k] = l;
    }
  }
}

void batch_forward(const Problem& p, const Real* theta, Index K, Real* out) {
  const KernelTable& kt = kernels();
  const Index P = p.arch.n_params();
  const Index stride = p.n_points * p.arch.d_out();
#pragma omp parallel if (K > 1)
  {
    Workspace ws(p.arch, p.n_points, false);
#pragma omp for schedule(dynamic, 4)
    for (Index k = 0; k < K; ++k) kt.forward_one(p, theta + k * P, out + k * stride, ws);
  }
}

}  // namespace sadfast
