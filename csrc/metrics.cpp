// CoNiC metrics, see metrics.hpp and SPEC §1.
#include "metrics.hpp"

#include <algorithm>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "parallel.hpp"

namespace hvx {
namespace metrics {
namespace {

// Ids below max(kLutMinSize, min(2 * pixels, kLutMaxSize)) are relabelled through a
// lookup table; larger ones by sorting.
constexpr int64_t kLutMinSize = int64_t(1) << 16;
constexpr int64_t kLutMaxSize = int64_t(1) << 24;
// (true instances x pred instances) up to this many use a dense pair-index table;
// beyond it a hash map (memory stays O(pairs that overlap)).
constexpr int64_t kDensePairLimit = int64_t(1) << 22;
// NumPy's PW_BLOCKSIZE.
constexpr int64_t kPairwiseBlock = 128;

// Scratch memory of one thread, reused from image to image.
struct Workspace {
  std::vector<int32_t> lut_t, lut_p;  // id -> rank; all zero between images
  std::vector<int64_t> ids;           // sorted distinct ids (large-id path)
  std::vector<int32_t> dt, dp;        // dense labels per pixel (large-id path only)
  std::vector<int32_t> area_t;        // (Kt + 1) x S pixel counts per (true label, class)
  std::vector<int32_t> area_p;        // (Kp + 1) x S
  std::vector<int32_t> pair_index;    // Kt x Kp: 1 + pair slot, 0 = none; all zero between images
  std::unordered_map<int64_t, int32_t> pair_map;  // same, for huge Kt x Kp
  std::vector<int64_t> pair_key;      // per pair slot: (t - 1) * Kp + (p - 1)
  std::vector<int32_t> pair_cnt;      // per pair slot: S overlap counts by shared class (0 = none)
  std::vector<int32_t> order;         // pair slots by ascending (t, p)
  std::vector<double> ious;           // matched IoUs, ascending true label
  std::vector<int64_t> crop_inst;     // conic_counts
  std::vector<int32_t> crop_cls;
  std::vector<uint8_t> seen;
};

// Keeps the error of the lowest image index raised inside a parallel loop.
class ErrorSlot {
 public:
  void set(int64_t image, const std::string& what) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (image_ < 0 || image < image_) {
      image_ = image;
      what_ = what;
    }
  }
  void rethrow() const {
    if (image_ >= 0) throw std::invalid_argument(what_);
  }

