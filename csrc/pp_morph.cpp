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

inline int ctz64(uint64_t w) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_ctzll(w);
#else
  int n = 0;
  while (!(w & 1)) w >>= 1, ++n;
  return n;
#endif
}

// First x >= x0 on a bit row whose bit is `val`, or W.
inline int64_t next_bit(const uint64_t* row, int64_t words, int64_t W, int64_t x0, bool val) {
  if (x0 >= W) return W;
  int64_t k = x0 >> 6;
  const uint64_t flip = val ? 0 : ~uint64_t{0};
  uint64_t w = (row[k] ^ flip) & (~uint64_t{0} << (x0 & 63));
  while (!w) {
    if (++k >= words) return W;
    w = row[k] ^ flip;
  }
  return std::min<int64_t>(W, k * 64 + ctz64(w));
}

// Runs of pixels equal to `val` ([x0, x1) on row y), in raster order, and the
// union-find forest that joins 4-connected runs of consecutive rows.
struct Runs {
  std::vector<int32_t> y, x0, x1, parent;

  // First x' >= x with (row[x'] != 0) == want, or W; 8 pixels per step where it can.
  static int64_t skip(const uint8_t* row, int64_t x, int64_t W, bool want) {
    const uint64_t lo = 0x0101010101010101ull, hi = 0x8080808080808080ull;
    for (; x + 8 <= W; x += 8) {
      uint64_t w;
      std::memcpy(&w, row + x, 8);
      // want nonzero: the nonzero bytes; want zero: the lowest set bit of
      // (w - lo) & ~w & hi marks the first zero byte exactly
      const uint64_t hit = want ? w : ((w - lo) & ~w & hi);
      if (!hit) continue;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
      return x + (ctz64(hit) >> 3);
#else
      break;
#endif
    }
    while (x < W && (row[x] != 0) != want) ++x;
    return x;
  }
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
        x = skip(row, x, W, val != 0);  // to the first pixel == val
        if (x >= W) break;
        int64_t s = x;
        x = skip(row, x, W, val == 0);
        push_run(r, s, x);
      }
    }
    row_start[H] = static_cast<int64_t>(y.size());
    join(H);
  }

  // The same from a bit-packed mask (rows of `words` uint64).
  void build_bits(const uint64_t* b, int64_t H, int64_t W, int64_t words, bool val) {
    y.clear(), x0.clear(), x1.clear(), parent.clear();
    row_start.assign(static_cast<size_t>(H) + 1, 0);
    for (int64_t r = 0; r < H; ++r) {
      row_start[r] = static_cast<int64_t>(y.size());
      const uint64_t* row = b + r * words;
      int64_t x = 0;
      for (;;) {
        const int64_t s = next_bit(row, words, W, x, val);
        if (s >= W) break;
        x = next_bit(row, words, W, s, !val);
        push_run(r, s, x);
      }
    }
    row_start[H] = static_cast<int64_t>(y.size());
    join(H);
  }

  // Appends the run [s, e) of row r as its own component.
  void push_run(int64_t r, int64_t s, int64_t e) {
    parent.push_back(static_cast<int32_t>(y.size()));
    y.push_back(static_cast<int32_t>(r));
    x0.push_back(static_cast<int32_t>(s));
    x1.push_back(static_cast<int32_t>(e));
  }

  void join(int64_t H) {
    for (int64_t r = 1; r < H; ++r) {
      int64_t a = row_start[r - 1], ae = row_start[r], b = row_start[r], be = row_start[r + 1];
      while (a < ae && b < be) {
        if (x0[a] < x1[b] && x0[b] < x1[a]) unite(static_cast<int32_t>(a), static_cast<int32_t>(b));
        if (x1[a] < x1[b]) ++a; else ++b;
      }
    }
  }
};

template <typename T, int Tag>
HVX_NOINLINE T& scratch() {
  static thread_local T t;
  return t;
}

HVX_NOINLINE Runs& runs_ws() {
  static thread_local Runs r;
  return r;
}

}  // namespace

// ---- bit-packed masks --------------------------------------------------------

