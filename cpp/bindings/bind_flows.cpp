// Bindings of the flow integrator. The batch state lives in C++ vectors; Python sees them as
// NumPy views (kept alive by the batch object), so results need no copy and a checkpoint is
// just those arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <string>

#include "numpy_view.hpp"
#include "register.hpp"
#include "solver_options.hpp"
#include "sadfast/flows.hpp"

namespace py = pybind11;

namespace sadfast::bindings {
namespace {

using CArray = py::array_t<double, py::array::c_style>;


// Every field of FlowBatch, once: the names Python sees (and checkpoints save) and their views.
// rows = true for (K, P) arrays, false for (K,).
struct Field {
  const char* name;
  py::array (*view)(FlowBatch&, py::handle);
};

template <auto Member, bool Rows>
py::array field_view(FlowBatch& b, py::handle owner) {
  if constexpr (Rows) return numpy_view(b.*Member, {b.K, b.P}, owner);
  else return numpy_view(b.*Member, {b.K}, owner);
}

#define SADFAST_FIELD(name, rows) Field{#name, &field_view<&FlowBatch::name, rows>}
const Field kFields[] = {
    SADFAST_FIELD(t, false),          SADFAST_FIELD(h, false),          SADFAST_FIELD(loss, false),
    SADFAST_FIELD(y, true),           SADFAST_FIELD(f, true),           SADFAST_FIELD(t_prev, false),
    SADFAST_FIELD(y_prev, true),      SADFAST_FIELD(status, false),     SADFAST_FIELD(rejected, false),
    SADFAST_FIELD(nonfinite, false),  SADFAST_FIELD(n_grad, false),     SADFAST_FIELD(n_accepted, false),
    SADFAST_FIELD(n_rejected, false), SADFAST_FIELD(n_output_evals, false), SADFAST_FIELD(next_save, false),
    SADFAST_FIELD(t_out, false),      SADFAST_FIELD(theta_out, true),   SADFAST_FIELD(loss_out, false),
    SADFAST_FIELD(grad_norm_out, false), SADFAST_FIELD(theta_norm_out, false), SADFAST_FIELD(rho, false),
    SADFAST_FIELD(eig, true),         SADFAST_FIELD(n_hvp, false),      SADFAST_FIELD(since_rho, false),
    SADFAST_FIELD(mode, false),       SADFAST_FIELD(last_mode, false),  SADFAST_FIELD(give_ups, false),
    SADFAST_FIELD(stiff_run, false),  SADFAST_FIELD(switch_run, false), SADFAST_FIELD(jac_age, false),
};
#undef SADFAST_FIELD

py::array field(FlowBatch& b, const std::string& name, py::handle owner) {
  for (const Field& fd : kFields) {
    if (name == fd.name) return fd.view(b, owner);
  }
  throw py::key_error("FlowBatch has no field '" + name + "'");
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
                                      std::vector<std::string> out;
                                      for (const Field& fd : kFields) out.emplace_back(fd.name);
                                      return out;
                                    })
      .def(
          "array", [](py::object self, const std::string& name) { return field(self.cast<FlowBatch&>(), name, self); },
          py::arg("name"), "A writable NumPy view of one state field.")
      .def(
          "jac_export",
          [](const FlowBatch& b) {
            // (index (K,), pool (M, m (P + 1))): flow k's ROSW approximation is pool[index[k]], or
            // none (-1). Flows keep n_k <= m Ritz pairs (Lanczos refreshes stop early); the pool's
            // width m is the largest n_k, and narrower ones are padded in front with columns of
            // zeros and value 0 (ignored by the method; jac_import removes them).
            const Index P1 = b.P + 1;
            Index mw = 0;
            py::array_t<std::int64_t> index(b.K);
            Index rows = 0;
            for (Index k = 0; k < b.K; ++k) {
              mw = std::max(mw, static_cast<Index>(b.jac[k].size()) / P1);
              index.mutable_at(k) = b.jac[k].empty() ? -1 : rows++;
            }
            py::array_t<double> pool({rows, mw * P1});
            for (Index k = 0; k < b.K; ++k) {
              if (b.jac[k].empty()) continue;
              const std::vector<Real>& J = b.jac[k];
              const Index n = static_cast<Index>(J.size()) / P1, pad = mw - n;
              double* out = pool.mutable_data(index.at(k), 0);
              std::fill(out, out + mw * P1, 0.0);
              std::copy(J.begin(), J.begin() + n * b.P, out + pad * b.P);       // vectors
              std::copy(J.begin() + n * b.P, J.end(), out + mw * b.P + pad);    // values
            }
            return py::make_tuple(index, pool);
          },
          "The flows' ROSW Hessian approximations packed: (index (K,), pool (M, m (P + 1))).")
      .def(
          "jac_import",
          [](FlowBatch& b, const py::array_t<std::int64_t, py::array::c_style>& index,
             const py::array_t<double, py::array::c_style>& pool) {
            if (index.ndim() != 1 || index.shape(0) != b.K) throw py::value_error("jac index: expected (K,)");
            const Index w = pool.ndim() == 2 ? static_cast<Index>(pool.shape(1)) : 0;
            if (pool.ndim() != 2 || (pool.shape(0) > 0 && (w == 0 || w % (b.P + 1) != 0 || w / (b.P + 1) > b.P))) {
              throw py::value_error("jac pool: expected (M, m (P + 1)) with 1 <= m <= P");
            }
            for (Index k = 0; k < b.K; ++k) {
              const std::int64_t i = index.at(k);
              if (i < 0) {
                b.jac[k].clear();
              } else {
                if (i >= pool.shape(0)) throw py::value_error("jac index: entry past the pool");
                // Strip the padding of jac_export: leading columns with value 0 and a zero vector
                // (a Ritz or eigen pair never has a zero vector), so the flow continues with the
                // same n (P + 1) numbers, in the same memory layout, as an uninterrupted solve.
                const Index mw = w / (b.P + 1);
                const double* row = pool.data(i, 0);
                Index pad = 0;
                if (mw < b.P) {  // an exact Hessian (mw == P) is never padded
                  while (pad + 1 < mw && row[mw * b.P + pad] == 0.0 &&
                         std::all_of(row + pad * b.P, row + (pad + 1) * b.P, [](double x) { return x == 0.0; })) {
                    ++pad;
                  }
                }
                const Index n = mw - pad;
                std::vector<Real>& J = b.jac[k];
                J.resize(n * (b.P + 1));
                std::copy(row + pad * b.P, row + mw * b.P, J.begin());
                std::copy(row + mw * b.P + pad, row + mw * (b.P + 1), J.begin() + n * b.P);
              }
            }
          },
          py::arg("index"), py::arg("pool"));

