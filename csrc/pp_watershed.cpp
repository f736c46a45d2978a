// Marker-based watershed identical to skimage.segmentation.watershed (< 0.26;
// connectivity 1, no compactness, no watershed line).
//
// scikit-image pushes every marker pixel (age 0, raster order) into a binary
// min-heap ordered by (value, age); each popped pixel labels its unlabelled
// in-mask 4-neighbours (up, left, right, down) with its own label and pushes
// them with a fresh age (2, 3, ...). Ages are unique except for the markers, so
// the pop sequence is fixed by (value, age) except among markers of equal value,
// where it depends on the heap's internal layout.
//
// Fast path: a marker whose in-mask neighbours are all labelled at the start
// changes nothing when popped, so only "active" markers are pushed. When the
// active markers' values are pairwise distinct every pop is the unique minimum
// and the result equals scikit-image's for ANY correct heap. A tie is detected
// when it first matters (after popping an age-0 item the new top has the same
// value and age 0); the exact path then reruns the whole flood with the same
// heap as scikit-image's (same sift-up/sift-down, every marker pushed).
#include <cstring>
#include <vector>

#include "postprocess.hpp"

namespace hvx {
namespace pp {
namespace {

// A heap item is one 128-bit integer: (value key, age, index) from the high bits
// down. The value key maps doubles monotonically to integers (-0.0 first made
// +0.0, so they compare equal as in scikit-image); the order of scikit-image's
// `smaller` is then a comparison of the top 96 bits, without branches.
using Item = unsigned __int128;

inline uint64_t value_key(double v) {
  v = v + 0.0;  // -0.0 -> +0.0
  uint64_t b;
  std::memcpy(&b, &v, sizeof b);
  return (b >> 63) ? ~b : (b | (uint64_t{1} << 63));
}
inline Item make_item(double v, uint32_t age, uint32_t index) {
  return (static_cast<Item>(value_key(v)) << 64) | (static_cast<Item>(age) << 32) | index;
}
inline bool smaller(Item a, Item b) { return (a >> 32) < (b >> 32); }
inline uint32_t item_index(Item a) { return static_cast<uint32_t>(a); }
inline uint32_t item_age(Item a) { return static_cast<uint32_t>(a >> 32); }

// scikit-image's heap (heap_general.pxi): the same comparisons, the same final
// layout, written with a moving hole instead of swaps. In pop, "the smaller
// child, ties to the left, if it is smaller than the moving item" makes the
// same choice as scikit-image's "left if smaller than the item, then right if
// smaller than that".
class Heap {
 public:
  void reserve(size_t n) {
    if (v_.size() < n) v_.resize(n);
  }
  void clear() { n_ = 0; }
  bool empty() const { return n_ == 0; }
  Item top() const { return v_[0]; }
  void push(Item it) {
    Item* v = v_.data();
    size_t child = n_++;
    while (child > 0) {
      size_t parent = (child + 1) / 2 - 1;
      if (!smaller(it, v[parent])) break;
      v[child] = v[parent];
      child = parent;
    }
    v[child] = it;
  }
  Item pop() {
    Item* v = v_.data();
    const Item out = v[0];
    const size_t items = --n_;
    if (items == 0) return out;
    const Item x = v[items];
    size_t i = 0, l;
    while ((l = 2 * i + 1) < items) {
      const size_t c = l + static_cast<size_t>(l + 1 < items && smaller(v[l + 1], v[l]));
      if (!smaller(v[c], x)) break;
      v[i] = v[c];
      i = c;
    }
    v[i] = x;
    return out;
  }

