// Marker-based watershed identical to skimage.segmentation.watershed (< 0.26;
// connectivity 1, no compactness, no watershed line).
//
// scikit-image pushes every marker pixel (age 0, raster order) into a binary
// min-heap ordered by (value, age); each popped pixel labels its unlabelled
// in-mask 4-neighbours (up, left, right, down) with its own label and pushes
// them with a fresh age (2, 3, ...) and the value max(own value, popped value)
// (scikit-image 0.25 clamps; checked against it). Ages are unique except for
// the markers, so the pop sequence is fixed by (value, age) except among
// markers of equal value, where it depends on the heap's internal layout.
//
// Fast path: a marker whose in-mask neighbours are all labelled at the start
// changes nothing when popped, so only "active" markers are queued. When the
// active markers' values are pairwise distinct, every pop is the unique minimum
// of (value, age) and any exact priority queue gives scikit-image's result. The
// fast queue ranks the in-mask values once (radix sort) and keeps one FIFO per
// rank (FIFO order = age order, markers first); thanks to the clamp the lowest
// non-empty rank never decreases, so a forward cursor finds it. When all the
// queued values are distinct the ranks are the sorted pixels themselves and
// the lists go (RankQueue::flood_distinct). With a tie among active markers
// the flood runs with a heap identical to scikit-image's (same sift-up /
// sift-down, every marker pushed in raster order), whose layout decides such
// ties.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "postprocess.hpp"

// Lets GCC vectorise the float selects of the bucket sort (values unchanged).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

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
inline Item make_item_key(uint64_t key, uint32_t age, uint32_t index) {
  return (static_cast<Item>(key) << 64) | (static_cast<Item>(age) << 32) | index;
}
inline Item make_item(double v, uint32_t age, uint32_t index) {
  return make_item_key(value_key(v), age, index);
}
inline bool smaller(Item a, Item b) { return (a >> 32) < (b >> 32); }
inline uint32_t item_index(Item a) { return static_cast<uint32_t>(a); }

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

// scikit-image's flood (padded Hp x Wp, border masked out) with its heap.
void flood(const double* img, const uint8_t* mask, int32_t* lab, int64_t Wp,
           const std::vector<uint32_t>& seeds, Heap& heap) {
  const int64_t off[4] = {-Wp, -1, 1, Wp};
  heap.clear();
  for (uint32_t s : seeds) heap.push(make_item(img[s], 0, s));
  uint32_t age = 1;
  while (!heap.empty()) {
    const Item e = heap.pop();
    const int64_t p = item_index(e);
    const int32_t l = lab[p];
    const uint64_t floor_key = static_cast<uint64_t>(e >> 64);
    for (int k = 0; k < 4; ++k) {
      const int64_t q = p + off[k];
      if (!mask[q] || lab[q]) continue;
      ++age;
      lab[q] = l;
      // a neighbour costs at least what the pixel it is reached from cost
      heap.push(make_item_key(std::max(value_key(img[q]), floor_key), age,
                              static_cast<uint32_t>(q)));
    }
  }
}

