// The only file of hvx._native that includes pybind11. Every algorithm lives in
// plain C++17 files beside it; this file converts arrays, checks shapes and
// releases the GIL around the work. Each op family has its own section below,
// so the sections can grow independently.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "metrics.hpp"
#include "parallel.hpp"
#include "postprocess.hpp"

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
namespace {

using f32arr = py::array_t<float, py::array::c_style | py::array::forcecast>;
using f64arr = py::array_t<double, py::array::c_style | py::array::forcecast>;
using i32arr = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using u8arr = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

void require(bool ok, const std::string& what, const py::array& a) {
  if (!ok) throw std::invalid_argument(what + ": expected a 2-D array of the image's shape, got " + shape_str(a));
}

hvx::pp::Params make_params(float np_threshold, int64_t min_object_size, int sobel_ksize,
                            double marker_threshold, int opening_ksize, int gaussian_ksize) {
  hvx::pp::Params p;
  p.np_threshold = np_threshold;
  p.min_object_size = min_object_size;
  p.sobel_ksize = sobel_ksize;
  p.marker_threshold = marker_threshold;
  p.opening_ksize = opening_ksize;
  p.gaussian_ksize = gaussian_ksize;
  hvx::pp::validate_params(p);
  return p;
}

py::tuple table_to_py(const hvx::pp::Table& t) {
  const py::ssize_t K = static_cast<py::ssize_t>(t.id.size());
  const py::ssize_t P = static_cast<py::ssize_t>(t.contour_xy.size() / 2);
  py::array_t<int32_t> id(K), type(K);
  py::array_t<float> prob(K);
  py::array_t<double> cen({K, py::ssize_t(2)});
  py::array_t<int32_t> bbox({K, py::ssize_t(4)});
  py::array_t<int64_t> area(K), offs(K + 1);
  py::array_t<int32_t> xy({P, py::ssize_t(2)});
  auto cp = [](const auto& v, auto& arr) {
    if (!v.empty()) std::memcpy(arr.mutable_data(), v.data(), v.size() * sizeof(v[0]));
  };
  cp(t.id, id), cp(t.type, type), cp(t.type_prob, prob), cp(t.centroid, cen);
  cp(t.bbox, bbox), cp(t.area, area), cp(t.contour_offsets, offs), cp(t.contour_xy, xy);
  return py::make_tuple(id, type, prob, cen, bbox, area, xy, offs);
}

py::array_t<int32_t> py_instances_from_hv(f32arr np_prob, f32arr hv, float np_threshold,
                                          int64_t min_object_size, int sobel_ksize,
                                          double marker_threshold, int opening_ksize,
                                          int gaussian_ksize) {
  const auto p = make_params(np_threshold, min_object_size, sobel_ksize, marker_threshold,
                             opening_ksize, gaussian_ksize);
  if (np_prob.ndim() != 2) {
    throw std::invalid_argument("np_prob: expected shape (H, W), got " + shape_str(np_prob));
  }
  const int64_t H = np_prob.shape(0), W = np_prob.shape(1);
  if (hv.ndim() != 3 || hv.shape(0) != 2 || hv.shape(1) != H || hv.shape(2) != W) {
    throw std::invalid_argument("hv: expected shape (2, " + std::to_string(H) + ", " +
                                std::to_string(W) + "), got " + shape_str(hv));
  }
  py::array_t<int32_t> out({H, W});
  const float* a = np_prob.data();
  const float* h = hv.data();
  int32_t* o = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    hvx::pp::instances_from_hv(a, h, h + H * W, H, W, p, o);
  }
  return out;
}

py::tuple py_instance_table(i32arr inst, i32arr types) {
  if (inst.ndim() != 2) {
    throw std::invalid_argument("inst: expected shape (H, W), got " + shape_str(inst));
  }
  if (types.ndim() != 2 || types.shape(0) != inst.shape(0) || types.shape(1) != inst.shape(1)) {
    throw std::invalid_argument("types: expected shape " + shape_str(inst) + ", got " +
                                shape_str(types));
  }
  hvx::pp::Table t;
  {
    py::gil_scoped_release nogil;
    t = hvx::pp::instance_table(inst.data(), types.data(), inst.shape(0), inst.shape(1));
  }
  return table_to_py(t);
}

