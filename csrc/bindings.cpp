// The only file of hvx._native that includes pybind11. Every algorithm lives in
// plain C++17 files beside it; this file converts arrays, checks shapes and
// releases the GIL around the work. Each op family has its own section below,
// so the sections can grow independently.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "metrics.hpp"
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
namespace metrics_py {

using hvx::metrics::PqCounts;

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    s += std::to_string(a.shape(i));
    if (i + 1 < a.ndim() || a.ndim() == 1) s += ",";
    if (i + 1 < a.ndim()) s += " ";
  }
  return s + ")";
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Calls f(T{}) with T the element type of `a`; the integer types metrics.cpp instantiates.
template <typename F>
auto dispatch_int(const py::array& a, const char* fn, F&& f) {
  const char kind = a.dtype().kind();
  const py::ssize_t size = a.itemsize();
  if (kind == 'i' && size == 1) return f(int8_t{});
  if (kind == 'i' && size == 2) return f(int16_t{});
  if (kind == 'i' && size == 4) return f(int32_t{});
  if (kind == 'i' && size == 8) return f(int64_t{});
  if (kind == 'u' && size == 1) return f(uint8_t{});
  if (kind == 'u' && size == 2) return f(uint16_t{});
  if (kind == 'u' && size == 4) return f(uint32_t{});
  throw std::invalid_argument(std::string(fn) +
                              ": expected an int8/16/32/64 or uint8/16/32 array, got dtype " +
                              dtype_str(a));
}

void check_same(const py::array& t, const py::array& p, const char* fn) {
  if (!t.dtype().equal(p.dtype())) {
    throw std::invalid_argument(std::string(fn) + ": expected true and pred of one dtype, got " +
                                dtype_str(t) + " and " + dtype_str(p));
  }
  bool same = t.ndim() == p.ndim();
  for (py::ssize_t i = 0; same && i < t.ndim(); ++i) same = t.shape(i) == p.shape(i);
  if (!same) {
    throw std::invalid_argument(std::string(fn) + ": expected true and pred of one shape, got " +
                                shape_str(t) + " and " + shape_str(p));
  }
}

template <typename T>
py::array_t<T, py::array::c_style> contiguous(const py::array& a) {
  // Same dtype (dispatched), so forcecast only makes a C-contiguous copy when needed.
  auto out = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(a);
  if (!out) throw py::error_already_set();
  return out;
}

void check_maps(const py::array& a, const char* fn, const char* name) {
  if (a.ndim() != 4 || a.shape(3) != 2) {
    throw std::invalid_argument(std::string(fn) + ": expected " + name +
                                " of shape (N, H, W, 2), got " + shape_str(a));
  }
}

py::tuple pq_counts(const py::array& true_inst, const py::array& pred_inst) {
  if (true_inst.ndim() != 2) {
    throw std::invalid_argument("pq_stats: expected true_inst of shape (H, W), got " +
                                shape_str(true_inst));
  }
  check_same(true_inst, pred_inst, "pq_stats");
  return dispatch_int(true_inst, "pq_stats", [&](auto tag) {
    using T = decltype(tag);
    auto t = contiguous<T>(true_inst);
    auto p = contiguous<T>(pred_inst);
    const int64_t n = static_cast<int64_t>(t.size());
    PqCounts r;
    {
      py::gil_scoped_release release;
      r = hvx::metrics::pq_counts<T>(t.data(), p.data(), n);
    }
    return py::make_tuple(r.tp, r.fp, r.fn, r.sum_iou);
  });
}

