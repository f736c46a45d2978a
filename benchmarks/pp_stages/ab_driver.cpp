// In-process A/B of two builds of hvx::pp::instances_from_hv (development tool).
// benchmarks/pp_stages/ab.sh compiles each source tree under its own namespace
// (-Dhvx=hvxA / -Dhvx=hvxB) and links both here. Every round times each tile
// with A and with B back to back (the order alternating by tile and round), so
// a slow spell of the shared host lands on both sides of the ratio.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "inputs.hpp"

#define HVX_AB_DECLARE(NS)                                                                  \
  namespace NS {                                                                            \
  namespace pp {                                                                            \
  struct Params {                                                                           \
    float np_threshold = 0.5f;                                                              \
    int64_t min_object_size = 10;                                                           \
    int sobel_ksize = 21;                                                                   \
    double marker_threshold = 0.4;                                                          \
    int opening_ksize = 5;                                                                  \
    int gaussian_ksize = 3;                                                                 \
  };                                                                                        \
  void instances_from_hv(const float*, const float*, const float*, int64_t, int64_t,       \
                         const Params&, int32_t*);                                          \
  }                                                                                         \
  }
HVX_AB_DECLARE(hvxA)
HVX_AB_DECLARE(hvxB)

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: ab_driver DIR N H W ROUNDS\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int N = std::atoi(argv[2]), H = std::atoi(argv[3]), W = std::atoi(argv[4]);
  const int R = std::atoi(argv[5]);
  const size_t n = static_cast<size_t>(H) * W;
  Inputs in;
  if (!read_inputs(dir, N, H, W, in)) return 2;
  const std::vector<float>& np = in.np;
  const std::vector<float>& hv = in.hv;
  const std::vector<int32_t>& ref = in.ref;
  std::vector<int32_t> oa(N * n), ob(N * n);
  const hvxA::pp::Params pa;
  const hvxB::pp::Params pb;
  auto run = [&](bool a, int i) {
    const float* h = hv.data() + i * 2 * n;
    if (a) {
      hvxA::pp::instances_from_hv(np.data() + i * n, h, h + n, H, W, pa, oa.data() + i * n);
    } else {
      hvxB::pp::instances_from_hv(np.data() + i * n, h, h + n, H, W, pb, ob.data() + i * n);
    }
  };
  for (int i = 0; i < N; ++i) run(true, i), run(false, i);
  long da = 0, db = 0;
  for (size_t i = 0; i < ref.size(); ++i) da += oa[i] != ref[i], db += ob[i] != ref[i];
  std::printf("pixels differing from the reference: A %ld, B %ld\n", da, db);
  std::vector<double> ta, tb, ratio;
  double log_sum = 0.0;
  for (int r = 0; r < R; ++r) {
    double xa = 0.0, xb = 0.0;
    for (int i = 0; i < N; ++i) {
      for (int s = 0; s < 2; ++s) {
        const bool a = ((r + i + s) & 1) == 0;
        const double c0 = cpu_ms();
        run(a, i);
        (a ? xa : xb) += cpu_ms() - c0;
      }
    }
    ta.push_back(xa / N), tb.push_back(xb / N), ratio.push_back(xb / xa);
    log_sum += std::log(xb / xa);
  }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  std::sort(ratio.begin(), ratio.end());
  std::printf("CPU ms per tile, median: A %.3f, B %.3f\n", ta[R / 2], tb[R / 2]);
  std::printf("B/A per-tile paired: median %.3f (p25 %.3f, p75 %.3f), geometric mean %.3f, %d rounds\n",
              ratio[R / 2], ratio[R / 4], ratio[3 * R / 4], std::exp(log_sum / R), R);
  return da || db ? 1 : 0;
}
