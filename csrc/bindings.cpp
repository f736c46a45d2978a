// The only file of hvx._native that includes pybind11. Every algorithm lives in
// plain C++17 files beside it; this file converts arrays, checks shapes and
// releases the GIL around the work. Each op family has its own section below,
// so the sections can grow independently.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "parallel.hpp"

namespace py = pybind11;

// ===== section: parallel ====================================================
static void bind_parallel(py::module_& m) {
  m.def("openmp_enabled", &hvx::openmp_enabled,
        "True when hvx._native was compiled with OpenMP.");
  m.def("max_threads", &hvx::max_threads,
        "Threads a parallel batch call uses by default (1 without OpenMP).");
  m.def("set_num_threads", &hvx::set_num_threads, py::arg("n"),
        "Sets the thread count of later batch calls (n >= 1).");
}

// ===== section: metrics =====================================================
static void bind_metrics(py::module_& m) { (void)m; }

// ===== section: postprocess =================================================
static void bind_postprocess(py::module_& m) { (void)m; }

PYBIND11_MODULE(_native, m) {
  m.doc() = "hvx native kernels: PQ matching and HV-watershed post-processing.";
  bind_parallel(m);
  bind_metrics(m);
  bind_postprocess(m);
}
