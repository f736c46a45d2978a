// The HoVer-Net HV-watershed pipeline (SPEC §3a); the instance table (§3b) is in pp_table.cpp.
// Work outside the foreground is skipped where it cannot change the result:
// the Sobel maps and their min/max need the whole tile, but the gradient energy,
// the relief, the markers and the flood are computed on foreground pixels only.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "postprocess.hpp"


// The relief's products (0.25 x, 0.5 x) are exact, so FMA contraction cannot
// change it; the order of the additions is OpenCV's.
// GCC does not if-convert float compares under -ftrapping-math, which keeps the
// per-pixel selects below from vectorising; no FP exception is ever inspected
// here, and the values computed are the same.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

namespace hvx {
namespace pp {

// Stage timers for development (benchmarks/pp_stages/run.sh builds with
// -DHVX_PP_PROFILE); compiled out otherwise.
#ifdef HVX_PP_PROFILE
double g_stage[16];
const char* g_stage_name[16];
static double pp_now() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}
#define PP_T0 double pp_t_ = pp_now()
#define PP_STAGE(i, name)                                       \
  do {                                                          \
    const double pp_n_ = pp_now();                              \
    g_stage[i] += pp_n_ - pp_t_, g_stage_name[i] = name, pp_t_ = pp_n_; \
  } while (0)
#else
#define PP_T0 (void)0
#define PP_STAGE(i, name) (void)0
#endif


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

// A marker run's piece on a foreground run: the component it names.
struct MarkerPiece {
  int32_t y, x0, x1, comp, label;
};

struct Workspace {
  std::vector<uint8_t> fg, marker, mask_p;
  std::vector<double> sh, sv, g, gx, dist_p;
  std::vector<int32_t> lab_p, first, span;
  std::vector<uint64_t> mbits;    // markers, bit rows
  std::vector<uint64_t> fgbits;   // AVX-512: the foreground as bit rows (then the kept part)
  std::vector<LabelRun> mruns;    // marker runs and labels
  std::vector<uint8_t> multi;
  std::vector<FgRun> runs;  // foreground runs and their components
  std::vector<MarkerPiece> pieces;
  int32_t ncomp = 0;
  std::vector<uint32_t> in_mask;
  std::vector<int64_t> counts, cstart, cfront, cback;
  bool lab_dirty = false;  // lab_p may hold labels (a call did not finish)
};

HVX_NOINLINE Workspace& workspace() {
  static thread_local Workspace ws;
  return ws;
}

template <typename T>
void resize(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HVX_PP_X86 1
#define HVX_PP_AVX2 __attribute__((target("avx2,fma")))
#define HVX_PP_AVX512 __attribute__((target("avx512f,avx2,fma")))
// GCC 12 warns about the undefined-vector idiom inside its own AVX-512 headers.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#else
#define HVX_PP_X86 0
#endif
#if defined(__GNUC__)
#define HVX_PP_INLINE inline __attribute__((always_inline))
#else
#define HVX_PP_INLINE inline
#endif

// What the fused foreground pass needs. It runs over each row's foreground
// span (first to last foreground pixel, vectorised with a select), so g and the
// markers are 0 off the foreground and the relief is right wherever the flood
// reads it. g lives in one row; its blur along x (the blur's row pass) in a
// ring of three rows (the blur's reach), not a map.
struct EnergyArgs {
  const double* sh;  // Sobel maps (H x W)
  const double* sv;
  const uint8_t* fg;  // (H x W) foreground 0 / 1
  const int32_t* span;  // per row: x0, x1 of its foreground span (x0 == x1: none)
  double ah, bh, av, bv;  // min-max normalisation of sh / sv
  double thr;
  int64_t H, W, Wp;
  double* g;          // W + 4: g of the current row at g[2 ..], 2 zeros each side
  double* gx;         // ring of 3 rows of W: g of row y blurred along x, in slot y % 3
  uint8_t* marker;    // (H x W) fg & overall < thr (below AVX-512)
  double* dist;       // padded (H + 2) x (W + 2): -GaussianBlur(g) on the foreground
  // AVX-512: the foreground and the markers as bit rows (words per row) instead
  // of the byte maps fg / marker
  const uint64_t* fgb = nullptr;
  uint64_t* mbits = nullptr;
  int64_t words = 0;
};

// Gradient energy on [x0, x1) of row y: overall = max(1 - norm(sh), 1 -
// norm(sv)) (float32, then float64, >= 0), g = (1 - overall) * fg (the
// reference's (1 - overall) * blb), marker = fg & !(overall >= thr).
HVX_PP_INLINE void energy_run(const EnergyArgs& a, int64_t y, int64_t x0, int64_t x1) {
  const int64_t o = y * a.W;
  const double* sh = a.sh + o;
  const double* sv = a.sv + o;
  const uint8_t* fg = a.fg + o;
  double* g = a.g + 2;
  uint8_t* mk = a.marker + o;
  const double ah = a.ah, bh = a.bh, av = a.av, bv = a.bv, thr = a.thr;
  for (int64_t x = x0; x < x1; ++x) {  // branch-free: vectorises
    const float nh = static_cast<float>(std::fma(sh[x], ah, bh));
    const float nv = static_cast<float>(std::fma(sv[x], av, bv));
    const float p = 1.0f - nh, q = 1.0f - nv;
    double ov = static_cast<double>(p > q ? p : q);
    ov = ov < 0.0 ? 0.0 : ov;
    const bool f = fg[x] != 0;
    g[x] = f ? 1.0 - ov : 0.0;
    mk[x] = static_cast<uint8_t>(f & (ov < thr));
  }
}

#if HVX_PP_X86
// energy_run with explicit AVX-512, 8 pixels per step from x0 & ~7 (the
// foreground bits are 0 off the span, so g and the markers are 0 there), the
// markers written as bits. The same operations: the double FMA rounded to
// float, max_ps(p, q) = p > q ? p : q, max_pd(0, ov) = ov < 0 ? 0 : ov.
HVX_PP_AVX512 HVX_PP_INLINE void energy_run_bits(const EnergyArgs& a, int64_t y, int64_t x0,
                                                 int64_t x1) {
  const int64_t o = y * a.W, W = a.W;
  const double* sh = a.sh + o;
  const double* sv = a.sv + o;
  const uint8_t* fb = reinterpret_cast<const uint8_t*>(a.fgb + y * a.words);
  uint8_t* mb = reinterpret_cast<uint8_t*>(a.mbits + y * a.words);
  double* g = a.g + 2;
  const __m512d ah = _mm512_set1_pd(a.ah), bh = _mm512_set1_pd(a.bh);
  const __m512d av = _mm512_set1_pd(a.av), bv = _mm512_set1_pd(a.bv);
  const __m512d thr = _mm512_set1_pd(a.thr), one = _mm512_set1_pd(1.0);
  const __m512d zero = _mm512_setzero_pd();
  const __m256 onef = _mm256_set1_ps(1.0f);
  for (int64_t x = x0 & ~int64_t{7}; x < x1; x += 8) {
    const __mmask8 lm = x + 8 <= W ? __mmask8(0xff) : __mmask8((1u << (W - x)) - 1);
    const __m512d s = _mm512_maskz_loadu_pd(lm, sh + x), t = _mm512_maskz_loadu_pd(lm, sv + x);
    const __m256 p = _mm256_sub_ps(onef, _mm512_cvtpd_ps(_mm512_fmadd_pd(s, ah, bh)));
    const __m256 q = _mm256_sub_ps(onef, _mm512_cvtpd_ps(_mm512_fmadd_pd(t, av, bv)));
    const __m512d ov = _mm512_max_pd(zero, _mm512_cvtps_pd(_mm256_max_ps(p, q)));
    const __mmask8 f = fb[x >> 3];
    _mm512_mask_storeu_pd(g + x, lm, _mm512_maskz_sub_pd(f, one, ov));
    mb[x >> 3] = static_cast<uint8_t>(f & _mm512_cmp_pd_mask(ov, thr, _CMP_LT_OQ));
  }
}
#endif

// Relief on [x0, x1) of row y (needs the blurred rows y - 1 .. y + 1): dist =
// -GaussianBlur(g) with OpenCV's order (row pass, then 0.5 c + 0.25 (d + u)),
// BORDER_REFLECT_101.
HVX_PP_INLINE void relief_run(const EnergyArgs& a, int64_t y, int64_t x0, int64_t x1) {
  const int64_t H = a.H, W = a.W;
  const double* hu = a.gx + reflect101(y - 1, H) % 3 * W;
  const double* hc = a.gx + y % 3 * W;
  const double* hd = a.gx + reflect101(y + 1, H) % 3 * W;
  double* d = a.dist + (y + 1) * a.Wp + 1;
  for (int64_t x = x0; x < x1; ++x) d[x] = -((0.5 * hc[x] + 0.0) + 0.25 * (hd[x] + hu[x]));
}

// Row y of g (0 off the span), then its row pass 0.25 g[x - 1] + 0.5 g[x] +
// 0.25 g[x + 1] (products exact: FMA cannot change it) into its ring slot,
// computed on the span +- 1 and 0 elsewhere (where g's three taps are all 0).
// ENERGY: energy_run or energy_run_bits.
#define HVX_G_ROW_BODY(ENERGY)                                                          \
  const int64_t W = a.W;                                                                \
  const int32_t x0 = a.span[2 * y], x1 = a.span[2 * y + 1];                             \
  double* h = a.gx + y % 3 * W;                                                         \
  if (x0 == x1) {                                                                       \
    std::memset(h, 0, static_cast<size_t>(W) * sizeof(double));                         \
    return;                                                                             \
  }                                                                                     \
  double* g = a.g + 2; /* g[-2 .. W + 2) */                                             \
  g[x0 - 2] = g[x0 - 1] = 0.0, g[x1] = g[x1 + 1] = 0.0;                                 \
  ENERGY(a, y, x0, x1);                                                                 \
  const int64_t lo = std::max<int64_t>(x0 - 1, 0), hi = std::min<int64_t>(x1 + 1, W);  \
  std::memset(h, 0, static_cast<size_t>(lo) * sizeof(double));                          \
  std::memset(h + hi, 0, static_cast<size_t>(W - hi) * sizeof(double));                 \
  for (int64_t x = lo; x < hi; ++x) h[x] = 0.25 * g[x - 1] + 0.5 * g[x] + 0.25 * g[x + 1]; \
  if (W == 1) {                                                                         \
    h[0] = 0.25 * g[0] + 0.5 * g[0] + 0.25 * g[0];                                      \
    return;                                                                             \
  }                                                                                     \
  /* BORDER_REFLECT_101: g[-1] is g[1], g[W] is g[W - 2] */                             \
  if (lo == 0) h[0] = 0.25 * g[1] + 0.5 * g[0] + 0.25 * g[1];                           \
  if (hi == W) h[W - 1] = 0.25 * g[W - 2] + 0.5 * g[W - 1] + 0.25 * g[W - 2];

// One pass over the rows: g and markers of row y + 1, relief of row y.
#define HVX_ENERGY_RELIEF_BODY(G_ROW)                                                   \
  G_ROW(a, 0); /* rows y - 1 and y are in the ring before row y + 1 */                  \
  for (int64_t y = 0; y < a.H; ++y) {                                                   \
    if (y + 1 < a.H) G_ROW(a, y + 1);                                                   \
    if (a.span[2 * y] < a.span[2 * y + 1]) relief_run(a, y, a.span[2 * y], a.span[2 * y + 1]); \
  }

HVX_PP_INLINE void g_row(const EnergyArgs& a, int64_t y) { HVX_G_ROW_BODY(energy_run) }

HVX_PP_INLINE void energy_relief_body(const EnergyArgs& a) {
  std::memset(a.marker, 0, static_cast<size_t>(a.H * a.W));
  HVX_ENERGY_RELIEF_BODY(g_row)
}

#if HVX_PP_X86
HVX_PP_AVX512 HVX_PP_INLINE void g_row_bits(const EnergyArgs& a, int64_t y) {
  HVX_G_ROW_BODY(energy_run_bits)
}
// The markers as bit rows (a.mbits), the foreground read from bit rows (a.fgb).
HVX_PP_AVX512 void energy_relief_bits_avx512(const EnergyArgs& a) {
  std::memset(a.mbits, 0, static_cast<size_t>(a.H * a.words) * sizeof(uint64_t));
  HVX_ENERGY_RELIEF_BODY(g_row_bits)
}
#endif
#undef HVX_G_ROW_BODY
#undef HVX_ENERGY_RELIEF_BODY

#if HVX_PP_X86
HVX_PP_AVX2 void energy_relief_avx2(const EnergyArgs& a) { energy_relief_body(a); }
#endif
void energy_relief_plain(const EnergyArgs& a) { energy_relief_body(a); }

// With a.mbits (AVX-512 only) the markers come out as bit rows, else as bytes.
void energy_relief(const EnergyArgs& a) {
#if HVX_PP_X86
  if (a.mbits) return energy_relief_bits_avx512(a);
  const int isa = isa_level();
  if (isa >= 1) return energy_relief_avx2(a);
#endif
  energy_relief_plain(a);
}

// fg = np >= thr (0 / 1); false when np holds a NaN or inf (x - x is 0 for
// finite x, else NaN). Branch-free, so it vectorises; it is bound by reading np.
HVX_PP_INLINE bool threshold_body(const float* np, int64_t n, float thr, uint8_t* fg) {
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float x = np[i];
    fg[i] = x >= thr ? 1 : 0;
    bad |= !(x - x == 0.0f);
  }
  return !bad;
}
#if HVX_PP_X86
// AVX-512: threshold_body row by row, plus the foreground as bit rows
// (bit_words(W) words per row) from the compare masks, from which the runs are
// found a word at a time and the energy pass reads the foreground.
HVX_PP_AVX512 bool threshold_bits_avx512(const float* np, int64_t H, int64_t W, float thr,
                                         uint8_t* fg, uint64_t* bits) {
  const int64_t words = bit_words(W);
  const __m512 t = _mm512_set1_ps(thr), zero = _mm512_setzero_ps();
  const __m512i one = _mm512_set1_epi32(1);
  __mmask16 bad = 0;
  for (int64_t y = 0; y < H; ++y) {
    const float* row = np + y * W;
    uint8_t* f = fg + y * W;
    uint64_t* b = bits + y * words;
    for (int64_t k = 0; k < words; ++k) {
      uint64_t w = 0;
      for (int64_t i = 0; i < 64 && 64 * k + i < W; i += 16) {
        const int64_t x = 64 * k + i, left = W - x;
        const __mmask16 lm = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(lm, row + x);
        const __mmask16 on = _mm512_mask_cmp_ps_mask(lm, v, t, _CMP_GE_OQ);
        // x - x is 0 for finite x, NaN for NaN / inf
        bad |= _mm512_mask_cmp_ps_mask(lm, _mm512_sub_ps(v, v), zero, _CMP_NEQ_UQ);
        w |= static_cast<uint64_t>(on) << i;
        const __m128i bytes = _mm512_cvtepi32_epi8(_mm512_maskz_mov_epi32(on, one));
        if (left >= 16) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(f + x), bytes);
        } else {
          alignas(16) uint8_t tmp[16];
          _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
          std::memcpy(f + x, tmp, static_cast<size_t>(left));
        }
      }
      b[k] = w;
    }
  }
  return bad == 0;
}
HVX_PP_AVX2 bool threshold_avx2(const float* np, int64_t n, float thr, uint8_t* fg) {
  return threshold_body(np, n, thr, fg);
}
#endif
// The byte map alone (below AVX-512).
bool threshold(const float* np, int64_t n, float thr, uint8_t* fg) {
#if HVX_PP_X86
  const int isa = isa_level();
  if (isa >= 1) return threshold_avx2(np, n, thr, fg);
#endif
  return threshold_body(np, n, thr, fg);
}

