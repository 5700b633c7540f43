// Batch-norm kernels of kernels/cuda/norm.h. Per-channel sums run as per-block partials added by a
// per-channel kernel in a fixed order (deterministic): channels with long planes (s >= kPlaneMinS)
// get blocks of (channel, range of the n * s elements); short planes use the column walk of
// colsum.cuh over x seen as [n, c * s], whose s columns of a channel are then added together.
#include <type_traits>

#include "kernels/cuda/check.h"
#include "kernels/cuda/colsum.cuh"
#include "kernels/cuda/norm.h"

namespace mel::kernels::cuda {

namespace {

constexpr int64_t kPlaneMinS = 64;
constexpr int64_t kPlaneMinChunk = 2048;  // elements per plane-path block at the least

// How the per-channel sums of d are split; partials are [chunks, width] and channel c owns
// columns [c * sub, (c + 1) * sub) of each chunk.
struct BnPlan {
  bool plane = false;
  ColSplit col;
  int64_t chunks = 1, width = 1, sub = 1;
};

BnPlan bn_plan(const BatchNormDims& d) {
  BnPlan p;
  if (d.s >= kPlaneMinS) {
    p.plane = true;
    const int64_t e = d.n * d.s;
    const int64_t most = std::max<int64_t>(1, e / kPlaneMinChunk);
    p.chunks = std::clamp<int64_t>(kTargetBlocks / std::max<int64_t>(d.c, 1), 1, most);
    p.width = d.c;
    p.sub = 1;
  } else {
    p.col = col_split(d.n, d.c * d.s);
    p.chunks = p.col.chunks;
    p.width = d.c * d.s;
    p.sub = d.s;
  }
  return p;
}

size_t align_up(size_t b) {
  return (b + 255) / 256 * 256;
}

// Workspace layout: p1, p2 (doubles), then five per-channel T arrays.
template <class T>
struct BnScratch {
  double *p1, *p2;
  T *scale, *shift, *ka, *kb, *kc;
};
template <class T>
BnScratch<T> bn_scratch(const BatchNormDims& d, const BnPlan& p, void* ws) {
  char* b = static_cast<char*>(ws);
  const size_t np = static_cast<size_t>(p.chunks * p.width);
  BnScratch<T> s;
  s.p1 = reinterpret_cast<double*>(b);
  s.p2 = s.p1 + np;
  T* t = reinterpret_cast<T*>(b + align_up(2 * np * sizeof(double)));
  const size_t c = static_cast<size_t>(d.c);
  s.scale = t, s.shift = t + c, s.ka = t + 2 * c, s.kb = t + 3 * c, s.kc = t + 4 * c;
  return s;
}

// fma on both passes, so that backward recomputes exactly the forward's ReLU mask.
__device__ __forceinline__ float affine(float x, float a, float b) {
  return fmaf(x, a, b);
}
__device__ __forceinline__ double affine(double x, double a, double b) {
  return fma(x, a, b);
}

template <class T>
struct StatsTerm {  // shifted sums: v = x - (channel's first element)
  const T* x;
  int64_t s;
  __device__ void operator()(int64_t at, int64_t ch, double& a1, double& a2) const {
    const T v = x[at] - x[ch * s];
    a1 += static_cast<double>(v);
    a2 += static_cast<double>(v * v);
  }
};

template <class T>
struct GradTerm {  // sum(g), sum(g (x - mean)); g is gy masked by the recomputed ReLU
  const T *x, *gy, *mean, *scale, *shift;
  bool relu;
  __device__ void operator()(int64_t at, int64_t ch, double& a1, double& a2) const {
    const T xv = x[at];
    const T g = !relu || affine(xv, scale[ch], shift[ch]) > T(0) ? gy[at] : T(0);
    a1 += static_cast<double>(g);
    a2 += static_cast<double>(g * (xv - mean[ch]));
  }
};

template <class Term>
struct ColTerm {  // column walk over [n, c * s]: element (r, col) is at r * L + col
  Term term;
  int64_t L;
  __device__ void operator()(int64_t r, int64_t col, int64_t ch, double& a1, double& a2) const {
    term(r * L + col, ch, a1, a2);
  }
};

// Grid (c, chunks): block (ch, k) adds the elements [k E / chunks, (k + 1) E / chunks) of channel
// ch's E = n * s, walking whole plane segments so that no element needs a division.
template <class Term>
__global__ void __launch_bounds__(kBlock)
    plane_partials_kernel(BatchNormDims d, int64_t chunks, Term term, double* __restrict__ p1,
                          double* __restrict__ p2) {
  __shared__ double scratch[kWarp];
  const int64_t ch = blockIdx.x, k = blockIdx.y;
  const int64_t e_total = d.n * d.s, L = d.c * d.s;
  const int64_t e1 = e_total * (k + 1) / chunks;
  int64_t e = e_total * k / chunks;
  int64_t i = e / d.s, j0 = e - i * d.s;
  double a1 = 0, a2 = 0;
  for (; e < e1; ++i, j0 = 0) {
    const int64_t len = d.s - j0 < e1 - e ? d.s - j0 : e1 - e;
    const int64_t base = i * L + ch * d.s + j0;
    for (int64_t t = threadIdx.x; t < len; t += blockDim.x) term(base + t, ch, a1, a2);
    e += len;
  }
  a1 = block_sum(a1, scratch);
  a2 = block_sum(a2, scratch);
  if (threadIdx.x == 0) {
    p1[k * d.c + ch] = a1;
    p2[k * d.c + ch] = a2;
  }
}

template <class Term>
void launch_partials(const BatchNormDims& d, const BnPlan& p, Term term, double* p1, double* p2,
                     cudaStream_t stream) {
  if (p.plane) {
    const dim3 grid(static_cast<unsigned>(d.c), static_cast<unsigned>(p.chunks));
    plane_partials_kernel<<<grid, kBlock, 0, stream>>>(d, p.chunks, term, p1, p2);
  } else {
    launch_col_partials(p.col, d.n, d.c * d.s, d.s, ColTerm<Term>{term, d.c * d.s}, p1, p2, stream);
  }
}

__device__ __forceinline__ void channel_sums(const double* p1, const double* p2, int64_t chunks,
                                             int64_t width, int64_t sub, int64_t c, double& s1,
                                             double& s2) {
  s1 = 0;
  s2 = 0;
  for (int64_t k = 0; k < chunks; ++k) {
    for (int64_t j = 0; j < sub; ++j) {
      s1 += p1[k * width + c * sub + j];
      s2 += p2[k * width + c * sub + j];
    }
  }
}

template <class T>
__device__ __forceinline__ void store_affine(int64_t c, double m, double r, const T* weight,
                                             const T* bias, T* scale, T* shift) {
  const double w = weight ? static_cast<double>(weight[c]) : 1.0;
  const double b = bias ? static_cast<double>(bias[c]) : 0.0;
  scale[c] = static_cast<T>(w * r);
  shift[c] = static_cast<T>(b - m * w * r);
}

template <class T>
__global__ void stats_finalize_kernel(BatchNormDims d, int64_t chunks, int64_t width, int64_t sub,
                                      const double* p1, const double* p2, const T* x,
                                      const T* weight, const T* bias, double eps, T* mean, T* var,
                                      T* rstd, T* scale, T* shift) {
  const double count = static_cast<double>(d.n * d.s);
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < d.c;
       c += int64_t(gridDim.x) * blockDim.x) {
    double s1, s2;
    channel_sums(p1, p2, chunks, width, sub, c, s1, s2);
    const double m1 = s1 / count;
    const double v = fmax(s2 / count - m1 * m1, 0.0);
    mean[c] = static_cast<T>(static_cast<double>(x[c * d.s]) + m1);
    var[c] = static_cast<T>(v);
    rstd[c] = static_cast<T>(1.0 / sqrt(v + eps));
    store_affine(c, static_cast<double>(mean[c]), static_cast<double>(rstd[c]), weight, bias, scale,
                 shift);
  }
}

template <class T>
__global__ void affine_kernel(int64_t C, const T* mean, const T* rstd, const T* weight,
                              const T* bias, T* scale, T* shift) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C;
       c += int64_t(gridDim.x) * blockDim.x) {
    store_affine(c, static_cast<double>(mean[c]), static_cast<double>(rstd[c]), weight, bias, scale,
                 shift);
  }
}

