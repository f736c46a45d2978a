// Float filters of SPEC §3a, bit-exact with OpenCV (measured against cv2 5.0):
// - normalize NORM_MINMAX -> CV_32F: scale = (float)(1 / (max - min)) (0 when the
//   range is <= DBL_EPSILON), shift = 0.0f - (float)(min * scale); float32 input is
//   mapped with a float FMA, float64 input with a double FMA, then rounded to float.
// - Sobel(CV_64F): separable; the row pass sums taps k = 0..K-1 left to right
//   (products are exact in double, so FMA or not is the same); the column pass is
//   OpenCV's symmetric/antisymmetric column filter: centre tap first, then
//   ky[k] * (below + above) (or (below - above)) for k = 1..K/2, NO FMA.
// - GaussianBlur 3x3 (CV_64F): row 0.25a + 0.5b + 0.25c, column 0.5c + 0.25(d + u).
// Every pass vectorises along the row, which keeps each pixel's operation order.
#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "postprocess.hpp"

// OpenCV's column filter rounds ky[k] * (a +- b) before adding it: a fused
// multiply-add there changes the last bit. GCC contracts a * b + c by default in
// C++ when the target has FMA, so the x86 column pass is written with SSE2 / AVX2
// intrinsics and an empty asm barrier on the product; elsewhere contraction is
// switched off for this file.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__) && !(defined(__x86_64__) || defined(__i386__))
#pragma GCC optimize("fp-contract=off")
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HVX_X86_DISPATCH 1
// GCC 12 warns about the undefined-vector idiom inside its own AVX-512 headers.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define HVX_AVX2 __attribute__((target("avx2,fma")))
#define HVX_AVX512 __attribute__((target("avx512f,avx2,fma")))
#include <immintrin.h>
#else
#define HVX_X86_DISPATCH 0
#endif

#if defined(__GNUC__)
#define HVX_INLINE inline __attribute__((always_inline))
#else
#define HVX_INLINE inline
#endif

namespace hvx {
namespace pp {
namespace {

// The widest instruction set the kernels may use: 2 = AVX-512, 1 = AVX2 + FMA,
// 0 = plain (set_isa_limit lowers it, for the tests of each path).
std::atomic<int> g_isa_limit{2};

bool cpu_has_avx2_fma() {
#if HVX_X86_DISPATCH
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok && g_isa_limit.load(std::memory_order_relaxed) >= 1;
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if HVX_X86_DISPATCH
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __builtin_cpu_supports("avx512f");
  return ok && g_isa_limit.load(std::memory_order_relaxed) >= 2;
#else
  return false;
#endif
}

// OpenCV borderInterpolate for BORDER_REFLECT_101 (repeats until inside).
int64_t reflect101(int64_t p, int64_t n) {
  if (n == 1) return 0;
  while (p < 0 || p >= n) p = p < 0 ? -p : 2 * (n - 1) - p;
  return p;
}

template <typename T>
void minmax(const T* src, int64_t n, double& mn, double& mx) {
  T lo = src[0], hi = src[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = src[i] < lo ? src[i] : lo;
    hi = src[i] > hi ? src[i] : hi;
  }
  mn = static_cast<double>(lo);
  mx = static_cast<double>(hi);
}

// min / max of finite float32 values; false when any value is NaN or inf
// (x * 0 is 0 for finite x, NaN otherwise).
bool minmax_finite_plain(const float* s, int64_t n, double& mn, double& mx) {
  float lo = s[0], hi = s[0], z = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    lo = s[i] < lo ? s[i] : lo;
    hi = s[i] > hi ? s[i] : hi;
    z += s[i] * 0.0f;
  }
  mn = lo, mx = hi;
  return z == 0.0f;
}

#if HVX_X86_DISPATCH
HVX_AVX2 bool minmax_finite_avx2(const float* s, int64_t n, double& mn, double& mx) {
  if (n < 32) return minmax_finite_plain(s, n, mn, mx);
  // four independent accumulators each: the min / max / add latencies overlap
  __m256 lo[4], hi[4], z[4];
  const __m256 zero = _mm256_setzero_ps();
  for (int u = 0; u < 4; ++u) lo[u] = hi[u] = _mm256_loadu_ps(s), z[u] = zero;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int u = 0; u < 4; ++u) {
      const __m256 v = _mm256_loadu_ps(s + i + 8 * u);
      lo[u] = _mm256_min_ps(lo[u], v), hi[u] = _mm256_max_ps(hi[u], v);
      z[u] = _mm256_add_ps(z[u], _mm256_mul_ps(v, zero));
    }
  }
  alignas(32) float l[4][8], h[4][8], zz[4][8];
  for (int u = 0; u < 4; ++u) {
    _mm256_store_ps(l[u], lo[u]), _mm256_store_ps(h[u], hi[u]), _mm256_store_ps(zz[u], z[u]);
  }
  float a = l[0][0], b = h[0][0], zs = 0.0f;
  for (int u = 0; u < 4; ++u) {
    for (int k = 0; k < 8; ++k) a = std::min(a, l[u][k]), b = std::max(b, h[u][k]), zs += zz[u][k];
  }
  for (; i < n; ++i) a = std::min(a, s[i]), b = std::max(b, s[i]), zs += s[i] * 0.0f;
  mn = a, mx = b;
  return zs == 0.0f;
}
#endif

