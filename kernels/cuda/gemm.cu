#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "kernels/cuda/check.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/launch.cuh"

namespace mel::kernels::cuda {

// Named rather than anonymous: GemmCache::Impl (external linkage) holds these types.
namespace gemm_detail {

// Owns one cuBLASLt descriptor.
template <class H, cublasStatus_t (*Destroy)(H)>
class LtOwned {
 public:
  LtOwned() = default;
  ~LtOwned() {
    if (h_) Destroy(h_);
  }
  LtOwned(const LtOwned&) = delete;
  LtOwned& operator=(const LtOwned&) = delete;
  H get() const { return h_; }
  H* out() { return &h_; }

 private:
  H h_ = nullptr;
};
using MatmulDesc = LtOwned<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using MatrixLayout = LtOwned<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using MatmulPref = LtOwned<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

template <class T>
struct LtTypes;
template <>
struct LtTypes<float> {
  static constexpr cudaDataType_t data = CUDA_R_32F, scale = CUDA_R_32F;
  static constexpr const char* name = "f32";
};
template <>
struct LtTypes<double> {
  static constexpr cudaDataType_t data = CUDA_R_64F, scale = CUDA_R_64F;
  static constexpr const char* name = "f64";
};
template <>
struct LtTypes<bfloat16> {
  static constexpr cudaDataType_t data = CUDA_R_16BF, scale = CUDA_R_32F;
  static constexpr const char* name = "bf16";
};
template <>
struct LtTypes<half> {
  static constexpr cudaDataType_t data = CUDA_R_16F, scale = CUDA_R_32F;
  static constexpr const char* name = "f16";
};

template <class T>
cublasComputeType_t compute_type(bool allow_tf32) {
  if constexpr (std::is_same_v<T, double>) {
    return CUBLAS_COMPUTE_64F;
  } else if constexpr (std::is_same_v<T, float>) {
    return allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  } else {
    return CUBLAS_COMPUTE_32F;
  }
}

// One product in cuBLASLt's column-major terms (see run()); every field selects the plan.
struct PlanKey {
  int32_t data = 0, compute = 0;
  bool ta = false, tb = false;
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0, sa = 0, sb = 0, sc = 0, batch = 1;
  uint32_t align_a = 0, align_b = 0, align_c = 0;
  bool operator==(const PlanKey&) const = default;
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    mix(static_cast<uint64_t>(k.data) << 8 | static_cast<uint64_t>(k.compute));
    mix((k.ta ? 1u : 0u) | (k.tb ? 2u : 0u));
    for (int64_t v : {k.m, k.n, k.k, k.lda, k.ldb, k.ldc, k.sa, k.sb, k.sc, k.batch}) {
      mix(static_cast<uint64_t>(v));
    }
    mix(uint64_t(k.align_a) | uint64_t(k.align_b) << 16 | uint64_t(k.align_c) << 32);
    return static_cast<size_t>(h);
  }
};

struct Plan {
  MatmulDesc op;
  MatrixLayout a, b, c;  // c also describes D (written in place)
  cublasLtMatmulAlgo_t algo{};
};

}  // namespace gemm_detail

struct GemmCache::Impl {
  std::mutex mu;
  std::unordered_map<gemm_detail::PlanKey, std::shared_ptr<const gemm_detail::Plan>,
                     gemm_detail::PlanKeyHash>
      plans;
};

GemmCache::GemmCache() : impl_(std::make_unique<Impl>()) {}
GemmCache::~GemmCache() = default;

size_t GemmCache::size() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->plans.size();
}

namespace {

using gemm_detail::LtTypes;
using gemm_detail::MatmulPref;
using gemm_detail::Plan;
using gemm_detail::PlanKey;

// Shapes seen by one process are few; the bound only guards against a runaway shape stream.
constexpr size_t kMaxPlans = 4096;

// Largest power of two (up to the 256 bytes cuBLASLt asks about) dividing every matrix start:
// the base pointer and, for a batch, the byte stride between matrices.
uint32_t alignment(const void* p, int64_t stride, size_t elem, int64_t batch) {
  uint64_t v = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
  if (batch > 1) v |= static_cast<uint64_t>(stride) * elem;
  uint32_t a = 256;
  while (a > 1 && (v & (a - 1)) != 0) a >>= 1;
  return a;
}

std::string describe(const PlanKey& k, const char* dtype) {
  // Reported in the caller's row-major terms: Lt's (m, n, A, B) are the caller's (N, M, B, A).
  return std::string(dtype) + " product M=" + std::to_string(k.n) + " N=" + std::to_string(k.m) +
         " K=" + std::to_string(k.k) + " trans_a=" + (k.tb ? "1" : "0") +
         " trans_b=" + (k.ta ? "1" : "0") + " lda=" + std::to_string(k.ldb) +
         " ldb=" + std::to_string(k.lda) + " ldc=" + std::to_string(k.ldc) +
         " batch=" + std::to_string(k.batch) + " alignments A/B/C=" + std::to_string(k.align_b) +
         "/" + std::to_string(k.align_a) + "/" + std::to_string(k.align_c) + " bytes";
}

void make_layout(gemm_detail::MatrixLayout& l, cudaDataType_t type, int64_t rows, int64_t cols,
                 int64_t ld, int64_t batch, int64_t stride) {
  MEL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(l.out(), type, static_cast<uint64_t>(rows),
                                              static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    MEL_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l.get(), CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                      &count, sizeof(count)));
    MEL_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        l.get(), CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
}