// Parameter gradients and gx = a g + b x + c per channel (p1 null: the sums are zero).
template <class T>
__global__ void grad_finalize_kernel(BatchNormDims d, int64_t chunks, int64_t width, int64_t sub,
                                     const double* p1, const double* p2, const T* mean,
                                     const T* rstd, const T* weight, bool training, T* gweight,
                                     T* gbias, T* ka, T* kb, T* kc) {
  const double count = static_cast<double>(d.n * d.s);
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < d.c;
       c += int64_t(gridDim.x) * blockDim.x) {
    double sg = 0, sgx = 0;
    if (p1) channel_sums(p1, p2, chunks, width, sub, c, sg, sgx);
    const double w = weight ? static_cast<double>(weight[c]) : 1.0;
    const double r = rstd[c], m = mean[c];
    if (gweight) gweight[c] = static_cast<T>(sgx * r);
    if (gbias) gbias[c] = static_cast<T>(sg);
    ka[c] = static_cast<T>(w * r);
    kb[c] = T(0);
    kc[c] = T(0);
    if (training) {
      const double bb = -w * r * r * r * sgx / count;
      kb[c] = static_cast<T>(bb);
      kc[c] = static_cast<T>(-w * r * sg / count - bb * m);
    }
  }
}

// Elementwise passes over n * c * s elements, channel (i / s) % c; I: the index type (32-bit
// division when the tensor allows it).
template <class T, class I>
__global__ void apply_kernel(I total, I s, I c, const T* __restrict__ x,
                             const T* __restrict__ scale, const T* __restrict__ shift, bool relu,
                             T* __restrict__ y) {
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < total; i += I(gridDim.x) * blockDim.x) {
    const I ch = (i / s) % c;
    const T v = affine(x[i], scale[ch], shift[ch]);
    y[i] = relu ? (v > T(0) ? v : T(0)) : v;
  }
}