#if HVX_X86_DISPATCH
// NaN-free inputs (the caller checks), so vector min/max equals the scalar scan
// (a -0.0 / +0.0 choice cannot change scale or shift).
HVX_AVX2 void minmax_f32_avx2(const float* s, int64_t n, double& mn, double& mx) {
  if (n < 16) return minmax(s, n, mn, mx);
  __m256 lo = _mm256_loadu_ps(s), hi = lo;
  int64_t i = 8;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(s + i);
    lo = _mm256_min_ps(lo, v), hi = _mm256_max_ps(hi, v);
  }
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, lo), _mm256_store_ps(h, hi);
  float a = l[0], b = h[0];
  for (int k = 1; k < 8; ++k) a = std::min(a, l[k]), b = std::max(b, h[k]);
  for (; i < n; ++i) a = std::min(a, s[i]), b = std::max(b, s[i]);
  mn = a, mx = b;
}
HVX_AVX2 void minmax_f64_avx2(const double* s, int64_t n, double& mn, double& mx) {
  if (n < 8) return minmax(s, n, mn, mx);
  __m256d lo = _mm256_loadu_pd(s), hi = lo;
  int64_t i = 4;
  for (; i + 4 <= n; i += 4) {
    __m256d v = _mm256_loadu_pd(s + i);
    lo = _mm256_min_pd(lo, v), hi = _mm256_max_pd(hi, v);
  }
  alignas(32) double l[4], h[4];
  _mm256_store_pd(l, lo), _mm256_store_pd(h, hi);
  double a = l[0], b = h[0];
  for (int k = 1; k < 4; ++k) a = std::min(a, l[k]), b = std::max(b, h[k]);
  for (; i < n; ++i) a = std::min(a, s[i]), b = std::max(b, s[i]);
  mn = a, mx = b;
}
#endif

void scale_shift(double mn, double mx, double& scale, double& shift) {
  double s = mx - mn > DBL_EPSILON ? 1.0 / (mx - mn) : 0.0;
  scale = static_cast<float>(s);
  shift = 0.0f - static_cast<float>(mn * scale);
}

HVX_INLINE void norm32_body(const float* src, int64_t n, float a, float b, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = std::fma(src[i], a, b);
}
HVX_INLINE void norm64_body(const double* src, int64_t n, double a, double b, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(std::fma(src[i], a, b));
}

// Row pass: out[x] = sum_k k[k] * ext[x + k], k ascending.
HVX_INLINE void row_body(const double* ext, int64_t W, const double* k, int K, double* out) {
  for (int64_t x = 0; x < W; ++x) out[x] = k[0] * ext[x];
  for (int j = 1; j < K; ++j) {
    const double kj = k[j];
    const double* e = ext + j;
    for (int64_t x = 0; x < W; ++x) out[x] = out[x] + kj * e[x];
  }
}

// Column pass over row pointers rows[0..K-1] (rows[r] is the centre):
// out = k[r] * mid + 0.0, then out += k[r + j] * (dn_j +- up_j), j = 1..K/2.
HVX_INLINE void col_scalar(const double* const* rows, int64_t x0, int64_t W, const double* k,
                           int K, bool symm, double* out, double* lohi) {
  const int r = K / 2;
  for (int64_t x = x0; x < W; ++x) {
    double acc = symm ? k[r] * rows[r][x] + 0.0 : 0.0;
    for (int j = 1; j <= r; ++j) {
      double t = symm ? rows[r + j][x] + rows[r - j][x] : rows[r + j][x] - rows[r - j][x];
      double prod = k[r + j] * t;
#if HVX_X86_DISPATCH
      __asm__("" : "+x"(prod));
#endif
      acc = acc + prod;
    }
    out[x] = acc;
    lohi[0] = acc < lohi[0] ? acc : lohi[0];
    lohi[1] = acc > lohi[1] ? acc : lohi[1];
  }
}

#if HVX_X86_DISPATCH
void col_plain(const double* const* rows, int64_t W, const double* k, int K, bool symm,
               double* out, double* lohi) {
  const int r = K / 2;
  int64_t x = 0;
  for (; x + 2 <= W; x += 2) {
    __m128d acc = symm ? _mm_add_pd(_mm_mul_pd(_mm_set1_pd(k[r]), _mm_loadu_pd(rows[r] + x)),
                                    _mm_setzero_pd())
                       : _mm_setzero_pd();
    for (int j = 1; j <= r; ++j) {
      __m128d dn = _mm_loadu_pd(rows[r + j] + x), up = _mm_loadu_pd(rows[r - j] + x);
      __m128d t = symm ? _mm_add_pd(dn, up) : _mm_sub_pd(dn, up);
      __m128d prod = _mm_mul_pd(_mm_set1_pd(k[r + j]), t);
      __asm__("" : "+x"(prod));
      acc = _mm_add_pd(acc, prod);
    }
    _mm_storeu_pd(out + x, acc);
    double t[2];
    _mm_storeu_pd(t, acc);
    for (double v : t) lohi[0] = v < lohi[0] ? v : lohi[0], lohi[1] = v > lohi[1] ? v : lohi[1];
  }
  col_scalar(rows, x, W, k, K, symm, out, lohi);
}

