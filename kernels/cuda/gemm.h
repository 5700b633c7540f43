// cuBLASLt matrix multiply, the twin of kernels/cpu/gemm.h on a stream: row-major C = alpha op(A)
// op(B) + beta C, single and strided-batched, for f32 (FP32 or TF32 math), f64, bf16 and f16.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "kernels/half.h"

namespace mel::kernels::cuda {

// Matmul plans (cuBLASLt descriptors and the heuristic's algorithm) per shape, layout, dtype, math
// mode and pointer alignment, so the heuristic runs once per shape. One per device: core keeps it
// in cuda_context(i).cache<GemmCache>("gemm"). Thread-safe.
class GemmCache {
 public:
  GemmCache();
  ~GemmCache();
  GemmCache(const GemmCache&) = delete;
  GemmCache& operator=(const GemmCache&) = delete;
  size_t size() const;  // plans held (for tests)
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// What a product runs with: the device's cuBLASLt handle and workspace, its plan cache, and
// whether f32 products may use TF32 tensor cores (else full FP32 math, CUBLAS_COMPUTE_32F).
struct GemmLt {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  GemmCache* cache = nullptr;
  bool allow_tf32 = false;
};

// The type of alpha and beta: double for f64, float for f32 and the 16-bit types (which accumulate
// in f32 and round once, at the store).
template <class T>
using gemm_scalar_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Row-major GEMM, as kernels::cpu::gemm: op(A) is M x K (A stored K x M when trans_a), op(B) is
// K x N (B stored N x K when trans_b), lda/ldb/ldc row strides in elements (at least the stored
// row length). beta == 0 never reads C. M, N or K may be 0 (K == 0 gives beta * C). T: float,
// double, bfloat16, half; every pointer is device memory.
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, gemm_scalar_t<T> alpha,
          const T* A, int64_t lda, const T* B, int64_t ldb, gemm_scalar_t<T> beta, T* C,
          int64_t ldc, const GemmLt& lt, cudaStream_t stream);

// `batch` products of one shape: product i reads A + i * stride_a and B + i * stride_b and writes
// C + i * stride_c. A stride of 0 broadcasts an operand; strides are >= 0 and the C matrices must
// not overlap.
template <class T>
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                          gemm_scalar_t<T> alpha, const T* A, int64_t lda, int64_t stride_a,
                          const T* B, int64_t ldb, int64_t stride_b, gemm_scalar_t<T> beta, T* C,
                          int64_t ldc, int64_t stride_c, int64_t batch, const GemmLt& lt,
                          cudaStream_t stream);

}  // namespace mel::kernels::cuda
