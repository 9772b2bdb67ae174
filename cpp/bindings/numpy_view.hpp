#pragma once

#include <pybind11/numpy.h>

#include <vector>

namespace sadfast::bindings {

// A NumPy view of a C++ vector; `owner` (the Python object holding the vector) keeps it alive.
template <class T>
pybind11::array numpy_view(std::vector<T>& v, std::vector<pybind11::ssize_t> shape, pybind11::handle owner) {
  return pybind11::array_t<T>(shape, v.data(), owner);
}

}  // namespace sadfast::bindings