template <class T>
std::shared_ptr<const Plan> make_plan(const PlanKey& key, const GemmLt& lt) {
  auto p = std::make_shared<Plan>();
  MEL_CUBLAS_CHECK(cublasLtMatmulDescCreate(
      p->op.out(), static_cast<cublasComputeType_t>(key.compute), LtTypes<T>::scale));
  const cublasOperation_t opa = key.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opb = key.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  MEL_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p->op.get(), CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
  MEL_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p->op.get(), CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
  const cudaDataType_t dt = LtTypes<T>::data;
  make_layout(p->a, dt, key.ta ? key.k : key.m, key.ta ? key.m : key.k, key.lda, key.batch, key.sa);
  make_layout(p->b, dt, key.tb ? key.n : key.k, key.tb ? key.k : key.n, key.ldb, key.batch, key.sb);
  make_layout(p->c, dt, key.m, key.n, key.ldc, key.batch, key.sc);

  MatmulPref pref;
  MEL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(pref.out()));
  const uint64_t ws = lt.workspace_bytes;
  MEL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  // The default assumes 256-byte aligned matrices; views and odd batch strides are not.
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c}};
  for (const auto& [attr, value] : aligns) {
    MEL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.get(), attr, &value, sizeof(value)));
  }
  if constexpr (sizeof(T) == 2) {
    // Split-K partial sums must stay in f32: reducing them in the 16-bit output type would round
    // every partial sum, several ulps more error than the CPU's single rounding.
    const uint32_t mask = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    MEL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref.get(), CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask, sizeof(mask)));
  }

  constexpr int kRequested = 8;
  cublasLtMatmulHeuristicResult_t results[kRequested] = {};
  int count = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(lt.handle, p->op.get(), p->a.get(), p->b.get(), p->c.get(),
                                     p->c.get(), pref.get(), kRequested, results, &count);
  if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED) MEL_CUBLAS_CHECK(st);
  for (int i = 0; i < count; ++i) {
    if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= ws) {
      p->algo = results[i].algo;
      return p;
    }
  }
  throw Error("gemm: cuBLASLt found no algorithm for the " + describe(key, LtTypes<T>::name) +
              " (heuristic status " + cublas_status_text(st) + ", " + std::to_string(count) +
              " candidates)");
}

template <class T>
std::shared_ptr<const Plan> find_plan(const PlanKey& key, const GemmLt& lt) {
  auto& impl = lt.cache->impl();
  {
    std::lock_guard<std::mutex> lock(impl.mu);
    auto it = impl.plans.find(key);
    if (it != impl.plans.end()) return it->second;
  }
  // The heuristic runs outside the lock; two threads racing on a new shape both build a plan and
  // the second insert is dropped, which is harmless.
  std::shared_ptr<const Plan> plan = make_plan<T>(key, lt);
  std::lock_guard<std::mutex> lock(impl.mu);
  if (impl.plans.size() >= kMaxPlans) impl.plans.clear();  // in-flight plans stay alive
  return impl.plans.emplace(key, std::move(plan)).first->second;
}

// C = beta * C over `batch` M x N matrices: the whole product when K == 0, which cuBLASLt
// rejects. beta == 0 writes zeros without reading C (it may hold NaN).
template <class T, class S>
__global__ void scale_kernel(int64_t total, int64_t M, int64_t N, T* C, int64_t ldc, int64_t sc,
                             S beta) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t col = i % N, r = i / N, row = r % M, b = r / M;
    T* p = C + b * sc + row * ldc + col;
    *p = beta == S(0) ? T(S(0)) : T(static_cast<S>(*p) * beta);
  }
}

