// The HoVer-Net HV-watershed pipeline (SPEC §3a) and the instance table (§3b).
// Work outside the foreground is skipped where it cannot change the result:
// the Sobel maps and their min/max need the whole tile, but the gradient energy,
// the relief, the markers and the flood are computed on foreground pixels only.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "postprocess.hpp"


// The relief's products (0.25 x, 0.5 x) are exact, so FMA contraction cannot
// change it; the order of the additions is OpenCV's.

namespace hvx {
namespace pp {


void validate_params(const Params& p) {
  if (!(p.np_threshold == p.np_threshold)) {
    throw std::invalid_argument("np_threshold: expected a finite number, got NaN");
  }
  if (p.min_object_size < 0) {
    throw std::invalid_argument("min_object_size: expected >= 0, got " +
                                std::to_string(p.min_object_size));
  }
  if (p.sobel_ksize < 3 || p.sobel_ksize > 31 || p.sobel_ksize % 2 == 0) {
    throw std::invalid_argument("sobel_ksize: expected an odd integer in [3, 31], got " +
                                std::to_string(p.sobel_ksize));
  }
  if (p.opening_ksize < 1 || p.opening_ksize % 2 == 0) {
    throw std::invalid_argument("opening_ksize: expected an odd integer >= 1, got " +
                                std::to_string(p.opening_ksize));
  }
  if (p.gaussian_ksize != 3) {
    throw std::invalid_argument("gaussian_ksize: expected 3, got " +
                                std::to_string(p.gaussian_ksize));
  }
}

namespace {

int64_t reflect101(int64_t p, int64_t n) {
  if (n == 1) return 0;
  while (p < 0 || p >= n) p = p < 0 ? -p : 2 * (n - 1) - p;
  return p;
}

struct Workspace {
  std::vector<uint8_t> fg, marker, mask_p;
  std::vector<float> hn, vn;
  std::vector<double> sh, sv, g, dist_p;
  std::vector<int32_t> lab, lab_p;
  std::vector<int64_t> stack, comp, counts;
};

Workspace& workspace() {
  static thread_local Workspace ws;
  return ws;
}

template <typename T>
void resize(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

}  // namespace

void instances_from_hv(const float* np, const float* h, const float* v, int64_t H, int64_t W,
                       const Params& p, int32_t* out) {
  validate_params(p);
  const int64_t n = H * W;
  std::fill(out, out + n, 0);
  if (n == 0) return;
  Workspace& ws = workspace();
  resize(ws.fg, n);
  uint8_t* fg = ws.fg.data();
  for (int64_t i = 0; i < n; ++i) fg[i] = np[i] >= p.np_threshold ? 1 : 0;
  if (remove_small4(fg, H, W, p.min_object_size) == 0) return;

  // Gradient energy: min-max normalise, Sobel, min-max normalise (whole tile).
  resize(ws.hn, n), resize(ws.vn, n), resize(ws.sh, n), resize(ws.sv, n);
  normalize_minmax_f32(h, n, ws.hn.data());
  normalize_minmax_f32(v, n, ws.vn.data());
  sobel_f64(ws.hn.data(), H, W, 1, p.sobel_ksize, ws.sh.data());
  sobel_f64(ws.vn.data(), H, W, 0, p.sobel_ksize, ws.sv.data());
  // Reuse hn / vn for the normalised Sobel maps (float32).
  normalize_minmax_f64(ws.sh.data(), n, ws.hn.data());
  normalize_minmax_f64(ws.sv.data(), n, ws.vn.data());
  const float* nsh = ws.hn.data();
  const float* nsv = ws.vn.data();

  // overall (float64, >= 0) on the foreground, 0 elsewhere; g = (1 - overall) * fg;
  // markers = fg & (overall < marker_threshold).
  resize(ws.g, n), resize(ws.marker, n);
  double* g = ws.g.data();
  uint8_t* marker = ws.marker.data();
  const double thr = p.marker_threshold;
  for (int64_t i = 0; i < n; ++i) {  // branch-free: vectorises
    const float a = 1.0f - nsh[i], b = 1.0f - nsv[i];
    double o = static_cast<double>(a > b ? a : b);
    o = o < 0.0 ? 0.0 : o;
    const bool f = fg[i] != 0;
    g[i] = f ? 1.0 - o : 0.0;
    marker[i] = static_cast<uint8_t>(f && !(o >= thr));
  }
  fill_holes(marker, H, W);
  open_ellipse(marker, H, W, p.opening_ksize);

  // Marker labels (raster order), small ones removed, masked by the foreground.
  resize(ws.lab, n);
  int32_t* lab = ws.lab.data();
  const int32_t nlab = label4(marker, H, W, lab, &ws.counts);
  if (nlab == 0) return;

  // Padded relief, mask and labels; the relief is -GaussianBlur(g) on fg pixels.
  const int64_t Hp = H + 2, Wp = W + 2, np_ = Hp * Wp;
  resize(ws.dist_p, np_), resize(ws.mask_p, np_), resize(ws.lab_p, np_);
  double* dist = ws.dist_p.data();
  uint8_t* mask = ws.mask_p.data();
  int32_t* lp = ws.lab_p.data();
  std::memset(mask, 0, static_cast<size_t>(np_));
  std::memset(lp, 0, static_cast<size_t>(np_) * sizeof(int32_t));
  for (int64_t y = 0; y < H; ++y) {
    const int64_t ym = reflect101(y - 1, H) * W, y0 = y * W, yp = reflect101(y + 1, H) * W;
    for (int64_t x = 0; x < W; ++x) {
      const int64_t i = y0 + x;
      if (!fg[i]) continue;
      const bool inner = x > 0 && x + 1 < W;
      const int64_t xm = inner ? x - 1 : reflect101(x - 1, W);
      const int64_t xp = inner ? x + 1 : reflect101(x + 1, W);
      const double ru = 0.25 * g[ym + xm] + 0.5 * g[ym + x] + 0.25 * g[ym + xp];
      const double rc = 0.25 * g[y0 + xm] + 0.5 * g[y0 + x] + 0.25 * g[y0 + xp];
      const double rd = 0.25 * g[yp + xm] + 0.5 * g[yp + x] + 0.25 * g[yp + xp];
      const double blur = (0.5 * rc + 0.0) + 0.25 * (rd + ru);
      const int64_t q = (y + 1) * Wp + x + 1;
      dist[q] = -blur;
      mask[q] = 1;
      const int32_t l = lab[i];
      lp[q] = (l && ws.counts[l] >= p.min_object_size) ? l : 0;
    }
  }
  watershed_padded(dist, mask, lp, Hp, Wp);
  for (int64_t y = 0; y < H; ++y) {
    std::memcpy(out + y * W, lp + (y + 1) * Wp + 1, static_cast<size_t>(W) * sizeof(int32_t));
  }
}

void argmax_planes(const float* probs, int64_t C, int64_t H, int64_t W, int32_t* out) {
  const int64_t n = H * W;
  static thread_local std::vector<float> best;
  best.assign(probs, probs + n);
  std::fill(out, out + n, 0);
  for (int64_t c = 1; c < C; ++c) {
    const float* pc = probs + c * n;
    float* b = best.data();
    const int32_t ci = static_cast<int32_t>(c);
    for (int64_t i = 0; i < n; ++i) {  // branch-free select: vectorises
      const bool gt = pc[i] > b[i];
      b[i] = gt ? pc[i] : b[i];
      out[i] = gt ? ci : out[i];
    }
  }
}

Table instance_table(const int32_t* inst, const int32_t* types, int64_t H, int64_t W) {
  Table t;
  const int64_t n = H * W;
  t.contour_offsets.push_back(0);
  int32_t max_id = 0, max_type = 0, min_id = 0, min_type = 0;
  for (int64_t i = 0; i < n; ++i) {
    max_id = std::max(max_id, inst[i]), min_id = std::min(min_id, inst[i]);
    max_type = std::max(max_type, types[i]), min_type = std::min(min_type, types[i]);
  }
  if (min_id < 0) {
    throw std::invalid_argument("instance_table: expected instance ids >= 0, got " +
                                std::to_string(min_id));
  }
  if (min_type < 0) {
    throw std::invalid_argument("instance_table: expected type ids >= 0, got " +
                                std::to_string(min_type));
  }
  if (max_id == 0) return t;
  // Dense per-id slots when ids are compact enough, else ids are compressed.
  std::vector<int32_t> ids;
  std::vector<int64_t> slot_of;
  const bool dense = max_id <= 4 * n + 1024;
  if (dense) {
    slot_of.assign(static_cast<size_t>(max_id) + 1, -1);
    for (int64_t i = 0; i < n; ++i) slot_of[inst[i]] = 0;
    for (int32_t id = 1; id <= max_id; ++id)
      if (slot_of[id] == 0) slot_of[id] = static_cast<int64_t>(ids.size()), ids.push_back(id);
  } else {
    ids.assign(inst, inst + n);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    if (!ids.empty() && ids[0] == 0) ids.erase(ids.begin());
  }
  auto slot = [&](int32_t id) -> int64_t {
    if (dense) return slot_of[id];
    return std::lower_bound(ids.begin(), ids.end(), id) - ids.begin();
  };
  const size_t K = ids.size();
  std::vector<int64_t> area(K, 0), sx(K, 0), sy(K, 0), r0(K, H), r1(K, -1), c0(K, W), c1(K, -1);
  for (int64_t y = 0; y < H; ++y) {
    for (int64_t x = 0; x < W; ++x) {
      const int32_t id = inst[y * W + x];
      if (!id) continue;
      const int64_t k = slot(id);
      area[k]++, sx[k] += x, sy[k] += y;
      r0[k] = std::min(r0[k], y), r1[k] = std::max(r1[k], y);
      c0[k] = std::min(c0[k], x), c1[k] = std::max(c1[k], x);
    }
  }
  std::vector<int64_t> hist(static_cast<size_t>(max_type) + 1, 0);
  std::vector<int32_t> touched;
  for (size_t k = 0; k < K; ++k) {
    const int32_t id = ids[k];
    const size_t before = t.contour_xy.size();
    const int64_t npts = outer_contour(inst, H, W, id, r0[k], c0[k], t.contour_xy);
    if (npts < 3) {
      t.contour_xy.resize(before);
      continue;
    }
    // Type vote over the instance's pixels (bounding box scan).
    touched.clear();
    for (int64_t y = r0[k]; y <= r1[k]; ++y) {
      for (int64_t x = c0[k]; x <= c1[k]; ++x) {
        if (inst[y * W + x] != id) continue;
        const int32_t ty = types[y * W + x];
        if (hist[ty]++ == 0) touched.push_back(ty);
      }
    }
    std::sort(touched.begin(), touched.end());
    int32_t best = -1, best_nz = -1;
    for (int32_t ty : touched) {
      if (best < 0 || hist[ty] > hist[best]) best = ty;
      if (ty != 0 && (best_nz < 0 || hist[ty] > hist[best_nz])) best_nz = ty;
    }
    const int32_t ty = (best == 0 && best_nz >= 0) ? best_nz : best;
    const double prob = static_cast<double>(hist[ty]) / (static_cast<double>(area[k]) + 1.0e-6);
    for (int32_t tt : touched) hist[tt] = 0;

    const double m00 = static_cast<double>(area[k]);
    const double m10 = static_cast<double>(sx[k] - c0[k] * area[k]);
    const double m01 = static_cast<double>(sy[k] - r0[k] * area[k]);
    t.id.push_back(id);
    t.type.push_back(ty);
    t.type_prob.push_back(static_cast<float>(prob));
    t.centroid.push_back(m01 / m00 + static_cast<double>(r0[k]));
    t.centroid.push_back(m10 / m00 + static_cast<double>(c0[k]));
    t.bbox.push_back(static_cast<int32_t>(r0[k]));
    t.bbox.push_back(static_cast<int32_t>(c0[k]));
    t.bbox.push_back(static_cast<int32_t>(r1[k] + 1));
    t.bbox.push_back(static_cast<int32_t>(c1[k] + 1));
    t.area.push_back(area[k]);
    t.contour_offsets.push_back(static_cast<int64_t>(t.contour_xy.size() / 2));
  }
  return t;
}

void paint_types(const int32_t* inst, int64_t H, int64_t W, const Table& t, uint8_t* out) {
  const int64_t n = H * W;
  std::fill(out, out + n, 0);
  if (t.id.empty()) return;
  const int32_t max_id = *std::max_element(t.id.begin(), t.id.end());
  if (max_id <= 4 * n + 1024) {
    std::vector<uint8_t> lut(static_cast<size_t>(max_id) + 1, 0);
    for (size_t k = 0; k < t.id.size(); ++k) lut[t.id[k]] = static_cast<uint8_t>(t.type[k]);
    for (int64_t i = 0; i < n; ++i)
      if (inst[i] > 0 && inst[i] <= max_id) out[i] = lut[inst[i]];
  } else {
    for (int64_t i = 0; i < n; ++i) {
      if (inst[i] <= 0) continue;
      auto it = std::lower_bound(t.id.begin(), t.id.end(), inst[i]);
      if (it != t.id.end() && *it == inst[i]) out[i] = static_cast<uint8_t>(t.type[it - t.id.begin()]);
    }
  }
}

}  // namespace pp
}  // namespace hvx