 private:
  std::mutex mutex_;
  int64_t image_ = -1;
  std::string what_;
};

std::string where(const char* which, int64_t image) {
  return image < 0 ? std::string(which) : std::string(which) + "[" + std::to_string(image) + "]";
}

[[noreturn]] void bad_id(const char* fn, int64_t v, const char* which, int64_t image) {
  throw std::invalid_argument(std::string(fn) + ": expected instance ids >= 0, got " +
                              std::to_string(v) + " in " + where(which, image));
}

// Checks class ids in 0..num_classes.
template <typename T>
void check_classes(const T* cls, int64_t stride, int64_t n, int num_classes, const char* fn,
                   const char* which, int64_t image) {
  int64_t lo = 0, hi = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = static_cast<int64_t>(cls[i * stride]);
    lo = std::min(lo, c);
    hi = std::max(hi, c);
  }
  if (lo < 0 || hi > num_classes) {
    throw std::invalid_argument(std::string(fn) + ": expected class ids in 0.." +
                                std::to_string(num_classes) + ", got " +
                                std::to_string(lo < 0 ? lo : hi) + " in " + where(which, image));
  }
}

int64_t lut_capacity(int64_t n) { return std::max(kLutMinSize, std::min(2 * n, kLutMaxSize)); }

// Labels of one side (true or pred) of the current image: k-th smallest nonzero id -> k,
// as CoNiC's remap_label. Through `lut` when every id fits it, else in a dense buffer.
struct Side {
  int64_t max_id = 0;
  int32_t K = 0;       // distinct nonzero ids
  bool dense = false;  // labels are in the dense buffer, not in the lut
};

// One pass over the ids: validates them (>= 0) and marks them in the lut; then ranks them.
template <typename T>
Side prepare_side(const T* inst, int64_t stride, int64_t n, std::vector<int32_t>& lut,
                  std::vector<int32_t>& dense, std::vector<int64_t>& ids, const char* fn,
                  const char* which, int64_t image) {
  const int64_t cap = lut_capacity(n);
  if (static_cast<int64_t>(lut.size()) < cap) lut.resize(static_cast<size_t>(cap), 0);
  int32_t* L = lut.data();
  int64_t lo = 0, hi = 0, prev = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(inst[i * stride]);
    if (v == prev) continue;  // runs of one id: mark it once
    prev = v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    if (static_cast<uint64_t>(v) < static_cast<uint64_t>(cap)) L[v] = 1;
  }
  if (lo < 0 || hi >= cap) std::fill(L, L + std::min(hi, cap - 1) + 1, 0);
  if (lo < 0) bad_id(fn, lo, which, image);
  Side s;
  s.max_id = hi;
  if (hi < cap) {
    L[0] = 0;
    int32_t k = 0;
    for (int64_t v = 1; v <= hi; ++v) {
      if (L[v]) L[v] = ++k;
    }
    s.K = k;
    return s;
  }
  s.dense = true;
  ids.clear();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(inst[i * stride]);
    if (v != 0) ids.push_back(v);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  dense.resize(static_cast<size_t>(n));
  int64_t last_v = 0;
  int32_t last_k = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(inst[i * stride]);
    if (v != last_v) {
      last_v = v;
      last_k = v == 0 ? 0
                      : static_cast<int32_t>(std::lower_bound(ids.begin(), ids.end(), v) -
                                             ids.begin() + 1);
    }
    dense[i] = last_k;
  }
  s.K = static_cast<int32_t>(ids.size());
  return s;
}

// Writes the lut labels of a side into its dense buffer (when the other side is dense).
template <typename T>
void to_dense(const T* inst, int64_t stride, int64_t n, const std::vector<int32_t>& lut,
              std::vector<int32_t>& dense) {
  dense.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) dense[i] = lut[static_cast<int64_t>(inst[i * stride])];
}

void release_side(const Side& s, std::vector<int32_t>& lut) {
  if (!s.dense) std::fill(lut.begin(), lut.begin() + s.max_id + 1, 0);
}

// Adds `run` pixels to the overlap count of (t, p) in shared class cc; a new pair gets a slot.
// Kept out of line: it runs once per change of (t, p), not per pixel.
void add_overlap(int32_t t, int32_t p, int cc, int64_t run, int S, int32_t Kp, bool dense_pairs,
                 Workspace& ws, int64_t& last_key, int64_t& last_slot) {
  const int64_t key = static_cast<int64_t>(t - 1) * Kp + (p - 1);
  if (key != last_key) {
    int32_t found;
    if (dense_pairs) {
      found = ws.pair_index[key];
    } else {
      auto it = ws.pair_map.find(key);
      found = it == ws.pair_map.end() ? 0 : it->second;
    }
    if (found == 0) {
      ws.pair_key.push_back(key);
      ws.pair_cnt.insert(ws.pair_cnt.end(), S, 0);
      found = static_cast<int32_t>(ws.pair_key.size());
      if (dense_pairs) {
        ws.pair_index[key] = found;
      } else {
        ws.pair_map.emplace(key, found);
      }
    }
    last_key = key;
    last_slot = found - 1;
  }
  ws.pair_cnt[last_slot * S + cc] += static_cast<int32_t>(run);
}