// Four independent accumulators (16 columns) hide the add latency.
HVX_AVX2 void col_avx2(const double* const* rows, int64_t W, const double* k, int K, bool symm,
                       double* out, double* lohi) {
  const int r = K / 2;
  __m256d lo = _mm256_set1_pd(lohi[0]), hi = _mm256_set1_pd(lohi[1]);
  int64_t x = 0;
  for (; x + 16 <= W; x += 16) {
    __m256d acc[4];
    for (int u = 0; u < 4; ++u) {
      acc[u] = symm ? _mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(k[r]),
                                                  _mm256_loadu_pd(rows[r] + x + 4 * u)),
                                    _mm256_setzero_pd())
                    : _mm256_setzero_pd();
    }
    for (int j = 1; j <= r; ++j) {
      const __m256d kj = _mm256_set1_pd(k[r + j]);
      const double* dn = rows[r + j] + x;
      const double* up = rows[r - j] + x;
      for (int u = 0; u < 4; ++u) {
        __m256d a = _mm256_loadu_pd(dn + 4 * u), b = _mm256_loadu_pd(up + 4 * u);
        __m256d prod = _mm256_mul_pd(kj, symm ? _mm256_add_pd(a, b) : _mm256_sub_pd(a, b));
        __asm__("" : "+x"(prod));
        acc[u] = _mm256_add_pd(acc[u], prod);
      }
    }
    for (int u = 0; u < 4; ++u) {
      _mm256_storeu_pd(out + x + 4 * u, acc[u]);
      lo = _mm256_min_pd(lo, acc[u]), hi = _mm256_max_pd(hi, acc[u]);
    }
  }
  for (; x + 4 <= W; x += 4) {
    __m256d acc = symm ? _mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(k[r]),
                                                     _mm256_loadu_pd(rows[r] + x)),
                                       _mm256_setzero_pd())
                       : _mm256_setzero_pd();
    for (int j = 1; j <= r; ++j) {
      __m256d dn = _mm256_loadu_pd(rows[r + j] + x), up = _mm256_loadu_pd(rows[r - j] + x);
      __m256d t = symm ? _mm256_add_pd(dn, up) : _mm256_sub_pd(dn, up);
      __m256d prod = _mm256_mul_pd(_mm256_set1_pd(k[r + j]), t);
      __asm__("" : "+x"(prod));
      acc = _mm256_add_pd(acc, prod);
    }
    _mm256_storeu_pd(out + x, acc);
    lo = _mm256_min_pd(lo, acc), hi = _mm256_max_pd(hi, acc);
  }
  alignas(32) double l[4], h[4];
  _mm256_store_pd(l, lo), _mm256_store_pd(h, hi);
  for (int u = 0; u < 4; ++u) {
    lohi[0] = l[u] < lohi[0] ? l[u] : lohi[0];
    lohi[1] = h[u] > lohi[1] ? h[u] : lohi[1];
  }
  col_scalar(rows, x, W, k, K, symm, out, lohi);
}

// The same with 8 doubles per vector (32 columns per step).
HVX_AVX512 void col_avx512(const double* const* rows, int64_t W, const double* k, int K,
                           bool symm, double* out, double* lohi) {
  const int r = K / 2;
  __m512d lo = _mm512_set1_pd(lohi[0]), hi = _mm512_set1_pd(lohi[1]);
  int64_t x = 0;
  for (; x + 32 <= W; x += 32) {
    __m512d acc[4];
    for (int u = 0; u < 4; ++u) {
      acc[u] = symm ? _mm512_add_pd(_mm512_mul_pd(_mm512_set1_pd(k[r]),
                                                  _mm512_loadu_pd(rows[r] + x + 8 * u)),
                                    _mm512_setzero_pd())
                    : _mm512_setzero_pd();
    }
    for (int j = 1; j <= r; ++j) {
      const __m512d kj = _mm512_set1_pd(k[r + j]);
      const double* dn = rows[r + j] + x;
      const double* up = rows[r - j] + x;
      for (int u = 0; u < 4; ++u) {
        __m512d a = _mm512_loadu_pd(dn + 8 * u), b = _mm512_loadu_pd(up + 8 * u);
        __m512d prod = _mm512_mul_pd(kj, symm ? _mm512_add_pd(a, b) : _mm512_sub_pd(a, b));
        __asm__("" : "+v"(prod));
        acc[u] = _mm512_add_pd(acc[u], prod);
      }
    }
    for (int u = 0; u < 4; ++u) {
      _mm512_storeu_pd(out + x + 8 * u, acc[u]);
      lo = _mm512_min_pd(lo, acc[u]), hi = _mm512_max_pd(hi, acc[u]);
    }
  }
  for (; x + 8 <= W; x += 8) {
    __m512d acc = symm ? _mm512_add_pd(_mm512_mul_pd(_mm512_set1_pd(k[r]),
                                                     _mm512_loadu_pd(rows[r] + x)),
                                       _mm512_setzero_pd())
                       : _mm512_setzero_pd();
    for (int j = 1; j <= r; ++j) {
      __m512d dn = _mm512_loadu_pd(rows[r + j] + x), up = _mm512_loadu_pd(rows[r - j] + x);
      __m512d t = symm ? _mm512_add_pd(dn, up) : _mm512_sub_pd(dn, up);
      __m512d prod = _mm512_mul_pd(_mm512_set1_pd(k[r + j]), t);
      __asm__("" : "+v"(prod));
      acc = _mm512_add_pd(acc, prod);
    }
    _mm512_storeu_pd(out + x, acc);
    lo = _mm512_min_pd(lo, acc), hi = _mm512_max_pd(hi, acc);
  }
  alignas(64) double l[8], h[8];
  _mm512_store_pd(l, lo), _mm512_store_pd(h, hi);
  for (int u = 0; u < 8; ++u) {
    lohi[0] = l[u] < lohi[0] ? l[u] : lohi[0];
    lohi[1] = h[u] > lohi[1] ? h[u] : lohi[1];
  }
  col_scalar(rows, x, W, k, K, symm, out, lohi);
}
#else
void col_plain(const double* const* rows, int64_t W, const double* k, int K, bool symm,
               double* out, double* lohi) {
  col_scalar(rows, 0, W, k, K, symm, out, lohi);
}
#endif

