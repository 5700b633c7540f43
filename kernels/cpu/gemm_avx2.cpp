// AVX2 packing routines and micro-kernel for the blocked GEMM in gemm.cpp, which every x86-64-v3
// CPU runs (the AVX-512 ones, chosen at run time where the CPU has them, are in gemm_avx512.cpp).
#include "kernels/cpu/gemm_avx2.h"

#include <algorithm>
#include <cstring>

namespace mel::kernels::cpu::gemm_detail {
namespace {

// Blocking. Register tile MR x NR (12 accumulator vectors of 8 floats or 4 doubles: with the
// two B vectors and the A broadcast that fills the 16 AVX2 registers without spilling). KC x NR of
// packed B stays in L1 while MC x KC of packed A streams from L2; the KC x NC panel of B lives in
// L3.
template <class T>
struct Blocking;
template <>
struct Blocking<float> {
  static constexpr int kMR = 6, kNR = 16;
  static constexpr int64_t kMC = 144, kKC = 256, kNC = 4080;
};
template <>
struct Blocking<double> {
  static constexpr int kMR = 6, kNR = 8;
  static constexpr int64_t kMC = 96, kKC = 256, kNC = 2040;
};

// Rows [i0, i0 + mc) and columns [p0, p0 + kc) of op(A), as slivers of MR rows: sliver s holds
// kc groups of MR values (rows past mc are zero, so the micro-kernel needs no row tail).
template <class T, int MR>
void pack_a(bool trans, const T* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
            T* out) {
  for (int64_t s = 0; s < mc; s += MR) {
    const int64_t rows = std::min<int64_t>(MR, mc - s);
    T* o = out + s * kc;
    if (!trans) {
      const T* src[MR];
      for (int64_t r = 0; r < rows; ++r) src[r] = A + (i0 + s + r) * lda + p0;
      for (int64_t k = 0; k < kc; ++k) {
        for (int64_t r = 0; r < rows; ++r) o[k * MR + r] = src[r][k];
        for (int64_t r = rows; r < MR; ++r) o[k * MR + r] = T(0);
      }
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = A + (p0 + k) * lda + i0 + s;
        for (int64_t r = 0; r < rows; ++r) o[k * MR + r] = src[r];
        for (int64_t r = rows; r < MR; ++r) o[k * MR + r] = T(0);
      }
    }
  }
}

// Sliver `s` (columns [j0 + s*NR, +NR)) of rows [p0, p0 + kc) of op(B): kc groups of NR values,
// zero past the last column.
template <class T, int NR>
void pack_b_sliver(bool trans, const T* B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0,
                   int64_t nc, int64_t s, T* out) {
  const int64_t c0 = s * NR;
  const int64_t cols = std::min<int64_t>(NR, nc - c0);
  T* o = out + c0 * kc;
  if (!trans) {
    for (int64_t k = 0; k < kc; ++k) {
      const T* src = B + (p0 + k) * ldb + j0 + c0;
      for (int64_t c = 0; c < cols; ++c) o[k * NR + c] = src[c];
      for (int64_t c = cols; c < NR; ++c) o[k * NR + c] = T(0);
    }
  } else {
    const T* src[NR];
    for (int64_t c = 0; c < cols; ++c) src[c] = B + (j0 + c0 + c) * ldb + p0;
    for (int64_t k = 0; k < kc; ++k) {
      for (int64_t c = 0; c < cols; ++c) o[k * NR + c] = src[c][k];
      for (int64_t c = cols; c < NR; ++c) o[k * NR + c] = T(0);
    }
  }
}

// Slivers [s0, s1) of the packed B panel (Arch::pack_b).
template <class T, int NR>
void pack_b(bool trans, const T* B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
            int64_t s0, int64_t s1, T* out) {
  for (int64_t s = s0; s < s1; ++s) pack_b_sliver<T, NR>(trans, B, ldb, p0, kc, j0, nc, s, out);
}

// C[0:mr, 0:nr] = alpha * (a-sliver x b-sliver) + beta * C, reading C only when beta != 0; C
// element (i, j) is c[i * rsc + j * csc]. Written with GCC/Clang vector types so the accumulators
// are whole registers and each multiply-add is one FMA under -march=x86-64-v3 (plain loops here
// get mis-vectorised across the wrong axis).
template <class T, int MR, int NR>
inline void micro_kernel(int64_t kc, const T* __restrict a, const T* __restrict b, T* __restrict c,
                         int64_t rsc, int64_t csc, int64_t mr, int64_t nr, T alpha, T beta) {
  constexpr int kW = 32 / sizeof(T);
  constexpr int kNV = NR / kW;
  static_assert(NR % kW == 0);
  typedef T V __attribute__((vector_size(32)));
  V acc[MR][kNV];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < kNV; ++v) acc[i][v] = V{};
  }
  for (int64_t k = 0; k < kc; ++k) {
    V bv[kNV];
    for (int v = 0; v < kNV; ++v) std::memcpy(&bv[v], b + v * kW, sizeof(V));
    for (int i = 0; i < MR; ++i) {
      const T ai = a[i];
      for (int v = 0; v < kNV; ++v) acc[i][v] += ai * bv[v];
    }
    a += MR;
    b += NR;
  }
  if (mr == MR && nr == NR && csc == 1) {
    for (int i = 0; i < MR; ++i) {
      for (int v = 0; v < kNV; ++v) {
        T* cp = c + i * rsc + v * kW;
        V r = alpha * acc[i][v];
        if (beta != T(0)) {
          V old;
          std::memcpy(&old, cp, sizeof(V));
          r += beta * old;
        }
        std::memcpy(cp, &r, sizeof(V));
      }
    }
    return;
  }
  alignas(64) T tmp[MR * NR];
  std::memcpy(tmp, acc, sizeof(tmp));
  for (int64_t i = 0; i < mr; ++i) {
    T* cp = c + i * rsc;
    const T* t = tmp + i * NR;
    if (beta == T(0)) {
      for (int64_t j = 0; j < nr; ++j) cp[j * csc] = alpha * t[j];
    } else {
      for (int64_t j = 0; j < nr; ++j) cp[j * csc] = alpha * t[j] + beta * cp[j * csc];
    }
  }
}