// The one pass over the pixels: areas per (label, class) and overlaps per (true, pred,
// shared class) pair, accumulated over runs of pixels with equal (true id, true class,
// pred id, pred class). kDense: labels from ws.dt / ws.dp, else raw ids through the luts.
// Returns false (counts incomplete) on a class id outside 0..S-1.
template <typename T, bool kClasses, bool kDense>
bool count_pixels(const T* t_inst, const T* t_cls, const T* p_inst, const T* p_cls,
                  int64_t stride, int64_t n, int S, int32_t Kp, bool dense_pairs, Workspace& ws) {
  if (n == 0) return true;
  const int32_t* lut_t = ws.lut_t.data();
  const int32_t* lut_p = ws.lut_p.data();
  const int32_t* dt = ws.dt.data();
  const int32_t* dp = ws.dp.data();
  int32_t* area_t = ws.area_t.data();
  int32_t* area_p = ws.area_p.data();
  int64_t last_key = -1, last_slot = 0;
  // Per pixel "ids": raw ids (lut path) or dense labels; classes 0 without classes.
  const T* ti_ptr = t_inst;
  const T* pi_ptr = p_inst;
  const T* tc_ptr = t_cls;
  const T* pc_ptr = p_cls;
  auto ti_at = [dt, ti_ptr, stride](int64_t i) -> int64_t {
    if constexpr (kDense) return dt[i]; else return static_cast<int64_t>(ti_ptr[i * stride]);
  };
  auto pi_at = [dp, pi_ptr, stride](int64_t i) -> int64_t {
    if constexpr (kDense) return dp[i]; else return static_cast<int64_t>(pi_ptr[i * stride]);
  };
  auto tc_at = [tc_ptr, stride](int64_t i) -> int64_t {
    if constexpr (kClasses) return static_cast<int64_t>(tc_ptr[i * stride]); else return 0;
  };
  auto pc_at = [pc_ptr, stride](int64_t i) -> int64_t {
    if constexpr (kClasses) return static_cast<int64_t>(pc_ptr[i * stride]); else return 0;
  };
  auto out_of_range = [S](int64_t tc, int64_t pc) {
    return kClasses && (static_cast<uint64_t>(tc) >= static_cast<uint64_t>(S) ||
                        static_cast<uint64_t>(pc) >= static_cast<uint64_t>(S));
  };
  auto flush = [&](int64_t ti, int64_t tc, int64_t pi, int64_t pc, int64_t run) {
    const int32_t t = kDense ? static_cast<int32_t>(ti) : lut_t[ti];
    const int32_t p = kDense ? static_cast<int32_t>(pi) : lut_p[pi];
    if (t != 0) area_t[static_cast<int64_t>(t) * S + tc] += static_cast<int32_t>(run);
    if (p != 0) area_p[static_cast<int64_t>(p) * S + pc] += static_cast<int32_t>(run);
    if (t != 0 && p != 0) {
      add_overlap(t, p, tc == pc ? static_cast<int>(tc) : 0, run, S, Kp, dense_pairs, ws,
                  last_key, last_slot);
    }
  };
  int64_t ti = ti_at(0), tc = tc_at(0), pi = pi_at(0), pc = pc_at(0), run = 1;
  if (out_of_range(tc, pc)) return false;  // a class id outside 0..C; the caller reports it
  for (int64_t i = 1; i < n; ++i) {
    const int64_t ti2 = ti_at(i), tc2 = tc_at(i), pi2 = pi_at(i), pc2 = pc_at(i);
    if (ti2 == ti && tc2 == tc && pi2 == pi && pc2 == pc) {
      ++run;
      continue;
    }
    if (out_of_range(tc2, pc2)) return false;
    flush(ti, tc, pi, pc, run);
    ti = ti2;
    tc = tc2;
    pi = pi2;
    pc = pc2;
    run = 1;
  }
  flush(ti, tc, pi, pc, run);
  return true;
}

