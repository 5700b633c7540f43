// The AVX-512 GEMM's packing routines (Arch::pack_b); see gemm_avx512.cpp for why every function
// carries a target attribute and is only called after a run-time check.
#include "kernels/cpu/gemm_avx512_impl.h"

#ifdef MEL_GEMM_HAVE_AVX512
namespace mel::kernels::cpu::gemm_detail {

MEL_AVX512 void pack_b_avx512_f32(bool trans, const float* B, int64_t ldb, int64_t p0, int64_t kc,
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
MEL_AVX512 void pack_b_avx512_f64(bool trans, const double* B, int64_t ldb, int64_t p0, int64_t kc,
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

}  // namespace mel::kernels::cpu::gemm_detail
#endif
