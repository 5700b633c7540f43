// Strided iteration shared by the CPU kernels: N operands walked over one shape with their own
// element strides (0 for broadcast dimensions), split into contiguous runs and across threads.
#pragma once
#include <algorithm>
#include <cstdint>

namespace mel::kernels {

constexpr int kMaxDims = 12;

// N operands over one shape; stride[k][d] is operand k's element stride in dimension d.
template <int N>
struct Iter {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[N][kMaxDims] = {};

  int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= shape[d];
    return n;
  }

  // Drops size-1 dimensions and merges neighbours that are contiguous for every operand, so that
  // contiguous tensors become one long run.
  void coalesce() {
    int out = 0;
    for (int d = 0; d < ndim; ++d) {
      if (shape[d] == 1) continue;
      if (out > 0) {
        bool merge = true;
        for (int k = 0; k < N; ++k) {
          if (stride[k][out - 1] != stride[k][d] * shape[d]) merge = false;
        }
        if (merge) {
          shape[out - 1] *= shape[d];
          for (int k = 0; k < N; ++k) stride[k][out - 1] = stride[k][d];
          continue;
        }
      }
      shape[out] = shape[d];
      for (int k = 0; k < N; ++k) stride[k][out] = stride[k][d];
      ++out;
    }
    if (out == 0) {  // a scalar: one dimension of size 1
      shape[0] = 1;
      for (int k = 0; k < N; ++k) stride[k][0] = 1;
      out = 1;
    }
    ndim = out;
  }
};

// Calls f(off, count, inner) for consecutive runs covering linear elements [begin, end): off[k] is
// operand k's element offset at the run start, inner[k] its stride along the run.
template <int N, class F>
void for_runs(const Iter<N>& it, int64_t begin, int64_t end, F&& f) {
  if (begin >= end) return;
  const int nd = it.ndim;
  int64_t coord[kMaxDims];
  int64_t off[N] = {};
  int64_t rem = begin;
  for (int d = nd - 1; d >= 0; --d) {
    coord[d] = rem % it.shape[d];
    rem /= it.shape[d];
    for (int k = 0; k < N; ++k) off[k] += coord[d] * it.stride[k][d];
  }
  int64_t inner[N];
  for (int k = 0; k < N; ++k) inner[k] = it.stride[k][nd - 1];
  int64_t pos = begin;
  while (pos < end) {
    int64_t run = std::min(end - pos, it.shape[nd - 1] - coord[nd - 1]);
    f(off, run, inner);
    pos += run;
    if (pos >= end) break;
    // the run reached the end of the innermost dimension: carry outwards, recompute the offsets
    coord[nd - 1] = 0;
    int d = nd - 2;
    for (; d >= 0; --d) {
      if (++coord[d] < it.shape[d]) break;
      coord[d] = 0;
    }
    for (int k = 0; k < N; ++k) {
      int64_t o = 0;
      for (int e = 0; e < nd; ++e) o += coord[e] * it.stride[k][e];
      off[k] = o;
    }
  }
}

// Splits the iteration into chunks of at least `grain` elements across OpenMP threads.
template <int N, class F>
void parallel_runs(const Iter<N>& it, F&& f, int64_t grain = 32768) {
  const int64_t n = it.numel();
  if (n == 0) return;
  const int64_t chunks = std::max<int64_t>(1, n / grain);
  if (chunks == 1) {
    for_runs(it, 0, n, f);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    for_runs(it, n * c / chunks, n * (c + 1) / chunks, f);
  }
}

// Parallel loop over [0, n) in blocks of at least `grain` iterations: f(begin, end).
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  const int64_t chunks = std::max<int64_t>(1, n / std::max<int64_t>(grain, 1));
  if (chunks == 1) {
    f(int64_t(0), n);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) f(n * c / chunks, n * (c + 1) / chunks);
}

}  // namespace mel::kernels
