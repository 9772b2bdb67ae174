#include <pybind11/pybind11.h>

#include "register.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "sadfast native core: batched MLP kernels and gradient-flow integrators";
  sadfast::bindings::register_runtime(m);
  sadfast::bindings::register_mlp(m);
  sadfast::bindings::register_flows(m);
  sadfast::bindings::register_train(m);
  sadfast::bindings::register_cuda(m);
}
