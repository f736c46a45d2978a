// What the development drivers in this folder share: thread CPU time and the
// inputs written by write_inputs.py (N tiles of H x W float32 np_prob, the hv
// maps, and the reference's int32 instance maps).
#pragma once

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

inline double cpu_ms() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

struct Inputs {
  std::vector<float> np, hv;
  std::vector<int32_t> ref;
};

inline bool read_all(const std::string& path, void* dst, size_t bytes) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  const size_t got = std::fread(dst, 1, bytes, f);
  std::fclose(f);
  return got == bytes;
}

// False (with a message on stderr) when a file is missing or short.
inline bool read_inputs(const std::string& dir, int N, int H, int W, Inputs& in) {
  const size_t n = static_cast<size_t>(N) * H * W;
  in.np.resize(n), in.hv.resize(2 * n), in.ref.resize(n);
  if (read_all(dir + "/np.bin", in.np.data(), n * 4) &&
      read_all(dir + "/hv.bin", in.hv.data(), 2 * n * 4) &&
      read_all(dir + "/ref.bin", in.ref.data(), n * 4)) {
    return true;
  }
  std::fprintf(stderr, "cannot read the inputs in %s\n", dir.c_str());
  return false;
}
