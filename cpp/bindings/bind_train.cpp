// Bindings of the discrete optimizers (train.hpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "numpy_view.hpp"
#include "register.hpp"
#include "train_options.hpp"
#include "sadfast/train.hpp"

namespace py = pybind11;

namespace sadfast::bindings {
namespace {
using CArray = py::array_t<double, py::array::c_style>;

}  // namespace

void register_train(py::module_& m) {
  py::class_<TrainBatch>(m, "TrainBatch")
      .def(py::init<Index, Index>(), py::arg("K"), py::arg("P"))
      .def_readonly("K", &TrainBatch::K)
      .def_readonly("P", &TrainBatch::P)
      .def(
          "array",
          [](py::object self, const std::string& name) -> py::array {
            auto& b = self.cast<TrainBatch&>();
            const py::ssize_t K = b.K, P = b.P;
            if (name == "y") return numpy_view(b.y, {K, P}, self);
            if (name == "m") return numpy_view(b.m, {K, P}, self);
            if (name == "v") return numpy_view(b.v, {K, P}, self);
            if (name == "step") return numpy_view(b.step, {K}, self);
            if (name == "status") return numpy_view(b.status, {K}, self);
            if (name == "loss") return numpy_view(b.loss, {K}, self);
            if (name == "grad_norm") return numpy_view(b.grad_norm, {K}, self);
            if (name == "theta_norm") return numpy_view(b.theta_norm, {K}, self);
            throw py::key_error("TrainBatch has no field '" + name + "'");
          },
          py::arg("name"));

  m.def(
      "train_initialize",
      [](TrainBatch& b, const CArray& theta0) {
        if (theta0.ndim() != 2 || theta0.shape(0) != b.K || theta0.shape(1) != b.P) {
          throw py::value_error("theta0: expected shape (" + std::to_string(b.K) + ", " + std::to_string(b.P) + ")");
        }
        train_initialize(b, theta0.data());
      },
      py::arg("batch"), py::arg("theta0").noconvert());

  m.def(
      "train_advance",
      [](const Problem& p, TrainBatch& b, int method, double lr, double momentum, double beta1, double beta2,
         double eps, double weight_decay, std::int64_t steps, std::int64_t record_every, double loss_below,
         double grad_norm_below, double theta_norm_above, CArray& tr_loss, CArray& tr_gnorm, CArray& tr_tnorm,
         std::int64_t max_steps) {
        if (b.P != p.arch.n_params()) throw py::value_error("batch: parameter count does not match the problem");
        const TrainOptions o = make_train_options(method, lr, momentum, beta1, beta2, eps, weight_decay, steps,
                                                  record_every, loss_below, grad_norm_below, theta_norm_above);
        const TrainTraces tr = make_traces(b, o, tr_loss, tr_gnorm, tr_tnorm);
        // Safe: only the batch and the buffers of arrays held by this frame are touched.
        py::gil_scoped_release release;
        return train_advance(p, b, o, tr, max_steps);
      },
      py::arg("problem"), py::arg("batch"), py::arg("method"), py::arg("lr"), py::arg("momentum"), py::arg("beta1"),
      py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("steps"), py::arg("record_every"),
      py::arg("loss_below"), py::arg("grad_norm_below"), py::arg("theta_norm_above"), py::arg("trace_loss").noconvert(),
      py::arg("trace_grad_norm").noconvert(), py::arg("trace_theta_norm").noconvert(), py::arg("max_steps"));
}

}  // namespace sadfast::bindings