#if HVX_X86_DISPATCH
HVX_AVX2 void norm32_avx2(const float* s, int64_t n, float a, float b, float* d) {
  norm32_body(s, n, a, b, d);
}
HVX_AVX2 void norm64_avx2(const double* s, int64_t n, double a, double b, float* d) {
  norm64_body(s, n, a, b, d);
}
// 32 outputs per step in eight independent accumulators (hides the FMA
// latency); the products are exact in double, so the FMA rounds exactly like
// OpenCV's multiply-then-add.
HVX_AVX2 void row_avx2(const double* e, int64_t W, const double* k, int K, double* o) {
  int64_t x = 0;
  for (; x + 32 <= W; x += 32) {
    const __m256d k0 = _mm256_set1_pd(k[0]);
    __m256d a[8];
    for (int u = 0; u < 8; ++u) a[u] = _mm256_mul_pd(k0, _mm256_loadu_pd(e + x + 4 * u));
    for (int j = 1; j < K; ++j) {
      const __m256d kj = _mm256_set1_pd(k[j]);
      const double* ej = e + x + j;
      for (int u = 0; u < 8; ++u) a[u] = _mm256_fmadd_pd(kj, _mm256_loadu_pd(ej + 4 * u), a[u]);
    }
    for (int u = 0; u < 8; ++u) _mm256_storeu_pd(o + x + 4 * u, a[u]);
  }
  for (; x + 4 <= W; x += 4) {
    __m256d a0 = _mm256_mul_pd(_mm256_set1_pd(k[0]), _mm256_loadu_pd(e + x));
    for (int j = 1; j < K; ++j)
      a0 = _mm256_fmadd_pd(_mm256_set1_pd(k[j]), _mm256_loadu_pd(e + x + j), a0);
    _mm256_storeu_pd(o + x, a0);
  }
  if (x < W) row_body(e + x, W - x, k, K, o + x);
}
HVX_AVX512 void row_avx512(const double* e, int64_t W, const double* k, int K, double* o) {
  int64_t x = 0;
  for (; x + 64 <= W; x += 64) {
    const __m512d k0 = _mm512_set1_pd(k[0]);
    __m512d a[8];
    for (int u = 0; u < 8; ++u) a[u] = _mm512_mul_pd(k0, _mm512_loadu_pd(e + x + 8 * u));
    for (int j = 1; j < K; ++j) {
      const __m512d kj = _mm512_set1_pd(k[j]);
      const double* ej = e + x + j;
      for (int u = 0; u < 8; ++u) a[u] = _mm512_fmadd_pd(kj, _mm512_loadu_pd(ej + 8 * u), a[u]);
    }
    for (int u = 0; u < 8; ++u) _mm512_storeu_pd(o + x + 8 * u, a[u]);
  }
  for (; x + 8 <= W; x += 8) {
    __m512d a0 = _mm512_mul_pd(_mm512_set1_pd(k[0]), _mm512_loadu_pd(e + x));
    for (int j = 1; j < K; ++j)
      a0 = _mm512_fmadd_pd(_mm512_set1_pd(k[j]), _mm512_loadu_pd(e + x + j), a0);
    _mm512_storeu_pd(o + x, a0);
  }
  if (x < W) row_avx2(e + x, W - x, k, K, o + x);
}

