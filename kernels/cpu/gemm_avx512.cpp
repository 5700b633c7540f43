// AVX-512 micro-kernels for the blocked GEMM in gemm.cpp (the packing routines are in
// gemm_avx512_pack.cpp). The build targets x86-64-v3 (AVX2), so every function here carries a
// target attribute and gemm.cpp only calls them after __builtin_cpu_supports confirms AVX-512 at
// run time. Nothing here has external linkage but the two arch getters (and the packing routines,
// plain functions): a template instantiated with AVX-512 code must never be merged (COMDAT) with
// an AVX2 instantiation used elsewhere.
#include <cstdint>
#include <cstring>
#include <new>

#include "kernels/cpu/gemm_avx512_impl.h"

namespace mel::kernels::cpu::gemm_detail {

#ifdef MEL_GEMM_HAVE_AVX512
namespace {

// How far ahead the k-major kernels prefetch rows of A (12 steps: about 150 cycles).
constexpr int kPrefetchSteps = 12;

// C tile of MR rows x n columns (n <= NV * W, more than (NV - 1) * W) from kc steps of an A sliver
// (element (i, k) at a[i + k * a_step] when KMAJOR, else a[i * a_step + k]) and a B sliver (row k
// at b + k * b_ks, NV full vectors: B must be readable past column n, because a masked load in
// this loop makes GCC 12 keep the accumulators in memory). Every variant adds the products of one
// C element in the same order with the same instructions, so which variant covers an element (a
// full tile or an edge, on whichever thread) never changes its bits.
//
// With KMAJOR, TC > 0 more columns of C (at ct, from B columns at bt with row stride bt_ks) ride
// along: the 8 A values of a step are one vector there, so each costs one FMA per step. Run as a
// separate pass they would reload the A sliver, whose rows lda apart often share a few L1 sets.
// Kept whole: even an always_inline store or prefetch helper changes GCC 12's register allocation.
template <class T, int MR, int NV, bool KMAJOR, int TC>
MEL_AVX512 void micro(int64_t kc, const T* __restrict a, int64_t a_step, const T* __restrict b,
                      int64_t b_ks, T* __restrict c, int64_t rsc, int64_t csc, int n, T alpha,
                      T beta, const T* __restrict bt, int64_t bt_ks, T* __restrict ct) {
  using V = Vec<T>;
  using R = typename V::R;
  using Mask = typename V::Mask;
  constexpr int W = V::W;
  const Mask tail = V::mask(n - (NV - 1) * W);
  R acc[MR][NV];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
  }
  if (csc == 1) {
    for (int i = 0; i < MR; ++i) {
      for (int v = 0; v < NV; ++v) {
        _mm_prefetch(reinterpret_cast<const char*>(c + i * rsc + v * W), _MM_HINT_T0);
      }
    }
  } else {
    for (int j = 0; j < n; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(c + j * csc), _MM_HINT_T0);
    }
  }
  if constexpr (KMAJOR) {
    // A read in place k-major (op(A) = A^T) takes one cache line from each row of the stored A,
    // a page apart where the hardware prefetchers give up: fetch a few steps ahead.
    const T* pf = a + kPrefetchSteps * a_step;
    using V8 = Vec8<T>;
    typename V8::R tacc[TC > 0 ? TC : 1];
    for (int q = 0; q < TC; ++q) tacc[q] = V8::zero();
    const __mmask8 rows = static_cast<__mmask8>((1u << MR) - 1u);
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
      _mm_prefetch(reinterpret_cast<const char*>(pf), _MM_HINT_T0);
      R bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * W);
      for (int i = 0; i < MR; ++i) {
        const R ai = V::set1(a[i]);
        for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
      }
      if constexpr (TC > 0) {
        const typename V8::R av = MR == 8 ? V8::load(a) : V8::loadz(rows, a);
        for (int q = 0; q < TC; ++q) tacc[q] = V8::fma(av, V8::set1(bt[q]), tacc[q]);
        bt += bt_ks;
      }
      a += a_step;
      pf += a_step;
      b += b_ks;
    }
    for (int q = 0; q < TC; ++q) {
      alignas(64) T sum[8];
      V8::store(sum, tacc[q]);
      for (int i = 0; i < MR; ++i) update_c(ct + i * rsc + q * csc, sum[i], alpha, beta);
    }
  } else {
    const T* ar[MR];
    for (int i = 0; i < MR; ++i) ar[i] = a + i * a_step;
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
      R bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * W);
      for (int i = 0; i < MR; ++i) {
        const R ai = V::set1(ar[i][k]);
        for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
      }
      b += b_ks;
    }
  }
  const R va = V::set1(alpha), vb = V::set1(beta);
  if (csc == 1) {
    for (int i = 0; i < MR; ++i) {
      T* cp = c + i * rsc;
      for (int v = 0; v < NV; ++v) {
        const Mask m = v == NV - 1 ? tail : V::mask(W);
        R r = V::mul(va, acc[i][v]);
        if (beta != T(0)) r = V::fma(vb, V::loadz(m, cp + v * W), r);
        V::store(cp + v * W, m, r);
      }
    }
    return;
  }
  // Transposed C (the driver computes C^T = op(B)^T op(A)^T when that is cheaper): row j of the
  // tile is column j of C, whose MR elements are contiguous.
  if constexpr (sizeof(T) == 4 && MR <= 8) {
    const __mmask8 m = static_cast<__mmask8>((1u << MR) - 1u);
    const __m256 va8 = _mm256_set1_ps(alpha), vb8 = _mm256_set1_ps(beta);
    for (int v = 0; v < NV; ++v) {
      __m512 rows[8];
      for (int i = 0; i < 8; ++i) rows[i] = _mm512_setzero_ps();
      for (int i = 0; i < MR; ++i) rows[i] = acc[i][v];
      __m256 cols[16];
      transpose_8x16(rows, cols);
      const int jn = static_cast<int>(min64(W, n - v * W));
      for (int q = 0; q < jn; ++q) {
        float* cp = c + (v * W + q) * csc;
        __m256 r = _mm256_mul_ps(va8, cols[q]);
        if (beta != T(0)) r = _mm256_fmadd_ps(vb8, _mm256_maskz_loadu_ps(m, cp), r);
        _mm256_mask_storeu_ps(cp, m, r);
      }
    }
  } else {
    alignas(64) T tmp[MR][NV * W];
    for (int i = 0; i < MR; ++i) {
      for (int v = 0; v < NV; ++v) std::memcpy(&tmp[i][v * W], &acc[i][v], sizeof(R));
    }
    for (int j = 0; j < n; ++j) {
      T* cp = c + j * csc;
      for (int i = 0; i < MR; ++i) {
        const T r = alpha * tmp[i][j];
        cp[i] = beta != T(0) ? __builtin_fma(beta, cp[i], r) : r;
      }
    }
  }
}

