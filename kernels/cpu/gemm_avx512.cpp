// AVX-512 packing routines and micro-kernels for the blocked GEMM in gemm.cpp. The build targets
// x86-64-v3 (AVX2), so every function here carries a target attribute and gemm.cpp only calls them
// after __builtin_cpu_supports confirms AVX-512 at run time. Nothing here has external linkage but
// the two arch getters: a template instantiated with AVX-512 code must never be merged (COMDAT) with
// an AVX2 instantiation used elsewhere.
#include <cstdint>
#include <cstring>

#include "kernels/cpu/gemm_impl.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MEL_GEMM_HAVE_AVX512 1
// GCC 12's AVX-512 headers seed some intrinsics with a self-initialised _mm512_undefined_ps(), which
// -Wmaybe-uninitialized reports once they are inlined (GCC bug 105593, fixed in 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace mel::kernels::cpu::gemm_detail {

#ifdef MEL_GEMM_HAVE_AVX512
namespace {

#define MEL_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))

// Register tile MR x (NV vectors): 8 x 48 floats or 8 x 24 doubles is 24 accumulators, 3 B vectors
// and broadcasts folded into the FMAs' memory operands, within the 32 zmm registers. Per k step
// that is 24 FMAs (12 cycles on two FMA ports) against 11 loads, so the kernel is FMA bound. MR = 8
// also makes packing a transposed operand a sequence of 8 x 16 register transposes.
constexpr int kMR = 8, kNV = 3;

template <class T>
struct Vec;

template <>
struct Vec<float> {
  using R = __m512;
  using Mask = __mmask16;
  static constexpr int W = 16;
  MEL_AVX512 static R zero() { return _mm512_setzero_ps(); }
  MEL_AVX512 static R set1(float x) { return _mm512_set1_ps(x); }
  MEL_AVX512 static R load(const float* p) { return _mm512_loadu_ps(p); }
  MEL_AVX512 static R loadz(Mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  MEL_AVX512 static void store(float* p, Mask m, R x) { _mm512_mask_storeu_ps(p, m, x); }
  MEL_AVX512 static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  MEL_AVX512 static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static Mask mask(int n) { return static_cast<Mask>(n >= W ? 0xFFFFu : (1u << n) - 1u); }
};

template <>
struct Vec<double> {
  using R = __m512d;
  using Mask = __mmask8;
  static constexpr int W = 8;
  MEL_AVX512 static R zero() { return _mm512_setzero_pd(); }
  MEL_AVX512 static R set1(double x) { return _mm512_set1_pd(x); }
  MEL_AVX512 static R load(const double* p) { return _mm512_loadu_pd(p); }
  MEL_AVX512 static R loadz(Mask m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  MEL_AVX512 static void store(double* p, Mask m, R x) { _mm512_mask_storeu_pd(p, m, x); }
  MEL_AVX512 static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  MEL_AVX512 static R mul(R a, R b) { return _mm512_mul_pd(a, b); }
  static Mask mask(int n) { return static_cast<Mask>(n >= W ? 0xFFu : (1u << n) - 1u); }
};

inline int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// Rows r[0..7] of 16 floats -> out[k] = (r[0][k], ..., r[7][k]) for k < 16.
MEL_AVX512 inline void transpose_8x16(const __m512 r[8], __m256 out[16]) {
  const __m512 t0 = _mm512_unpacklo_ps(r[0], r[1]), t1 = _mm512_unpackhi_ps(r[0], r[1]);
  const __m512 t2 = _mm512_unpacklo_ps(r[2], r[3]), t3 = _mm512_unpackhi_ps(r[2], r[3]);
  const __m512 t4 = _mm512_unpacklo_ps(r[4], r[5]), t5 = _mm512_unpackhi_ps(r[4], r[5]);
  const __m512 t6 = _mm512_unpacklo_ps(r[6], r[7]), t7 = _mm512_unpackhi_ps(r[6], r[7]);
  // u[q] (rows 0-3) and u[4 + q] (rows 4-7) hold column 4L + q in 128-bit lane L
  __m512 u[8];
  u[0] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  u[1] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  u[2] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  u[3] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  u[4] = _mm512_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  u[5] = _mm512_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  u[6] = _mm512_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  u[7] = _mm512_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  for (int q = 0; q < 4; ++q) {
    __m512 x = _mm512_shuffle_f32x4(u[q], u[4 + q], _MM_SHUFFLE(1, 0, 1, 0));
    __m512 y = _mm512_shuffle_f32x4(u[q], u[4 + q], _MM_SHUFFLE(3, 2, 3, 2));
    x = _mm512_shuffle_f32x4(x, x, _MM_SHUFFLE(3, 1, 2, 0));
    y = _mm512_shuffle_f32x4(y, y, _MM_SHUFFLE(3, 1, 2, 0));
    out[q] = _mm512_castps512_ps256(x);
    out[4 + q] = _mm512_extractf32x8_ps(x, 1);
    out[8 + q] = _mm512_castps512_ps256(y);
    out[12 + q] = _mm512_extractf32x8_ps(y, 1);
  }
}

// C tile of MR rows x n columns (n <= NV * W, more than (NV - 1) * W) from kc steps of a packed A
// sliver (stride MRS per k) and B sliver (stride NRS per k). Every variant adds the products of
// one C element in the same order with the same instructions, so which variant covers an element
// (a full tile or an edge) never changes its bits.
template <class T, int MR, int NV, int MRS, int NRS>
MEL_AVX512 void micro(int64_t kc, const T* __restrict a, const T* __restrict b, T* __restrict c,
                      int64_t rsc, int64_t csc, int n, T alpha, T beta) {
  using V = Vec<T>;
  using R = typename V::R;
  constexpr int W = V::W;
  R acc[MR][NV];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
  }
  if (csc == 1) {
    for (int i = 0; i < MR; ++i) {
      for (int v = 0; v < NV; ++v) _mm_prefetch(reinterpret_cast<const char*>(c + i * rsc + v * W), _MM_HINT_T0);
    }
  } else {
    for (int j = 0; j < n; ++j) _mm_prefetch(reinterpret_cast<const char*>(c + j * csc), _MM_HINT_T0);
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    R bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * W);
    for (int i = 0; i < MR; ++i) {
      const R ai = V::set1(a[i]);
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
    }
    a += MRS;
    b += NRS;
  }
  const R va = V::set1(alpha), vb = V::set1(beta);
  if (csc == 1) {
    const typename V::Mask tail = V::mask(n - (NV - 1) * W);
    for (int i = 0; i < MR; ++i) {
      T* cp = c + i * rsc;
      for (int v = 0; v < NV; ++v) {
        const typename V::Mask m = v == NV - 1 ? tail : V::mask(W);
        R r = V::mul(va, acc[i][v]);
        if (beta != T(0)) r = V::fma(vb, V::loadz(m, cp + v * W), r);
        V::store(cp + v * W, m, r);
      }
    }
    return;
  }
  // Transposed C (the driver computes C^T = op(B)^T op(A)^T when N wastes too many lanes): row j
  // of the tile is column j of C, whose MR elements are contiguous.
  if constexpr (sizeof(T) == 4 && MRS == 8) {
    const __mmask8 m = static_cast<__mmask8>((1u << MR) - 1u);
    const __m256 va8 = _mm256_set1_ps(alpha), vb8 = _mm256_set1_ps(beta);
    for (int v = 0; v < NV; ++v) {
      __m512 rows[8];
      for (int i = 0; i < 8; ++i) rows[i] = i < MR ? acc[i < MR ? i : 0][v] : _mm512_setzero_ps();
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
using MicroFn = void (*)(int64_t, const T*, const T*, T*, int64_t, int64_t, int, T, T);

// The variant for an m x nv edge tile, by recursion over the template arguments.
template <class T, int M, int NV>
MicroFn<T> pick_nv(int nv) {
  if constexpr (NV == 0) {
    return nullptr;
  } else {
    if (nv == NV) return &micro<T, M, NV, kMR, kNV * Vec<T>::W>;
    return pick_nv<T, M, NV - 1>(nv);
  }
}
template <class T, int M>
MicroFn<T> pick(int m, int nv) {
  if constexpr (M == 0) {
    return nullptr;
  } else {
    if (m == M) return pick_nv<T, M, kNV>(nv);
    return pick<T, M - 1>(m, nv);
  }
}

template <class T>
struct KernelTable {
  MicroFn<T> fn[kMR + 1][kNV + 1] = {};
  KernelTable() {
    for (int m = 1; m <= kMR; ++m) {
      for (int nv = 1; nv <= kNV; ++nv) fn[m][nv] = pick<T, kMR>(m, nv);
    }
  }
};

template <class T>
void block(int64_t mc, int64_t nc, int64_t kc, const T* ap, const T* bp, T* c, int64_t rsc,
           int64_t csc, T alpha, T beta) {
  constexpr int W = Vec<T>::W, NR = kNV * W;
  static const KernelTable<T> table;
  // A B sliver (kc x NR) stays in L1 while the A slivers of the block stream past it from L2.
  for (int64_t j = 0; j < nc; j += NR) {
    const int n = static_cast<int>(min64(NR, nc - j));
    const int nv = (n + W - 1) / W;
    for (int64_t i = 0; i < mc; i += kMR) {
      const int m = static_cast<int>(min64(kMR, mc - i));
      table.fn[m][nv](kc, ap + i * kc, bp + j * kc, c + i * rsc + j * csc, rsc, csc, n, alpha,
                      beta);
    }
  }
}

// ---- packing ---------------------------------------------------------------------------------

MEL_AVX512 void pack_a_f32(bool trans, const float* A, int64_t lda, int64_t i0, int64_t mc,
                           int64_t p0, int64_t kc, float* out) {
  for (int64_t s = 0; s < mc; s += kMR) {
    const int rows = static_cast<int>(min64(kMR, mc - s));
    float* o = out + s * kc;
    if (trans) {  // column i of op(A) is row i of the stored A: 8 contiguous values per k
      const __mmask8 m = static_cast<__mmask8>((1u << rows) - 1u);
      const float* src = A + p0 * lda + i0 + s;
      for (int64_t k = 0; k < kc; ++k) {
        _mm256_storeu_ps(o + k * kMR, _mm256_maskz_loadu_ps(m, src + k * lda));
      }
      continue;
    }
    const float* src[kMR];
    for (int r = 0; r < rows; ++r) src[r] = A + (i0 + s + r) * lda + p0;
    for (int64_t k0 = 0; k0 < kc; k0 += 16) {
      const int cnt = static_cast<int>(min64(16, kc - k0));
      const __mmask16 m = Vec<float>::mask(cnt);
      __m512 r[kMR];
      for (int i = 0; i < kMR; ++i) {
        r[i] = i < rows ? _mm512_maskz_loadu_ps(m, src[i] + k0) : _mm512_setzero_ps();
      }
      __m256 cols[16];
      transpose_8x16(r, cols);
      for (int q = 0; q < cnt; ++q) _mm256_storeu_ps(o + (k0 + q) * kMR, cols[q]);
    }
  }
}

MEL_AVX512 void pack_b_f32(bool trans, const float* B, int64_t ldb, int64_t p0, int64_t kc,
                           int64_t j0, int64_t nc, int64_t s0, int64_t s1, float* out) {
  constexpr int W = 16, NR = kNV * W;
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t c0 = s * NR;
    const int cols = static_cast<int>(min64(NR, nc - c0));
    float* o = out + c0 * kc;
    if (!trans) {  // rows of op(B) are contiguous: copy NR values per k, zero past the last column
      const float* src = B + p0 * ldb + j0 + c0;
      __mmask16 m[kNV];
      for (int v = 0; v < kNV; ++v) {
        const int left = cols - v * W;
        m[v] = left <= 0 ? 0 : Vec<float>::mask(left);
      }
      for (int64_t k = 0; k < kc; ++k) {
        for (int v = 0; v < kNV; ++v) {
          _mm512_storeu_ps(o + k * NR + v * W, _mm512_maskz_loadu_ps(m[v], src + k * ldb + v * W));
        }
      }
      continue;
    }
    // column j of op(B) is row j of the stored B: transpose groups of 8 columns x 16 k
    for (int g = 0; g < NR / 8; ++g) {
      const int gcols = static_cast<int>(min64(8, cols - g * 8));
      if (gcols <= 0) {
        for (int64_t k = 0; k < kc; ++k) _mm256_storeu_ps(o + k * NR + g * 8, _mm256_setzero_ps());
        continue;
      }
      const float* src[8];
      for (int r = 0; r < gcols; ++r) src[r] = B + (j0 + c0 + g * 8 + r) * ldb + p0;
      for (int64_t k0 = 0; k0 < kc; k0 += 16) {
        const int cnt = static_cast<int>(min64(16, kc - k0));
        const __mmask16 m = Vec<float>::mask(cnt);
        __m512 r[8];
        for (int i = 0; i < 8; ++i) {
          r[i] = i < gcols ? _mm512_maskz_loadu_ps(m, src[i] + k0) : _mm512_setzero_ps();
        }
        __m256 tc[16];
        transpose_8x16(r, tc);
        for (int q = 0; q < cnt; ++q) _mm256_storeu_ps(o + (k0 + q) * NR + g * 8, tc[q]);
      }
    }
  }
}

// Doubles take the plain loops (the compiler vectorises the contiguous cases).
MEL_AVX512 void pack_a_f64(bool trans, const double* A, int64_t lda, int64_t i0, int64_t mc,
                           int64_t p0, int64_t kc, double* out) {
  for (int64_t s = 0; s < mc; s += kMR) {
    const int64_t rows = min64(kMR, mc - s);
    double* o = out + s * kc;
    if (!trans) {
      const double* src[kMR];
      for (int64_t r = 0; r < rows; ++r) src[r] = A + (i0 + s + r) * lda + p0;
      for (int64_t k = 0; k < kc; ++k) {
        for (int64_t r = 0; r < rows; ++r) o[k * kMR + r] = src[r][k];
        for (int64_t r = rows; r < kMR; ++r) o[k * kMR + r] = 0.0;
      }
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        const double* src = A + (p0 + k) * lda + i0 + s;
        for (int64_t r = 0; r < rows; ++r) o[k * kMR + r] = src[r];
        for (int64_t r = rows; r < kMR; ++r) o[k * kMR + r] = 0.0;
      }
    }
  }
}

MEL_AVX512 void pack_b_f64(bool trans, const double* B, int64_t ldb, int64_t p0, int64_t kc,
                           int64_t j0, int64_t nc, int64_t s0, int64_t s1, double* out) {
  constexpr int NR = kNV * 8;
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t c0 = s * NR;
    const int64_t cols = min64(NR, nc - c0);
    double* o = out + c0 * kc;
    if (!trans) {
      for (int64_t k = 0; k < kc; ++k) {
        const double* src = B + (p0 + k) * ldb + j0 + c0;
        for (int64_t c = 0; c < cols; ++c) o[k * NR + c] = src[c];
        for (int64_t c = cols; c < NR; ++c) o[k * NR + c] = 0.0;
      }
    } else {
      const double* src[NR];
      for (int64_t c = 0; c < cols; ++c) src[c] = B + (j0 + c0 + c) * ldb + p0;
      for (int64_t k = 0; k < kc; ++k) {
        for (int64_t c = 0; c < cols; ++c) o[k * NR + c] = src[c][k];
        for (int64_t c = cols; c < NR; ++c) o[k * NR + c] = 0.0;
      }
    }
  }
}

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
}

// kc x NR of packed B (48 KiB L1: 24 KiB for floats at kc = 128... see gemm.cpp's tuning notes)
const Arch<float> kArchF32 = {"avx512",    kMR,         kNV * 16,     1,   16, 256, 192, 4080,
                              &pack_a_f32, &pack_b_f32, &block<float>};
const Arch<double> kArchF64 = {"avx512",    kMR,         kNV * 8,       1,   8, 256, 96, 2040,
                               &pack_a_f64, &pack_b_f64, &block<double>};

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