// Stage "threshold": fg = np > threshold (ws.fg, and as bit rows in ws.fgbits
// under AVX-512). Returns the bit rows, or nullptr below AVX-512.
uint64_t* threshold_stage(const float* np, int64_t H, int64_t W, float thr, Workspace& ws) {
  const int64_t n = H * W;
  resize(ws.fg, n);
  uint8_t* fg = ws.fg.data();
  uint64_t* fgbits = nullptr;
#if HVX_PP_X86
  if (isa_level() >= 2) {
    resize(ws.fgbits, H * bit_words(W));
    fgbits = ws.fgbits.data();
  }
#endif
  const bool finite = fgbits ? threshold_bits_avx512(np, H, W, thr, fg, fgbits)
                             : threshold(np, n, thr, fg);
  if (!finite) throw std::invalid_argument("np_prob: expected finite values, got NaN or inf");
  return fgbits;
}

// Stage "energy": gradient energy, markers, g = (1 - overall) * fg and the
// padded relief -GaussianBlur(g) and mask for the flood, in one pass over each
// row's foreground span. Returns true when the markers were written as bit rows
// (ws.mbits, AVX-512), false when as bytes (ws.marker).
bool energy_stage(const double lo_h[2], const double lo_v[2], int64_t H, int64_t W,
                  double marker_threshold, uint64_t* fgbits, Workspace& ws) {
  const int64_t n = H * W, Hp = H + 2, Wp = W + 2, np_ = Hp * Wp;
  const uint8_t* fg = ws.fg.data();
  resize(ws.g, W + 4), resize(ws.gx, 3 * W), resize(ws.marker, n);
  resize(ws.dist_p, np_), resize(ws.mask_p, np_), resize(ws.lab_p, np_);
  EnergyArgs ea;
  ea.sh = ws.sh.data(), ea.sv = ws.sv.data();
  // each row's foreground span, from the runs (raster order)
  resize(ws.span, 2 * H);
  int32_t* span = ws.span.data();
  std::fill(span, span + 2 * H, 0);
  for (const FgRun& r : ws.runs) {
    if (span[2 * r.y] == span[2 * r.y + 1]) span[2 * r.y] = r.x0;
    span[2 * r.y + 1] = r.x1;
  }
  ea.fg = fg, ea.span = span;
  minmax_scale_shift(lo_h[0], lo_h[1], &ea.ah, &ea.bh);
  minmax_scale_shift(lo_v[0], lo_v[1], &ea.av, &ea.bv);
  ea.thr = marker_threshold;
  ea.H = H, ea.W = W, ea.Wp = Wp;
  ea.g = ws.g.data(), ea.gx = ws.gx.data(), ea.marker = ws.marker.data();
  ea.dist = ws.dist_p.data();
  uint8_t* mask = ws.mask_p.data();
  // zero border of the padded mask (the interior is written below)
  std::memset(mask, 0, static_cast<size_t>(Wp));
  std::memset(mask + (Hp - 1) * Wp, 0, static_cast<size_t>(Wp));
  for (int64_t y = 1; y + 1 < Hp; ++y) mask[y * Wp] = 0, mask[y * Wp + Wp - 1] = 0;
  for (int64_t y = 0; y < H; ++y) {
    std::memcpy(mask + (y + 1) * Wp + 1, fg + y * W, static_cast<size_t>(W));
  }
  const int64_t words = bit_words(W);
  resize(ws.mbits, H * words);
#if HVX_PP_X86
  if (fgbits) {
    // AVX-512: the energy reads the (kept) foreground and writes the markers
    // as bit rows; fgbits is rebuilt from the kept runs
    std::memset(fgbits, 0, static_cast<size_t>(H * words) * sizeof(uint64_t));
    for (const FgRun& r : ws.runs) set_bits(fgbits + r.y * words, r.x0, r.x1);
    ea.fgb = fgbits, ea.mbits = ws.mbits.data(), ea.words = words;
  }
#else
  (void)fgbits;
#endif
  energy_relief(ea);
  return ea.mbits != nullptr;
}

