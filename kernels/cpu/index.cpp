#include "kernels/cpu/index.h"

#include <algorithm>

namespace mel::kernels::cpu {

void find_out_of_range(const int64_t* idx, int64_t n, int64_t limit, int64_t* first_bad) {
  int64_t i = 0;
  while (i < n && idx[i] >= 0 && idx[i] < limit) ++i;
  *first_bad = i;
}

template <class T>
void index_select(const T* x, int64_t A, int64_t D, int64_t B, const int64_t* idx, int64_t K,
                  T* out) {
  if (A == 0 || K == 0 || B == 0) return;
  // One job per output row (a, k): a contiguous copy of B elements.
  parallel_for(A * K, std::max<int64_t>(1, 32768 / B), [&](int64_t lo, int64_t hi) {
    for (int64_t j = lo; j < hi; ++j) {
      const int64_t a = j / K, k = j % K;
      const T* src = x + (a * D + idx[k]) * B;
      T* dst = out + j * B;
      for (int64_t b = 0; b < B; ++b) dst[b] = src[b];
    }
  });
}

template <class T>
void index_add(const T* g, int64_t A, int64_t K, int64_t B, const int64_t* idx, int64_t D, T* gx,
               void*, size_t) {
  if (A == 0 || K == 0 || B == 0) return;
  // Jobs own disjoint (a, strip of b) columns and walk all of k themselves, so two equal indices
  // never land in different threads.
  constexpr int64_t kStrip = 512;
  const int64_t strips = (B + kStrip - 1) / kStrip;
  const int64_t per_job = K * std::min(B, kStrip);
  parallel_for(A * strips, std::max<int64_t>(1, 32768 / per_job), [&](int64_t lo, int64_t hi) {
    for (int64_t job = lo; job < hi; ++job) {
      const int64_t a = job / strips;
      const int64_t b0 = (job % strips) * kStrip;
      const int64_t nb = std::min(kStrip, B - b0);
      for (int64_t k = 0; k < K; ++k) {
        const T* src = g + (a * K + k) * B + b0;
        T* dst = gx + (a * D + idx[k]) * B + b0;
        for (int64_t b = 0; b < nb; ++b) dst[b] += src[b];
      }
    }
  });
}

namespace {

// Walks the coordinates of g.shape other than g.dim (each one a "line" along dim) and calls
// f(index_offset, x_offset) for each; lines are split across threads, so anything a line does
// along dim stays in one thread.
template <class F>
void for_lines(const GatherGeom& g, F&& f) {
  int64_t n = 1;
  for (int d = 0; d < g.ndim; ++d) n *= g.shape[d];
  if (n == 0) return;
  int64_t contig[kMaxDims];
  int64_t s = 1;
  for (int d = g.ndim - 1; d >= 0; --d) {
    contig[d] = s;
    s *= g.shape[d];
  }
  Iter<2> it;
  for (int d = 0; d < g.ndim; ++d) {
    if (d == g.dim) continue;
    it.shape[it.ndim] = g.shape[d];
    it.stride[0][it.ndim] = contig[d];
    it.stride[1][it.ndim] = g.x_stride[d];
    ++it.ndim;
  }
  it.coalesce();
  const int64_t K = g.shape[g.dim];
  parallel_runs(
      it,
      [&](const int64_t* off, int64_t count, const int64_t* inner) {
        for (int64_t i = 0; i < count; ++i) f(off[0] + i * inner[0], off[1] + i * inner[1]);
      },
      std::max<int64_t>(1, 32768 / K));
}

}  // namespace

template <class T>
void gather(const GatherGeom& g, const T* x, const int64_t* index, T* out, int64_t) {
  if (g.ndim == 0) return;
  const int64_t K = g.shape[g.dim];
  int64_t is = 1;
  for (int d = g.dim + 1; d < g.ndim; ++d) is *= g.shape[d];
  const int64_t xs = g.x_stride[g.dim];
  for_lines(g, [&](int64_t io, int64_t xo) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t p = io + k * is;
      out[p] = x[xo + index[p] * xs];
    }
  });
}

template <class T>
void scatter_add(const GatherGeom& g, const T* src, const int64_t* index, T* x, int64_t) {
  if (g.ndim == 0) return;
  const int64_t K = g.shape[g.dim];
  int64_t is = 1;
  for (int d = g.dim + 1; d < g.ndim; ++d) is *= g.shape[d];
  const int64_t xs = g.x_stride[g.dim];
  for_lines(g, [&](int64_t io, int64_t xo) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t p = io + k * is;
      x[xo + index[p] * xs] += src[p];
    }
  });
}

template <class T>
void one_hot(const int64_t* labels, int64_t n, int64_t classes, T* out) {
  if (classes == 0) return;
  parallel_for(n, std::max<int64_t>(1, 32768 / classes), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      T* row = out + i * classes;
      std::fill(row, row + classes, T(0));
      row[labels[i]] = T(1);
    }
  });
}

#define MEL_INSTANTIATE_SELECT(T)                                                                  \
  template void index_select<T>(const T*, int64_t, int64_t, int64_t, const int64_t*, int64_t, T*); \
  template void gather<T>(const GatherGeom&, const T*, const int64_t*, T*, int64_t);
MEL_INSTANTIATE_SELECT(float)
MEL_INSTANTIATE_SELECT(double)
MEL_INSTANTIATE_SELECT(int32_t)
MEL_INSTANTIATE_SELECT(int64_t)
#undef MEL_INSTANTIATE_SELECT

#define MEL_INSTANTIATE_ADD(T)                                                                 \
  template void index_add<T>(const T*, int64_t, int64_t, int64_t, const int64_t*, int64_t, T*, \
                             void*, size_t);                                                   \
  template void scatter_add<T>(const GatherGeom&, const T*, const int64_t*, T*, int64_t);
MEL_INSTANTIATE_ADD(float)
MEL_INSTANTIATE_ADD(double)
#undef MEL_INSTANTIATE_ADD

template void one_hot<float>(const int64_t*, int64_t, int64_t, float*);
template void one_hot<double>(const int64_t*, int64_t, int64_t, double*);
template void one_hot<int32_t>(const int64_t*, int64_t, int64_t, int32_t*);
template void one_hot<int64_t>(const int64_t*, int64_t, int64_t, int64_t*);
template void one_hot<uint8_t>(const int64_t*, int64_t, int64_t, uint8_t*);

}  // namespace mel::kernels::cpu