void check_ld(const char* what, int64_t ld, int64_t row_len) {
  if (ld < std::max<int64_t>(row_len, 1)) {
    throw Error(std::string("gemm: ") + what + " = " + std::to_string(ld) +
                " is smaller than the stored row length " + std::to_string(row_len));
  }
}

}  // namespace

template <class T>
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                          gemm_scalar_t<T> alpha, const T* A, int64_t lda, int64_t stride_a,
                          const T* B, int64_t ldb, int64_t stride_b, gemm_scalar_t<T> beta, T* C,
                          int64_t ldc, int64_t stride_c, int64_t batch, const GemmLt& lt,
                          cudaStream_t stream) {
  using S = gemm_scalar_t<T>;
  if (M <= 0 || N <= 0 || batch <= 0) return;
  check_ld("ldc", ldc, N);
  if (stride_a < 0 || stride_b < 0 || stride_c < 0) {
    throw Error("gemm: batch strides must be >= 0, got " + std::to_string(stride_a) + ", " +
                std::to_string(stride_b) + ", " + std::to_string(stride_c));
  }
  if (K <= 0) {
    const int64_t total = batch * M * N;
    scale_kernel<T, S><<<grid_for(total), kBlock, 0, stream>>>(total, M, N, C, ldc, stride_c, beta);
    MEL_CUDA_CHECK_LAUNCH();
    return;
  }
  check_ld("lda", lda, trans_a ? M : K);
  check_ld("ldb", ldb, trans_b ? K : N);
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLASLt's A is our B, its B
  // our A, and a row-major matrix with row stride ld is its column-major transpose with that ld.
  PlanKey key;
  key.data = static_cast<int32_t>(LtTypes<T>::data);
  key.compute = static_cast<int32_t>(gemm_detail::compute_type<T>(lt.allow_tf32));
  key.ta = trans_b;
  key.tb = trans_a;
  key.m = N;
  key.n = M;
  key.k = K;
  key.lda = ldb;
  key.ldb = lda;
  key.ldc = ldc;
  key.sa = stride_b;
  key.sb = stride_a;
  key.sc = stride_c;
  // cuBLASLt counts a batch in int32; longer batches run in chunks.
  constexpr int64_t kMaxBatch = int64_t(1) << 30;
  for (int64_t done = 0; done < batch; done += kMaxBatch) {
    key.batch = std::min(batch - done, kMaxBatch);
    const T* a = A + done * stride_a;
    const T* b = B + done * stride_b;
    T* c = C + done * stride_c;
    key.align_a = alignment(b, stride_b, sizeof(T), key.batch);
    key.align_b = alignment(a, stride_a, sizeof(T), key.batch);
    key.align_c = alignment(c, stride_c, sizeof(T), key.batch);
    std::shared_ptr<const Plan> plan = find_plan<T>(key, lt);
    MEL_CUBLAS_CHECK(cublasLtMatmul(lt.handle, plan->op.get(), &alpha, b, plan->a.get(), a,
                                    plan->b.get(), &beta, c, plan->c.get(), c, plan->c.get(),
                                    &plan->algo, lt.workspace, lt.workspace_bytes, stream));
  }
}

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, gemm_scalar_t<T> alpha,
          const T* A, int64_t lda, const T* B, int64_t ldb, gemm_scalar_t<T> beta, T* C,
          int64_t ldc, const GemmLt& lt, cudaStream_t stream) {
  gemm_strided_batched<T>(trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0,
                          1, lt, stream);
}

#define MEL_GEMM_INSTANTIATE(T)                                                                   \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, gemm_scalar_t<T>, const T*,        \
                        int64_t, const T*, int64_t, gemm_scalar_t<T>, T*, int64_t, const GemmLt&, \
                        cudaStream_t);                                                            \
  template void gemm_strided_batched<T>(bool, bool, int64_t, int64_t, int64_t, gemm_scalar_t<T>,  \
                                        const T*, int64_t, int64_t, const T*, int64_t, int64_t,   \
                                        gemm_scalar_t<T>, T*, int64_t, int64_t, int64_t,          \
                                        const GemmLt&, cudaStream_t);
MEL_GEMM_INSTANTIATE(float)
MEL_GEMM_INSTANTIATE(double)
MEL_GEMM_INSTANTIATE(bfloat16)
MEL_GEMM_INSTANTIATE(half)
#undef MEL_GEMM_INSTANTIATE

}  // namespace mel::kernels::cuda
