#pragma once

#include <pybind11/pybind11.h>

namespace sadfast::bindings {
void register_mlp(pybind11::module_& m);
void register_runtime(pybind11::module_& m);
void register_flows(pybind11::module_& m);
void register_train(pybind11::module_& m);
void register_cuda(pybind11::module_& m);
}  // namespace sadfast::bindings