template <class T, class I>
__global__ void grad_input_kernel(I total, I s, I c, const T* __restrict__ x,
                                  const T* __restrict__ gy, const T* __restrict__ scale,
                                  const T* __restrict__ shift, const T* __restrict__ ka,
                                  const T* __restrict__ kb, const T* __restrict__ kc, bool relu,
                                  T* __restrict__ gx) {
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < total; i += I(gridDim.x) * blockDim.x) {
    const I ch = (i / s) % c;
    const T xv = x[i];
    const T g = !relu || affine(xv, scale[ch], shift[ch]) > T(0) ? gy[i] : T(0);
    gx[i] = ka[ch] * g + kb[ch] * xv + kc[ch];
  }
}

template <class F>
void with_index_type(int64_t total, F&& f) {
  if (total <= index32_limit()) {
    f(uint32_t{});
  } else {
    f(int64_t{});
  }
}

template <class T>
void launch_apply(const BatchNormDims& d, const T* x, const T* scale, const T* shift, bool relu,
                  T* y, cudaStream_t stream) {
  const int64_t total = d.n * d.c * d.s;
  with_index_type(total, [&](auto idx) {
    using I = decltype(idx);
    apply_kernel<T, I><<<grid_for(total, kBlock, 4), kBlock, 0, stream>>>(I(total), I(d.s), I(d.c),
                                                                          x, scale, shift, relu, y);
  });
}

template <class R>
__device__ __forceinline__ double load_double(const R* p) {
  if constexpr (std::is_same_v<R, bfloat16> || std::is_same_v<R, half>) {
    return static_cast<double>(static_cast<float>(*p));
  } else {
    return static_cast<double>(*p);
  }
}