// Tap J of output vector u in a block: e[x + 8u + J .. + 8) from the aligned
// vectors V (V[i] = e[x + 8i .. + 8)), one valignq instead of an unaligned load
// (which splits a cache line for 7 of 8 offsets and bounds the loop).
template <int J>
HVX_AVX512 HVX_INLINE __m512d row_tap(const __m512d* V, int u) {
  constexpr int q = J / 8, s = J % 8;
  if constexpr (s == 0) {
    return V[u + q];
  } else {
    return _mm512_castsi512_pd(_mm512_alignr_epi64(_mm512_castpd_si512(V[u + q + 1]),
                                                   _mm512_castpd_si512(V[u + q]), s));
  }
}
template <int J, int K>
HVX_AVX512 HVX_INLINE void row_taps(const __m512d* V, const double* k, __m512d* a) {
  if constexpr (J < K) {
    const __m512d kj = _mm512_set1_pd(k[J]);
    for (int u = 0; u < 8; ++u) a[u] = _mm512_fmadd_pd(kj, row_tap<J>(V, u), a[u]);
    row_taps<J + 1, K>(V, k, a);
  }
}
// The row pass for K taps known at compile time, 64 outputs per step from
// aligned loads of e (64-byte aligned, readable up to x + 64 + K + 7 for every
// full step). Same operations in the same order as row_avx512.
template <int K>
HVX_AVX512 void row_avx512_k(const double* e, int64_t W, const double* k, double* o) {
  constexpr int NV = (64 + K - 1 + 7) / 8;
  int64_t x = 0;
  for (; x + 64 <= W; x += 64) {
    __m512d V[NV];
    for (int i = 0; i < NV; ++i) V[i] = _mm512_load_pd(e + x + 8 * i);
    const __m512d k0 = _mm512_set1_pd(k[0]);
    __m512d a[8];
    for (int u = 0; u < 8; ++u) a[u] = _mm512_mul_pd(k0, V[u]);
    row_taps<1, K>(V, k, a);
    for (int u = 0; u < 8; ++u) _mm512_storeu_pd(o + x + 8 * u, a[u]);
  }
  if (x < W) row_avx512(e + x, W - x, k, K, o + x);
}
#endif
void norm32_plain(const float* s, int64_t n, float a, float b, float* d) {
  norm32_body(s, n, a, b, d);
}
void norm64_plain(const double* s, int64_t n, double a, double b, float* d) {
  norm64_body(s, n, a, b, d);
}
void row_plain(const double* e, int64_t W, const double* k, int K, double* o) {
  row_body(e, W, k, K, o);
}

// One strip of the column pass for output rows [y0, y1): row y's taps are
// rows base + yoff[y + j] (j = 0 .. K - 1); out rows have stride ostride.
struct ColBand {
  const double* base;
  const int64_t* yoff;
  int64_t y0, y1, x0, w, ostride;
  const double* k;
  int K;
  bool symm;
  double* out;
};
#define HVX_COL_BAND_BODY(FN)                                                     \
  const double* rows[32];                                                         \
  for (int64_t y = b.y0; y < b.y1; ++y) {                                         \
    for (int j = 0; j < b.K; ++j) rows[j] = b.base + b.yoff[y + j] + b.x0;        \
    FN(rows, b.w, b.k, b.K, b.symm, b.out + y * b.ostride + b.x0, lohi);          \
  }