 private:
  std::vector<Item> v_;
  size_t n_ = 0;
};

// Floods labels (padded Hp x Wp, border masked out). Returns false when the fast
// path met a tie among markers (labels are then partially written).
bool flood(const double* img, const uint8_t* mask, int32_t* lab, int64_t Wp,
           const std::vector<uint32_t>& seeds, bool fast, Heap& heap) {
  const int64_t off[4] = {-Wp, -1, 1, Wp};
  heap.clear();
  for (uint32_t s : seeds) heap.push(make_item(img[s], 0, s));
  uint32_t age = 1;
  while (!heap.empty()) {
    const Item e = heap.pop();
    if (fast && item_age(e) == 0 && !heap.empty()) {
      const Item t = heap.top();
      if (item_age(t) == 0 && (t >> 64) == (e >> 64)) return false;
    }
    const int64_t p = item_index(e);
    const int32_t l = lab[p];
    for (int k = 0; k < 4; ++k) {
      const int64_t q = p + off[k];
      if (!mask[q] || lab[q]) continue;
      ++age;
      lab[q] = l;
      heap.push(make_item(img[q], age, static_cast<uint32_t>(q)));
    }
  }
  return true;
}

}  // namespace

// Padded-layout entry used by the pipeline: img, mask, lab are (H+2) x (W+2)
// with a zero mask border; lab holds the markers (zero outside the mask).
void watershed_padded(const double* img, const uint8_t* mask, int32_t* lab, int64_t Hp,
                      int64_t Wp) {
  static thread_local Heap heap;
  static thread_local std::vector<uint32_t> seeds;
  static thread_local std::vector<uint32_t> all_markers;
  seeds.clear();
  all_markers.clear();
  const int64_t n = Hp * Wp;
  for (int64_t i = Wp; i < n - Wp; ++i) {
    if (!lab[i]) continue;
    all_markers.push_back(static_cast<uint32_t>(i));
    if ((mask[i - Wp] && !lab[i - Wp]) || (mask[i - 1] && !lab[i - 1]) ||
        (mask[i + 1] && !lab[i + 1]) || (mask[i + Wp] && !lab[i + Wp])) {
      seeds.push_back(static_cast<uint32_t>(i));
    }
  }
  if (seeds.empty()) return;
  size_t in_mask = 0;
  for (int64_t i = 0; i < n; ++i) in_mask += mask[i];
  heap.reserve(in_mask + 1);  // every in-mask pixel is pushed at most once
  if (flood(img, mask, lab, Wp, seeds, true, heap)) return;
  // A tie among markers: restore the markers (flooding only labels in-mask
  // non-marker pixels) and rerun with scikit-image's exact heap.
  static thread_local std::vector<int32_t> marker_labels;
  marker_labels.resize(all_markers.size());
  for (size_t j = 0; j < all_markers.size(); ++j) marker_labels[j] = lab[all_markers[j]];
  for (int64_t i = 0; i < n; ++i)
    if (mask[i]) lab[i] = 0;
  for (size_t j = 0; j < all_markers.size(); ++j) lab[all_markers[j]] = marker_labels[j];
  flood(img, mask, lab, Wp, all_markers, false, heap);
}

void watershed(const double* image, const uint8_t* mask, int64_t H, int64_t W, int32_t* labels) {
  const int64_t Hp = H + 2, Wp = W + 2;
  std::vector<double> img(static_cast<size_t>(Hp * Wp), 0.0);
  std::vector<uint8_t> m(static_cast<size_t>(Hp * Wp), 0);
  std::vector<int32_t> lab(static_cast<size_t>(Hp * Wp), 0);
  for (int64_t y = 0; y < H; ++y) {
    for (int64_t x = 0; x < W; ++x) {
      const int64_t p = (y + 1) * Wp + x + 1, s = y * W + x;
      img[p] = image[s];
      m[p] = mask[s] ? 1 : 0;
      lab[p] = mask[s] ? labels[s] : 0;
    }
  }
  watershed_padded(img.data(), m.data(), lab.data(), Hp, Wp);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) labels[y * W + x] = lab[(y + 1) * Wp + x + 1];
}

}  // namespace pp
}  // namespace hvx
