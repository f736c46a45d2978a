// Per-stage CPU time of hvx::pp::instances_from_hv (development tool).
// Built with -DHVX_PP_PROFILE by benchmarks/pp_stages/run.sh, which also writes
// the inputs (N tiles of H x W float32 np_prob, then hv) and the reference maps.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <cstring>
#include <vector>

#include "postprocess.hpp"

namespace hvx {
namespace pp {
extern double g_stage[16];
extern const char* g_stage_name[16];
}  // namespace pp
}  // namespace hvx

static double cpu_ms() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static bool read_all(const char* path, void* dst, size_t bytes) {
  FILE* f = std::fopen(path, "rb");
  if (!f) return false;
  const size_t got = std::fread(dst, 1, bytes, f);
  std::fclose(f);
  return got == bytes;
}

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: driver DIR N H W ROUNDS\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int N = std::atoi(argv[2]), H = std::atoi(argv[3]), W = std::atoi(argv[4]);
  const int R = std::atoi(argv[5]);
  const size_t n = static_cast<size_t>(H) * W;
  std::vector<float> a(N * n), hv(N * 2 * n);
  std::vector<int32_t> ref(N * n), out(N * n);
  if (!read_all((dir + "/np.bin").c_str(), a.data(), a.size() * 4) ||
      !read_all((dir + "/hv.bin").c_str(), hv.data(), hv.size() * 4) ||
      !read_all((dir + "/ref.bin").c_str(), ref.data(), ref.size() * 4)) {
    std::fprintf(stderr, "driver: cannot read the inputs in %s\n", dir.c_str());
    return 2;
  }
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