template <class T>
using MicroFn = void (*)(int64_t, const T*, int64_t, const T*, int64_t, T*, int64_t, int64_t, int,
                         T, T, const T*, int64_t, T*);

// Columns of a ragged tail that can ride along with a k-major micro-kernel (the fourth costs GCC a
// few reloads a step, no measurable time).
constexpr int kMaxFused = 4;

// The variant for an m x nv tile, by recursion over the template arguments.
template <class T, int M, int NV, bool KMAJOR, int TC>
MicroFn<T> pick_nv(int nv) {
  if constexpr (NV == 0) {
    return nullptr;
  } else {
    if (nv == NV) return &micro<T, M, NV, KMAJOR, TC>;
    return pick_nv<T, M, NV - 1, KMAJOR, TC>(nv);
  }
}
template <class T, int M, bool KMAJOR, int TC>
MicroFn<T> pick(int m, int nv) {
  if constexpr (M == 0) {
    return nullptr;
  } else {
    if (m == M) return pick_nv<T, M, kNV, KMAJOR, TC>(nv);
    return pick<T, M - 1, KMAJOR, TC>(m, nv);
  }
}

// fn[0]: A read row by row; fn[1 + tc]: A read k-major with tc fused tail columns.
template <class T>
struct KernelTable {
  MicroFn<T> fn[2 + kMaxFused][kMR + 1][kNV + 1] = {};
  KernelTable() {
    for (int m = 1; m <= kMR; ++m) {
      for (int nv = 1; nv <= kNV; ++nv) {
        fn[0][m][nv] = pick<T, kMR, false, 0>(m, nv);
        fn[1][m][nv] = pick<T, kMR, true, 0>(m, nv);
        fn[2][m][nv] = pick<T, kMR, true, 1>(m, nv);
        fn[3][m][nv] = pick<T, kMR, true, 2>(m, nv);
        fn[4][m][nv] = pick<T, kMR, true, 3>(m, nv);
        fn[5][m][nv] = pick<T, kMR, true, 4>(m, nv);
      }
    }
  }
};

