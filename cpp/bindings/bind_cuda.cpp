// Bindings of the GPU backend (cuda/api.hpp). Device arrays cross the boundary as integer
// device pointers (cupy's `.data.ptr`, or a CudaBuffer's `.ptr`), with shapes checked by the
// Python layer (sadfast/cuda.py) and again here where the C++ side knows them. Built without
// CUDA, only `cuda_built` and `cuda_device_count` exist.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <exception>
#include <string>

#include "register.hpp"
#include "solver_options.hpp"
#include "train_options.hpp"
#include "sadfast/flows.hpp"
#include "sadfast/mlp.hpp"
#include "sadfast/train.hpp"
#ifdef SADFAST_WITH_CUDA
#include "api.hpp"
#endif

namespace py = pybind11;

namespace sadfast::bindings {

// The classes are module-local: sadfast._core and the CPU emulator's sadfast._cuda_emu both
// register the same C++ types (emulator_module.cpp).

#ifdef SADFAST_WITH_CUDA
namespace {

using gpu::DType;

DType to_dtype(int d) {
  if (d != 0 && d != 1) throw py::value_error("dtype: expected 0 (float64) or 1 (float32), got " + std::to_string(d));
  return static_cast<DType>(d);
}

void* ptr(std::uintptr_t p) { return reinterpret_cast<void*>(p); }

gpu::DeviceSaves cuda_saves(std::uintptr_t times, Index n, std::uintptr_t loss, std::uintptr_t gnorm,
                            std::uintptr_t tnorm, std::uintptr_t theta) {
  gpu::DeviceSaves s;
  s.d_times = static_cast<const double*>(ptr(times));
  s.n = n;
  s.d_loss = static_cast<double*>(ptr(loss));
  s.d_grad_norm = static_cast<double*>(ptr(gnorm));
  s.d_theta_norm = static_cast<double*>(ptr(tnorm));
  s.d_theta = ptr(theta);
  if (n > 0 && (times == 0 || loss == 0 || gnorm == 0 || tnorm == 0)) {
    throw py::value_error("save buffers: null device pointer with save times");
  }
  return s;
}

}  // namespace
#endif

void register_cuda(py::module_& m) {
#ifdef SADFAST_WITH_CUDA
  m.def("cuda_built", [] { return true; }, "Whether this build has the CUDA backend.");
#else
  m.def("cuda_built", [] { return false; }, "Whether this build has the CUDA backend.");
#endif
  m.def(
      "cuda_device_count",
      [] {
#ifdef SADFAST_WITH_CUDA
        std::string why;
        const int n = gpu::device_count(&why);
        return py::make_tuple(n, why);
#else
        return py::make_tuple(0, std::string("sadfast was built without CUDA (no nvcc at build time)"));
#endif
      },
      "(number of CUDA devices, why there is none).");
#ifdef SADFAST_WITH_CUDA
  // Running out of device memory is Python's MemoryError (other CUDA failures: RuntimeError).
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const gpu::DeviceOutOfMemory& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });
  m.def(
      "cuda_device_info",
      [](int device) {
        const gpu::DeviceInfo d = gpu::device_info(device);
        py::dict r;
        r["name"] = d.name;
        r["compute_capability"] = py::make_tuple(d.major, d.minor);
        r["multiprocessors"] = d.multiprocessors;
        r["total_memory"] = d.total_memory;
        r["clock_ghz"] = d.clock_ghz;
        return r;
      },
      py::arg("device") = 0);

  m.def(
      "cuda_set_layer_kernel",
      [](int k) {
        if (k != 0 && k != 1) throw py::value_error("layer kernel: expected 0 (lanes) or 1 (tiled), got " + std::to_string(k));
        gpu::set_layer_kernel(static_cast<gpu::LayerKernel>(k));
      },
      py::arg("kernel"), "How wide layers are evaluated: 0 = one point per lane, 1 = register-tiled warp GEMMs.");
  m.def("cuda_layer_kernel", [] { return static_cast<int>(gpu::layer_kernel()); });
  m.def(
      "cuda_kernel_options",
      [] {
        auto of = [](gpu::DType d) {
          const gpu::KernelOptions o = gpu::kernel_options(d);
          return py::dict(py::arg("row_block") = o.row_block, py::arg("act_ilp") = o.act_ilp);
        };
        return py::dict(py::arg("float64") = of(gpu::DType::f64), py::arg("float32") = of(gpu::DType::f32));
      },
      "The lanes path's build-time knobs (SADFAST_ROW_BLOCK, SADFAST_ACT_ILP) of this build, per dtype.");
  m.def(
      "cuda_last_launch",
      [] {
        const gpu::LaunchInfo l = gpu::last_launch();
        py::dict r;
        r["kernel"] = l.kernel;
        r["flows"] = l.flows;
        r["warps_per_block"] = l.warps_per_block;
        r["blocks"] = l.blocks;
        r["blocks_per_sm"] = l.blocks_per_sm;
        r["multiprocessors"] = l.multiprocessors;
        r["smem_per_warp"] = l.smem_per_warp;
        r["global_workspace"] = l.global_workspace;
        return r;
      },
      "The most recent kernel launch this process planned: kernel name, flows, block shape, occupancy.");

  py::class_<gpu::Buffer>(m, "CudaBuffer", "Device memory owned by sadfast (for NumPy users without cupy).", py::module_local())
      .def(py::init<std::size_t>(), py::arg("nbytes"))
      .def_property_readonly("ptr", [](const gpu::Buffer& b) { return reinterpret_cast<std::uintptr_t>(b.data()); })
      .def_property_readonly("nbytes", &gpu::Buffer::bytes)
      .def(
          "upload",
          [](gpu::Buffer& b, const py::array& a) {
            if (!(a.flags() & py::array::c_style)) throw py::value_error("upload: expected a C-contiguous array");
            if (static_cast<std::size_t>(a.nbytes()) != b.bytes()) {
              throw py::value_error("upload: array of " + std::to_string(a.nbytes()) + " bytes into a buffer of " +
                                    std::to_string(b.bytes()));
            }
            b.upload(a.data(), b.bytes());
          },
          py::arg("array"))
      .def(
          "download",
          [](const gpu::Buffer& b, py::array& a) {
            if (!(a.flags() & py::array::c_style) || !a.writeable()) {
              throw py::value_error("download: expected a writable C-contiguous array");
            }
            if (static_cast<std::size_t>(a.nbytes()) != b.bytes()) {
              throw py::value_error("download: array of " + std::to_string(a.nbytes()) + " bytes from a buffer of " +
                                    std::to_string(b.bytes()));
            }
            b.download(a.mutable_data(), b.bytes());
          },
          py::arg("array"));
  py::class_<gpu::DeviceProblem>(m, "CudaProblem", "A problem's data on the current CUDA device.", py::module_local())
      .def(py::init<const Problem&>(), py::arg("problem"))
      .def("warp_smem", [](const gpu::DeviceProblem& p, int d, bool hvp) { return p.warp_smem(to_dtype(d), hvp); },
           py::arg("dtype"), py::arg("hvp"));

  m.def(
      "cuda_loss_grad",
      [](const gpu::DeviceProblem& p, int dtype, std::uintptr_t theta, Index K, std::uintptr_t loss,
         std::uintptr_t grad) {
        const DType d = to_dtype(dtype);
        py::gil_scoped_release release;
        gpu::loss_grad(p, d, ptr(theta), K, ptr(loss), ptr(grad));
      },
      py::arg("problem"), py::arg("dtype"), py::arg("theta"), py::arg("K"), py::arg("loss"), py::arg("grad"));
  m.def(
      "cuda_hvp",
      [](const gpu::DeviceProblem& p, int dtype, std::uintptr_t theta, std::uintptr_t v, Index K, std::uintptr_t hv) {
        const DType d = to_dtype(dtype);
        py::gil_scoped_release release;
        gpu::hvp(p, d, ptr(theta), ptr(v), K, ptr(hv), nullptr, nullptr);
      },
      py::arg("problem"), py::arg("dtype"), py::arg("theta"), py::arg("v"), py::arg("K"), py::arg("hv"));

  py::class_<gpu::DeviceFlows>(m, "CudaFlows",
                               "Device state of K flows (Dormand-Prince, Tsitouras, RKC or ROSW of a Lanczos rank).",
                               py::module_local())
      .def(py::init([](Index K, Index P, int d, int method, Index rank) {
             if (method < 0 || method > 4) {
               throw py::value_error("method: unknown integrator code " + std::to_string(method));
             }
             return new gpu::DeviceFlows(K, P, to_dtype(d), static_cast<FlowMethod>(method), rank);
           }),
           py::arg("K"), py::arg("P"), py::arg("dtype"), py::arg("method"), py::arg("rank") = 0)
      .def_property_readonly("rank", &gpu::DeviceFlows::rank)
      .def("upload", &gpu::DeviceFlows::upload, py::arg("batch"), py::call_guard<py::gil_scoped_release>())
      .def("download", &gpu::DeviceFlows::download, py::arg("batch"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "cuda_flows_initialize",
      [](const gpu::DeviceProblem& p, gpu::DeviceFlows& b, std::uintptr_t theta0, double t0, double first_step,
         int method, double rtol, double atol, double t_end, double max_step, std::int64_t max_steps, double loss_below,
         double grad_norm_below, double theta_norm_above, std::uintptr_t save_times, Index n_save,
         std::uintptr_t save_loss, std::uintptr_t save_grad_norm, std::uintptr_t save_theta_norm,
         std::uintptr_t save_theta) {
        if (b.P() != p.arch().n_params()) throw py::value_error("batch: parameter count does not match the problem");
        const SolverOptions o =
            make_options(method, rtol, atol, t_end, max_step, max_steps, loss_below, grad_norm_below, theta_norm_above);
        const gpu::DeviceSaves s =
            cuda_saves(save_times, n_save, save_loss, save_grad_norm, save_theta_norm, save_theta);
        py::gil_scoped_release release;
        gpu::flows_initialize(p, b, ptr(theta0), t0, first_step, o, s);
      },
      py::arg("problem"), py::arg("batch"), py::arg("theta0"), py::arg("t0"), py::arg("first_step"), py::arg("method"),
      py::arg("rtol"),
      py::arg("atol"), py::arg("t_end"), py::arg("max_step"), py::arg("max_steps"), py::arg("loss_below"),
      py::arg("grad_norm_below"), py::arg("theta_norm_above"), py::arg("save_times"), py::arg("n_save"),
      py::arg("save_loss"), py::arg("save_grad_norm"), py::arg("save_theta_norm"), py::arg("save_theta"));
  m.def(
      "cuda_flows_advance",
      [](const gpu::DeviceProblem& p, gpu::DeviceFlows& b, int method, double rtol, double atol, double t_end,
         double max_step,
         std::int64_t max_steps, double loss_below, double grad_norm_below, double theta_norm_above,
         std::uintptr_t save_times, Index n_save, std::uintptr_t save_loss, std::uintptr_t save_grad_norm,
         std::uintptr_t save_theta_norm, std::uintptr_t save_theta, std::int64_t max_attempts) {
        if (b.P() != p.arch().n_params()) throw py::value_error("batch: parameter count does not match the problem");
        const SolverOptions o =
            make_options(method, rtol, atol, t_end, max_step, max_steps, loss_below, grad_norm_below, theta_norm_above);
        const gpu::DeviceSaves s =
            cuda_saves(save_times, n_save, save_loss, save_grad_norm, save_theta_norm, save_theta);
        py::gil_scoped_release release;
        return gpu::flows_advance(p, b, o, s, max_attempts);
      },
      py::arg("problem"), py::arg("batch"), py::arg("method"), py::arg("rtol"), py::arg("atol"), py::arg("t_end"),
      py::arg("max_step"),
      py::arg("max_steps"), py::arg("loss_below"), py::arg("grad_norm_below"), py::arg("theta_norm_above"),
      py::arg("save_times"), py::arg("n_save"), py::arg("save_loss"), py::arg("save_grad_norm"),
      py::arg("save_theta_norm"), py::arg("save_theta"), py::arg("max_attempts"));

  m.def(
      "cuda_train_advance",
      [](const gpu::DeviceProblem& p, TrainBatch& b, int dtype, int method, double lr, double momentum, double beta1,
         double beta2, double eps, double weight_decay, std::int64_t steps, std::int64_t record_every,
         double loss_below, double grad_norm_below, double theta_norm_above, TraceArray& tr_loss,
         TraceArray& tr_gnorm, TraceArray& tr_tnorm, std::int64_t max_steps) {
        if (b.P != p.arch().n_params()) throw py::value_error("batch: parameter count does not match the problem");
        const DType d = to_dtype(dtype);
        const TrainOptions o = make_train_options(method, lr, momentum, beta1, beta2, eps, weight_decay, steps,
                                                  record_every, loss_below, grad_norm_below, theta_norm_above);
        const TrainTraces tr = make_traces(b, o, tr_loss, tr_gnorm, tr_tnorm);
        // Safe: only the batch and the buffers of arrays held by this frame are touched.
        py::gil_scoped_release release;
        return gpu::train_advance(p, d, b, o, tr, max_steps);
      },
      py::arg("problem"), py::arg("batch"), py::arg("dtype"), py::arg("method"), py::arg("lr"), py::arg("momentum"),
      py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("steps"),
      py::arg("record_every"), py::arg("loss_below"), py::arg("grad_norm_below"), py::arg("theta_norm_above"),
      py::arg("trace_loss").noconvert(), py::arg("trace_grad_norm").noconvert(),
      py::arg("trace_theta_norm").noconvert(), py::arg("max_steps"));
#endif
}

}  // namespace sadfast::bindings