// Batch: np (N, H, W), hv (N, 2, H, W), tp (N, H, W) int32 labels or (N, C, H, W)
// float32 probabilities. Returns (inst, type, [table tuples]).
py::tuple py_postprocess_batch(f32arr np_prob, f32arr hv, py::array tp, float np_threshold,
                               int64_t min_object_size, int sobel_ksize,
                               double marker_threshold, int opening_ksize,
                               int gaussian_ksize, int num_threads) {
  const auto p = make_params(np_threshold, min_object_size, sobel_ksize, marker_threshold,
                             opening_ksize, gaussian_ksize);
  if (np_prob.ndim() != 3) {
    throw std::invalid_argument("np_prob: expected shape (N, H, W), got " + shape_str(np_prob));
  }
  const int64_t N = np_prob.shape(0), H = np_prob.shape(1), W = np_prob.shape(2);
  const std::string nhw = std::to_string(N) + ", " + std::to_string(H) + ", " + std::to_string(W);
  if (hv.ndim() != 4 || hv.shape(0) != N || hv.shape(1) != 2 || hv.shape(2) != H ||
      hv.shape(3) != W) {
    throw std::invalid_argument("hv: expected shape (" + std::to_string(N) + ", 2, " +
                                std::to_string(H) + ", " + std::to_string(W) + "), got " +
                                shape_str(hv));
  }
  const bool probs = tp.ndim() == 4;
  f32arr tp_p;
  i32arr tp_l;
  int64_t C = 0;
  if (probs) {
    tp_p = f32arr::ensure(tp);
    C = tp_p.shape(1);
    if (tp_p.shape(0) != N || C < 1 || tp_p.shape(2) != H || tp_p.shape(3) != W) {
      throw std::invalid_argument("tp: expected shape (" + std::to_string(N) + ", C, " +
                                  std::to_string(H) + ", " + std::to_string(W) +
                                  ") probabilities, got " + shape_str(tp));
    }
  } else {
    if (tp.ndim() != 3 || tp.shape(0) != N || tp.shape(1) != H || tp.shape(2) != W) {
      throw std::invalid_argument("tp: expected shape (" + nhw + ") labels or (N, C, H, W) "
                                  "probabilities, got " + shape_str(tp));
    }
    tp_l = i32arr::ensure(tp);
  }
  py::array_t<int32_t> inst({N, H, W});
  py::array_t<uint8_t> type({N, H, W});
  std::vector<hvx::pp::Table> tables(static_cast<size_t>(N));
  const float* a = np_prob.data();
  const float* h = hv.data();
  const float* tpp = probs ? tp_p.data() : nullptr;
  const int32_t* tpl = probs ? nullptr : tp_l.data();
  int32_t* io = inst.mutable_data();
  uint8_t* to = type.mutable_data();
  const int64_t n = H * W;
  std::string error;
  {
    py::gil_scoped_release nogil;
    const int threads = hvx::threads_for(N, num_threads);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < N; ++i) {
      try {
        hvx::pp::instances_from_hv(a + i * n, h + i * 2 * n, h + i * 2 * n + n, H, W, p,
                                   io + i * n);
        std::vector<int32_t> lab;
        const int32_t* types = tpl ? tpl + i * n : nullptr;
        if (!types) {
          lab.resize(static_cast<size_t>(n));
          hvx::pp::argmax_planes(tpp + i * C * n, C, H, W, lab.data());
          types = lab.data();
        }
        tables[i] = hvx::pp::instance_table(io + i * n, types, H, W);
        hvx::pp::paint_types(io + i * n, H, W, tables[i], to + i * n);
      } catch (const std::exception& e) {
#pragma omp critical
        error = e.what();
      }
    }
  }
  if (!error.empty()) throw std::invalid_argument(error);
  py::list out;
  for (const auto& t : tables) out.append(table_to_py(t));
  return py::make_tuple(inst, type, out);
}

}  // namespace