// Pairs at IoU > 0.5 from the counts; binary into bin, class c into cls[c - 1].
void pair_up(int C, bool with_classes, int32_t Kt, int32_t Kp, Workspace& ws, PqCounts& bin,
             PqCounts* cls) {
  const int S = with_classes ? C + 1 : 1;
  const int32_t* area_t = ws.area_t.data();
  const int32_t* area_p = ws.area_p.data();
  const int64_t n_pairs = static_cast<int64_t>(ws.pair_key.size());
  ws.order.resize(static_cast<size_t>(n_pairs));
  for (int64_t j = 0; j < n_pairs; ++j) ws.order[j] = static_cast<int32_t>(j);
  std::sort(ws.order.begin(), ws.order.end(),
            [&](int32_t a, int32_t b) { return ws.pair_key[a] < ws.pair_key[b]; });

  // Binary: the class channel is ignored, areas are row sums.
  ws.ious.clear();
  for (const int32_t j : ws.order) {
    const int64_t key = ws.pair_key[j];
    const int64_t t = key / Kp + 1, p = key % Kp + 1;
    int64_t inter = 0, at = 0, ap = 0;
    for (int c = 0; c < S; ++c) {
      inter += ws.pair_cnt[static_cast<int64_t>(j) * S + c];
      at += area_t[t * S + c];
      ap += area_p[p * S + c];
    }
    const double iou = static_cast<double>(inter) / static_cast<double>(at + ap - inter);
    if (iou > 0.5) ws.ious.push_back(iou);
  }
  bin.tp = static_cast<int64_t>(ws.ious.size());
  bin.fp = Kp - bin.tp;
  bin.fn = Kt - bin.tp;
  bin.sum_iou = pairwise_sum(ws.ious.data(), bin.tp);
  if (!with_classes) return;

  for (int c = 1; c <= C; ++c) {
    int64_t kt = 0, kp = 0;
    for (int64_t t = 1; t <= Kt; ++t) kt += area_t[t * S + c] > 0;
    for (int64_t p = 1; p <= Kp; ++p) kp += area_p[p * S + c] > 0;
    ws.ious.clear();
    for (const int32_t j : ws.order) {
      const int64_t inter = ws.pair_cnt[static_cast<int64_t>(j) * S + c];
      if (inter == 0) continue;
      const int64_t key = ws.pair_key[j];
      const int64_t t = key / Kp + 1, p = key % Kp + 1;
      const int64_t total = static_cast<int64_t>(area_t[t * S + c]) + area_p[p * S + c];
      const double iou = static_cast<double>(inter) / static_cast<double>(total - inter);
      if (iou > 0.5) ws.ious.push_back(iou);
    }
    PqCounts& out = cls[c - 1];
    out.tp = static_cast<int64_t>(ws.ious.size());
    out.fp = kp - out.tp;
    out.fn = kt - out.tp;
    out.sum_iou = pairwise_sum(ws.ious.data(), out.tp);
  }
}

// Full statistics of one image (binary, and per class when t_cls != nullptr).
template <typename T>
void image_stats(const T* t_inst, const T* t_cls, const T* p_inst, const T* p_cls,
                 int64_t stride, int64_t n, int C, const char* fn, int64_t image, Workspace& ws,
                 PqCounts& bin, PqCounts* cls) {
  const bool with_classes = t_cls != nullptr;
  const char* tw = with_classes ? "true" : "true_inst";
  const char* pw = with_classes ? "pred" : "pred_inst";
  const Side st = prepare_side(t_inst, stride, n, ws.lut_t, ws.dt, ws.ids, fn, tw, image);
  Side sp;
  try {
    sp = prepare_side(p_inst, stride, n, ws.lut_p, ws.dp, ws.ids, fn, pw, image);
  } catch (...) {
    release_side(st, ws.lut_t);
    throw;
  }
  const bool dense = st.dense || sp.dense;
  if (dense && !st.dense) to_dense(t_inst, stride, n, ws.lut_t, ws.dt);
  if (dense && !sp.dense) to_dense(p_inst, stride, n, ws.lut_p, ws.dp);
  const int32_t Kt = st.K, Kp = sp.K;

  const int S = with_classes ? C + 1 : 1;
  ws.area_t.assign(static_cast<size_t>(Kt + 1) * S, 0);
  ws.area_p.assign(static_cast<size_t>(Kp + 1) * S, 0);
  const bool dense_pairs = static_cast<int64_t>(Kt) * Kp <= kDensePairLimit;
  if (dense_pairs && static_cast<int64_t>(ws.pair_index.size()) < static_cast<int64_t>(Kt) * Kp) {
    ws.pair_index.resize(static_cast<size_t>(Kt) * Kp, 0);
  }
  ws.pair_key.clear();
  ws.pair_cnt.clear();
  ws.pair_map.clear();
  bool ok;
  if (with_classes) {
    ok = dense ? count_pixels<T, true, true>(t_inst, t_cls, p_inst, p_cls, stride, n, S, Kp,
                                             dense_pairs, ws)
               : count_pixels<T, true, false>(t_inst, t_cls, p_inst, p_cls, stride, n, S, Kp,
                                              dense_pairs, ws);
  } else {
    ok = dense ? count_pixels<T, false, true>(t_inst, t_cls, p_inst, p_cls, stride, n, S, Kp,
                                              dense_pairs, ws)
               : count_pixels<T, false, false>(t_inst, t_cls, p_inst, p_cls, stride, n, S, Kp,
                                               dense_pairs, ws);
  }
  release_side(st, ws.lut_t);
  release_side(sp, ws.lut_p);
  if (dense_pairs) {
    for (const int64_t key : ws.pair_key) ws.pair_index[key] = 0;
  }
  if (!ok) {  // name the offending map and value
    check_classes(t_cls, stride, n, C, fn, tw, image);
    check_classes(p_cls, stride, n, C, fn, pw, image);
  }
  pair_up(C, with_classes, Kt, Kp, ws, bin, cls);
}