#if HVX_X86_DISPATCH
// NR output rows at once (K taps known at compile time): rows P[0 .. K + NR - 1)
// of the ring, output row t reads P[t .. t + K), so each ring row is loaded
// once for all NR rows (K + NR - 1 loads per column vector instead of NR * K).
// Each output gets col_avx512's operations in its order.
template <int K, bool SYMM, int NR, int U>
HVX_AVX512 HVX_INLINE void colr_step(const double* const* P, int64_t x, const double* k,
                                     double* const* o, __m512d& lo, __m512d& hi) {
  constexpr int r = K / 2;
  __m512d a[NR][U];
  for (int t = 0; t < NR; ++t) {
    for (int u = 0; u < U; ++u) {
      if constexpr (SYMM) {
        a[t][u] = _mm512_add_pd(
            _mm512_mul_pd(_mm512_set1_pd(k[r]), _mm512_loadu_pd(P[r + t] + x + 8 * u)),
            _mm512_setzero_pd());
      } else {
        a[t][u] = _mm512_setzero_pd();
      }
    }
  }
  for (int j = 1; j <= r; ++j) {
    const __m512d kj = _mm512_set1_pd(k[r + j]);
    for (int t = 0; t < NR; ++t) {
      for (int u = 0; u < U; ++u) {
        const __m512d dn = _mm512_loadu_pd(P[r + t + j] + x + 8 * u);
        const __m512d up = _mm512_loadu_pd(P[r + t - j] + x + 8 * u);
        __m512d pr = _mm512_mul_pd(kj, SYMM ? _mm512_add_pd(dn, up) : _mm512_sub_pd(dn, up));
        __asm__("" : "+v"(pr));
        a[t][u] = _mm512_add_pd(a[t][u], pr);
      }
    }
  }
  for (int t = 0; t < NR; ++t) {
    for (int u = 0; u < U; ++u) {
      _mm512_storeu_pd(o[t] + x + 8 * u, a[t][u]);
      lo = _mm512_min_pd(lo, a[t][u]), hi = _mm512_max_pd(hi, a[t][u]);
    }
  }
}
template <int K, bool SYMM, int NR, int U>
HVX_AVX512 void col_bandr_avx512(const ColBand& b, double* lohi) {
  const double* P[K + NR - 1];
  double* o[NR];
  __m512d lo = _mm512_set1_pd(lohi[0]), hi = _mm512_set1_pd(lohi[1]);
  int64_t y = b.y0;
  for (; y + NR <= b.y1; y += NR) {
    for (int t = 0; t < K + NR - 1; ++t) P[t] = b.base + b.yoff[y + t] + b.x0;
    for (int t = 0; t < NR; ++t) o[t] = b.out + (y + t) * b.ostride + b.x0;
    int64_t x = 0;
    for (; x + 8 * U <= b.w; x += 8 * U) colr_step<K, SYMM, NR, U>(P, x, b.k, o, lo, hi);
    if (x < b.w) {  // the last columns, one row at a time
      const double* Q[K + NR - 1];
      for (int t = 0; t < K + NR - 1; ++t) Q[t] = P[t] + x;
      for (int t = 0; t < NR; ++t) col_avx512(Q + t, b.w - x, b.k, K, SYMM, o[t] + x, lohi);
    }
  }
  alignas(64) double l[8], h[8];
  _mm512_store_pd(l, lo), _mm512_store_pd(h, hi);
  for (int u = 0; u < 8; ++u) {
    lohi[0] = l[u] < lohi[0] ? l[u] : lohi[0];
    lohi[1] = h[u] > lohi[1] ? h[u] : lohi[1];
  }
  const double* rows[32];
  for (; y < b.y1; ++y) {
    for (int j = 0; j < K; ++j) rows[j] = b.base + b.yoff[y + j] + b.x0;
    col_avx512(rows, b.w, b.k, K, SYMM, b.out + y * b.ostride + b.x0, lohi);
  }
}
HVX_AVX512 void col_band_avx512(const ColBand& b, double* lohi) {
  if (b.K == 21) {
    // 4 rows x 16 columns per step, 8 accumulator chains: the Sobel pair 10%
    // faster than one row at a time; 2 x 16, 3 x 16, 4 x 8, 6 x 8 and 8 x 8
    // were 1-12% slower than 4 x 16 (session 8)
    return b.symm ? col_bandr_avx512<21, true, 4, 2>(b, lohi)
                  : col_bandr_avx512<21, false, 4, 2>(b, lohi);
  }
  HVX_COL_BAND_BODY(col_avx512)
}
HVX_AVX2 void col_band_avx2(const ColBand& b, double* lohi) { HVX_COL_BAND_BODY(col_avx2) }
#endif
void col_band_plain(const ColBand& b, double* lohi) { HVX_COL_BAND_BODY(col_plain) }
#undef HVX_COL_BAND_BODY

// ext[0 .. W + 2r) = source row (normalised when norm) as doubles, reflected
// by xmap at both ends: one pass instead of normalise-then-convert.
HVX_INLINE void ext_body(const float* s, int64_t W, const float* norm, const int64_t* xmap,
                         int r, double* e) {
  if (norm) {
    const float a = norm[0], b = norm[1];
    for (int64_t x = 0; x < W; ++x) e[x + r] = static_cast<double>(std::fma(s[x], a, b));
  } else {
    for (int64_t x = 0; x < W; ++x) e[x + r] = static_cast<double>(s[x]);
  }
  for (int64_t x = 0; x < r; ++x) e[x] = e[xmap[x] + r];
  for (int64_t x = W + r; x < W + 2 * r; ++x) e[x] = e[xmap[x] + r];
}
#if HVX_X86_DISPATCH
HVX_AVX512 void ext_avx512(const float* s, int64_t W, const float* n, const int64_t* xm, int r,
                           double* e) {
  ext_body(s, W, n, xm, r, e);
}
HVX_AVX2 void ext_avx2(const float* s, int64_t W, const float* n, const int64_t* xm, int r,
                       double* e) {
  ext_body(s, W, n, xm, r, e);
}
#endif
void ext_plain(const float* s, int64_t W, const float* n, const int64_t* xm, int r, double* e) {
  ext_body(s, W, n, xm, r, e);
}

void row_pass(const double* e, int64_t W, const double* k, int K, double* o) {
#if HVX_X86_DISPATCH
  if (cpu_has_avx512()) {
    // e is 64-byte aligned with kExtPad readable doubles past its end
    if (K == 21) return row_avx512_k<21>(e, W, k, o);
    return row_avx512(e, W, k, K, o);
  }
  if (cpu_has_avx2_fma()) return row_avx2(e, W, k, K, o);
#endif
  row_plain(e, W, k, K, o);
}
void col_band(const ColBand& b, double* lohi) {
#if HVX_X86_DISPATCH
  if (cpu_has_avx512()) return col_band_avx512(b, lohi);
  if (cpu_has_avx2_fma()) return col_band_avx2(b, lohi);
#endif
  col_band_plain(b, lohi);
}
void load_ext(const float* s, int64_t W, const float* n, const int64_t* xm, int r, double* e) {
#if HVX_X86_DISPATCH
  if (cpu_has_avx512()) return ext_avx512(s, W, n, xm, r, e);
  if (cpu_has_avx2_fma()) return ext_avx2(s, W, n, xm, r, e);
#endif
  ext_plain(s, W, n, xm, r, e);
}

