// Bindings of the flow integrator. The batch state lives in C++ vectors; Python sees them as
// NumPy views (kept alive by the batch object), so results need no copy and a checkpoint is
// just those arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "numpy_view.hpp"
#include "register.hpp"
#include "sadfast/flows.hpp"

namespace py = pybind11;

namespace sadfast::bindings {
namespace {

using CArray = py::array_t<double, py::array::c_style>;


py::array field(FlowBatch& b, const std::string& name, py::handle owner) {
  const py::ssize_t K = b.K, P = b.P;
  if (name == "t") return numpy_view(b.t, {K}, owner);
  if (name == "h") return numpy_view(b.h, {K}, owner);
  if (name == "loss") return numpy_view(b.loss, {K}, owner);
  if (name == "y") return numpy_view(b.y, {K, P}, owner);
  if (name == "f") return numpy_view(b.f, {K, P}, owner);
  if (name == "t_prev") return numpy_view(b.t_prev, {K}, owner);
  if (name == "y_prev") return numpy_view(b.y_prev, {K, P}, owner);
  if (name == "status") return numpy_view(b.status, {K}, owner);
  if (name == "rejected") return numpy_view(b.rejected, {K}, owner);
  if (name == "nonfinite") return numpy_view(b.nonfinite, {K}, owner);
  if (name == "n_grad") return numpy_view(b.n_grad, {K}, owner);
  if (name == "n_accepted") return numpy_view(b.n_accepted, {K}, owner);
  if (name == "n_rejected") return numpy_view(b.n_rejected, {K}, owner);
  if (name == "n_output_evals") return numpy_view(b.n_output_evals, {K}, owner);
  if (name == "next_save") return numpy_view(b.next_save, {K}, owner);
  if (name == "t_out") return numpy_view(b.t_out, {K}, owner);
  if (name == "theta_out") return numpy_view(b.theta_out, {K, P}, owner);
  if (name == "loss_out") return numpy_view(b.loss_out, {K}, owner);
  if (name == "grad_norm_out") return numpy_view(b.grad_norm_out, {K}, owner);
  if (name == "theta_norm_out") return numpy_view(b.theta_norm_out, {K}, owner);
  if (name == "rho") return numpy_view(b.rho, {K}, owner);
  if (name == "eig") return numpy_view(b.eig, {K, P}, owner);
  if (name == "n_hvp") return numpy_view(b.n_hvp, {K}, owner);
  if (name == "since_rho") return numpy_view(b.since_rho, {K}, owner);
  if (name == "mode") return numpy_view(b.mode, {K}, owner);
  if (name == "last_mode") return numpy_view(b.last_mode, {K}, owner);
  if (name == "no_rkc") return numpy_view(b.no_rkc, {K}, owner);
  if (name == "stiff_run") return numpy_view(b.stiff_run, {K}, owner);
  if (name == "switch_run") return numpy_view(b.switch_run, {K}, owner);
  throw py::key_error("FlowBatch has no field '" + name + "'");
}

const char* kFields[] = {"t",      "h",         "loss",      "y",          "f",          "t_prev",
                         "y_prev", "status",    "rejected",  "nonfinite",  "n_grad",     "n_accepted",
                         "n_rejected", "n_output_evals", "next_save", "t_out", "theta_out", "loss_out",
                         "grad_norm_out", "theta_norm_out", "rho", "eig", "n_hvp", "since_rho", "mode", "last_mode", "no_rkc",
                         "stiff_run", "switch_run"};

SolverOptions make_options(int method, double rtol, double atol, double t_end, double max_step, std::int64_t max_steps,
                           double loss_below, double grad_norm_below, double theta_norm_above) {
  if (method < 0 || method > 2) throw py::value_error("method: unknown integrator code " + std::to_string(method));
  SolverOptions o;
  o.method = static_cast<FlowMethod>(method);
  o.rtol = rtol;
  o.atol = atol;
  o.t_end = t_end;
  o.max_step = max_step;
  o.max_steps = max_steps;
  o.loss_below = loss_below;
  o.grad_norm_below = grad_norm_below;
  o.theta_norm_above = theta_norm_above;
  return o;
}

// Save arrays: times (S,), traces (K, S), theta (K, S, P) or None.
SaveSpec make_save(const CArray& times, CArray& loss, CArray& gnorm, CArray& tnorm, const py::object& theta, Index K,
                   Index P) {
  const Index S = times.size();
  for (const CArray* a : {&loss, &gnorm, &tnorm}) {
    if (a->ndim() != 2 || a->shape(0) != K || a->shape(1) != S) throw py::value_error("save traces: expected (K, S)");
  }
  SaveSpec s;
  s.times = times.data();
  s.n = S;
  s.loss = loss.mutable_data();
  s.grad_norm = gnorm.mutable_data();
  s.theta_norm = tnorm.mutable_data();
  if (!theta.is_none()) {
    auto th = theta.cast<CArray>();
    if (th.ndim() != 3 || th.shape(0) != K || th.shape(1) != S || th.shape(2) != P) {
      throw py::value_error("save theta: expected (K, S, P)");
    }
    s.theta = th.mutable_data();
  }
  return s;
}

}  // namespace

void register_flows(py::module_& m) {
  py::class_<FlowBatch>(m, "FlowBatch", "State of K gradient flows (see flows.hpp).")
      .def(py::init<Index, Index>(), py::arg("K"), py::arg("P"))
      .def_readonly("K", &FlowBatch::K)
      .def_readonly("P", &FlowBatch::P)
      .def_property_readonly_static("fields",
                                    [](const py::object&) {
                                      std::vector<std::string> out(std::begin(kFields), std::end(kFields));
                                      return out;
                                    })
      .def(
          "array", [](py::object self, const std::string& name) { return field(self.cast<FlowBatch&>(), name, self); },
          py::arg("name"), "A writable NumPy view of one state field.");

  m.def(
      "flows_initialize",
      [](const Problem& p, FlowBatch& b, const CArray& theta0, double t0, double first_step, double rtol, double atol,
         double t_end, double max_step, std::int64_t max_steps, double loss_below, double grad_norm_below,
         double theta_norm_above, int method, const CArray& times, CArray& loss, CArray& gnorm, CArray& tnorm,
         const py::object& theta) {
        const Index P = p.arch.n_params();
        if (b.P != P || theta0.ndim() != 2 || theta0.shape(0) != b.K || theta0.shape(1) != P) {
          throw py::value_error("theta0: expected shape (" + std::to_string(b.K) + ", " + std::to_string(P) + ")");
        }
        const SolverOptions o = make_options(method, rtol, atol, t_end, max_step, max_steps, loss_below,
                                             grad_norm_below, theta_norm_above);
        const SaveSpec s = make_save(times, loss, gnorm, tnorm, theta, b.K, P);
        // Safe: only the batch and the buffers of arrays held by this frame are touched.
        py::gil_scoped_release release;
        flows_initialize(p, b, theta0.data(), t0, first_step, o, s);
      },
      py::arg("problem"), py::arg("batch"), py::arg("theta0").noconvert(), py::arg("t0"), py::arg("first_step"),
      py::arg("rtol"), py::arg("atol"), py::arg("t_end"), py::arg("max_step"), py::arg("max_steps"),
      py::arg("loss_below"), py::arg("grad_norm_below"), py::arg("theta_norm_above"), py::arg("method"),
      py::arg("save_times").noconvert(), py::arg("save_loss").noconvert(), py::arg("save_grad_norm").noconvert(),
      py::arg("save_theta_norm").noconvert(), py::arg("save_theta"));

  m.def(
      "flows_advance",
      [](const Problem& p, FlowBatch& b, double rtol, double atol, double t_end, double max_step,
         std::int64_t max_steps, double loss_below, double grad_norm_below, double theta_norm_above, int method,
         const CArray& times, CArray& loss, CArray& gnorm, CArray& tnorm, const py::object& theta,
         std::int64_t max_attempts) {
        if (b.P != p.arch.n_params()) throw py::value_error("batch: parameter count does not match the problem");
        const SolverOptions o = make_options(method, rtol, atol, t_end, max_step, max_steps, loss_below,
                                             grad_norm_below, theta_norm_above);
        const SaveSpec s = make_save(times, loss, gnorm, tnorm, theta, b.K, b.P);
        // Safe: only the batch and the buffers of arrays held by this frame are touched.
        py::gil_scoped_release release;
        return flows_advance(p, b, o, s, max_attempts);
      },
      py::arg("problem"), py::arg("batch"), py::arg("rtol"), py::arg("atol"), py::arg("t_end"), py::arg("max_step"),
      py::arg("max_steps"), py::arg("loss_below"), py::arg("grad_norm_below"), py::arg("theta_norm_above"),
      py::arg("method"), py::arg("save_times").noconvert(), py::arg("save_loss").noconvert(),
      py::arg("save_grad_norm").noconvert(), py::arg("save_theta_norm").noconvert(), py::arg("save_theta"),
      py::arg("max_attempts"));
}

}  // namespace sadfast::bindings