// Markers of >= min_object_size pixels, masked by the foreground, into the
// padded label map ws.lab_p.
void paint_markers(Workspace& ws, int64_t W, int64_t min_object_size) {
  const uint8_t* fg = ws.fg.data();
  int32_t* lp = ws.lab_p.data();
  const int64_t Wp = W + 2;
  for (const LabelRun& r : ws.mruns) {
    if (ws.counts[r.label] < min_object_size) continue;
    const uint8_t* fr = fg + static_cast<int64_t>(r.y) * W;
    int32_t* lo = lp + (r.y + 1) * Wp + 1;
    for (int32_t x = r.x0; x < r.x1; ++x) lo[x] = fr[x] ? r.label : 0;
  }
}

// Stage "ws-prep", first half. ws.lab_p is all 0 here: kept so between calls
// (cleared again if a call threw after painting, e.g. out of memory). Walk the
// marker runs and the foreground runs together: each piece of a marker on the
// foreground names its component, which gives the components' labels
// (ws.first: its first label; ws.multi: two or more). The flood never leaves a
// 4-connected foreground component: one with a single marker label is that
// label throughout, one without markers stays 0, and only components with two
// or more labels are flooded, in ws.lab_p, where their marker pieces are painted.
void split_components(Workspace& ws, int64_t W, int64_t min_object_size) {
  if (ws.lab_dirty) std::fill(ws.lab_p.begin(), ws.lab_p.end(), 0);
  ws.lab_dirty = true;
  const int32_t nc = ws.ncomp;
  std::vector<int32_t>& first = ws.first;
  std::vector<uint8_t>& multi = ws.multi;
  std::vector<MarkerPiece>& pieces = ws.pieces;
  first.assign(static_cast<size_t>(nc), 0);
  multi.assign(static_cast<size_t>(nc), 0);
  pieces.clear();
  {
    const FgRun* fr = ws.runs.data();
    const size_t nf = ws.runs.size();
    size_t i = 0;
    for (const LabelRun& r : ws.mruns) {
      if (ws.counts[r.label] < min_object_size) continue;
      while (i < nf && (fr[i].y < r.y || (fr[i].y == r.y && fr[i].x1 <= r.x0))) ++i;
      for (size_t j = i; j < nf && fr[j].y == r.y && fr[j].x0 < r.x1; ++j) {
        const int32_t a = std::max(r.x0, fr[j].x0), b = std::min(r.x1, fr[j].x1);
        pieces.push_back({r.y, a, b, fr[j].comp, r.label});
        int32_t& f = first[fr[j].comp];
        if (!f) f = r.label;
        multi[fr[j].comp] |= static_cast<uint8_t>(f != r.label);
      }
    }
  }
  int32_t* lp = ws.lab_p.data();
  const int64_t Wp = W + 2;
  for (const MarkerPiece& q : pieces) {
    if (multi[q.comp]) {
      int32_t* lo = lp + (q.y + 1) * Wp + 1;
      std::fill(lo + q.x0, lo + q.x1, q.label);
    }
  }
}

