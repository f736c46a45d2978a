// Thread-count control shared by every batch function of hvx._native.
// Plain C++17; no Python headers (only bindings.cpp includes pybind11).
#pragma once

namespace hvx {

// True when the extension was compiled with OpenMP.
bool openmp_enabled();

// Threads a parallel region would use now (1 without OpenMP).
int max_threads();

// Sets the thread count for later parallel regions; n < 1 is rejected.
void set_num_threads(int n);

// Threads to use for a batch of `n_items` independent items: min(items, threads),
// or `requested` when it is > 0.
int threads_for(long long n_items, int requested);

}  // namespace hvx