void pack_bits(const uint8_t* m, int64_t H, int64_t W, uint64_t* bits) {
  const int64_t words = bit_words(W);
  for (int64_t y = 0; y < H; ++y) {
    const uint8_t* row = m + y * W;
    uint64_t* out = bits + y * words;
    for (int64_t k = 0; k < words; ++k) {
      const int64_t x0 = k * 64, n = std::min<int64_t>(64, W - x0);
      uint64_t w = 0;
      int64_t i = 0;
      for (; i + 8 <= n; i += 8) {  // 8 bytes -> 8 bits (bytes made 0 / 1 first)
        uint64_t v;
        std::memcpy(&v, row + x0 + i, 8);
        v = ((v | (v >> 4)) & 0x0f0f0f0f0f0f0f0full);
        v = ((v | (v >> 2)) & 0x0303030303030303ull);
        v = ((v | (v >> 1)) & 0x0101010101010101ull);
        w |= ((v * 0x0102040810204080ull) >> 56) << i;
      }
      for (; i < n; ++i) w |= static_cast<uint64_t>(row[x0 + i] != 0) << i;
      out[k] = w;
    }
  }
}

void unpack_bits(const uint64_t* bits, int64_t H, int64_t W, uint8_t* m) {
  const int64_t words = bit_words(W);
  for (int64_t y = 0; y < H; ++y) {
    const uint64_t* row = bits + y * words;
    uint8_t* out = m + y * W;
    for (int64_t x = 0; x < W; ++x) out[x] = static_cast<uint8_t>((row[x >> 6] >> (x & 63)) & 1);
  }
}

int32_t label4_runs_bits(const uint64_t* bits, int64_t H, int64_t W, std::vector<LabelRun>& runs,
                         std::vector<int64_t>& sizes) {
  Runs& R = runs_ws();
  R.build_bits(bits, H, W, bit_words(W), true);
  const int32_t nr = static_cast<int32_t>(R.y.size());
  // Roots are the earliest run of their component, so numbering roots in run
  // order numbers components by their first pixel in raster order (scipy's order).
  std::vector<int32_t>& lab = scratch<std::vector<int32_t>, 0>();
  lab.assign(static_cast<size_t>(nr), 0);
  runs.resize(static_cast<size_t>(nr));
  sizes.assign(1, 0);
  int32_t next = 0;
  for (int32_t i = 0; i < nr; ++i) {
    const int32_t root = R.find(i);
    if (root == i) sizes.push_back(0);
    lab[i] = root == i ? ++next : lab[root];
    sizes[lab[i]] += R.x1[i] - R.x0[i];
    runs[i] = {R.y[i], R.x0[i], R.x1[i], lab[i]};
  }
  return next;
}

int32_t label4(const uint8_t* mask, int64_t H, int64_t W, int32_t* labels,
               std::vector<int64_t>* sizes) {
  std::vector<uint64_t> bits(static_cast<size_t>(H * bit_words(W)));
  pack_bits(mask, H, W, bits.data());
  std::vector<LabelRun> runs;
  std::vector<int64_t> sz;
  const int32_t n = label4_runs_bits(bits.data(), H, W, runs, sz);
  std::fill(labels, labels + H * W, 0);
  for (const LabelRun& r : runs) {
    int32_t* row = labels + static_cast<int64_t>(r.y) * W;
    std::fill(row + r.x0, row + r.x1, r.label);
  }
  if (sizes) *sizes = sz;
  return n;
}

