// The causal self-attention kernels of kernels/cpu/attention.h. Each task takes one (b, h) (the
// forward: one block of kRows query rows of it) and runs its products through the CPU GEMM, which
// is single-threaded inside the parallel region: the scores of a block of query rows against the
// keys it may see ([rows, n] scratch per thread, never [L, L] for the whole sequence), the
// softmax in place, then the products with v (and, backward, with k, q and dout).
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "kernels/cpu/gemm.h"

namespace mel::kernels::cpu {

namespace {

// Query rows per block: the scratch of a block is kRows x (keys it sees), which stays in L2 for
// sequences of a few thousand.
constexpr int64_t kRows = 64;

// Per-thread scratch of `n` elements (uninitialised).
template <class T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

// Where head h of batch b starts in qkv, out and lse.
struct Head {
  int64_t ld = 0, D = 0;             // row strides of qkv (3 * D) and out / dout (D)
  size_t qkv = 0, out = 0, lse = 0;  // element offsets of the head's first row
};

Head head_at(int64_t b, int64_t h, int64_t L, int64_t H, int64_t Dh) {
  const int64_t D = H * Dh;
  return {3 * D, D, static_cast<size_t>(b * L * 3 * D + h * Dh),
          static_cast<size_t>(b * L * D + h * Dh), static_cast<size_t>((b * H + h) * L)};
}

// Rows [i0, i0 + rows) of one head: S ([rows, n], n = i0 + rows keys) holds the scaled scores on
// entry and the softmax probabilities on exit (0 above the diagonal); lse[i] gets each row's
// log-sum-exp. Sums in double.
template <class T>
void softmax_block(T* S, int64_t i0, int64_t rows, int64_t n, T* lse) {
  for (int64_t r = 0; r < rows; ++r) {
    T* row = S + r * n;
    const int64_t cnt = i0 + r + 1;  // keys 0..i0 + r
    T m = row[0];
    for (int64_t j = 1; j < cnt; ++j) m = std::max(m, row[j]);
    double s = 0;
    for (int64_t j = 0; j < cnt; ++j) {
      const T e = std::exp(row[j] - m);
      row[j] = e;
      s += e;
    }
    const T inv = static_cast<T>(1.0 / s);
#pragma omp simd
    for (int64_t j = 0; j < cnt; ++j) row[j] *= inv;
    for (int64_t j = cnt; j < n; ++j) row[j] = T(0);
    lse[i0 + r] = static_cast<T>(static_cast<double>(m) + std::log(s));
  }
}

}  // namespace

template <class T>
void causal_attention_forward(const T* qkv, int64_t B, int64_t L, int64_t H, int64_t Dh,
                              double scale, T* out, T* lse) {
  if (B <= 0 || L <= 0 || H <= 0) return;
  const int64_t blocks = (L + kRows - 1) / kRows;
  const int64_t items = B * H * blocks;
  const T sc = static_cast<T>(scale);
  // Always a parallel region (even for one task), so that the GEMM inside runs on one thread
  // whatever the thread count: results identical for any OMP_NUM_THREADS.
#pragma omp parallel
  {
    std::unique_ptr<T[]> S = scratch<T>(std::min(kRows, L) * L);
    // later blocks see more keys: hand them out first
#pragma omp for schedule(dynamic)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t bh = it / blocks, blk = blocks - 1 - it % blocks;
      const Head hd = head_at(bh / H, bh % H, L, H, Dh);
      const T* q = qkv + hd.qkv;
      const T* k = q + hd.D;
      const T* v = q + 2 * hd.D;
      const int64_t i0 = blk * kRows, rows = std::min(kRows, L - i0), n = i0 + rows;
      gemm<T>(false, true, rows, n, Dh, sc, q + i0 * hd.ld, hd.ld, k, hd.ld, T(0), S.get(), n);
      softmax_block(S.get(), i0, rows, n, lse + hd.lse);
      gemm<T>(false, false, rows, Dh, n, T(1), S.get(), n, v, hd.ld, T(0), out + hd.out + i0 * hd.D,
              hd.D);
    }
  }
}

