#include "core/ops_linalg.h"

#include <algorithm>
#include <optional>
#include <type_traits>
#include <vector>

#include "core/autograd.h"
#include "core/cuda_context.h"
#include "core/iter.h"
#include "core/ops_reduce.h"
#include "kernels/cpu/gemm.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/gemm.h"
#endif

namespace mel {

using autograd::GradMask;

namespace {

// How the last two dimensions of an operand reach gemm: row-major (trans = false) or as the
// transpose of a row-major matrix, with the stride between stored rows.
struct MatLayout {
  bool trans = false;
  int64_t ld = 1;
};

// A rows x cols matrix with element strides (rs, cs) that gemm can read in place, if any. The
// stride of a size-1 dimension means nothing, so it never disqualifies a layout.
std::optional<MatLayout> gemm_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  const int64_t c1 = std::max<int64_t>(cols, 1), r1 = std::max<int64_t>(rows, 1);
  if ((cols == 1 || cs == 1) && (rows == 1 || rs >= c1))
    return MatLayout{false, rows == 1 ? c1 : rs};
  if ((rows == 1 || rs == 1) && (cols == 1 || cs >= r1))
    return MatLayout{true, cols == 1 ? r1 : cs};
  return std::nullopt;
}

// The operand as gemm will read it: itself when its matrix layout fits, else a contiguous copy.
std::pair<Tensor, MatLayout> gemm_operand(const Tensor& t) {
  const int64_t n = t.dim();
  if (auto l = gemm_layout(t.size(-2), t.size(-1), t.stride(n - 2), t.stride(n - 1))) {
    return {t, *l};
  }
  Tensor c = t.contiguous();
  return {c, MatLayout{false, std::max<int64_t>(c.size(-1), 1)}};
}

// True when the rows of every matrix in `t` ([..., M, K], row-major rows `ld` apart) form one
// matrix of numel / K rows with that row stride, so a batched product against a single matrix
// becomes one large GEMM.
bool rows_fold(const Tensor& t, int64_t ld) {
  int64_t expect = ld;
  for (int64_t d = t.dim() - 2; d >= 0; --d) {
    if (t.size(d) == 1) continue;
    if (t.stride(d) != expect) return false;
    expect *= t.size(d);
  }
  return true;
}

// Batch shape both operands broadcast to (numpy rules), naming the full shapes on failure.
Shape batch_shape(const Tensor& a, const Tensor& b, const Tensor& a_in, const Tensor& b_in) {
  const Shape ba(a.shape().begin(), a.shape().end() - 2);
  const Shape bb(b.shape().begin(), b.shape().end() - 2);
  const size_t n = std::max(ba.size(), bb.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - ba.size() ? 1 : ba[i - (n - ba.size())];
    const int64_t db = i < n - bb.size() ? 1 : bb[i - (n - bb.size())];
    MEL_CHECK(da == db || da == 1 || db == 1,
              "matmul: batch dimensions {} and {} of shapes {} and {} cannot be broadcast together "
              "(sizes {} and {}; they must match or one must be 1)",
              shape_str(ba), shape_str(bb), shape_str(a_in.shape()), shape_str(b_in.shape()), da,
              db);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Element offsets of each batch matrix of `t` ([..., rows, cols]) over the broadcast `batch`.
std::vector<int64_t> batch_offsets(const Tensor& t, const Shape& batch) {
  const int64_t nb = static_cast<int64_t>(batch.size());
  const int64_t lead = nb - (t.dim() - 2);
  Shape st(nb, 0);
  for (int64_t d = 0; d < t.dim() - 2; ++d) {
    if (t.size(d) != 1) st[lead + d] = t.stride(d);
  }
  const int64_t total = numel_of(batch);
  std::vector<int64_t> offs(total);
  Shape idx(nb, 0);
  int64_t off = 0;
  for (int64_t i = 0; i < total; ++i) {
    offs[i] = off;
    for (int64_t d = nb - 1; d >= 0; --d) {  // odometer step, keeping `off` in sync
      off += st[d];
      if (++idx[d] < batch[d]) break;
      off -= st[d] * batch[d];
      idx[d] = 0;
    }
  }
  return offs;
}

template <class T>
constexpr bool kCpuGemm = std::is_same_v<T, float> || std::is_same_v<T, double>;

#ifdef MEL_HAVE_CUDA
// `batch` products of one shape on the GPU `dev`; operand i starts at p + i * stride (stride 0
// broadcasts the operand).
template <class T>
void gemm_cuda(Device dev, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* a,
               int64_t lda, int64_t sa, const T* b, int64_t ldb, int64_t sb, T* c, int64_t ldc,
               int64_t sc, int64_t batch) {
  cudaStream_t stream = cuda_stream(dev);
  CudaContext& ctx = cuda_context(dev.index);
  const kernels::cuda::GemmLt lt{ctx.cublaslt(), ctx.cublaslt_workspace(),
                                 ctx.cublaslt_workspace_bytes(),
                                 &ctx.cache<kernels::cuda::GemmCache>("gemm"), allow_tf32()};
  kernels::cuda::gemm_strided_batched<T>(ta, tb, M, N, K, 1, a, lda, sa, b, ldb, sb, 0, c, ldc, sc,
                                         batch, lt, stream);
}

// The batched product on the GPU: each run of batch entries whose operand offsets step by
// constants is one strided-batched call, so stacked and broadcast batches take a single call and
// two broadcast batch dimensions one call per outer index.
template <class T>
void matmul_batched_cuda(Device dev, const MatLayout& la, const MatLayout& lb, int64_t M, int64_t N,
                         int64_t K, const T* pa, const std::vector<int64_t>& oa, const T* pb,
                         const std::vector<int64_t>& ob, T* out, int64_t ldc) {
  const int64_t total = static_cast<int64_t>(oa.size()), mn = M * N;
  for (int64_t i = 0; i < total;) {
    int64_t n = 1, sa = 0, sb = 0;
    if (i + 1 < total && oa[i + 1] >= oa[i] && ob[i + 1] >= ob[i]) {
      sa = oa[i + 1] - oa[i];
      sb = ob[i + 1] - ob[i];
      n = 2;
      while (i + n < total && oa[i + n] - oa[i + n - 1] == sa && ob[i + n] - ob[i + n - 1] == sb) {
        ++n;
      }
    }
    gemm_cuda<T>(dev, la.trans, lb.trans, M, N, K, pa + oa[i], la.ld, sa, pb + ob[i], lb.ld, sb,
                 out + i * mn, ldc, mn, n);
    i += n;
  }
}
#endif

// out (contiguous, batch + [M, N]) = a2 @ b2 with a2: [..., M, K], b2: [..., K, N], on their
// device.
template <class T>
void matmul_compute(const Tensor& a2, const Tensor& b2, const Shape& batch, T* out) {
  auto [a, la] = gemm_operand(a2);
  auto [b, lb] = gemm_operand(b2);
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  const int64_t ldc = std::max<int64_t>(N, 1);
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  const bool on_gpu = a.device().is_cuda();
  if (!on_gpu && !kCpuGemm<T>) {
    fail("matmul: the CPU GEMM has no {} kernel (the op computes 16-bit types in f32)",
         dtype_name(dtype_v<T>));
  }
  if (b.dim() == 2 && (batch.empty() || (!la.trans && rows_fold(a, la.ld)))) {
    if (on_gpu) {
      MEL_CUDA_ONLY(gemm_cuda<T>(a.device(), la.trans, lb.trans, numel_of(batch) * M, N, K, pa,
                                 la.ld, 0, pb, lb.ld, 0, out, ldc, 0, 1));
    } else if constexpr (kCpuGemm<T>) {
      kernels::cpu::gemm<T>(la.trans, lb.trans, numel_of(batch) * M, N, K, T(1), pa, la.ld, pb,
                            lb.ld, T(0), out, ldc);
    }
    return;
  }
  const std::vector<int64_t> oa = batch_offsets(a, batch), ob = batch_offsets(b, batch);
  if (on_gpu) {
    MEL_CUDA_ONLY(matmul_batched_cuda<T>(a.device(), la, lb, M, N, K, pa, oa, pb, ob, out, ldc));
    return;
  }
  if constexpr (kCpuGemm<T>) {
    const int64_t total = numel_of(batch);
    std::vector<const T*> va(total), vb(total);
    std::vector<T*> vc(total);
    for (int64_t i = 0; i < total; ++i) {
      va[i] = pa + oa[i];
      vb[i] = pb + ob[i];
      vc[i] = out + i * M * N;
    }
    kernels::cpu::gemm_batched<T>(la.trans, lb.trans, M, N, K, T(1), va.data(), la.ld, vb.data(),
                                  lb.ld, T(0), vc.data(), ldc, total);
  }
}

// Gradients of matmul(a, b) for output gradient g (a, b detached originals, 1-D forms included).
std::vector<Tensor> matmul_backward(const Tensor& a, const Tensor& b, const Tensor& g,
                                    const GradMask& need) {
  const bool vec_a = a.dim() == 1, vec_b = b.dim() == 1;
  Tensor a2 = vec_a ? a.unsqueeze(0) : a;
  Tensor b2 = vec_b ? b.unsqueeze(1) : b;
  Tensor g2 = vec_b ? g.unsqueeze(g.dim()) : g;
  if (vec_a) g2 = g2.unsqueeze(g2.dim() - 1);
  Tensor ga, gb;
  if (need[0]) {
    ga = sum_to(matmul(g2, b2.transpose(-1, -2)), a2.shape()).reshape(a.shape());
  }
  if (need[1]) {
    if (b2.dim() == 2 && a2.dim() > 2) {
      // Sum over the batch inside one GEMM rather than materialising a product per batch entry.
      const int64_t K = a2.size(-1), N = b2.size(-1);
      gb = matmul(a2.reshape({-1, K}).t(), g2.reshape({-1, N}));
    } else {
      gb = sum_to(matmul(a2.transpose(-1, -2), g2), b2.shape());
    }
    gb = gb.reshape(b.shape());
  }
  return {ga, gb};
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  constexpr const char* op = "matmul";
  check_defined(op, a, "the first argument");
  check_defined(op, b, "the second argument");
  MEL_CHECK(a.dim() >= 1 && b.dim() >= 1,
            "matmul: both arguments need at least one dimension, got shapes {} and {} (use mul "
            "to scale by a 0-d tensor)",
            shape_str(a.shape()), shape_str(b.shape()));
  check_same(op, {a, b});
  MEL_CHECK(is_floating(a.dtype()),
            "matmul: dtype {} is not supported (shapes {} and {}; expected f32, f64, bf16 or f16)",
            dtype_name(a.dtype()), shape_str(a.shape()), shape_str(b.shape()));
  // The GPU multiplies 16-bit operands natively (f32 accumulation); the CPU in f32.
  if (is_half(a.dtype()) && !a.device().is_cuda()) {
    return matmul(a.to(DType::f32), b.to(DType::f32)).to(a.dtype());
  }

  const bool vec_a = a.dim() == 1, vec_b = b.dim() == 1;
  Tensor a2 = vec_a ? a.detach().unsqueeze(0) : a.detach();
  Tensor b2 = vec_b ? b.detach().unsqueeze(1) : b.detach();
  const int64_t M = a2.size(-2), K = a2.size(-1), Kb = b2.size(-2), N = b2.size(-1);
  MEL_CHECK(K == Kb,
            "matmul: cannot multiply {} and {}: inner dimensions {} and {} differ (the last "
            "dimension of the first must equal the {} dimension of the second)",
            shape_str(a.shape()), shape_str(b.shape()), K, Kb, vec_b ? "only" : "second-to-last");
  const Shape batch = batch_shape(a2, b2, a, b);
  Shape out_shape = batch;
  if (!vec_a) out_shape.push_back(M);
  if (!vec_b) out_shape.push_back(N);
  Tensor out = empty(out_shape, a.dtype(), a.device());
  // bf16 and f16 reach here only on the GPU (the CPU op computes them in f32).
  dispatch_floating(a.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    matmul_compute<T>(a2, b2, batch, out.data<T>());
  });
  autograd::record(op, out, {a, b},
                   [ad = a.detach(), bd = b.detach()](const Tensor& g, const GradMask& need) {
                     return matmul_backward(ad, bd, g, need);
                   });
  return out;
}

}  // namespace mel