// Rank-bucket flood (see the file comment). Returns false, touching nothing,
// when two active markers share a value.
class RankQueue {
 public:
  bool flood(const double* img, int32_t* lab, uint8_t* mask, int64_t Hp, int64_t Wp,
             const uint32_t* cand, size_t ncand, const uint32_t* seeds, size_t nseeds) {
    const int64_t n = Hp * Wp;
    pix_.assign(cand, cand + ncand);
    pix_.insert(pix_.end(), seeds, seeds + nseeds);
    const size_t m = pix_.size();
    sort_by_value(img);
    if (distinct_keys()) return flood_distinct(img, lab, mask, Wp);
    if (rank_.size() < static_cast<size_t>(n)) rank_.resize(static_cast<size_t>(n));
    if (next_.size() < static_cast<size_t>(n)) next_.resize(static_cast<size_t>(n));
    uint32_t R = 0;
    for (size_t j = 0; j < m; ++j) {
      R += static_cast<uint32_t>(j > 0 && keys_[j] != keys_[j - 1]);
      rank_[order_[j]] = R;
    }
    ++R;
    head_.assign(R, -1);
    tail_.assign(R, -1);
    uint32_t cur = R;
    for (size_t si = 0; si < nseeds; ++si) {
      const uint32_t sidx = seeds[si];
      const uint32_t r = rank_[sidx];
      // Seeds of one value pop one after the other in an order set by the heap
      // layout. That order cannot change the result when they have the same
      // label (their pushes form one block of ages, all of that label);
      // otherwise fall back. (Seeds in different mask components never meet:
      // the caller may flood components one call each.)
      for (int32_t q = head_[r]; q >= 0; q = next_[q]) {
        if (lab[q] != lab[sidx]) return false;
      }
      push(sidx, r);
      cur = std::min(cur, r);
    }
    // Every push costs at least the popped pixel's value (scikit-image clamps
    // it), so the lowest non-empty rank never decreases: a forward cursor.
    const int64_t off[4] = {-Wp, -1, 1, Wp};
    for (; cur < R; ++cur) {
      while (head_[cur] >= 0) {
        const int32_t p = head_[cur];
        head_[cur] = next_[p];
        const int32_t l = lab[p];
        for (int k = 0; k < 4; ++k) {
          const int64_t q = p + off[k];
          if (!mask[q]) continue;  // out of the mask, or labelled
          mask[q] = 0;
          lab[q] = l;
          push(static_cast<uint32_t>(q), std::max(rank_[q], cur));
        }
      }
      tail_[cur] = -1;
    }
    return true;
  }

