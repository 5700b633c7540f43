// The causal self-attention kernels of kernels/cpu/attention.h. Each task takes one (b, h) (the
// forward: one block of kRows query rows of it) on one thread: the scores of a block of query rows
// against the keys it may see ([rows, n] scratch per thread, never [L, L] for the whole
// sequence), the softmax in place, then the products with v (and, backward, with k, q and dout).
// The products are small (the sums run over Dh or over a block of rows), so they go through a
// register-tiled kernel that reads its operands in place (k and v transposed once per task)
// rather than a GEMM that packs them, and it skips the tiles the causal mask zeroes.
#include "kernels/cpu/attention.h"
#include "kernels/fast_math.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

namespace mel::kernels::cpu {

namespace {

// Query rows per block: the scratch of a block is kRows x (keys it sees), which stays in L2 for
// sequences of a few thousand.
constexpr int64_t kRows = 64;
// Below this many multiply-adds in all, the tasks run on the calling thread: an OpenMP region
// costs more than the work (and much more on a loaded machine).
constexpr double kParallelWork = 1 << 18;


// f64 is the precision reference (gradient checks): the library exp.

// Per-thread scratch of `n` elements (uninitialised).
template <class T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

// Calls task(it, scratch) for it in [0, items), each task on one thread in its own fixed order:
// in an OpenMP region when there are several tasks and `work` multiply-adds in all, else in
// order on the calling thread. `scratch` holds `per_thread` elements of T.
template <class T, class F>
void run_tasks(int64_t items, double work, int64_t per_thread, F&& task) {
  if (items >= 2 && work >= kParallelWork) {
#pragma omp parallel
    {
      std::unique_ptr<T[]> buf = scratch<T>(per_thread);
#pragma omp for schedule(dynamic)
      for (int64_t it = 0; it < items; ++it) task(it, buf.get());
    }
  } else {
    std::unique_ptr<T[]> buf = scratch<T>(per_thread);
    for (int64_t it = 0; it < items; ++it) task(it, buf.get());
  }
}

// The causal limit of a product whose row i stands for sequence row `base + i`: none, only the
// columns j <= base + i are needed (kColumns), or only the terms k <= base + i of the sum are
// non-zero (kTerms). Tiles wholly outside the limit are skipped; inside a tile everything is
// computed (the operands hold zeros there, the results beyond the limit are not read).
enum class Causal { kNone, kColumns, kTerms };

// 32 bytes of columns (GCC vector extensions: an AVX2 register with -march=x86-64-v3, a pair of
// SSE registers without).
typedef float VecF __attribute__((vector_size(32)));
typedef double VecD __attribute__((vector_size(32)));
template <class T>
using Vec = std::conditional_t<std::is_same_v<T, float>, VecF, VecD>;

template <class T>
inline Vec<T> load_vec(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Rows per register tile: 6 rows x 2 vectors of accumulators, the two vectors of B and the
// broadcast of A take 15 of the 16 AVX2 registers.
constexpr int kTileRows = 6;

// acc[ii][jj] = sum_{k < K} A(ii, k) B[k][jj] for ii < MR and jj < 2 vectors, in registers.
template <int MR, class T>
void tile_vec(int64_t K, const T* a, int64_t ars, int64_t acs, const T* b, int64_t ldb,
              T (*acc)[2 * sizeof(Vec<T>) / sizeof(T)]) {
  constexpr int kW = static_cast<int>(sizeof(Vec<T>) / sizeof(T));
  Vec<T> c0[MR] = {}, c1[MR] = {};
  for (int64_t k = 0; k < K; ++k) {
    const Vec<T> b0 = load_vec(b + k * ldb), b1 = load_vec(b + k * ldb + kW);
    const T* ak = a + k * acs;
#pragma GCC unroll 6
    for (int ii = 0; ii < MR; ++ii) {
      const T av = ak[ii * ars];
      c0[ii] += av * b0;
      c1[ii] += av * b1;
    }
  }
  for (int ii = 0; ii < MR; ++ii) {
    std::memcpy(acc[ii], &c0[ii], sizeof(Vec<T>));
    std::memcpy(acc[ii] + kW, &c1[ii], sizeof(Vec<T>));
  }
}

// C (M x N, row stride ldc) = alpha * A B, or C += alpha * A B with accumulate. A(i, k) is
// A[i * ars + k * acs]; B is K x N with row stride ldb. Tiles of up to 6 rows x 2 vectors of
// columns are summed in registers over k in order (column edges in scalars, in the same order).
template <class T>
void tile_gemm(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t ars, int64_t acs,
               const T* B, int64_t ldb, bool accumulate, T* C, int64_t ldc,
               Causal causal = Causal::kNone, int64_t base = 0) {
  constexpr int kW = static_cast<int>(sizeof(Vec<T>) / sizeof(T)), kNR = 2 * kW;
  for (int64_t i0 = 0; i0 < M; i0 += kTileRows) {
    const int64_t mr = std::min<int64_t>(kTileRows, M - i0);
    const int64_t lim = base + i0 + mr;  // the limit of the tile's last row (exclusive)
    const int64_t n_end = causal == Causal::kColumns ? std::min(N, lim) : N;
    const int64_t k_end = causal == Causal::kTerms ? std::min(K, lim) : K;
    const T* a = A + i0 * ars;
    for (int64_t j0 = 0; j0 < n_end; j0 += kNR) {
      const int64_t nr = std::min<int64_t>(kNR, N - j0);
      const T* b = B + j0;
      T acc[kTileRows][kNR];
      if (nr == kNR) {
        switch (mr) {
          case 6:
            tile_vec<6>(k_end, a, ars, acs, b, ldb, acc);
            break;
          case 5:
            tile_vec<5>(k_end, a, ars, acs, b, ldb, acc);
            break;
          case 4:
            tile_vec<4>(k_end, a, ars, acs, b, ldb, acc);
            break;
          case 3:
            tile_vec<3>(k_end, a, ars, acs, b, ldb, acc);
            break;
          case 2:
            tile_vec<2>(k_end, a, ars, acs, b, ldb, acc);
            break;
          default:
            tile_vec<1>(k_end, a, ars, acs, b, ldb, acc);
            break;
        }
      } else {
        for (int64_t ii = 0; ii < mr; ++ii) {
          for (int64_t jj = 0; jj < nr; ++jj) acc[ii][jj] = T(0);
        }
        for (int64_t k = 0; k < k_end; ++k) {
          const T* bk = b + k * ldb;
          for (int64_t ii = 0; ii < mr; ++ii) {
            const T av = a[ii * ars + k * acs];
            for (int64_t jj = 0; jj < nr; ++jj) acc[ii][jj] += av * bk[jj];
          }
        }
      }
      for (int64_t ii = 0; ii < mr; ++ii) {
        T* c = C + (i0 + ii) * ldc + j0;
        if (accumulate) {
          for (int64_t jj = 0; jj < nr; ++jj) c[jj] += alpha * acc[ii][jj];
        } else {
          for (int64_t jj = 0; jj < nr; ++jj) c[jj] = alpha * acc[ii][jj];
        }
      }
    }
  }
}

// dst[d * n + j] = src[j * lds + d] for j < n, d < cols: rows of k or v as columns.
template <class T>
void transpose_rows(const T* src, int64_t n, int64_t cols, int64_t lds, T* dst) {
  constexpr int64_t kBlk = 16;
  for (int64_t j0 = 0; j0 < n; j0 += kBlk) {
    const int64_t j1 = std::min(n, j0 + kBlk);
    for (int64_t d = 0; d < cols; ++d) {
      for (int64_t j = j0; j < j1; ++j) dst[d * n + j] = src[j * lds + d];
    }
  }
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
#pragma omp simd reduction(max : m)
    for (int64_t j = 1; j < cnt; ++j) m = std::max(m, row[j]);
    for (int64_t j = 0; j < cnt; ++j) row[j] = exp_fast(row[j] - m);
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cnt; ++j) s += static_cast<double>(row[j]);
    const T inv = static_cast<T>(1.0 / s);
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
  const int64_t s_cap = std::min(kRows, L) * L;
  const T sc = static_cast<T>(scale);
  const double work = static_cast<double>(B * H) * static_cast<double>(L) * L * (Dh + 1);
  // tasks: (b, h, block of query rows); later blocks see more keys and go first
  run_tasks<T>(B * H * blocks, work, s_cap + Dh * L, [&](int64_t it, T* buf) {
    const int64_t bh = it / blocks, blk = blocks - 1 - it % blocks;
    const Head hd = head_at(bh / H, bh % H, L, H, Dh);
    const T* q = qkv + hd.qkv;
    const T* k = q + hd.D;
    const T* v = q + 2 * hd.D;
    const int64_t i0 = blk * kRows, rows = std::min(kRows, L - i0), n = i0 + rows;
    T* S = buf;
    T* kt = buf + s_cap;  // [Dh, n]: k^T
    transpose_rows(k, n, Dh, hd.ld, kt);
    tile_gemm(rows, n, Dh, sc, q + i0 * hd.ld, hd.ld, 1, kt, n, false, S, n, Causal::kColumns, i0);
    softmax_block(S, i0, rows, n, lse + hd.lse);
    tile_gemm(rows, Dh, n, T(1), S, n, 1, v, hd.ld, false, out + hd.out + i0 * hd.D, hd.D,
              Causal::kTerms, i0);
  });
}

template <class T>
void causal_attention_backward(const T* qkv, const T* out, const T* lse, const T* dout, int64_t B,
                               int64_t L, int64_t H, int64_t Dh, double scale, T* delta, T* dqkv) {
  if (B <= 0 || L <= 0 || H <= 0) return;
  const T sc = static_cast<T>(scale);
  const int64_t cap = std::min(kRows, L) * L;
  const double work = 2.5 * static_cast<double>(B * H) * static_cast<double>(L) * L * (Dh + 1);
  // tasks: (b, h); dk and dv add up over the blocks of query rows in order
  run_tasks<T>(B * H, work, 2 * cap + 2 * Dh * L, [&](int64_t it, T* buf) {
    T* P = buf;
    T* dS = buf + cap;
    T* kt = buf + 2 * cap;  // [Dh, L]: k^T and v^T
    T* vt = kt + Dh * L;
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
    transpose_rows(k, L, Dh, hd.ld, kt);
    transpose_rows(v, L, Dh, hd.ld, vt);
    for (int64_t i = 0; i < L; ++i) {
      const T* gi = g + i * hd.D;
      const T* oi = o + i * hd.D;
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t d = 0; d < Dh; ++d) s += static_cast<double>(gi[d]) * static_cast<double>(oi[d]);
      dl[i] = static_cast<T>(s);
    }
    for (int64_t i0 = 0; i0 < L; i0 += kRows) {
      const int64_t rows = std::min(kRows, L - i0), n = i0 + rows;
      const T* qi = q + i0 * hd.ld;
      const T* gi = g + i0 * hd.D;
      // P = exp(scale * q k^T - lse) and dS = P * (dout v^T - delta) on and below the diagonal
      tile_gemm(rows, n, Dh, sc, qi, hd.ld, 1, kt, L, false, P, n, Causal::kColumns, i0);
      tile_gemm(rows, n, Dh, T(1), gi, hd.D, 1, vt, L, false, dS, n, Causal::kColumns, i0);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t cnt = i0 + r + 1;
        T* pr = P + r * n;
        T* sr = dS + r * n;
        const T li = ls[i0 + r], di = dl[i0 + r];
        for (int64_t j = 0; j < cnt; ++j) {
          const T p = exp_fast(pr[j] - li);
          pr[j] = p;
          sr[j] = p * (sr[j] - di);
        }
        for (int64_t j = cnt; j < n; ++j) pr[j] = sr[j] = T(0);
      }
      // dq = scale * dS k; dk (+)= scale * dS^T q and dv (+)= P^T dout over keys 0..n - 1 (the
      // first block writes them, later ones add; keys from i0 on are new in this block)
      tile_gemm(rows, Dh, n, sc, dS, n, 1, k, hd.ld, false, dq + i0 * hd.ld, hd.ld, Causal::kTerms,
                i0);
      tile_gemm(i0, Dh, rows, sc, dS, 1, n, qi, hd.ld, true, dk, hd.ld);
      tile_gemm(i0, Dh, rows, T(1), P, 1, n, gi, hd.D, true, dv, hd.ld);
      tile_gemm(rows, Dh, rows, sc, dS + i0, 1, n, qi, hd.ld, false, dk + i0 * hd.ld, hd.ld);
      tile_gemm(rows, Dh, rows, T(1), P + i0, 1, n, gi, hd.D, false, dv + i0 * hd.ld, hd.ld);
    }
  });
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