int64_t remove_small4(uint8_t* mask, int64_t H, int64_t W, int64_t min_size,
                      std::vector<FgRun>* kept, int32_t* ncomp, const uint64_t* bits) {
  Runs& R = runs_ws();
  if (bits) {
    R.build_bits(bits, H, W, bit_words(W), true);
  } else {
    R.build(mask, H, W, 1);
  }
  const int32_t nr = static_cast<int32_t>(R.y.size());
  std::vector<int64_t>& size = scratch<std::vector<int64_t>, 1>();
  std::vector<int32_t>& comp = scratch<std::vector<int32_t>, 2>();
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

void fill_holes_bits(uint64_t* bits, int64_t H, int64_t W) {
  // Background runs joined 4-connected; a component touching the image border
  // is outside, every other one is a hole and gets filled.
  const int64_t words = bit_words(W);
  Runs& R = runs_ws();
  R.build_bits(bits, H, W, words, false);
  const int32_t nr = static_cast<int32_t>(R.y.size());
  std::vector<uint8_t>& outside = scratch<std::vector<uint8_t>, 3>();
  outside.assign(static_cast<size_t>(nr), 0);
  for (int32_t i = 0; i < nr; ++i) {
    if (R.y[i] == 0 || R.y[i] == H - 1 || R.x0[i] == 0 || R.x1[i] == W) outside[R.find(i)] = 1;
  }
  for (int32_t i = 0; i < nr; ++i) {
    if (outside[R.find(i)]) continue;
    set_bits(bits + static_cast<int64_t>(R.y[i]) * words, R.x0[i], R.x1[i]);
  }
}

void fill_holes(uint8_t* mask, int64_t H, int64_t W) {
  std::vector<uint64_t> bits(static_cast<size_t>(H * bit_words(W)));
  pack_bits(mask, H, W, bits.data());
  fill_holes_bits(bits.data(), H, W);
  unpack_bits(bits.data(), H, W, mask);
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

// 64 bits of a row padded with F fill words on each side, starting at bit
// position p of the padded row.
inline uint64_t bits_at(const uint64_t* ext, int64_t p) {
  const int64_t k = p >> 6, s = p & 63;
  return s ? (ext[k] >> s) | (ext[k + 1] << (64 - s)) : ext[k];
}

// One morphological pass with the ellipse on bit rows: erode (AND, outside = 1)
// or dilate (OR, outside = 0). src and dst are distinct.
void ellipse_pass_bits(const uint64_t* src, int64_t H, int64_t W, const std::vector<int>& half,
                       bool erode, uint64_t* dst) {
  const int64_t words = bit_words(W);
  const int k = static_cast<int>(half.size()), r = k / 2;
  const uint64_t fill = erode ? ~uint64_t{0} : 0;
  const uint64_t tail = (W & 63) ? ((uint64_t{1} << (W & 63)) - 1) : ~uint64_t{0};
  std::vector<int> ds(half.begin(), half.end());
  std::sort(ds.begin(), ds.end());
  ds.erase(std::unique(ds.begin(), ds.end()), ds.end());
  ds.erase(std::remove(ds.begin(), ds.end(), -1), ds.end());
  const int dmax = ds.empty() ? 0 : ds.back();
  const int64_t F = dmax / 64 + 1;  // fill words each side
  std::vector<uint64_t>& hz = scratch<std::vector<uint64_t>, 4>();
  std::vector<uint64_t>& ext = scratch<std::vector<uint64_t>, 5>();
  hz.resize(ds.size() * static_cast<size_t>(H * words));
  ext.resize(static_cast<size_t>(words + 2 * F));
  // Horizontal AND / OR over [x - d, x + d] for each distinct half-width d.
  for (int64_t y = 0; y < H; ++y) {
    uint64_t* e = ext.data();
    for (int64_t i = 0; i < F; ++i) e[i] = fill, e[F + words + i] = fill;
    std::memcpy(e + F, src + y * words, static_cast<size_t>(words) * 8);
    e[F + words - 1] = (e[F + words - 1] & tail) | (fill & ~tail);  // outside bits
    for (size_t di = 0; di < ds.size(); ++di) {
      const int d = ds[di];
      uint64_t* o = hz.data() + (di * H + y) * words;
      for (int64_t w = 0; w < words; ++w) {
        const int64_t p = (F + w) * 64;
        uint64_t acc = e[F + w];
        for (int j = 1; j <= d; ++j) {
          if (erode) {
            acc &= bits_at(e, p + j) & bits_at(e, p - j);
          } else {
            acc |= bits_at(e, p + j) | bits_at(e, p - j);
          }
        }
        o[w] = acc;
      }
    }
  }
  // Vertical: rows outside the image are skipped (1 for erosion, 0 for dilation).
  std::vector<int>& dis = scratch<std::vector<int>, 7>();  // row i of the ellipse: its ds index
  dis.assign(static_cast<size_t>(k), -1);
  for (int i = 0; i < k; ++i) {
    if (half[i] < 0) continue;
    dis[i] = static_cast<int>(std::lower_bound(ds.begin(), ds.end(), half[i]) - ds.begin());
  }
  for (int64_t y = 0; y < H; ++y) {
    uint64_t* o = dst + y * words;
    for (int64_t w = 0; w < words; ++w) o[w] = fill;
    for (int i = 0; i < k; ++i) {
      if (dis[i] < 0) continue;
      const int64_t yy = y + i - r;
      if (yy < 0 || yy >= H) continue;
      const uint64_t* h = hz.data() + (dis[i] * H + yy) * words;
      if (erode) {
        for (int64_t w = 0; w < words; ++w) o[w] &= h[w];
      } else {
        for (int64_t w = 0; w < words; ++w) o[w] |= h[w];
      }
    }
    o[words - 1] &= tail;
  }
}

// ellipse_pass_bits for the 5 x 5 ellipse (rows 00100 / 11111 x 3 / 00100, the
// SPEC's opening), unrolled: per row its AND / OR over [x - 2, x + 2] (a word
// and the two bits it needs from each neighbour word), then that of rows
// y - 1 .. y + 1 with rows y - 2 and y + 2 themselves. The same result.
template <bool ERODE>
void ellipse5_pass_bits(const uint64_t* src, int64_t H, int64_t W, uint64_t* h2,
                        uint64_t* dst) {
  const int64_t words = bit_words(W);
  const uint64_t fill = ERODE ? ~uint64_t{0} : 0;
  const uint64_t tail = (W & 63) ? ((uint64_t{1} << (W & 63)) - 1) : ~uint64_t{0};
  auto word = [&](const uint64_t* r, int64_t w) {  // outside the image: fill
    if (w < 0 || w >= words) return fill;
    return w == words - 1 ? (r[w] & tail) | (fill & ~tail) : r[w];
  };
  for (int64_t y = 0; y < H; ++y) {
    const uint64_t* r = src + y * words;
    uint64_t* o = h2 + y * words;
    for (int64_t w = 0; w < words; ++w) {
      const uint64_t a = word(r, w), prev = word(r, w - 1), next = word(r, w + 1);
      const uint64_t l1 = (a << 1) | (prev >> 63), l2 = (a << 2) | (prev >> 62);
      const uint64_t r1 = (a >> 1) | (next << 63), r2 = (a >> 2) | (next << 62);
      o[w] = ERODE ? (a & l1 & l2 & r1 & r2) : (a | l1 | l2 | r1 | r2);
    }
  }
  for (int64_t y = 0; y < H; ++y) {  // rows outside the image are skipped
    uint64_t* o = dst + y * words;
    const uint64_t* c = h2 + y * words;
    for (int64_t w = 0; w < words; ++w) o[w] = c[w];
    const uint64_t* rows[4] = {y >= 1 ? h2 + (y - 1) * words : nullptr,
                               y + 1 < H ? h2 + (y + 1) * words : nullptr,
                               y >= 2 ? src + (y - 2) * words : nullptr,
                               y + 2 < H ? src + (y + 2) * words : nullptr};
    for (const uint64_t* q : rows) {
      if (!q) continue;
      for (int64_t w = 0; w < words; ++w) o[w] = ERODE ? (o[w] & q[w]) : (o[w] | q[w]);
    }
    o[words - 1] &= tail;
  }
}

}  // namespace

void open_ellipse_bits(uint64_t* bits, int64_t H, int64_t W, int k) {
  if (k <= 1 || H <= 0 || W <= 0) return;
  if (k == 5) {
    const int64_t n = H * bit_words(W);
    std::vector<uint64_t>& tmp = scratch<std::vector<uint64_t>, 6>();
    std::vector<uint64_t>& h2 = scratch<std::vector<uint64_t>, 4>();
    tmp.resize(static_cast<size_t>(n)), h2.resize(static_cast<size_t>(n));
    ellipse5_pass_bits<true>(bits, H, W, h2.data(), tmp.data());
    ellipse5_pass_bits<false>(tmp.data(), H, W, h2.data(), bits);
    return;
  }
  const std::vector<int> half = ellipse_rows(k);
  std::vector<uint64_t>& tmp = scratch<std::vector<uint64_t>, 6>();
  tmp.resize(static_cast<size_t>(H * bit_words(W)));
  ellipse_pass_bits(bits, H, W, half, true, tmp.data());
  ellipse_pass_bits(tmp.data(), H, W, half, false, bits);
}

void open_ellipse(uint8_t* mask, int64_t H, int64_t W, int k) {
  if (k <= 1 || H <= 0 || W <= 0) return;
  std::vector<uint64_t> bits(static_cast<size_t>(H * bit_words(W)));
  pack_bits(mask, H, W, bits.data());
  open_ellipse_bits(bits.data(), H, W, k);
  unpack_bits(bits.data(), H, W, mask);
}

}  // namespace pp
}  // namespace hvx