template <class R>
__device__ __forceinline__ R from_double(double v) {
  if constexpr (std::is_same_v<R, bfloat16> || std::is_same_v<R, half>) {
    return R(static_cast<float>(v));
  } else {
    return static_cast<R>(v);
  }
}

template <class R, class T>
__global__ void update_running_kernel(int64_t C, R* running, int64_t stride, const T* stat,
                                      double momentum, double factor) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C;
       c += int64_t(gridDim.x) * blockDim.x) {
    const double old = load_double(running + c * stride);
    running[c * stride] =
        from_double<R>((1.0 - momentum) * old + momentum * factor * static_cast<double>(stat[c]));
  }
}

template <class R, class T>
__global__ void eval_stats_kernel(int64_t C, const R* rm, int64_t ms, const R* rv, int64_t vs,
                                  double eps, T* mean, T* rstd) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C;
       c += int64_t(gridDim.x) * blockDim.x) {
    mean[c] = static_cast<T>(load_double(rm + c * ms));
    rstd[c] = static_cast<T>(1.0 / sqrt(load_double(rv + c * vs) + eps));
  }
}

}  // namespace

size_t batch_norm_workspace_bytes(const BatchNormDims& d, size_t elem_size) {
  const BnPlan p = bn_plan(d);
  const size_t np = static_cast<size_t>(p.chunks * p.width);
  return align_up(2 * np * sizeof(double)) + align_up(5 * static_cast<size_t>(d.c) * elem_size);
}