void check_pixels(int64_t n_pixels, const char* fn) {
  if (n_pixels >= std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument(std::string(fn) + ": expected fewer than 2**31 pixels per image, got " +
                                std::to_string(n_pixels));
  }
}

}  // namespace

double pairwise_sum(const double* a, int64_t n) {
  if (n < 8) {
    double res = 0.0;
    for (int64_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= kPairwiseBlock) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    }
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

template <typename T>
PqCounts pq_counts(const T* true_inst, const T* pred_inst, int64_t n_pixels) {
  check_pixels(n_pixels, "pq_stats");
  Workspace ws;
  PqCounts bin;
  image_stats<T>(true_inst, nullptr, pred_inst, nullptr, 1, n_pixels, 0, "pq_stats", -1, ws, bin,
                 nullptr);
  return bin;
}

template <typename T>
void conic_stats(const T* true_maps, const T* pred_maps, int64_t n_images, int64_t n_pixels,
                 int num_classes, int64_t* bin_counts, double* bin_iou, int64_t* cls_counts,
                 double* cls_iou, int num_threads) {
  check_pixels(n_pixels, "conic_scores");
  if (num_classes < 1 || num_classes > 255) {
    throw std::invalid_argument("conic_scores: expected num_classes in 1..255, got " +
                                std::to_string(num_classes));
  }
  const int C = num_classes;
  ErrorSlot err;
  const int nt = threads_for(n_images, num_threads);
#pragma omp parallel num_threads(nt)
  {
    Workspace ws;
    std::vector<PqCounts> cls(static_cast<size_t>(C));
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < n_images; ++k) {
      try {
        const T* tm = true_maps + k * n_pixels * 2;
        const T* pm = pred_maps + k * n_pixels * 2;
        PqCounts bin;
        image_stats<T>(tm, tm + 1, pm, pm + 1, 2, n_pixels, C, "conic_scores", k, ws, bin,
                       cls.data());
        bin_counts[k * 3 + 0] = bin.tp;
        bin_counts[k * 3 + 1] = bin.fp;
        bin_counts[k * 3 + 2] = bin.fn;
        bin_iou[k] = bin.sum_iou;
        for (int c = 0; c < C; ++c) {
          int64_t* row = cls_counts + (k * C + c) * 3;
          row[0] = cls[c].tp;
          row[1] = cls[c].fp;
          row[2] = cls[c].fn;
          cls_iou[k * C + c] = cls[c].sum_iou;
        }
      } catch (const std::exception& e) {
        err.set(k, e.what());
      }
    }
  }
  err.rethrow();
}

