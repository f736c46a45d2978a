// The instance table (SPEC §3b) and the type maps: argmax of the type
// probabilities, one row per nucleus (id, type by majority vote, probability,
// centroid, bounding box, area, outer contour), the type map painted from it.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "postprocess.hpp"

// As in postprocess.cpp: lets GCC if-convert the float selects of
// argmax_planes (no FP exception is ever inspected; the values are the same).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

namespace hvx {
namespace pp {

void argmax_planes(const float* probs, int64_t C, int64_t H, int64_t W, int32_t* out) {
  const int64_t n = H * W;
  static thread_local std::vector<float> best;
  best.assign(probs, probs + n);
  std::fill(out, out + n, 0);
  // x - x is 0 for finite x and NaN for NaN / inf: one flag per pass, no branch.
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= !(probs[i] - probs[i] == 0.0f);
  for (int64_t c = 1; c < C; ++c) {
    const float* pc = probs + c * n;
    float* b = best.data();
    const int32_t ci = static_cast<int32_t>(c);
    for (int64_t i = 0; i < n; ++i) {  // branch-free select: vectorises
      const float v = pc[i];
      bad |= !(v - v == 0.0f);
      const bool gt = v > b[i];
      b[i] = gt ? v : b[i];
      out[i] = gt ? ci : out[i];
    }
  }
  if (bad) {
    throw std::invalid_argument("type probabilities: expected finite values, got NaN or inf");
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
  const int64_t T = static_cast<int64_t>(max_type) + 1;
  // Dense per-id accumulators (one pass over the map collects area, moments,
  // bounding box and, when the id x type table is small, the type votes) when
  // ids are compact enough; else ids are compressed and looked up.
  std::vector<int32_t> ids;
  std::vector<int64_t> slot_of;
  const bool dense = max_id <= 4 * n + 1024;
  int64_t S;  // number of slots
  if (dense) {
    S = static_cast<int64_t>(max_id) + 1;
  } else {
    ids.assign(inst, inst + n);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    if (!ids.empty() && ids[0] == 0) ids.erase(ids.begin());
    S = static_cast<int64_t>(ids.size());
  }
  auto slot = [&](int32_t id) -> int64_t {
    if (dense) return id;
    return std::lower_bound(ids.begin(), ids.end(), id) - ids.begin();
  };
  const bool vote_in_pass = S * T <= (int64_t{1} << 22);
  std::vector<int64_t> area(S, 0), sx(S, 0), sy(S, 0), r0(S, H), r1(S, -1), c0(S, W), c1(S, -1);
  std::vector<int32_t> votes(vote_in_pass ? static_cast<size_t>(S * T) : 0, 0);
  for (int64_t y = 0; y < H; ++y) {
    const int32_t* row = inst + y * W;
    const int32_t* trow = types + y * W;
    for (int64_t x = 0; x < W; ++x) {
      const int32_t id = row[x];
      if (!id) continue;
      const int64_t k = slot(id);
      area[k]++, sx[k] += x, sy[k] += y;
      r0[k] = std::min(r0[k], y), r1[k] = y;
      c0[k] = std::min(c0[k], x), c1[k] = std::max(c1[k], x);
      if (vote_in_pass) votes[k * T + trow[x]]++;
    }
  }
  if (dense) {
    for (int32_t id = 1; id <= max_id; ++id)
      if (area[id]) ids.push_back(id);
  }
  std::vector<int64_t> hist(static_cast<size_t>(T), 0);
  std::vector<int32_t> touched;
  for (const int32_t id : ids) {
    const int64_t k = slot(id);
    const size_t before = t.contour_xy.size();
    const int64_t npts = outer_contour(inst, H, W, id, r0[k], c0[k], t.contour_xy);
    if (npts < 3) {
      t.contour_xy.resize(before);
      continue;
    }
    // Type vote over the instance's pixels: most votes, ties to the smaller type;
    // background only when nothing else.
    touched.clear();
    if (vote_in_pass) {
      const int32_t* v = votes.data() + k * T;
      for (int32_t ty = 0; ty < T; ++ty)
        if (v[ty]) hist[ty] = v[ty], touched.push_back(ty);
    } else {
      for (int64_t y = r0[k]; y <= r1[k]; ++y) {
        for (int64_t x = c0[k]; x <= c1[k]; ++x) {
          if (inst[y * W + x] != id) continue;
          const int32_t ty = types[y * W + x];
          if (hist[ty]++ == 0) touched.push_back(ty);
        }
      }
      std::sort(touched.begin(), touched.end());
    }
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