// A per-thread buffer of at least n elements, one per slot, kept across calls.
template <class T>
T* thread_buffer(int slot, int64_t n) {
  struct Buf {
    T* p = nullptr;
    int64_t n = 0;
    ~Buf() { ::operator delete(p, std::align_val_t(64)); }
  };
  thread_local Buf bufs[2];
  Buf& b = bufs[slot];
  if (b.n < n) {
    ::operator delete(b.p, std::align_val_t(64));
    b.p = static_cast<T*>(::operator new(static_cast<size_t>(n) * sizeof(T), std::align_val_t(64)));
    b.n = n;
  }
  return b.p;
}

// Columns [0, n) of a kc-row B sliver copied to out (rows of nr values): the ragged last sliver of
// a B read in place, whose rows may end right before unmapped memory.
template <class T>
MEL_AVX512 void copy_tail(const T* b, int64_t b_ks, int64_t kc, int n, int nr, T* out) {
  using V = Vec<T>;
  constexpr int W = V::W;
  for (int v = 0; v * W < nr; ++v) {
    const int left = n - v * W;
    const typename V::Mask m = left <= 0 ? 0 : V::mask(left);
    for (int64_t k = 0; k < kc; ++k)
      V::store(out + k * nr + v * W, V::mask(W), V::loadz(m, b + k * b_ks + v * W));
  }
}

// ---- ragged column tails ---------------------------------------------------------------------
// A last vector holding only a few of N's columns (N = 49 = 3 x 16 + 1, a 7 x 7 feature map) would
// cost a whole vector of multiply-adds for each of them. Up to kMaxTail such columns are instead
// computed with vectors along another axis: along the rows of the A sliver when A is read
// k-major, along K (dot products) when A is read row by row.
constexpr int kMaxTail = 8;

// TC columns of C for an A sliver read k-major (row i of step k at a[i + k * a_step]): per k one
// 8-lane load of A and a broadcast per column. With P = 1 this adds exactly as the columns fused
// into the micro-kernel do, so a tail of up to kMaxFused columns gets the same bits whether a
// block holds it alone (a thread's last column chunk) or after a main sliver; wider tails, never
// fused, keep P = 4 partial sums per column to hide the FMA latency.
template <class T, int TC, bool FULL, int P>
MEL_AVX512 void tail_kmajor(int64_t kc, const T* a, int64_t a_step, int m, const T* b, int64_t b_ks,
                            T* c, int64_t rsc, int64_t csc, T alpha, T beta) {
  using V = Vec8<T>;
  using R = typename V::R;
  const __mmask8 rows = static_cast<__mmask8>((1u << m) - 1u);
  R acc[TC][P];
  for (int q = 0; q < TC; ++q) {
    for (int u = 0; u < P; ++u) acc[q][u] = V::zero();
  }
  int64_t k = 0;
  for (; k + P <= kc; k += P) {
    for (int u = 0; u < P; ++u) {
      const R av = FULL ? V::load(a + (k + u) * a_step) : V::loadz(rows, a + (k + u) * a_step);
      for (int q = 0; q < TC; ++q) {
        acc[q][u] = V::fma(av, V::set1(b[(k + u) * b_ks + q]), acc[q][u]);
      }
    }
  }
  for (; k < kc; ++k) {
    const R av = FULL ? V::load(a + k * a_step) : V::loadz(rows, a + k * a_step);
    for (int q = 0; q < TC; ++q) acc[q][0] = V::fma(av, V::set1(b[k * b_ks + q]), acc[q][0]);
  }
  for (int q = 0; q < TC; ++q) {
    R total = acc[q][0];
    if constexpr (P == 4)
      total = V::add(V::add(acc[q][0], acc[q][1]), V::add(acc[q][2], acc[q][3]));
    alignas(64) T sum[8];
    V::store(sum, total);
    for (int i = 0; i < m; ++i) update_c(c + i * rsc + q * csc, sum[i], alpha, beta);
  }
}

