// Per-stage CPU time of hvx::pp::instances_from_hv (development tool).
// Built with -DHVX_PP_PROFILE by benchmarks/pp_stages/run.sh, which also writes
// the inputs (N tiles of H x W float32 np_prob, then hv) and the reference maps.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <cstring>
#include <vector>

#include "inputs.hpp"
#include "postprocess.hpp"

namespace hvx {
namespace pp {
extern double g_stage[16];
extern const char* g_stage_name[16];
}  // namespace pp
}  // namespace hvx

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: driver DIR N H W ROUNDS\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int N = std::atoi(argv[2]), H = std::atoi(argv[3]), W = std::atoi(argv[4]);
  const int R = std::atoi(argv[5]);
  const size_t n = static_cast<size_t>(H) * W;
  Inputs in;
  if (!read_inputs(dir, N, H, W, in)) return 2;
  const std::vector<float>& a = in.np;
  const std::vector<float>& hv = in.hv;
  const std::vector<int32_t>& ref = in.ref;
  std::vector<int32_t> out(N * n);
  hvx::pp::Params p;
  auto all = [&]() {
    for (int i = 0; i < N; ++i) {
      const float* h = hv.data() + i * 2 * n;
      hvx::pp::instances_from_hv(a.data() + i * n, h, h + n, H, W, p, out.data() + i * n);
    }
  };
  all();
  long bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) bad += out[i] != ref[i];
  std::printf("pixels differing from the reference: %ld\n", bad);
  std::memset(hvx::pp::g_stage, 0, sizeof(hvx::pp::g_stage));
  std::vector<double> ts;
  for (int r = 0; r < R; ++r) {
    const double c = cpu_ms();
    all();
    ts.push_back((cpu_ms() - c) / N);
  }
  std::sort(ts.begin(), ts.end());
  std::printf("per tile: median %.3f ms, min %.3f ms (CPU time, %d rounds)\n", ts[R / 2], ts[0], R);
  for (int s = 0; s < 16; ++s) {
    if (hvx::pp::g_stage_name[s]) {
      std::printf("  %-12s %.3f ms\n", hvx::pp::g_stage_name[s], hvx::pp::g_stage[s] / (R * N));
    }
  }
  return bad != 0;
}