 private:
  bool distinct_keys() const {
    const uint64_t* k = keys_.data();
    const size_t m = keys_.size();
    bool same = false;
    for (size_t j = 1; j < m; ++j) same |= k[j] == k[j - 1];  // branch-free
    return !same;
  }
  // The flood when every queued value is distinct (the usual case): each level
  // of the rank queue then holds its own pixel, pushed when it was reached
  // (labelled) before the cursor got there, followed by the pixels reached
  // while it is processed whose values are lower (clamped to the level's value,
  // first in first out; all of them take that pixel's label). So the levels
  // are the sorted pixels themselves: a reached one is processed with a FIFO
  // of such pixels; one not yet reached is reached later below its value and
  // processed then. No ranks, no lists.
  bool flood_distinct(const double* img, int32_t* lab, uint8_t* mask, int64_t Wp) {
    const size_t m = order_.size();
    if (fifo_.size() < m) fifo_.resize(m);
    uint32_t* fifo = fifo_.data();
    const uint32_t* order = order_.data();
    const int64_t off[4] = {-Wp, -1, 1, Wp};
    for (size_t cur = 0; cur < m; ++cur) {
      uint32_t p = order[cur];
      if (!lab[p]) continue;
      const double v = img[p];
      size_t head = 0, tail = 0;
      for (;;) {
        const int32_t l = lab[p];
        for (int k = 0; k < 4; ++k) {
          const int64_t q = p + off[k];
          if (!mask[q]) continue;  // out of the mask, or labelled
          mask[q] = 0;
          lab[q] = l;
          // below the level: clamped to it, this level's FIFO; above: its own level
          if (img[q] < v) fifo[tail++] = static_cast<uint32_t>(q);
        }
        if (head == tail) break;
        p = fifo[head++];
      }
    }
    return true;
  }
  void push(uint32_t q, uint32_t r) {
    next_[q] = -1;
    if (head_[r] >= 0) {
      next_[tail_[r]] = static_cast<int32_t>(q);
    } else {
      head_[r] = static_cast<int32_t>(q);
    }
    tail_[r] = static_cast<int32_t>(q);
  }
  // Sorts the queued pixels by value key: a bucket sort on the value (the
  // bucket index (v - vmin) * scale is monotone in v), then each bucket by key.
  // Buckets hold ~2 pixels on average, so this is two passes over the pixels.
  void sort_by_value(const double* img) {
    const size_t m = pix_.size();
    keys_.resize(m), order_.resize(m), tmpk_.resize(m), tmpo_.resize(m);
    bid_.resize(m);
    if (m == 0) return;
    vals_.resize(m);
    double* vals = vals_.data();
    for (size_t j = 0; j < m; ++j) vals[j] = img[pix_[j]] + 0.0;  // -0.0 -> +0.0
    double vmin = vals[0], vmax = vals[0];
    for (size_t j = 1; j < m; ++j) {
      vmin = vals[j] < vmin ? vals[j] : vmin;
      vmax = vals[j] > vmax ? vals[j] : vmax;
    }
    const size_t nb = std::max<size_t>(1, std::min<size_t>(m, size_t{1} << 16));
    double scale = vmax > vmin ? static_cast<double>(nb) / (vmax - vmin) : 0.0;
    if (!(scale < HUGE_VAL)) scale = 0.0;  // overflowing range: one bucket
    const double top = static_cast<double>(nb - 1);
    uint32_t* bid = bid_.data();
    for (size_t j = 0; j < m; ++j) {  // vectorises
      const double f = (vals[j] - vmin) * scale;
      bid[j] = static_cast<uint32_t>(f < top ? f : top);
    }
    hist_.assign(nb + 1, 0);
    for (size_t j = 0; j < m; ++j) hist_[bid[j] + 1]++;
    max_bucket_ = 0;
    for (size_t b = 0; b < nb; ++b) {
      max_bucket_ = std::max<size_t>(max_bucket_, hist_[b + 1]);
      hist_[b + 1] += hist_[b];
    }
    for (size_t j = 0; j < m; ++j) {
      const uint32_t dst = hist_[bid[j]]++;
      tmpk_[dst] = value_key(vals[j]);
      tmpo_[dst] = pix_[j];
    }
    // Buckets are in value order, so one insertion pass over the whole array
    // finishes the sort: an item only moves inside its bucket (~2 items), and
    // the common "already in place" comparison is well predicted. A bucket too
    // large for that (a flat relief) is sorted on its own.
    if (max_bucket_ > kSmallBucket) {
      size_t start = 0;
      for (size_t b = 0; b < nb; ++b) {
        const size_t end = hist_[b];  // now the end of bucket b
        if (end - start > kSmallBucket) {
          pairs_.resize(end - start);
          for (size_t i = start; i < end; ++i) pairs_[i - start] = {tmpk_[i], tmpo_[i]};
          std::sort(pairs_.begin(), pairs_.end());
          for (size_t i = start; i < end; ++i)
            tmpk_[i] = pairs_[i - start].first, tmpo_[i] = pairs_[i - start].second;
        }
        start = end;
      }
    }
    uint64_t* k = tmpk_.data();
    uint32_t* o = tmpo_.data();
    for (size_t i = 1; i < m; ++i) {
      const uint64_t ki = k[i];
      if (k[i - 1] <= ki) continue;
      const uint32_t oi = o[i];
      size_t j = i;
      do {
        k[j] = k[j - 1], o[j] = o[j - 1];
        --j;
      } while (j > 0 && k[j - 1] > ki);
      k[j] = ki, o[j] = oi;
    }
    keys_.swap(tmpk_), order_.swap(tmpo_);
  }

  static constexpr size_t kSmallBucket = 64;  // larger ones: std::sort
  size_t max_bucket_ = 0;
  std::vector<std::pair<uint64_t, uint32_t>> pairs_;
  std::vector<uint32_t> bid_;
  std::vector<double> vals_;
  std::vector<uint32_t> pix_, order_, tmpo_, rank_, hist_;
  std::vector<uint64_t> keys_, tmpk_;
  std::vector<int32_t> head_, tail_, next_;
  std::vector<uint32_t> fifo_;
};

}  // namespace