// Stage "ws-prep", second half: out = 0, single-label components painted into
// it, and the queue of each flooded component (raster order in each): its
// unlabelled pixels from the front of its slot in ws.in_mask
// (ws.cstart[c] .. ws.cfront[c]), its active markers (labelled, with an
// unlabelled in-mask 4-neighbour) from the back (ws.cback[c] .. ws.cstart[c + 1]).
// Each component is flooded on its own, so the flood stays in a small region.
void queue_components(Workspace& ws, int64_t H, int64_t W, int32_t* out) {
  const int32_t nc = ws.ncomp;
  const int64_t Wp = W + 2;
  const std::vector<int32_t>& first = ws.first;
  const std::vector<uint8_t>& multi = ws.multi;
  uint8_t* mask = ws.mask_p.data();
  const int32_t* lp = ws.lab_p.data();
  std::fill(out, out + H * W, 0);
  std::vector<uint32_t>& pix = ws.in_mask;
  std::vector<int64_t>& cstart = ws.cstart;
  cstart.assign(static_cast<size_t>(nc) + 1, 0);
  for (const FgRun& r : ws.runs) {
    if (multi[r.comp]) {
      cstart[r.comp + 1] += r.x1 - r.x0;
    } else if (first[r.comp]) {
      std::fill(out + r.y * W + r.x0, out + r.y * W + r.x1, first[r.comp]);
    }
  }
  for (int32_t c = 0; c < nc; ++c) cstart[c + 1] += cstart[c];
  pix.resize(static_cast<size_t>(cstart[nc]));
  std::vector<int64_t>& cfront = ws.cfront;
  std::vector<int64_t>& cback = ws.cback;
  cfront.assign(cstart.begin(), cstart.end() - 1);
  cback.assign(cstart.begin() + 1, cstart.end());
  for (const FgRun& r : ws.runs) {
    if (!multi[r.comp]) continue;
    const uint32_t base = static_cast<uint32_t>((r.y + 1) * Wp + 1);
    uint32_t* front = pix.data() + cfront[r.comp];
    uint32_t* back = pix.data() + cback[r.comp];
    for (int32_t x = r.x0; x < r.x1; ++x) {
      const uint32_t i = base + static_cast<uint32_t>(x);
      if (!lp[i]) {
        *front++ = i;
        continue;
      }
      if (is_active_marker(mask, lp, i, Wp)) *--back = i;
      mask[i] = 0;  // a marker: the flood tests mask alone
    }
    cfront[r.comp] = front - pix.data();
    cback[r.comp] = back - pix.data();
  }
}