// Arch::block for the AVX2 kernel, which takes packed operands only: each B sliver stays in L1
// while the A slivers stream past it.
template <class T>
void avx2_block(int64_t mc, int64_t nc, int64_t kc, const Operands<T>& op, T alpha, T beta) {
  constexpr int MR = Blocking<T>::kMR, NR = Blocking<T>::kNR;
  for (int64_t j = 0; j < nc; j += NR) {
    const int64_t nr = std::min<int64_t>(NR, nc - j);
    for (int64_t i = 0; i < mc; i += MR) {
      micro_kernel<T, MR, NR>(kc, op.a + i / MR * op.a_sliver, op.b + j / NR * op.b_sliver,
                              op.c + i * op.c_rs + j * op.c_cs, op.c_rs, op.c_cs,
                              std::min<int64_t>(MR, mc - i), nr, alpha, beta);
    }
  }
}

template <class T>
constexpr Arch<T> avx2_arch() {
  using Bk = Blocking<T>;
  return {.name = "avx2",
          .mr = Bk::kMR,
          .nr = Bk::kNR,
          .m_grain = Bk::kMR,
          .n_grain = Bk::kNR,
          .max_tail = 0,
          .tail_cost = 1.0,
          .lanes = 2 * 32 / sizeof(T),
          .transpose_cost = 1.0,
          .store_cost = 0.1,
          .store_cost_t = 1.0,
          .kc = Bk::kKC,
          .mc = Bk::kMC,
          .nc = Bk::kNC,
          .in_place = false,
          .pack_a = &pack_a<T, Bk::kMR>,
          .pack_b = &pack_b<T, Bk::kNR>,
          .block = &avx2_block<T>};
}
constexpr Arch<float> kAvx2F32 = avx2_arch<float>();
constexpr Arch<double> kAvx2F64 = avx2_arch<double>();

}  // namespace

const Arch<float>& avx2_arch_f32() {
  return kAvx2F32;
}
const Arch<double>& avx2_arch_f64() {
  return kAvx2F64;
}

}  // namespace mel::kernels::cpu::gemm_detail