// OpenCV's Sobel taps: smoothing C(K-1, k); first derivative C(K-2, k-1) - C(K-2, k).
void sobel_taps(int K, bool deriv, std::vector<double>& k) {
  std::vector<double> b(K, 0.0);
  int n = deriv ? K - 1 : K;
  b[0] = 1.0;
  for (int i = 1; i < n; ++i)
    for (int j = i; j > 0; --j) b[j] += b[j - 1];
  k.assign(K, 0.0);
  for (int j = 0; j < K; ++j) {
    if (!deriv) {
      k[j] = b[j];
    } else {
      double lo = j >= 1 && j - 1 < n ? b[j - 1] : 0.0;
      double hi = j < n ? b[j] : 0.0;
      k[j] = lo - hi;
    }
  }
}

// Doubles the row pass may read past the end of ext (whole aligned vectors).
constexpr int64_t kExtPad = 16;
double* align64(double* p) {
  return reinterpret_cast<double*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63});
}

struct SepScratch {
  std::vector<double> ring, ext;
  std::vector<int64_t> xmap, ymap;
};
HVX_NOINLINE SepScratch& sep_scratch() {
  static thread_local SepScratch s;
  return s;
}

// Separable correlation of float32 src with row taps kx, column taps ky (OpenCV
// order). Rows are filtered in bands of kBand output rows into a ring of
// kBand + K - 1 row-pass rows (about 180 KB at 256 columns: it stays in L2
// between the row and the column pass, and no row is filtered twice); the
// column pass runs in strips of 128 columns so the rows it reads stay in L1
// (K + 3 = 24 rows x 1 KB for the four-row kernel; 64 and 256 columns measured
// 1-2% slower, 32 columns 9%).
// With `norm`, each source row is first mapped by fma(src, norm[0], norm[1]) in
// float (OpenCV's min-max normalisation); lohi receives the output's min and max.
void sep_filter(const float* src, int64_t H, int64_t W, const std::vector<double>& kx,
                const std::vector<double>& ky, bool ysymm, double* dst, const float* norm,
                double* lohi) {
  const int K = static_cast<int>(kx.size());
  const int r = K / 2;
  const int64_t kBand = 64;
  const int64_t C = kBand + 2 * r;  // ring rows: every source row a band needs
  SepScratch& sc = sep_scratch();
  std::vector<double>& ring = sc.ring;
  std::vector<double>& ext = sc.ext;
  std::vector<int64_t>& xmap = sc.xmap;
  std::vector<int64_t>& ymap = sc.ymap;
  // Row stride of an odd number of cache lines: with a power-of-two stride the K
  // rows the column pass reads would share a few L1 sets and evict each other.
  int64_t Ws = (W + 7) / 8 * 8;
  if ((Ws / 8) % 2 == 0) Ws += 8;
  // 64-byte aligned views (8 spare doubles each): the column pass reads whole
  // cache lines, and the row pass reads ext with aligned loads up to kExtPad
  // doubles past its end
  if (ring.size() < static_cast<size_t>(C * Ws + 8)) ring.resize(static_cast<size_t>(C * Ws + 8));
  ext.resize(static_cast<size_t>(W + 2 * r + kExtPad + 8));
  xmap.resize(static_cast<size_t>(W + 2 * r));
  ymap.resize(static_cast<size_t>(H + 2 * r));
  for (int64_t x = -r; x < W + r; ++x) xmap[x + r] = reflect101(x, W);
  // ymap: the ring row of (padded) row y + r: its source row's slot
  for (int64_t y = -r; y < H + r; ++y) ymap[y + r] = reflect101(y, H) % C * Ws;
  double* rb = align64(ring.data());
  double* eb = align64(ext.data());
  auto filter_row = [&](int64_t y) {
    load_ext(src + y * W, W, norm, xmap.data(), r, eb);
    row_pass(eb, W, kx.data(), K, rb + y % C * Ws);
  };
  const int64_t strip = 128;
  double mm[2] = {HUGE_VAL, -HUGE_VAL};
  int64_t done = 0;  // source rows [0, done) have been filtered
  for (int64_t y0 = 0; y0 < H; y0 += kBand) {
    const int64_t y1 = std::min(H, y0 + kBand);
    // this band reads source rows [max(0, y0 - r), min(H, y1 + r)); those below
    // were filtered for the band before and are still in the ring (C rows)
    const int64_t need = std::min(H, y1 + r);
    for (; done < need; ++done) filter_row(done);
    for (int64_t x0 = 0; x0 < W; x0 += strip) {
      const ColBand b{rb, ymap.data(), y0, y1, x0, std::min(strip, W - x0), W,
                      ky.data(), K, ysymm, dst};
      col_band(b, mm);
    }
  }
  if (lohi) lohi[0] = mm[0], lohi[1] = mm[1];
}

}  // namespace