// Stage "watershed": floods each queued component on its own; when seeds of
// one value meet in one component, falls back to scikit-image's heap on the
// whole foreground (its layout, which orders them, depends on every marker).
// Returns true when every component was flooded on its own (false: fallback,
// every component's labels are in ws.lab_p).
bool flood_components(Workspace& ws, int64_t H, int64_t W, int64_t min_object_size) {
  const int32_t nc = ws.ncomp;
  const int64_t Hp = H + 2, Wp = W + 2;
  uint8_t* mask = ws.mask_p.data();
  int32_t* lp = ws.lab_p.data();
  std::vector<uint32_t>& pix = ws.in_mask;
  const std::vector<int64_t>& cstart = ws.cstart;
  bool fast = true;
  for (int32_t c = 0; c < nc && fast; ++c) {
    if (cstart[c + 1] == cstart[c]) continue;
    // one component per call: seeds tied in value matter only within it; the
    // seeds were stored back to front, so reverse them to raster order
    uint32_t* seeds = pix.data() + ws.cback[c];
    const size_t nseeds = static_cast<size_t>(cstart[c + 1] - ws.cback[c]);
    std::reverse(seeds, seeds + nseeds);
    fast = watershed_fast_queued(ws.dist_p.data(), mask, lp, Hp, Wp, pix.data() + cstart[c],
                                 static_cast<size_t>(ws.cfront[c] - cstart[c]), seeds, nseeds);
  }
  if (!fast) {
    const uint8_t* fg = ws.fg.data();
    for (int64_t y = 0; y < H; ++y) {
      std::memcpy(mask + (y + 1) * Wp + 1, fg + y * W, static_cast<size_t>(W));
    }
    std::memset(lp, 0, static_cast<size_t>(Hp * Wp) * sizeof(int32_t));
    paint_markers(ws, W, min_object_size);
    watershed_exact(ws.dist_p.data(), mask, lp, Hp, Wp);
  }
  return fast;
}