namespace {
struct FastScratch {
  std::vector<uint32_t> seeds, cand;
  RankQueue rq;
};
HVX_NOINLINE FastScratch& fast_scratch() {
  static thread_local FastScratch s;
  return s;
}
}  // namespace

bool watershed_fast(const double* img, uint8_t* mask, int32_t* lab, int64_t Hp, int64_t Wp,
                    const uint32_t* in_mask, size_t n_in_mask) {
  FastScratch& scratch = fast_scratch();
  std::vector<uint32_t>& seeds = scratch.seeds;
  std::vector<uint32_t>& cand = scratch.cand;
  seeds.clear();
  cand.clear();
  // Only the active markers and the unlabelled in-mask pixels are ever queued,
  // so only they need ranks.
  for (size_t j = 0; j < n_in_mask; ++j) {
    const uint32_t i = in_mask[j];
    if (!lab[i]) {
      cand.push_back(i);
      continue;
    }
    if (is_active_marker(mask, lab, i, Wp)) seeds.push_back(i);
    mask[i] = 0;  // labelled: the flood reads mask alone
  }
  return watershed_fast_queued(img, mask, lab, Hp, Wp, cand.data(), cand.size(), seeds.data(),
                               seeds.size());
}

bool watershed_fast_queued(const double* img, uint8_t* mask, int32_t* lab, int64_t Hp,
                           int64_t Wp, const uint32_t* cand, size_t ncand, const uint32_t* seeds,
                           size_t nseeds) {
  if (nseeds == 0) return true;
  return fast_scratch().rq.flood(img, lab, mask, Hp, Wp, cand, ncand, seeds, nseeds);
}

namespace {
struct ExactScratch {
  Heap heap;
  std::vector<uint32_t> all_markers;
};
HVX_NOINLINE ExactScratch& exact_scratch() {
  static thread_local ExactScratch s;
  return s;
}
}  // namespace

void watershed_exact(const double* img, const uint8_t* mask, int32_t* lab, int64_t Hp,
                     int64_t Wp) {
  ExactScratch& sc = exact_scratch();
  Heap& heap = sc.heap;
  std::vector<uint32_t>& all_markers = sc.all_markers;
  all_markers.clear();
  size_t m = 0;
  for (int64_t i = Wp; i < (Hp - 1) * Wp; ++i) {
    // labels are 0 off the mask; a labelled pixel may have had its mask
    // cleared by the fast path before it fell back
    m += (mask[i] != 0) | (lab[i] != 0);
    if (lab[i]) all_markers.push_back(static_cast<uint32_t>(i));
  }
  heap.reserve(m + 1);  // every in-mask pixel is pushed at most once
  flood(img, mask, lab, Wp, all_markers, heap);
}

// Padded-layout entry: img, mask, lab are (H+2) x (W+2) with a zero mask
// border; lab holds the markers (zero outside the mask).
void watershed_padded(const double* img, uint8_t* mask, int32_t* lab, int64_t Hp,
                      int64_t Wp, bool exact_heap) {
  static thread_local std::vector<uint32_t> pix;
  const int64_t n = Hp * Wp;
  if (Hp < 3 || Wp < 3) return;
  if (!exact_heap) {
    pix.resize(static_cast<size_t>(n));
    size_t cnt = 0;
    for (int64_t i = Wp; i < n - Wp; ++i) {  // branch-free compaction
      pix[cnt] = static_cast<uint32_t>(i);
      cnt += mask[i] != 0;
    }
    if (watershed_fast(img, mask, lab, Hp, Wp, pix.data(), cnt)) return;
  }
  // A tie among seeds (nothing was labelled yet): scikit-image's heap.
  watershed_exact(img, mask, lab, Hp, Wp);
}

void watershed(const double* image, const uint8_t* mask, int64_t H, int64_t W, int32_t* labels,
               bool exact_heap) {
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
  watershed_padded(img.data(), m.data(), lab.data(), Hp, Wp, exact_heap);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) labels[y * W + x] = lab[(y + 1) * Wp + x + 1];
}

}  // namespace pp
}  // namespace hvx