// TC columns of C for an A sliver read row by row (row i at a + i * a_step): dot products along K
// against the columns of B gathered into bt (column q at bt + q * kc). Rows past m repeat row 0.
template <class T, int TC>
MEL_AVX512 void tail_imajor(int64_t kc, const T* a, int64_t a_step, int m, const T* bt, T* c,
                            int64_t rsc, int64_t csc, T alpha, T beta) {
  using V = Vec<T>;
  using R = typename V::R;
  constexpr int W = V::W;
  const T* ar[kMR];
  for (int i = 0; i < kMR; ++i) ar[i] = a + (i < m ? i : 0) * a_step;
  R acc[kMR][TC];
  for (int i = 0; i < kMR; ++i) {
    for (int q = 0; q < TC; ++q) acc[i][q] = V::zero();
  }
  int64_t k = 0;
  for (; k + W <= kc; k += W) {
    R bv[TC];
    for (int q = 0; q < TC; ++q) bv[q] = V::load(bt + q * kc + k);
    for (int i = 0; i < kMR; ++i) {
      const R av = V::load(ar[i] + k);
      for (int q = 0; q < TC; ++q) acc[i][q] = V::fma(av, bv[q], acc[i][q]);
    }
  }
  for (int i = 0; i < m; ++i) {
    for (int q = 0; q < TC; ++q) {
      alignas(64) T lanes[W];
      std::memcpy(lanes, &acc[i][q], sizeof(R));
      // a fixed pairwise order, then the K remainder
      for (int w = W / 2; w >= 1; w /= 2) {
        for (int l = 0; l < w; ++l) lanes[l] += lanes[l + w];
      }
      T sum = lanes[0];
      for (int64_t kk = k; kk < kc; ++kk) sum = __builtin_fma(ar[i][kk], bt[q * kc + kk], sum);
      update_c(c + i * rsc + q * csc, sum, alpha, beta);
    }
  }
}

// B columns of the tail (kc x t at b, row stride b_ks) gathered column by column for the dot
// products, once per block.
template <class T>
const T* gather_tail(int64_t kc, const T* b, int64_t b_ks, int t) {
  T* out = thread_buffer<T>(0, t * kc);
  for (int64_t k = 0; k < kc; ++k) {
    for (int q = 0; q < t; ++q) out[q * kc + k] = b[k * b_ks + q];
  }
  return out;
}

// The t tail columns of C (at c) for the m-row A sliver at a; bt from gather_tail when A is read
// row by row, else B's tail columns in place at b.
template <class T>
void tail_columns(int64_t kc, const Operands<T>& op, const T* a, int m, const T* b, const T* bt,
                  int t, T* c, T alpha, T beta) {
  if (op.a_rs == 1) {
    using Fn =
        void (*)(int64_t, const T*, int64_t, int, const T*, int64_t, T*, int64_t, int64_t, T, T);
    // [single chain][whole sliver][columns - 1]
    static constexpr Fn kFn[2][2][4] = {
        {{&tail_kmajor<T, 1, false, 4>, &tail_kmajor<T, 2, false, 4>, &tail_kmajor<T, 3, false, 4>,
          &tail_kmajor<T, 4, false, 4>},
         {&tail_kmajor<T, 1, true, 4>, &tail_kmajor<T, 2, true, 4>, &tail_kmajor<T, 3, true, 4>,
          &tail_kmajor<T, 4, true, 4>}},
        {{&tail_kmajor<T, 1, false, 1>, &tail_kmajor<T, 2, false, 1>, &tail_kmajor<T, 3, false, 1>,
          &tail_kmajor<T, 4, false, 1>},
         {&tail_kmajor<T, 1, true, 1>, &tail_kmajor<T, 2, true, 1>, &tail_kmajor<T, 3, true, 1>,
          &tail_kmajor<T, 4, true, 1>}}};
    for (int q = 0; q < t; q += 4) {
      const int tc = t - q < 4 ? t - q : 4;
      kFn[t <= kMaxFused][m == kMR][tc - 1](kc, a, op.a_ks, m, b + q, op.b_ks, c + q * op.c_cs,
                                            op.c_rs, op.c_cs, alpha, beta);
    }
    return;
  }
  for (int q = 0; q < t; q += 2) {
    if (t - q >= 2) {
      tail_imajor<T, 2>(kc, a, op.a_rs, m, bt + q * kc, c + q * op.c_cs, op.c_rs, op.c_cs, alpha,
                        beta);
    } else {
      tail_imajor<T, 1>(kc, a, op.a_rs, m, bt + q * kc, c + q * op.c_cs, op.c_rs, op.c_cs, alpha,
                        beta);
    }
  }
}

