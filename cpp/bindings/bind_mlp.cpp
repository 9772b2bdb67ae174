// Bindings of the MLP problem and its batched kernels. Shapes are checked here once more (the
// Python layer gives the friendly messages) so that a direct call into _core cannot read out of
// bounds; dtype and contiguity are enforced by the array_t types (no implicit conversion).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include "register.hpp"
#include "sadfast/kernels.hpp"

namespace py = pybind11;

namespace sadfast::bindings {
namespace {

using CArray = py::array_t<double, py::array::c_style>;

Activation parse_activation(const std::string& name) {
  for (int i = 0; i < kNumActivations; ++i) {
    if (name == activation_name(static_cast<Activation>(i))) return static_cast<Activation>(i);
  }
  throw py::value_error("activation: unknown name '" + name + "'");
}

Loss parse_loss(const std::string& name) {
  for (int i = 0; i < kNumLosses; ++i) {
    if (name == loss_name(static_cast<Loss>(i))) return static_cast<Loss>(i);
  }
  throw py::value_error("loss: unknown name '" + name + "'");
}

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// theta-like argument: (K, P) with the problem's P.
Index check_batch(const CArray& a, const char* name, Index P) {
  if (a.ndim() != 2 || a.shape(1) != P) {
    throw py::value_error(std::string(name) + ": expected shape (K, " + std::to_string(P) + "), got " + shape_str(a));
  }
  return a.shape(0);
}

std::shared_ptr<Problem> make_problem(const std::vector<Index>& widths, const std::string& activation,
                                      const std::string& loss, double weight_decay, const CArray& x, const CArray& t) {
  Architecture arch(widths, parse_activation(activation), parse_loss(loss), weight_decay);
  if (x.ndim() != 2 || x.shape(1) != arch.d_in() || x.shape(0) < 1) {
    throw py::value_error("X: expected shape (N, " + std::to_string(arch.d_in()) + ") with N >= 1, got " + shape_str(x));
  }
  const Index n = x.shape(0);
  if (t.ndim() != 2 || t.shape(0) != n || t.shape(1) != arch.d_out()) {
    throw py::value_error("Y: expected shape (" + std::to_string(n) + ", " + std::to_string(arch.d_out()) + "), got " +
                          shape_str(t));
  }
  return std::make_shared<Problem>(std::move(arch), x.data(), t.data(), n);
}

}  // namespace

void register_mlp(py::module_& m) {
  m.def("activation_names", [] {
    std::vector<std::string> out;
    for (int i = 0; i < kNumActivations; ++i) out.emplace_back(activation_name(static_cast<Activation>(i)));
    return out;
  });
  m.def("loss_names", [] {
    std::vector<std::string> out;
    for (int i = 0; i < kNumLosses; ++i) out.emplace_back(loss_name(static_cast<Loss>(i)));
    return out;
  });

  m.def(
      "activation_eval",
      [](const std::string& name, const CArray& z, bool scalar_reference) {
        const Activation a = parse_activation(name);
        const Index n = z.size();
        CArray f(z.request().shape), d1(z.request().shape), d2(z.request().shape);
        if (scalar_reference) {
          for (Index i = 0; i < n; ++i) {
            const auto d = act::eval(a, z.data()[i]);
            f.mutable_data()[i] = d.f;
            d1.mutable_data()[i] = d.d1;
            d2.mutable_data()[i] = d.d2;
          }
        } else {
          AlignedBuffer tmp0(n), tmp1(n);
          std::copy(z.data(), z.data() + n, f.mutable_data());
          kernels().activation_array(a, f.mutable_data(), d1.mutable_data(), d2.mutable_data(), n, tmp0.data(),
                                     tmp1.data());
        }
        return py::make_tuple(f, d1, d2);
      },
      py::arg("name"), py::arg("z").noconvert(), py::arg("scalar_reference") = false,
      "Activation value, first and second derivative elementwise (the kernels' array path, or the scalar "
      "reference).");

  py::class_<Problem, std::shared_ptr<Problem>>(m, "Problem",
                                                 "An MLP bound to one data set; targets are a dense (N, d_out) array.")
      .def(py::init(&make_problem), py::arg("widths"), py::arg("activation"), py::arg("loss"), py::arg("weight_decay"),
           py::arg("X"), py::arg("T"))
      .def_property_readonly("n_params", [](const Problem& p) { return p.arch.n_params(); })
      .def_property_readonly("n_points", [](const Problem& p) { return p.n_points; })
      .def_property_readonly("widths", [](const Problem& p) { return p.arch.widths(); })
      .def(
          "loss_grad",
          [](const Problem& p, const CArray& theta, bool want_grad) -> py::object {
            const Index P = p.arch.n_params();
            const Index K = check_batch(theta, "theta", P);
            CArray loss(K);
            CArray grad = want_grad ? CArray({K, P}) : CArray(0);
            {
              // Safe: only the buffers of arrays held by this frame are touched.
              py::gil_scoped_release release;
              batch_loss_grad(p, theta.data(), K, loss.mutable_data(), want_grad ? grad.mutable_data() : nullptr);
            }
            if (!want_grad) return std::move(loss);
            return py::make_tuple(loss, grad);
          },
          py::arg("theta").noconvert(), py::arg("want_grad") = true)
      .def(
          "hvp",
          [](const Problem& p, const CArray& theta, const CArray& v, bool want_grad) -> py::object {
            const Index P = p.arch.n_params();
            const Index K = check_batch(theta, "theta", P);
            if (check_batch(v, "v", P) != K) {
              throw py::value_error("v: expected shape (" + std::to_string(K) + ", " + std::to_string(P) +
                                    ") like theta, got " + shape_str(v));
            }
            CArray hv({K, P});
            CArray loss(K);
            CArray grad = want_grad ? CArray({K, P}) : CArray(0);
            {
              // Safe: only the buffers of arrays held by this frame are touched.
              py::gil_scoped_release release;
              batch_hvp(p, theta.data(), v.data(), K, hv.mutable_data(), loss.mutable_data(),
                        want_grad ? grad.mutable_data() : nullptr);
            }
            if (!want_grad) return std::move(hv);
            return py::make_tuple(hv, loss, grad);
          },
          py::arg("theta").noconvert(), py::arg("v").noconvert(), py::arg("want_grad") = false)
      .def(
          "forward",
          [](const Problem& p, const CArray& theta) {
            const Index P = p.arch.n_params();
            const Index K = check_batch(theta, "theta", P);
            CArray out({K, p.n_points, p.arch.d_out()});
            {
              // Safe: only the buffers of arrays held by this frame are touched.
              py::gil_scoped_release release;
              batch_forward(p, theta.data(), K, out.mutable_data());
            }
            return out;
          },
          py::arg("theta").noconvert());
}

}  // namespace sadfast::bindings
