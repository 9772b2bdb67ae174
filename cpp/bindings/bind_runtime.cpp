// Threads and instruction-set selection.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "register.hpp"
#include "sadfast/kernels.hpp"

namespace py = pybind11;

namespace sadfast::bindings {

void register_runtime(py::module_& m) {
  m.def("max_threads", &max_threads, "Number of OpenMP threads used by the native kernels.");
  m.def(
      "set_threads",
      [](int n) {
        if (n < 1) throw py::value_error("threads: expected an integer >= 1, got " + std::to_string(n));
        set_threads(n);
      },
      py::arg("n"));
  m.def("kernel_isa", [] { return std::string(kernels().isa); }, "Instruction-set variant of the kernels in use.");
  m.def("available_isas", &available_isas);
  m.def(
      "set_kernel_isa",
      [](const std::string& name) {
        if (!set_kernel_isa(name)) {
          throw py::value_error("isa: '" + name + "' is not available on this CPU/build (available: " +
                                py::str(py::cast(available_isas())).cast<std::string>() + ")");
        }
      },
      py::arg("name"));
}

}  // namespace sadfast::bindings
