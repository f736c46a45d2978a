// OpenCV's border following (Suzuki & Abe) for the outer border of the first
// 8-connected component in raster order, compressed as CHAIN_APPROX_SIMPLE
// (a point is written where the chain direction changes). Chain codes:
// 0 = +x, 1 = +x -y, 2 = -y, 3 = -x -y, 4 = -x, 5 = -x +y, 6 = +y, 7 = +x +y.
// Pixels outside the image count as background (OpenCV pads with zeros).
// Following the first border never depends on the marks OpenCV writes, so the
// image is only read.
#include <algorithm>
#include <vector>

#include "postprocess.hpp"

namespace hvx {
namespace pp {

int64_t outer_contour(const int32_t* inst, int64_t H, int64_t W, int32_t id, int64_t r0,
                      int64_t c0, std::vector<int32_t>& xy) {
  static const int DX[8] = {1, 1, 0, -1, -1, -1, 0, 1};
  static const int DY[8] = {0, -1, -1, -1, 0, 1, 1, 1};
  auto on = [&](int64_t y, int64_t x) {
    return y >= 0 && y < H && x >= 0 && x < W && inst[y * W + x] == id;
  };
  // First pixel in raster order, starting at the bounding box's first row.
  int64_t y0 = -1, x0 = -1;
  for (int64_t y = std::max<int64_t>(r0, 0); y < H && y0 < 0; ++y) {
    for (int64_t x = std::max<int64_t>(c0, 0); x < W; ++x) {
      if (inst[y * W + x] == id) {
        y0 = y, x0 = x;
        break;
      }
    }
  }
  if (y0 < 0) return 0;
  const size_t start = xy.size();
  // Clockwise search from the left neighbour for the previous border pixel i1.
  int s = 4;
  const int s_end0 = 4;
  int64_t y1 = 0, x1 = 0;
  do {
    s = (s - 1) & 7;
    y1 = y0 + DY[s], x1 = x0 + DX[s];
  } while (!on(y1, x1) && s != s_end0);
  if (s == s_end0 && !on(y1, x1)) {
    xy.push_back(static_cast<int32_t>(x0));
    xy.push_back(static_cast<int32_t>(y0));
    return 1;
  }
  int64_t y3 = y0, x3 = x0, y4 = 0, x4 = 0;
  int prev_s = s ^ 4;
  for (;;) {
    // Counter-clockwise search for the next border pixel, after direction s.
    int t = s;
    for (;;) {
      ++t;
      y4 = y3 + DY[t & 7], x4 = x3 + DX[t & 7];
      if (on(y4, x4) || t >= 15) break;
    }
    s = t & 7;
    if (s != prev_s) {
      xy.push_back(static_cast<int32_t>(x3));
      xy.push_back(static_cast<int32_t>(y3));
      prev_s = s;
    }
    if (y4 == y0 && x4 == x0 && y3 == y1 && x3 == x1) break;
    y3 = y4, x3 = x4;
    s = (s + 4) & 7;
  }
  return static_cast<int64_t>((xy.size() - start) / 2);
}

}  // namespace pp
}  // namespace hvx