template <typename T>
void conic_counts(const T* maps, int64_t n_images, int64_t height, int64_t width, int64_t crop_h,
                  int64_t crop_w, int num_classes, int64_t* out, int num_threads) {
  const int64_t n_pixels = height * width;
  check_pixels(n_pixels, "conic_counts");
  if (crop_h < 1 || crop_w < 1 || crop_h > height || crop_w > width) {
    throw std::invalid_argument("conic_counts: expected 1 <= crop <= (H, W) = (" +
                                std::to_string(height) + ", " + std::to_string(width) +
                                "), got (" + std::to_string(crop_h) + ", " +
                                std::to_string(crop_w) + ")");
  }
  if (num_classes < 1 || num_classes > 255) {
    throw std::invalid_argument("conic_counts: expected num_classes in 1..255, got " +
                                std::to_string(num_classes));
  }
  const int C = num_classes, S = C + 1;
  const int64_t y0 = (height - crop_h) / 2, x0 = (width - crop_w) / 2, m = crop_h * crop_w;
  ErrorSlot err;
  const int nt = threads_for(n_images, num_threads);
#pragma omp parallel num_threads(nt)
  {
    Workspace ws;
    std::vector<int64_t> npix(static_cast<size_t>(S));
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < n_images; ++k) {
      try {
        const T* img = maps + k * n_pixels * 2;
        check_classes(img + 1, 2, n_pixels, C, "conic_counts", "maps", k);
        ws.crop_inst.resize(static_cast<size_t>(m));
        ws.crop_cls.resize(static_cast<size_t>(m));
        for (int64_t y = 0; y < crop_h; ++y) {
          const T* row = img + ((y0 + y) * width + x0) * 2;
          for (int64_t x = 0; x < crop_w; ++x) {
            ws.crop_inst[y * crop_w + x] = static_cast<int64_t>(row[2 * x]);
            ws.crop_cls[y * crop_w + x] = static_cast<int32_t>(row[2 * x + 1]);
          }
        }
        int64_t lo = 0;
        for (int64_t i = 0; i < n_pixels; ++i) lo = std::min(lo, static_cast<int64_t>(img[2 * i]));
        if (lo < 0) bad_id("conic_counts", lo, "maps", k);
        const Side side = prepare_side<int64_t>(ws.crop_inst.data(), 1, m, ws.lut_t, ws.dt, ws.ids,
                                                "conic_counts", "maps", k);
        if (!side.dense) to_dense<int64_t>(ws.crop_inst.data(), 1, m, ws.lut_t, ws.dt);
        release_side(side, ws.lut_t);
        const int32_t K = side.K;
        ws.seen.assign(static_cast<size_t>(K + 1) * S, 0);
        std::fill(npix.begin(), npix.end(), 0);
        for (int64_t i = 0; i < m; ++i) {
          const int32_t t = ws.dt[i];
          const int32_t c = ws.crop_cls[i];
          if (t != 0 && c != 0) {
            ws.seen[static_cast<int64_t>(t) * S + c] = 1;
            ++npix[c];
          }
        }
        for (int c = 1; c <= C; ++c) {
          int64_t distinct = 0;
          for (int64_t t = 1; t <= K; ++t) distinct += ws.seen[t * S + c];
          // unique(inst * (cls == c))[1:]: drops 0 when present, else the smallest id.
          out[k * C + (c - 1)] = npix[c] < m ? distinct : distinct - 1;
        }
      } catch (const std::exception& e) {
        err.set(k, e.what());
      }
    }
  }
  err.rethrow();
}

#define HVX_METRICS_INSTANTIATE(T)                                                          \
  template PqCounts pq_counts<T>(const T*, const T*, int64_t);                              \
  template void conic_stats<T>(const T*, const T*, int64_t, int64_t, int, int64_t*, double*, \
                               int64_t*, double*, int);                                     \
  template void conic_counts<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int,  \
                                int64_t*, int);

HVX_METRICS_INSTANTIATE(int8_t)
HVX_METRICS_INSTANTIATE(uint8_t)
HVX_METRICS_INSTANTIATE(int16_t)
HVX_METRICS_INSTANTIATE(uint16_t)
HVX_METRICS_INSTANTIATE(int32_t)
HVX_METRICS_INSTANTIATE(uint32_t)
HVX_METRICS_INSTANTIATE(int64_t)

#undef HVX_METRICS_INSTANTIATE

}  // namespace metrics
}  // namespace hvx
