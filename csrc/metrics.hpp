// CoNiC metrics (SPEC §1): PQ pairing at IoU > 0.5, per-class statistics with
// per-pixel class masking, and per-class nucleus counts in a central crop.
// Plain C++17; no Python headers (only bindings.cpp includes pybind11).
//
// Per image, one pass over the pixels counts the area of every (instance id,
// class) and the overlap of every (true id, pred id, shared class) pair; pairing
// then works on those counts, never on per-instance masks. The results are equal
// to the official evaluation (CoNIC compute_stats.py) wherever it returns a value:
// TP/FP/FN exactly, and the IoU sums bit for bit (inter / (total - inter) in
// float64, summed in ascending true-id order with NumPy's pairwise summation).
//
// Supported element types T: int8, uint8, int16, uint16, int32, uint32, int64.
#pragma once

#include <cstdint>

namespace hvx {
namespace metrics {

// TP, FP, FN and the sum of the matched IoUs of one pair of instance maps.
struct PqCounts {
  int64_t tp = 0;
  int64_t fp = 0;
  int64_t fn = 0;
  double sum_iou = 0.0;
};

// NumPy's float64 pairwise summation (np.sum of a contiguous 1-D array), so that
// sums agree bit for bit with the reference. Exposed for tests.
double pairwise_sum(const double* a, int64_t n);

// Binary PQ counts of one (H, W) pair of instance maps, C-contiguous, n_pixels
// long. Ids are any values >= 0 (0 = background), not necessarily contiguous.
// Throws std::invalid_argument on negative ids.
template <typename T>
PqCounts pq_counts(const T* true_inst, const T* pred_inst, int64_t n_pixels);

// CoNiC statistics of a batch of (N, H, W, 2) maps (channel 0 instance ids,
// channel 1 class ids 0..num_classes), C-contiguous, n_pixels = H * W.
// Outputs (caller-allocated):
//   bin_counts[N * 3]            per image binary TP, FP, FN
//   bin_iou[N]                   per image binary sum of matched IoUs
//   cls_counts[N * C * 3]        per image and class c = 1..C: TP, FP, FN
//   cls_iou[N * C]               per image and class: sum of matched IoUs
// num_threads <= 0 uses the OpenMP default. Throws std::invalid_argument on a
// negative instance id or a class id outside 0..num_classes (naming the image).
template <typename T>
void conic_stats(const T* true_maps, const T* pred_maps, int64_t n_images, int64_t n_pixels,
                 int num_classes, int64_t* bin_counts, double* bin_iou, int64_t* cls_counts,
                 double* cls_iou, int num_threads);

// Per-class nucleus counts in the central crop (crop_h, crop_w) of (N, H, W, 2)
// maps, as CoNiC's counts.csv: for class v, the number of distinct values of
// inst * (cls == v) in the crop minus one (so a crop fully covered by class-v
// nuclei counts one fewer, like the official `unique(...)[1:]`).
// out[N * num_classes]. Crop origin ((H - crop_h) / 2, (W - crop_w) / 2).
template <typename T>
void conic_counts(const T* maps, int64_t n_images, int64_t height, int64_t width, int64_t crop_h,
                  int64_t crop_w, int num_classes, int64_t* out, int num_threads);

}  // namespace metrics
}  // namespace hvx
