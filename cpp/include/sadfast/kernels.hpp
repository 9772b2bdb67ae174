// Batched MLP kernels on the CPU: the entry points and their ISA dispatch.
//
// The kernels are compiled twice (src/kernels_baseline.cpp, src/kernels_avx2.cpp) from one
// implementation (src/kernels_impl.inc); `kernels()` picks the fastest variant the CPU supports
// at run time. All functions assume validated input (the bindings check shapes).
#pragma once

#include "sadfast/mlp.hpp"

namespace sadfast {

// Single-flow kernels, the building blocks of the batched ones and of the integrator.
struct KernelTable {
  const char* isa;
  // Network outputs at the problem's own data: out (N, d_out) row-major.
  void (*forward_one)(const Problem&, const Real* theta, Real* out, Workspace&);
  // Loss; if grad != nullptr also its gradient (P).
  Real (*loss_grad_one)(const Problem&, const Real* theta, Real* grad, Workspace&);
  // Hessian-vector product H(theta) v; also the gradient if grad != nullptr. Returns the loss.
  Real (*hvp_one)(const Problem&, const Real* theta, const Real* v, Real* hv, Real* grad, Workspace&);
  // Activation with derivatives over an array (value in place); d2 may be nullptr.
  void (*activation_array)(Activation, Real* z, Real* d1, Real* d2, Index n, Real* tmp0, Real* tmp1);
};

namespace isa_baseline {
const KernelTable& table();
}
namespace isa_avx2 {
const KernelTable& table();
}

// The variant in use (chosen once from the CPU's features; see set_kernel_isa).
const KernelTable& kernels();
// Force a variant ("baseline" or "avx2"); returns false if the CPU or build lacks it.
bool set_kernel_isa(const std::string& name);
// Variants this build and CPU can run.
std::vector<std::string> available_isas();

// Batched drivers, parallel over flows with OpenMP. theta, v, grad, hv are (K, P) row-major;
// loss (K); out (K, N, d_out). Each flow is evaluated entirely by one thread from an aligned
// copy of its row, so its result does not depend on K, its position or the thread count.
void batch_loss_grad(const Problem&, const Real* theta, Index K, Real* loss, Real* grad);
void batch_hvp(const Problem&, const Real* theta, const Real* v, Index K, Real* hv, Real* loss, Real* grad);
void batch_forward(const Problem&, const Real* theta, Index K, Real* out);

int max_threads();
void set_threads(int n);

}  // namespace sadfast