template <class T>
void batch_norm_forward_train(const BatchNormDims& d, const T* x, const T* weight, const T* bias,
                              double eps, bool relu, T* y, T* mean, T* var, T* rstd,
                              void* workspace, cudaStream_t stream) {
  if (d.n * d.c * d.s == 0) return;
  const BnPlan p = bn_plan(d);
  const BnScratch<T> w = bn_scratch<T>(d, p, workspace);
  launch_partials(d, p, StatsTerm<T>{x, d.s}, w.p1, w.p2, stream);
  MEL_CUDA_CHECK_LAUNCH();
  stats_finalize_kernel<T><<<grid_for(d.c), kBlock, 0, stream>>>(d, p.chunks, p.width, p.sub, w.p1,
                                                                 w.p2, x, weight, bias, eps, mean,
                                                                 var, rstd, w.scale, w.shift);
  MEL_CUDA_CHECK_LAUNCH();
  launch_apply(d, x, w.scale, w.shift, relu, y, stream);
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void batch_norm_forward_apply(const BatchNormDims& d, const T* x, const T* mean, const T* rstd,
                              const T* weight, const T* bias, bool relu, T* y, void* workspace,
                              cudaStream_t stream) {
  if (d.n * d.c * d.s == 0) return;
  const BnScratch<T> w = bn_scratch<T>(d, bn_plan(d), workspace);
  affine_kernel<T>
      <<<grid_for(d.c), kBlock, 0, stream>>>(d.c, mean, rstd, weight, bias, w.scale, w.shift);
  MEL_CUDA_CHECK_LAUNCH();
  launch_apply(d, x, w.scale, w.shift, relu, y, stream);
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void batch_norm_backward(const BatchNormDims& d, const T* x, const T* gy, const T* mean,
                         const T* rstd, const T* weight, const T* bias, bool training, bool relu,
                         T* gx, T* gweight, T* gbias, void* workspace, cudaStream_t stream) {
  if (d.c == 0) return;
  if (d.n * d.s == 0) {  // empty input (eval mode): the parameter gradients are zero
    if (gweight) MEL_CUDA_CHECK(cudaMemsetAsync(gweight, 0, sizeof(T) * d.c, stream));
    if (gbias) MEL_CUDA_CHECK(cudaMemsetAsync(gbias, 0, sizeof(T) * d.c, stream));
    return;
  }
  const BnPlan p = bn_plan(d);
  const BnScratch<T> w = bn_scratch<T>(d, p, workspace);
  const bool need_sums = gweight || gbias || (gx && training);
  affine_kernel<T>
      <<<grid_for(d.c), kBlock, 0, stream>>>(d.c, mean, rstd, weight, bias, w.scale, w.shift);
  MEL_CUDA_CHECK_LAUNCH();
  if (need_sums) {
    launch_partials(d, p, GradTerm<T>{x, gy, mean, w.scale, w.shift, relu}, w.p1, w.p2, stream);
    MEL_CUDA_CHECK_LAUNCH();
  }
  grad_finalize_kernel<T><<<grid_for(d.c), kBlock, 0, stream>>>(
      d, p.chunks, p.width, p.sub, need_sums ? w.p1 : nullptr, w.p2, mean, rstd, weight, training,
      gweight, gbias, w.ka, w.kb, w.kc);
  MEL_CUDA_CHECK_LAUNCH();
  if (!gx) return;
  const int64_t total = d.n * d.c * d.s;
  with_index_type(total, [&](auto idx) {
    using I = decltype(idx);
    grad_input_kernel<T, I><<<grid_for(total, kBlock, 4), kBlock, 0, stream>>>(
        I(total), I(d.s), I(d.c), x, gy, w.scale, w.shift, w.ka, w.kb, w.kc, relu, gx);
  });
  MEL_CUDA_CHECK_LAUNCH();
}

template <class R, class T>
void batch_norm_update_running(int64_t c, R* running, int64_t stride, const T* stat,
                               double momentum, double factor, cudaStream_t stream) {
  if (c == 0) return;
  update_running_kernel<R, T>
      <<<grid_for(c), kBlock, 0, stream>>>(c, running, stride, stat, momentum, factor);
  MEL_CUDA_CHECK_LAUNCH();
}

template <class R, class T>
void batch_norm_eval_stats(int64_t c, const R* running_mean, int64_t mean_stride,
                           const R* running_var, int64_t var_stride, double eps, T* mean, T* rstd,
                           cudaStream_t stream) {
  if (c == 0) return;
  eval_stats_kernel<R, T><<<grid_for(c), kBlock, 0, stream>>>(
      c, running_mean, mean_stride, running_var, var_stride, eps, mean, rstd);
  MEL_CUDA_CHECK_LAUNCH();
}

#define MEL_BN_INSTANTIATE(T)                                                                   \
  template void batch_norm_forward_train<T>(const BatchNormDims&, const T*, const T*, const T*, \
                                            double, bool, T*, T*, T*, T*, void*, cudaStream_t); \
  template void batch_norm_forward_apply<T>(const BatchNormDims&, const T*, const T*, const T*, \
                                            const T*, const T*, bool, T*, void*, cudaStream_t); \
  template void batch_norm_backward<T>(const BatchNormDims&, const T*, const T*, const T*,      \
                                       const T*, const T*, const T*, bool, bool, T*, T*, T*,    \
                                       void*, cudaStream_t);
MEL_BN_INSTANTIATE(float)
MEL_BN_INSTANTIATE(double)
#undef MEL_BN_INSTANTIATE

#define MEL_BN_RUNNING(R, T)                                                                       \
  template void batch_norm_update_running<R, T>(int64_t, R*, int64_t, const T*, double, double,    \
                                                cudaStream_t);                                     \
  template void batch_norm_eval_stats<R, T>(int64_t, const R*, int64_t, const R*, int64_t, double, \
                                            T*, T*, cudaStream_t);
#define MEL_BN_RUNNING_ALL(R) \
  MEL_BN_RUNNING(R, float)    \
  MEL_BN_RUNNING(R, double)
MEL_BN_RUNNING_ALL(float)
MEL_BN_RUNNING_ALL(double)
MEL_BN_RUNNING_ALL(bfloat16)
MEL_BN_RUNNING_ALL(half)
#undef MEL_BN_RUNNING_ALL
#undef MEL_BN_RUNNING

}  // namespace mel::kernels::cuda
