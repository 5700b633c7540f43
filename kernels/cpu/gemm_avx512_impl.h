// Private to the AVX-512 GEMM (gemm_avx512.cpp, gemm_avx512_pack.cpp): the register tile, the
// vector wrappers and the 8 x 16 transpose that its micro-kernels, tail kernels and packing build
// on.
#pragma once
#include <cstdint>

#include "kernels/cpu/gemm_impl.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MEL_GEMM_HAVE_AVX512 1
// GCC 12's AVX-512 headers seed some intrinsics with a self-initialised _mm512_undefined_ps(),
// which -Wmaybe-uninitialized reports once they are inlined (GCC bug 105593, fixed in 13).
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

#ifdef MEL_GEMM_HAVE_AVX512
namespace mel::kernels::cpu::gemm_detail {

#define MEL_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))

// Internal linkage for everything compiled with AVX-512 (each of the two files gets its own
// copies): an AVX-512 template instance must never be merged (COMDAT) with an AVX2 one.
namespace {

// Register tile MR x (NV vectors): 8 x 48 floats or 8 x 24 doubles is 24 accumulators, 3 B vectors
// and a broadcast A value, leaving 4 of the 32 zmm registers for ragged columns riding along. Per
// k step that is 24 FMAs (12 cycles on two FMA ports) against 11 loads, so the kernel is FMA bound.
// MR = 8 also makes transposing (packing a transposed B, storing C^T) a matter of 8 x 16 register
// transposes.
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

template <class T>
struct Vec8;  // 8 lanes, one per row of an A sliver

template <>
struct Vec8<float> {
  using R = __m256;
  MEL_AVX512 static R zero() { return _mm256_setzero_ps(); }
  MEL_AVX512 static R set1(float x) { return _mm256_set1_ps(x); }
  MEL_AVX512 static R load(const float* p) { return _mm256_loadu_ps(p); }
  MEL_AVX512 static R loadz(__mmask8 m, const float* p) { return _mm256_maskz_loadu_ps(m, p); }
  MEL_AVX512 static void store(float* p, R x) { _mm256_storeu_ps(p, x); }
  MEL_AVX512 static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  MEL_AVX512 static R add(R a, R b) { return _mm256_add_ps(a, b); }
};

template <>
struct Vec8<double> {
  using R = __m512d;
  MEL_AVX512 static R zero() { return _mm512_setzero_pd(); }
  MEL_AVX512 static R set1(double x) { return _mm512_set1_pd(x); }
  MEL_AVX512 static R load(const double* p) { return _mm512_loadu_pd(p); }
  MEL_AVX512 static R loadz(__mmask8 m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  MEL_AVX512 static void store(double* p, R x) { _mm512_storeu_pd(p, x); }
  MEL_AVX512 static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  MEL_AVX512 static R add(R a, R b) { return _mm512_add_pd(a, b); }
};

template <class T>
MEL_AVX512 inline void update_c(T* cp, T sum, T alpha, T beta) {
  const T r = alpha * sum;
  *cp = beta != T(0) ? __builtin_fma(beta, *cp, r) : r;
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

}  // namespace

// Arch::pack_b (gemm_avx512_pack.cpp): slivers of kNV vectors, transposed through registers for
// floats.
MEL_AVX512 void pack_b_avx512_f32(bool trans, const float* B, int64_t ldb, int64_t p0, int64_t kc,
                                  int64_t j0, int64_t nc, int64_t s0, int64_t s1, float* out);
MEL_AVX512 void pack_b_avx512_f64(bool trans, const double* B, int64_t ldb, int64_t p0, int64_t kc,
                                  int64_t j0, int64_t nc, int64_t s0, int64_t s1, double* out);

}  // namespace mel::kernels::cpu::gemm_detail
#endif