void normalize_minmax_f32(const float* src, int64_t n, float* dst) {
  if (n <= 0) return;
  double mn, mx, a, b;
#if HVX_X86_DISPATCH
  if (cpu_has_avx2_fma()) {
    minmax_f32_avx2(src, n, mn, mx);
    scale_shift(mn, mx, a, b);
    return norm32_avx2(src, n, (float)a, (float)b, dst);
  }
#endif
  minmax(src, n, mn, mx);
  scale_shift(mn, mx, a, b);
  norm32_plain(src, n, static_cast<float>(a), static_cast<float>(b), dst);
}

void normalize_minmax_f64(const double* src, int64_t n, float* dst) {
  if (n <= 0) return;
  double mn, mx, a, b;
#if HVX_X86_DISPATCH
  if (cpu_has_avx2_fma()) {
    minmax_f64_avx2(src, n, mn, mx);
    scale_shift(mn, mx, a, b);
    return norm64_avx2(src, n, a, b, dst);
  }
#endif
  minmax(src, n, mn, mx);
  scale_shift(mn, mx, a, b);
  norm64_plain(src, n, a, b, dst);
}

namespace {
void sobel_impl(const float* src, int64_t H, int64_t W, int dx, int ksize, double* dst,
                const float* norm, double* lohi) {
  if (ksize < 3 || ksize > 31 || ksize % 2 == 0) {
    throw std::invalid_argument("sobel: expected odd ksize in [3, 31], got " +
                                std::to_string(ksize));
  }
  static thread_local std::vector<double> kd, ks;
  static thread_local int taps_for = 0;
  if (taps_for != ksize) {
    sobel_taps(ksize, true, kd);
    sobel_taps(ksize, false, ks);
    taps_for = ksize;
  }
  if (dx) {
    sep_filter(src, H, W, kd, ks, true, dst, norm, lohi);
  } else {
    sep_filter(src, H, W, ks, kd, false, dst, norm, lohi);
  }
}
}  // namespace

void sobel_f64(const float* src, int64_t H, int64_t W, int dx, int ksize, double* dst) {
  sobel_impl(src, H, W, dx, ksize, dst, nullptr, nullptr);
}

bool sobel_normalized_f64(const float* src, int64_t H, int64_t W, int dx, int ksize,
                          double* dst, double* lohi) {
  if (H * W <= 0) return true;
  double mn, mx, a, b;
#if HVX_X86_DISPATCH
  const bool finite = cpu_has_avx2_fma() ? minmax_finite_avx2(src, H * W, mn, mx)
                                         : minmax_finite_plain(src, H * W, mn, mx);
#else
  const bool finite = minmax_finite_plain(src, H * W, mn, mx);
#endif
  if (!finite) return false;
  scale_shift(mn, mx, a, b);
  const float norm[2] = {static_cast<float>(a), static_cast<float>(b)};
  sobel_impl(src, H, W, dx, ksize, dst, norm, lohi);
  return true;
}

bool all_finite_f32(const float* src, int64_t n) {
  if (n <= 0) return true;
  double mn, mx;
#if HVX_X86_DISPATCH
  if (cpu_has_avx2_fma()) return minmax_finite_avx2(src, n, mn, mx);
#endif
  return minmax_finite_plain(src, n, mn, mx);
}

int set_isa_limit(int level) {
  const int old = g_isa_limit.load();
  g_isa_limit.store(level < 0 ? 0 : (level > 2 ? 2 : level));
  return old;
}

int isa_level() { return cpu_has_avx512() ? 2 : (cpu_has_avx2_fma() ? 1 : 0); }

void minmax_scale_shift(double mn, double mx, double* scale, double* shift) {
  scale_shift(mn, mx, *scale, *shift);
}

void gaussian3_f64(const double* src, int64_t H, int64_t W, double* dst) {
  std::vector<double> rowbuf(static_cast<size_t>(H * W));
  for (int64_t y = 0; y < H; ++y) {
    const double* s = src + y * W;
    double* o = rowbuf.data() + y * W;
    for (int64_t x = 0; x < W; ++x) {
      double a = s[reflect101(x - 1, W)], c = s[reflect101(x + 1, W)];
      o[x] = 0.25 * a + 0.5 * s[x] + 0.25 * c;
    }
  }
  for (int64_t y = 0; y < H; ++y) {
    const double* up = rowbuf.data() + reflect101(y - 1, H) * W;
    const double* mid = rowbuf.data() + y * W;
    const double* dn = rowbuf.data() + reflect101(y + 1, H) * W;
    double* o = dst + y * W;
    for (int64_t x = 0; x < W; ++x) o[x] = (0.5 * mid[x] + 0.0) + 0.25 * (dn[x] + up[x]);
  }
}

}  // namespace pp
}  // namespace hvx
