#include "parallel.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace hvx {

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void set_num_threads(int n) {
  if (n < 1) {
    throw std::invalid_argument("set_num_threads: expected n >= 1, got " + std::to_string(n));
  }
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
}

int threads_for(long long n_items, int requested) {
  int t = requested > 0 ? requested : max_threads();
  if (n_items < 1) return 1;
  return static_cast<int>(std::max<long long>(1, std::min<long long>(t, n_items)));
}

}  // namespace hvx