// Arch::block: B slivers outer, A slivers inner, the ragged tail columns after each A sliver's last
// main tile.
template <class T>
void block(int64_t mc, int64_t nc, int64_t kc, const Operands<T>& op, T alpha, T beta) {
  constexpr int W = Vec<T>::W, NR = kNV * W;
  static const KernelTable<T> table;
  const bool kmajor = op.a_rs == 1;
  const int64_t a_step = kmajor ? op.a_ks : op.a_rs;
  // Only the end of N is ragged (the driver splits columns at sliver boundaries), so the columns
  // taking the tail path depend on the shape alone.
  const int tail = nc % W <= kMaxTail ? static_cast<int>(nc % W) : 0;
  const int64_t nc_main = nc - tail;
  const T* b_tail = op.b + nc_main / NR * op.b_sliver + nc_main % NR;
  const T* bt = tail > 0 && !kmajor ? gather_tail(kc, b_tail, op.b_ks, tail) : nullptr;
  // The tail of an A sliver is done right after its last main tile, while the sliver is in L1.
  const auto do_tail = [&](int64_t i, int m) {
    tail_columns(kc, op, op.a + i / kMR * op.a_sliver, m, b_tail, bt, tail,
                 op.c + i * op.c_rs + nc_main * op.c_cs, alpha, beta);
  };
  if (tail > 0 && nc_main == 0) {
    for (int64_t i = 0; i < mc; i += kMR) do_tail(i, static_cast<int>(min64(kMR, mc - i)));
    return;
  }
  // A B sliver (kc x NR) is reused by every A sliver of the block while it is close (L1 / L2).
  for (int64_t j = 0; j < nc_main; j += NR) {
    const int n = static_cast<int>(min64(NR, nc_main - j));
    const int nv = (n + W - 1) / W;
    const T* b = op.b + j / NR * op.b_sliver;
    int64_t b_ks = op.b_ks;
    if (!op.b_packed && n < NR) {
      T* copy = thread_buffer<T>(1, kc * NR);
      copy_tail(b, b_ks, kc, n, NR, copy);
      b = copy;
      b_ks = NR;
    }
    for (int64_t i = 0; i < mc; i += kMR) {
      const int m = static_cast<int>(min64(kMR, mc - i));
      const bool last = j + NR >= nc_main;
      const int fused = last && kmajor && tail <= kMaxFused ? tail : 0;
      table.fn[kmajor ? 1 + fused : 0][m][nv](kc, op.a + i / kMR * op.a_sliver, a_step, b, b_ks,
                                              op.c + i * op.c_rs + j * op.c_cs, op.c_rs, op.c_cs, n,
                                              alpha, beta, b_tail, op.b_ks,
                                              op.c + i * op.c_rs + nc_main * op.c_cs);
      if (tail > fused && last) do_tail(i, m);
    }
  }
}

// ---- packing ---------------------------------------------------------------------------------

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
}

// Costs measured on a Sapphire Rapids core; the transposed store of doubles goes through memory.
// KC = 384: a B sliver (72 KiB) streams from L2 at the kernel's pace, and longer K panels mean
// fewer passes over C (2304 = 6 x 384, the K of a 3 x 3 convolution over 256 channels).
const Arch<float> kArchF32 = {.name = "avx512",
                              .mr = kMR,
                              .nr = kNV * 16,
                              .m_grain = 1,
                              .n_grain = 16,
                              .max_tail = kMaxTail,
                              .tail_cost = 2.0,
                              .lanes = 32,
                              .transpose_cost = 0.5,
                              .store_cost = 0.05,
                              .store_cost_t = 0.4,
                              .kc = 384,
                              .mc = 192,
                              .nc = 1024,
                              .in_place = true,
                              .pack_a = nullptr,
                              .pack_b = &pack_b_avx512_f32,
                              .block = &block<float>};
const Arch<double> kArchF64 = {.name = "avx512",
                               .mr = kMR,
                               .nr = kNV * 8,
                               .m_grain = 1,
                               .n_grain = 8,
                               .max_tail = kMaxTail,
                               .tail_cost = 2.0,
                               .lanes = 16,
                               .transpose_cost = 0.5,
                               .store_cost = 0.05,
                               .store_cost_t = 1.0,
                               .kc = 384,
                               .mc = 96,
                               .nc = 512,
                               .in_place = true,
                               .pack_a = nullptr,
                               .pack_b = &pack_b_avx512_f64,
                               .block = &block<double>};

}  // namespace

const Arch<float>* avx512_arch_f32() {
  static const bool ok = cpu_has_avx512();
  return ok ? &kArchF32 : nullptr;
}
const Arch<double>* avx512_arch_f64() {
  static const bool ok = cpu_has_avx512();
  return ok ? &kArchF64 : nullptr;
}

#else  // no AVX-512 code on this target

const Arch<float>* avx512_arch_f32() {
  return nullptr;
}
const Arch<double>* avx512_arch_f64() {
  return nullptr;
}

#endif

}  // namespace mel::kernels::cpu::gemm_detail