// Stage "copy-out": the flooded labels (every component's after the fallback)
// into out; ws.lab_p is cleared where it was written, which leaves it all 0 for
// the next call.
void copy_out(Workspace& ws, bool fast, int64_t W, int32_t* out) {
  int32_t* lp = ws.lab_p.data();
  const int64_t Wp = W + 2;
  for (const FgRun& r : ws.runs) {
    if (fast && !ws.multi[r.comp]) continue;
    int32_t* lo = lp + (r.y + 1) * Wp + 1;
    const size_t bytes = static_cast<size_t>(r.x1 - r.x0) * sizeof(int32_t);
    std::memcpy(out + r.y * W + r.x0, lo + r.x0, bytes);
    std::memset(lo + r.x0, 0, bytes);
  }
  ws.lab_dirty = false;
}

}  // namespace

// SPEC §3a, one stage per function above (PP_STAGE marks them for the profile
// build of benchmarks/pp_stages/run.sh).
void instances_from_hv(const float* np, const float* h, const float* v, int64_t H, int64_t W,
                       const Params& p, int32_t* out) {
  validate_params(p);
  const int64_t n = H * W;
  if (n == 0) return;
  PP_T0;
  Workspace& ws = workspace();
  uint64_t* fgbits = threshold_stage(np, H, W, p.np_threshold, ws);
  PP_STAGE(0, "threshold");
  static const char* const kHvBad = "hv: expected finite values, got NaN or inf";
  if (remove_small4(ws.fg.data(), H, W, p.min_object_size, &ws.runs, &ws.ncomp, fgbits) == 0) {
    if (!all_finite_f32(h, n) || !all_finite_f32(v, n)) throw std::invalid_argument(kHvBad);
    std::fill(out, out + n, 0);
    return;
  }
  PP_STAGE(1, "small-objects");
  // Sobel of the min-max normalised maps (whole tile: their min / max matter),
  // the normalisation fused into the row pass and the min / max into the column pass.
  resize(ws.sh, n), resize(ws.sv, n);
  double lo_h[2], lo_v[2];
  if (!sobel_normalized_f64(h, H, W, 1, p.sobel_ksize, ws.sh.data(), lo_h) ||
      !sobel_normalized_f64(v, H, W, 0, p.sobel_ksize, ws.sv.data(), lo_v)) {
    throw std::invalid_argument(kHvBad);
  }
  PP_STAGE(2, "sobel");
  const bool marker_bits = energy_stage(lo_h, lo_v, H, W, p.marker_threshold, fgbits, ws);
  PP_STAGE(3, "energy");
  // Markers on bit rows: hole filling, opening, labels as runs (raster order).
  uint64_t* mb = ws.mbits.data();
  if (!marker_bits) pack_bits(ws.marker.data(), H, W, mb);
  fill_holes_bits(mb, H, W);
  PP_STAGE(4, "fill_holes");
  open_ellipse_bits(mb, H, W, p.opening_ksize);
  PP_STAGE(5, "open");
  const int32_t nlab = label4_runs_bits(mb, H, W, ws.mruns, ws.counts);
  PP_STAGE(6, "label");
  if (nlab == 0) {
    std::fill(out, out + n, 0);
    return;
  }
  split_components(ws, W, p.min_object_size);
  queue_components(ws, H, W, out);
  PP_STAGE(7, "ws-prep");
  const bool fast = flood_components(ws, H, W, p.min_object_size);
  PP_STAGE(8, "watershed");
  copy_out(ws, fast, W, out);
  PP_STAGE(9, "copy-out");
}

}  // namespace pp
}  // namespace hvx
