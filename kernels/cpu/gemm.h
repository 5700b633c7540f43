// CPU matrix multiply (row-major GEMM): C = alpha * op(A) * op(B) + beta * C, through OpenBLAS when
// the build found it and otherwise through a built-in cache-blocked kernel (always available).
#pragma once
#include <cstdint>

namespace mel::kernels::cpu {

// Row-major GEMM for T = float or double. op(A) is M x K (A stored K x M when trans_a), op(B) is
// K x N (B stored N x K when trans_b); lda/ldb/ldc are row strides in elements. beta == 0 never
// reads C, so C may hold garbage (NaN) on entry. Any of M, N, K may be 0 (K == 0 gives beta * C).
// Parallel (OpenMP or OpenBLAS threads) when the product is large enough.
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// The built-in kernel gemm() falls back to without OpenBLAS: cache blocking, register-tiled
// micro-kernels for AVX-512 (chosen at run time) or AVX2, OpenMP across rectangles of C (one
// thread when called from inside a parallel region). Bitwise the same result for any thread count.
template <class T>
void gemm_blocked(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                  int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// Which implementation gemm() uses, for logs and benchmarks: "openblas (<core>)" or "blocked
// avx512" / "blocked avx2", with the reason when OpenBLAS is present but bypassed (see gemm.cpp).
const char* gemm_backend();

// Whether the built-in kernel may use its AVX-512 micro-kernels where the CPU has them (the
// default) or must keep to the AVX2 ones; returns the previous setting. For tests and benchmarks of
// the AVX2 path on AVX-512 machines.
bool gemm_allow_avx512(bool allow);

// `batch` independent products of one shape: matrix i reads A[i], B[i] and writes C[i] (pointers
// may repeat across i for broadcast operands, but the C[i] must not overlap). Small products run
// in parallel across the batch, large ones one after another with a parallel gemm each.
template <class T>
void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                  const T* const* A, int64_t lda, const T* const* B, int64_t ldb, T beta,
                  T* const* C, int64_t ldc, int64_t batch);

}  // namespace mel::kernels::cpu