template <class T>
void causal_attention_backward(const T* qkv, const T* out, const T* lse, const T* dout, int64_t B,
                               int64_t L, int64_t H, int64_t Dh, double scale, T* delta, T* dqkv) {
  if (B <= 0 || L <= 0 || H <= 0) return;
  const int64_t items = B * H;
  const T sc = static_cast<T>(scale);
#pragma omp parallel
  {
    const int64_t cap = std::min(kRows, L) * L;
    std::unique_ptr<T[]> P = scratch<T>(cap), dS = scratch<T>(cap);
#pragma omp for schedule(dynamic)
    for (int64_t it = 0; it < items; ++it) {
      const Head hd = head_at(it / H, it % H, L, H, Dh);
      const T* q = qkv + hd.qkv;
      const T* k = q + hd.D;
      const T* v = q + 2 * hd.D;
      const T* o = out + hd.out;
      const T* g = dout + hd.out;
      const T* ls = lse + hd.lse;
      T* dl = delta + hd.lse;
      T* dq = dqkv + hd.qkv;
      T* dk = dq + hd.D;
      T* dv = dq + 2 * hd.D;
      for (int64_t i = 0; i < L; ++i) {
        double s = 0;
        for (int64_t d = 0; d < Dh; ++d) {
          s += static_cast<double>(g[i * hd.D + d]) * static_cast<double>(o[i * hd.D + d]);
        }
        dl[i] = static_cast<T>(s);
        std::fill(dk + i * hd.ld, dk + i * hd.ld + Dh, T(0));
        std::fill(dv + i * hd.ld, dv + i * hd.ld + Dh, T(0));
      }
      for (int64_t i0 = 0; i0 < L; i0 += kRows) {
        const int64_t rows = std::min(kRows, L - i0), n = i0 + rows;
        const T* qi = q + i0 * hd.ld;
        const T* gi = g + i0 * hd.D;
        // P = exp(scale * q k^T - lse) below the diagonal
        gemm<T>(false, true, rows, n, Dh, sc, qi, hd.ld, k, hd.ld, T(0), P.get(), n);
        // dP = dout v^T
        gemm<T>(false, true, rows, n, Dh, T(1), gi, hd.D, v, hd.ld, T(0), dS.get(), n);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r, cnt = i + 1;
          T* pr = P.get() + r * n;
          T* sr = dS.get() + r * n;
          const T li = ls[i], di = dl[i];
          for (int64_t j = 0; j < cnt; ++j) pr[j] = std::exp(pr[j] - li);
#pragma omp simd
          for (int64_t j = 0; j < cnt; ++j) sr[j] = pr[j] * (sr[j] - di);
          for (int64_t j = cnt; j < n; ++j) pr[j] = sr[j] = T(0);
        }
        gemm<T>(false, false, rows, Dh, n, sc, dS.get(), n, k, hd.ld, T(0), dq + i0 * hd.ld, hd.ld);
        gemm<T>(true, false, n, Dh, rows, sc, dS.get(), n, qi, hd.ld, T(1), dk, hd.ld);
        gemm<T>(true, false, n, Dh, rows, T(1), P.get(), n, gi, hd.D, T(1), dv, hd.ld);
      }
    }
  }
}

#define MEL_INSTANTIATE_ATTENTION(T)                                                              \
  template void causal_attention_forward<T>(const T*, int64_t, int64_t, int64_t, int64_t, double, \
                                            T*, T*);                                              \
  template void causal_attention_backward<T>(const T*, const T*, const T*, const T*, int64_t,     \
                                             int64_t, int64_t, int64_t, double, T*, T*);
MEL_INSTANTIATE_ATTENTION(float)
MEL_INSTANTIATE_ATTENTION(double)
#undef MEL_INSTANTIATE_ATTENTION

}  // namespace mel::kernels::cpu
