// Binary morphology of SPEC §3a: 4-connected labelling in raster order
// (scipy.ndimage.label numbering), hole filling with the cross structure
// (scipy.ndimage.binary_fill_holes) and the ellipse opening of
// cv2.morphologyEx(MORPH_OPEN) with OpenCV's default border (pixels outside the
// image never erode and never dilate).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "postprocess.hpp"

namespace hvx {
namespace pp {

namespace {

// Runs of pixels equal to `val` ([x0, x1) on row y), in raster order, and the
// union-find forest that joins 4-connected runs of consecutive rows.
struct Runs {
  std::vector<int32_t> y, x0, x1, parent;
  std::vector<int64_t> row_start;  // H + 1 offsets into the run arrays

  int32_t find(int32_t a) {
    while (parent[a] != a) a = parent[a] = parent[parent[a]];
    return a;
  }
  void unite(int32_t a, int32_t b) {
    a = find(a), b = find(b);
    if (a == b) return;
    if (a < b) parent[b] = a; else parent[a] = b;  // the root is the earliest run
  }

  void build(const uint8_t* m, int64_t H, int64_t W, uint8_t val) {
    y.clear(), x0.clear(), x1.clear(), parent.clear();
    row_start.assign(static_cast<size_t>(H) + 1, 0);
    for (int64_t r = 0; r < H; ++r) {
      row_start[r] = static_cast<int64_t>(y.size());
      const uint8_t* row = m + r * W;
      int64_t x = 0;
      while (x < W) {
        while (x < W && (row[x] != 0) != (val != 0)) ++x;
        if (x >= W) break;
        int64_t s = x;
        while (x < W && (row[x] != 0) == (val != 0)) ++x;
        const int32_t id = static_cast<int32_t>(y.size());
        y.push_back(static_cast<int32_t>(r));
        x0.push_back(static_cast<int32_t>(s));
        x1.push_back(static_cast<int32_t>(x));
        parent.push_back(id);
      }
    }
    row_start[H] = static_cast<int64_t>(y.size());
    for (int64_t r = 1; r < H; ++r) {
      int64_t a = row_start[r - 1], ae = row_start[r], b = row_start[r], be = row_start[r + 1];
      while (a < ae && b < be) {
        if (x0[a] < x1[b] && x0[b] < x1[a]) unite(static_cast<int32_t>(a), static_cast<int32_t>(b));
        if (x1[a] < x1[b]) ++a; else ++b;
      }
    }
  }
};

Runs& runs_ws() {
  static thread_local Runs r;
  return r;
}

}  // namespace

int32_t label4(const uint8_t* mask, int64_t H, int64_t W, int32_t* labels,
               std::vector<int64_t>* sizes) {
  Runs& R = runs_ws();
  R.build(mask, H, W, 1);
  std::fill(labels, labels + H * W, 0);
  const int32_t nr = static_cast<int32_t>(R.y.size());
  // Roots are the earliest run of their component, so numbering roots in run
  // order numbers components by their first pixel in raster order (scipy's order).
  std::vector<int32_t> lab(static_cast<size_t>(nr), 0);
  int32_t next = 0;
  if (sizes) sizes->assign(1, 0);
  for (int32_t i = 0; i < nr; ++i) {
    const int32_t root = R.find(i);
    lab[i] = root == i ? ++next : lab[root];
    if (sizes) {
      if (root == i) sizes->push_back(0);
      (*sizes)[lab[i]] += R.x1[i] - R.x0[i];
    }
    int32_t* row = labels + static_cast<int64_t>(R.y[i]) * W;
    std::fill(row + R.x0[i], row + R.x1[i], lab[i]);
  }
  return next;
}

int64_t remove_small4(uint8_t* mask, int64_t H, int64_t W, int64_t min_size,
                      std::vector<FgRun>* kept, int32_t* ncomp) {
  Runs& R = runs_ws();
  R.build(mask, H, W, 1);
  const int32_t nr = static_cast<int32_t>(R.y.size());
  static thread_local std::vector<int64_t> size;
  static thread_local std::vector<int32_t> comp;
  size.assign(static_cast<size_t>(nr), 0);
  for (int32_t i = 0; i < nr; ++i) size[R.find(i)] += R.x1[i] - R.x0[i];
  if (kept) kept->clear(), comp.assign(static_cast<size_t>(nr), -1);
  int32_t nc = 0;
  int64_t left = 0;
  for (int32_t i = 0; i < nr; ++i) {
    const int32_t root = R.find(i);
    if (size[root] >= min_size) {
      left += R.x1[i] - R.x0[i];
      if (kept) {
        if (comp[root] < 0) comp[root] = nc++;  // roots come first: raster order
        kept->push_back({R.y[i], R.x0[i], R.x1[i], comp[root]});
      }
    } else {
      uint8_t* row = mask + static_cast<int64_t>(R.y[i]) * W;
      std::fill(row + R.x0[i], row + R.x1[i], 0);
    }
  }
  if (ncomp) *ncomp = nc;
  return left;
}

void fill_holes(uint8_t* mask, int64_t H, int64_t W) {
  // Background runs joined 4-connected; a component touching the image border
  // is outside, every other one is a hole and gets filled.
  Runs& R = runs_ws();
  R.build(mask, H, W, 0);
  const int32_t nr = static_cast<int32_t>(R.y.size());
  std::vector<uint8_t> outside(static_cast<size_t>(nr), 0);
  for (int32_t i = 0; i < nr; ++i) {
    if (R.y[i] == 0 || R.y[i] == H - 1 || R.x0[i] == 0 || R.x1[i] == W) outside[R.find(i)] = 1;
  }
  for (int32_t i = 0; i < nr; ++i) {
    if (outside[R.find(i)]) continue;
    uint8_t* row = mask + static_cast<int64_t>(R.y[i]) * W;
    std::fill(row + R.x0[i], row + R.x1[i], 1);
  }
}

namespace {

// Half-widths of the rows of cv2.getStructuringElement(MORPH_ELLIPSE, (k, k)).
std::vector<int> ellipse_rows(int k) {
  const int r = k / 2, c = k / 2;
  const double inv_r2 = r ? 1.0 / (static_cast<double>(r) * r) : 0.0;
  std::vector<int> half(k, -1);
  for (int i = 0; i < k; ++i) {
    int dy = i - r;
    if (std::abs(dy) <= r) {
      half[i] = static_cast<int>(std::lrint(c * std::sqrt((r * r - dy * dy) * inv_r2)));
    }
  }
  return half;
}

// One morphological pass with the ellipse: erode (AND, outside = 1) or dilate
// (OR, outside = 0). src and dst are distinct H x W 0/1 arrays.
void ellipse_pass(const uint8_t* src, int64_t H, int64_t W, const std::vector<int>& half,
                  bool erode, uint8_t* dst) {
  const int k = static_cast<int>(half.size()), r = k / 2;
  const uint8_t outside = erode ? 1 : 0;
  // Horizontal min/max over [x - d, x + d] for each distinct half-width d.
  std::vector<int> ds(half.begin(), half.end());
  std::sort(ds.begin(), ds.end());
  ds.erase(std::unique(ds.begin(), ds.end()), ds.end());
  ds.erase(std::remove(ds.begin(), ds.end(), -1), ds.end());
  // Reused per thread: no allocation (or page faults) per call.
  static thread_local std::vector<std::vector<uint8_t>> hz;
  static thread_local std::vector<uint8_t> ext;
  if (hz.size() < ds.size()) hz.resize(ds.size());
  for (size_t di = 0; di < ds.size(); ++di) {
    if (hz[di].size() < static_cast<size_t>(H * W)) hz[di].resize(static_cast<size_t>(H * W));
  }
  // Raw pointers: the loops below store through uint8_t*, which may alias the
  // (thread-local) vectors' own fields, so indexing them would not vectorise.
  std::vector<uint8_t*> planes(ds.size());
  for (size_t di = 0; di < ds.size(); ++di) planes[di] = hz[di].data();
  for (size_t di = 0; di < ds.size(); ++di) {
    const int d = ds[di];
    ext.assign(static_cast<size_t>(W + 2 * d), outside);
    uint8_t* ex = ext.data();
    for (int64_t y = 0; y < H; ++y) {
      std::memcpy(ex + d, src + y * W, static_cast<size_t>(W));
      uint8_t* o = planes[di] + y * W;
      for (int64_t x = 0; x < W; ++x) o[x] = ex[x + d];
      for (int j = -d; j <= d; ++j) {
        if (j == 0) continue;
        const uint8_t* e = ex + d + j;
        if (erode) {
          for (int64_t x = 0; x < W; ++x) o[x] &= e[x];
        } else {
          for (int64_t x = 0; x < W; ++x) o[x] |= e[x];
        }
      }
    }
  }
  for (int64_t y = 0; y < H; ++y) {
    uint8_t* o = dst + y * W;
    std::fill(o, o + W, erode ? 1 : 0);
    for (int i = 0; i < k; ++i) {
      if (half[i] < 0) continue;
      int64_t yy = y + i - r;
      if (yy < 0 || yy >= H) {
        if (!erode) continue;  // outside rows are 0 for dilation, 1 for erosion
        continue;
      }
      size_t di = std::lower_bound(ds.begin(), ds.end(), half[i]) - ds.begin();
      const uint8_t* h = planes[di] + yy * W;
      if (erode) {
        for (int64_t x = 0; x < W; ++x) o[x] &= h[x];
      } else {
        for (int64_t x = 0; x < W; ++x) o[x] |= h[x];
      }
    }
  }
}

}  // namespace

void open_ellipse(uint8_t* mask, int64_t H, int64_t W, int k) {
  if (k <= 1) return;
  const std::vector<int> half = ellipse_rows(k);
  static thread_local std::vector<uint8_t> tmp;
  if (tmp.size() < static_cast<size_t>(H * W)) tmp.resize(static_cast<size_t>(H * W));
  ellipse_pass(mask, H, W, half, true, tmp.data());
  ellipse_pass(tmp.data(), H, W, half, false, mask);
}

}  // namespace pp
}  // namespace hvx
