// HV-gradient watershed post-processing (SPEC §3a) and per-instance records
// (SPEC §3b), identical to HoVer-Net's reference pipeline (OpenCV + scipy +
// scikit-image < 0.26) pixel for pixel. Plain C++17; no Python headers.
//
// Layout: pp_filters.cpp (min-max normalisation, Sobel 21, Gaussian 3x3, bit-exact
// with OpenCV), pp_morph.cpp (labelling, small-object removal, hole filling,
// ellipse opening), pp_watershed.cpp (scikit-image's marker watershed),
// pp_contour.cpp (OpenCV's Suzuki outer border + CHAIN_APPROX_SIMPLE),
// postprocess.cpp (the pipeline, the instance table and the batch driver).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

// Per-thread scratch accessors are not inlined: in a shared library every access
// to a thread_local costs a __tls_get_addr call, which GCC repeats at each use.
#if defined(__GNUC__)
#define HVX_NOINLINE __attribute__((noinline))
#else
#define HVX_NOINLINE
#endif

namespace hvx {
namespace pp {

// Every constant of SPEC §3a (see hvx.postprocess.PostprocessConfig).
struct Params {
  float np_threshold = 0.5f;    // foreground: np_prob >= np_threshold (float32 compare)
  int64_t min_object_size = 10;  // components with fewer pixels are removed (blobs, markers)
  int sobel_ksize = 21;          // odd, 3..31
  double marker_threshold = 0.4;  // pixels with gradient energy >= this are not markers
  int opening_ksize = 5;          // odd ellipse size of the marker opening (1 = none)
  int gaussian_ksize = 3;         // 3 only: taps [0.25, 0.5, 0.25] (sigma 0)
};

// Checks parameters; throws std::invalid_argument naming expected vs got.
void validate_params(const Params& p);

// Instance map of one image (SPEC §3a). np: (H, W) float32 foreground
// probability; h, v: (H, W) float32 horizontal / vertical maps; out: (H, W) int32.
// Throws std::invalid_argument ("np_prob: ..." / "hv: ...") on NaN or inf.
void instances_from_hv(const float* np, const float* h, const float* v, int64_t H, int64_t W,
                       const Params& p, int32_t* out);

// One image's nuclei (SPEC §3b), ascending id; contour points flattened.
struct Table {
  std::vector<int32_t> id, type;
  std::vector<float> type_prob;
  std::vector<double> centroid;  // K x 2, (y, x)
  std::vector<int32_t> bbox;     // K x 4, (rmin, cmin, rmax, cmax), max exclusive
  std::vector<int64_t> area;
  std::vector<int32_t> contour_xy;       // sum(K_i) x 2, (x, y)
  std::vector<int64_t> contour_offsets;  // K + 1 offsets into contour_xy (in points)
};

// Per-instance records of `inst` (>= 0) with pixel types `types` (>= 0, H x W).
// Instances whose outer contour has < 3 points are left out (SPEC §3b).
Table instance_table(const int32_t* inst, const int32_t* types, int64_t H, int64_t W);

// Argmax over C planes (C, H, W) float32 -> (H, W) int32; ties go to the lower index.
// Throws std::invalid_argument when a probability is NaN or inf.
void argmax_planes(const float* probs, int64_t C, int64_t H, int64_t W, int32_t* out);

// Paints each tabled instance's pixels with its type (others 0) -> (H, W) uint8.
void paint_types(const int32_t* inst, int64_t H, int64_t W, const Table& t, uint8_t* out);

// The outer border of the first 8-connected component (raster order) of the
// pixels equal to `id` in `inst`, OpenCV findContours(RETR_TREE,
// CHAIN_APPROX_SIMPLE) order, as (x, y) pairs appended to `xy`.
// Returns the number of points appended (0 when no pixel equals id).
int64_t outer_contour(const int32_t* inst, int64_t H, int64_t W, int32_t id, int64_t r0,
                      int64_t c0, std::vector<int32_t>& xy);

// ---- building blocks (exposed for the tests of each step) ----------------
// cv2.normalize(src, None, 0, 1, NORM_MINMAX, CV_32F) for float32 / float64 input.
void normalize_minmax_f32(const float* src, int64_t n, float* dst);
void normalize_minmax_f64(const double* src, int64_t n, float* dst);
// cv2.Sobel(src, CV_64F, dx, 1 - dx, ksize) for float32 src, BORDER_REFLECT_101.
void sobel_f64(const float* src, int64_t H, int64_t W, int dx, int ksize, double* dst);
// sobel_f64(normalize_minmax_f32(src)) without the intermediate map; lohi[0] /
// lohi[1] receive the min / max of dst. Returns false, computing nothing, when
// src holds NaN or inf.
bool sobel_normalized_f64(const float* src, int64_t H, int64_t W, int dx, int ksize,
                          double* dst, double* lohi);
// Caps the instruction set of the SIMD kernels (2 AVX-512, 1 AVX2 + FMA, 0
// plain; clamped); returns the previous cap. For tests: every path must give
// the same bits. isa_level() is the level in use (cap and CPU).
int set_isa_limit(int level);
int isa_level();
// True when no value is NaN or inf.
bool all_finite_f32(const float* src, int64_t n);
// cv2.normalize's scale and shift for a map with min mn and max mx (CV_32F output):
// dst = (float)fma(src, scale, shift).
void minmax_scale_shift(double mn, double mx, double* scale, double* shift);
// cv2.GaussianBlur(src, (3, 3), 0) for float64 src, BORDER_REFLECT_101.
void gaussian3_f64(const double* src, int64_t H, int64_t W, double* dst);
// scipy.ndimage.label (4-connectivity) of mask != 0; returns the number of labels.
// With `sizes`, (*sizes)[l] = pixels of label l (index 0 unused).
int32_t label4(const uint8_t* mask, int64_t H, int64_t W, int32_t* labels,
               std::vector<int64_t>* sizes = nullptr);
// Zeroes 4-connected components of mask != 0 with < min_size pixels; returns
// the number of pixels left.
// With `kept`, the runs left ([x0, x1) on row y, raster order) and their
// component (0 .. *ncomp - 1, numbered in raster order of first pixel).
struct FgRun {
  int32_t y, x0, x1, comp;
};
// `bits`: the same mask as bit rows (bit_words(W) words per row), when the
// caller has it: its runs are found a word at a time.
int64_t remove_small4(uint8_t* mask, int64_t H, int64_t W, int64_t min_size,
                      std::vector<FgRun>* kept = nullptr, int32_t* ncomp = nullptr,
                      const uint64_t* bits = nullptr);
// Bit-packed masks: H rows of bit_words(W) uint64, pixel x of a row is bit
// x % 64 of word x / 64; bits past W are 0.
inline int64_t bit_words(int64_t W) { return (W + 63) / 64; }
// Sets bits [x0, x1) of a bit row.
inline void set_bits(uint64_t* row, int64_t x0, int64_t x1) {
  while (x0 < x1) {
    const int64_t k = x0 >> 6, b = x0 & 63;
    const int64_t n = 64 - b < x1 - x0 ? 64 - b : x1 - x0;
    const uint64_t ones = n == 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1);
    row[k] |= ones << b;
    x0 += n;
  }
}
void pack_bits(const uint8_t* m, int64_t H, int64_t W, uint64_t* bits);  // nonzero -> 1
void unpack_bits(const uint64_t* bits, int64_t H, int64_t W, uint8_t* m);
// label4 as runs ([x0, x1) on row y, raster order) with their label; sizes[l] =
// pixels of label l (index 0 unused). Returns the number of labels.
struct LabelRun {
  int32_t y, x0, x1, label;
};
int32_t label4_runs_bits(const uint64_t* bits, int64_t H, int64_t W, std::vector<LabelRun>& runs,
                         std::vector<int64_t>& sizes);
void fill_holes_bits(uint64_t* bits, int64_t H, int64_t W);
void open_ellipse_bits(uint64_t* bits, int64_t H, int64_t W, int k);
// scipy.ndimage.binary_fill_holes (cross structure), in place on a 0/1 mask.
void fill_holes(uint8_t* mask, int64_t H, int64_t W);
// cv2.morphologyEx(mask, MORPH_OPEN, ellipse(k, k)) with OpenCV's default border.
void open_ellipse(uint8_t* mask, int64_t H, int64_t W, int k);
// skimage.segmentation.watershed(image, markers, mask=mask) (connectivity 1),
// markers already zero outside mask; labels: in = markers, out = result.
// exact_heap = true skips the rank-queue fast path (for tests).
void watershed(const double* image, const uint8_t* mask, int64_t H, int64_t W,
               int32_t* labels, bool exact_heap = false);
// The same on (H + 2) x (W + 2) arrays with a zero mask border (no copies).
// The mask is used up: the fast path clears it wherever a pixel is labelled.
void watershed_padded(const double* img, uint8_t* mask, int32_t* lab, int64_t Hp,
                      int64_t Wp, bool exact_heap = false);
// Its fast path: `in_mask` lists the n_in_mask in-mask indices in ascending
// order (a whole mask, or whole 4-connected components of it: the flood never
// crosses between components). It clears the mask of each labelled pixel
// (markers first), so that the flood tests mask alone. Returns false, having
// labelled nothing, when seeds of one value and different labels would need
// scikit-image's heap layout to order them (then call watershed_exact on the
// whole mask: it finds the markers by their labels).
bool watershed_fast(const double* img, uint8_t* mask, int32_t* lab, int64_t Hp, int64_t Wp,
                    const uint32_t* in_mask, size_t n_in_mask);
// The same with the queue already split: `cand` the unlabelled in-mask pixels
// and `seeds` the labelled ones with an unlabelled in-mask 4-neighbour (both in
// ascending order, whole components). The caller has cleared the mask of every
// labelled pixel; the flood clears it where it labels.
bool watershed_fast_queued(const double* img, uint8_t* mask, int32_t* lab, int64_t Hp,
                           int64_t Wp, const uint32_t* cand, size_t ncand, const uint32_t* seeds,
                           size_t nseeds);
// A labelled pixel i that the flood pushes first: one of its 4-neighbours is in
// the mask and unlabelled (padded layout: the mask border is 0).
inline bool is_active_marker(const uint8_t* mask, const int32_t* lab, int64_t i, int64_t Wp) {
  return (mask[i - Wp] && !lab[i - Wp]) || (mask[i - 1] && !lab[i - 1]) ||
         (mask[i + 1] && !lab[i + 1]) || (mask[i + Wp] && !lab[i + Wp]);
}
// scikit-image's heap flood itself (every marker pushed in raster order).
void watershed_exact(const double* img, const uint8_t* mask, int32_t* lab, int64_t Hp,
                     int64_t Wp);

}  // namespace pp
}  // namespace hvx