py::tuple conic_stats(const py::array& true_maps, const py::array& pred_maps, int num_classes,
                      int num_threads) {
  check_maps(true_maps, "conic_scores", "true");
  check_same(true_maps, pred_maps, "conic_scores");
  const py::ssize_t n = true_maps.shape(0), C = num_classes;
  py::array_t<int64_t> bin_counts({n, py::ssize_t(3)});
  py::array_t<double> bin_iou({n});
  py::array_t<int64_t> cls_counts({n, C > 0 ? C : 0, py::ssize_t(3)});
  py::array_t<double> cls_iou({n, C > 0 ? C : 0});
  dispatch_int(true_maps, "conic_scores", [&](auto tag) {
    using T = decltype(tag);
    auto t = contiguous<T>(true_maps);
    auto p = contiguous<T>(pred_maps);
    const int64_t n_pixels = static_cast<int64_t>(t.shape(1)) * t.shape(2);
    int64_t* bc = bin_counts.mutable_data();
    double* bi = bin_iou.mutable_data();
    int64_t* cc = cls_counts.mutable_data();
    double* ci = cls_iou.mutable_data();
    py::gil_scoped_release release;
    hvx::metrics::conic_stats<T>(t.data(), p.data(), n, n_pixels, num_classes, bc, bi, cc, ci,
                                 num_threads);
    return 0;
  });
  return py::make_tuple(bin_counts, bin_iou, cls_counts, cls_iou);
}

py::array_t<int64_t> conic_counts(const py::array& maps, int64_t crop_h, int64_t crop_w,
                                  int num_classes, int num_threads) {
  check_maps(maps, "conic_counts", "maps");
  const py::ssize_t n = maps.shape(0);
  py::array_t<int64_t> out({n, static_cast<py::ssize_t>(num_classes > 0 ? num_classes : 0)});
  dispatch_int(maps, "conic_counts", [&](auto tag) {
    using T = decltype(tag);
    auto a = contiguous<T>(maps);
    int64_t* o = out.mutable_data();
    py::gil_scoped_release release;
    hvx::metrics::conic_counts<T>(a.data(), n, a.shape(1), a.shape(2), crop_h, crop_w,
                                  num_classes, o, num_threads);
    return 0;
  });
  return out;
}

double pairwise_sum(const py::array_t<double, py::array::c_style | py::array::forcecast>& x) {
  if (x.ndim() != 1) {
    throw std::invalid_argument("pairwise_sum: expected a 1-D array, got shape " + shape_str(x));
  }
  return hvx::metrics::pairwise_sum(x.data(), static_cast<int64_t>(x.size()));
}

}  // namespace metrics_py

static void bind_metrics(py::module_& m) {
  m.def("pq_counts", &metrics_py::pq_counts, py::arg("true_inst"), py::arg("pred_inst"),
        "Binary PQ counts (tp, fp, fn, sum_iou) of one pair of (H, W) instance maps "
        "(same integer dtype). Use hvx.metrics.pq_stats.");
  m.def("conic_stats", &metrics_py::conic_stats, py::arg("true"), py::arg("pred"),
        py::arg("num_classes") = 6, py::arg("num_threads") = 0,
        "Per-image CoNiC statistics of (N, H, W, 2) maps: (binary counts (N, 3) int64, "
        "binary IoU sums (N,), class counts (N, C, 3) int64, class IoU sums (N, C)). "
        "OpenMP across images, GIL released. Use hvx.metrics.conic_scores.");
  m.def("conic_counts", &metrics_py::conic_counts, py::arg("maps"), py::arg("crop_h"),
        py::arg("crop_w"), py::arg("num_classes") = 6, py::arg("num_threads") = 0,
        "Per-class nucleus counts (N, C) int64 in the central crop. Use "
        "hvx.metrics.conic_counts.");
  m.def("pairwise_sum", &metrics_py::pairwise_sum, py::arg("x"),
        "NumPy's pairwise float64 summation, as used for the IoU sums (for tests).");
}

// ===== section: postprocess =================================================
static void bind_postprocess(py::module_& m) { (void)m; }

PYBIND11_MODULE(_native, m) {
  m.doc() = "hvx native kernels: PQ matching and HV-watershed post-processing.";
  bind_parallel(m);
  bind_metrics(m);
  bind_postprocess(m);
}