static void bind_postprocess(py::module_& m) {
  m.def("pp_instances_from_hv", &py_instances_from_hv, py::arg("np_prob"), py::arg("hv"),
        py::arg("np_threshold"), py::arg("min_object_size"), py::arg("sobel_ksize"),
        py::arg("marker_threshold"), py::arg("opening_ksize"), py::arg("gaussian_ksize"),
        "SPEC 3a instance map of one image: np (H, W) float32, hv (2, H, W) float32 -> "
        "(H, W) int32. NaN or inf raise ValueError.");
  m.def("pp_instance_table", &py_instance_table, py::arg("inst"), py::arg("types"),
        "SPEC 3b records: (id, type, type_prob, centroid_yx, bbox, area, contour_xy, "
        "contour_offsets).");
  m.def("pp_postprocess_batch", &py_postprocess_batch, py::arg("np_prob"), py::arg("hv"),
        py::arg("tp"), py::arg("np_threshold"), py::arg("min_object_size"),
        py::arg("sobel_ksize"), py::arg("marker_threshold"), py::arg("opening_ksize"),
        py::arg("gaussian_ksize"), py::arg("num_threads") = 0,
        "Batch of SPEC 3a + 3b, OpenMP over images, GIL released: (inst, type, tables).");
  // Single steps, for the step-by-step tests against OpenCV / scipy / scikit-image.
  m.def("_pp_normalize", [](py::array x) -> py::array_t<float> {
    py::array_t<float> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
    if (x.dtype().is(py::dtype::of<double>())) {
      auto d = f64arr::ensure(x);
      hvx::pp::normalize_minmax_f64(d.data(), d.size(), out.mutable_data());
    } else {
      auto f = f32arr::ensure(x);
      hvx::pp::normalize_minmax_f32(f.data(), f.size(), out.mutable_data());
    }
    return out;
  });
  m.def("_pp_sobel", [](f32arr x, int dx, int ksize) {
    require(x.ndim() == 2, "x", x);
    py::array_t<double> out({x.shape(0), x.shape(1)});
    hvx::pp::sobel_f64(x.data(), x.shape(0), x.shape(1), dx, ksize, out.mutable_data());
    return out;
  });
  m.def("_pp_gaussian3", [](f64arr x) {
    require(x.ndim() == 2, "x", x);
    py::array_t<double> out({x.shape(0), x.shape(1)});
    hvx::pp::gaussian3_f64(x.data(), x.shape(0), x.shape(1), out.mutable_data());
    return out;
  });
  m.def("_pp_label4", [](u8arr x) {
    require(x.ndim() == 2, "x", x);
    py::array_t<int32_t> out({x.shape(0), x.shape(1)});
    hvx::pp::label4(x.data(), x.shape(0), x.shape(1), out.mutable_data());
    return out;
  });
  m.def("_pp_fill_holes", [](u8arr x) {
    require(x.ndim() == 2, "x", x);
    py::array_t<uint8_t> out({x.shape(0), x.shape(1)});
    for (py::ssize_t i = 0; i < x.size(); ++i) out.mutable_data()[i] = x.data()[i] ? 1 : 0;
    hvx::pp::fill_holes(out.mutable_data(), x.shape(0), x.shape(1));
    return out;
  });
  m.def("_pp_open_ellipse", [](u8arr x, int k) {
    require(x.ndim() == 2, "x", x);
    py::array_t<uint8_t> out({x.shape(0), x.shape(1)});
    for (py::ssize_t i = 0; i < x.size(); ++i) out.mutable_data()[i] = x.data()[i] ? 1 : 0;
    hvx::pp::open_ellipse(out.mutable_data(), x.shape(0), x.shape(1), k);
    return out;
  });
  m.def("_pp_set_isa_limit", &hvx::pp::set_isa_limit, py::arg("level"),
        "Caps the SIMD level of the post-processing kernels (2 AVX-512, 1 AVX2, 0 plain); "
        "returns the previous cap. For tests.");
  m.def("_pp_isa_level", &hvx::pp::isa_level, "SIMD level in use (cap and CPU).");
  m.def("_pp_watershed", [](f64arr image, i32arr markers, u8arr mask, bool exact_heap) {
    require(image.ndim() == 2, "image", image);
    require(markers.ndim() == 2 && markers.shape(0) == image.shape(0) &&
                markers.shape(1) == image.shape(1), "markers", markers);
    require(mask.ndim() == 2 && mask.shape(0) == image.shape(0) &&
                mask.shape(1) == image.shape(1), "mask", mask);
    py::array_t<int32_t> out({image.shape(0), image.shape(1)});
    std::memcpy(out.mutable_data(), markers.data(), markers.size() * sizeof(int32_t));
    hvx::pp::watershed(image.data(), mask.data(), image.shape(0), image.shape(1),
                       out.mutable_data(), exact_heap);
    return out;
  }, py::arg("image"), py::arg("markers"), py::arg("mask"), py::arg("exact_heap") = false);
}

PYBIND11_MODULE(_native, m) {
  m.doc() = "hvx native kernels: PQ matching and HV-watershed post-processing.";
  bind_parallel(m);
  bind_metrics(m);
  bind_postprocess(m);
}