  m.def(
      "flows_initialize",
      [](const Problem& p, FlowBatch& b, const CArray& theta0, double t0, double first_step, double rtol, double atol,
         double t_end, double max_step, std::int64_t max_steps, double loss_below, double grad_norm_below,
         double theta_norm_above, int method, const CArray& times, CArray& loss, CArray& gnorm, CArray& tnorm,
         const py::object& theta, std::int64_t jac_rank) {
        const Index P = p.arch.n_params();
        if (b.P != P || theta0.ndim() != 2 || theta0.shape(0) != b.K || theta0.shape(1) != P) {
          throw py::value_error("theta0: expected shape (" + std::to_string(b.K) + ", " + std::to_string(P) + ")");
        }
        const SolverOptions o = make_options(method, rtol, atol, t_end, max_step, max_steps, loss_below,
                                             grad_norm_below, theta_norm_above, jac_rank);
        const SaveSpec s = make_save(times, loss, gnorm, tnorm, theta, b.K, P);
        // Safe: only the batch and the buffers of arrays held by this frame are touched.
        py::gil_scoped_release release;
        flows_initialize(p, b, theta0.data(), t0, first_step, o, s);
      },
      py::arg("problem"), py::arg("batch"), py::arg("theta0").noconvert(), py::arg("t0"), py::arg("first_step"),
      py::arg("rtol"), py::arg("atol"), py::arg("t_end"), py::arg("max_step"), py::arg("max_steps"),
      py::arg("loss_below"), py::arg("grad_norm_below"), py::arg("theta_norm_above"), py::arg("method"),
      py::arg("save_times").noconvert(), py::arg("save_loss").noconvert(), py::arg("save_grad_norm").noconvert(),
      py::arg("save_theta_norm").noconvert(), py::arg("save_theta"), py::arg("jac_rank") = 0);

  m.def(
      "flows_advance",
      [](const Problem& p, FlowBatch& b, double rtol, double atol, double t_end, double max_step,
         std::int64_t max_steps, double loss_below, double grad_norm_below, double theta_norm_above, int method,
         const CArray& times, CArray& loss, CArray& gnorm, CArray& tnorm, const py::object& theta,
         std::int64_t max_attempts, std::int64_t jac_rank) {
        if (b.P != p.arch.n_params()) throw py::value_error("batch: parameter count does not match the problem");
        const SolverOptions o = make_options(method, rtol, atol, t_end, max_step, max_steps, loss_below,
                                             grad_norm_below, theta_norm_above, jac_rank);
        const SaveSpec s = make_save(times, loss, gnorm, tnorm, theta, b.K, b.P);
        // Safe: only the batch and the buffers of arrays held by this frame are touched.
        py::gil_scoped_release release;
        return flows_advance(p, b, o, s, max_attempts);
      },
      py::arg("problem"), py::arg("batch"), py::arg("rtol"), py::arg("atol"), py::arg("t_end"), py::arg("max_step"),
      py::arg("max_steps"), py::arg("loss_below"), py::arg("grad_norm_below"), py::arg("theta_norm_above"),
      py::arg("method"), py::arg("save_times").noconvert(), py::arg("save_loss").noconvert(),
      py::arg("save_grad_norm").noconvert(), py::arg("save_theta_norm").noconvert(), py::arg("save_theta"),
      py::arg("max_attempts"), py::arg("jac_rank") = 0);
}

}  // namespace sadfast::bindings
