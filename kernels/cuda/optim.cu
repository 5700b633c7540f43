#include <cmath>

#include "kernels/cuda/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/optim.h"

namespace mel::kernels::cuda {

namespace {

__device__ __forceinline__ int64_t thread_start() {
  return blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
}
__device__ __forceinline__ int64_t thread_step() {
  return int64_t(gridDim.x) * blockDim.x;
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// Work items of 4 floats when every buffer allows float4 accesses (flat buffers from the caching
// allocator always do), else single floats.
unsigned grid_for_vec(int64_t n, bool vec) {
  return grid_for(vec ? (n + 3) / 4 : n);
}

struct SgdArgs {
  float lr, momentum, one_minus_dampening, weight_decay;
  bool nesterov, first, vec;
};

// The CPU kernel's element update with its contractions (d = fma(wd, p, g), buf = fma(mom, buf,
// d * (1 - damp)), Nesterov fma(mom, buf, d), p = fma(-lr, d, p)).
__device__ __forceinline__ void sgd_elem(const SgdArgs& a, float& p, float g, float& b) {
  float d = __fmaf_rn(a.weight_decay, p, g);
  if (a.momentum != 0.0f) {
    b = a.first ? d : __fmaf_rn(a.momentum, b, __fmul_rn(d, a.one_minus_dampening));
    d = a.nesterov ? __fmaf_rn(a.momentum, b, d) : b;
  }
  p = __fmaf_rn(-a.lr, d, p);
}

__global__ void sgd_kernel(SgdArgs a, float* __restrict__ p, const float* __restrict__ g,
                           float* __restrict__ buf, int64_t n) {
  const bool mom = a.momentum != 0.0f;
  const int64_t n4 = a.vec ? n / 4 : 0;
  for (int64_t i = thread_start(); i < n4; i += thread_step()) {
    float4 p4 = reinterpret_cast<float4*>(p)[i];
    const float4 g4 = reinterpret_cast<const float4*>(g)[i];
    float4 b4 = mom ? reinterpret_cast<float4*>(buf)[i] : make_float4(0, 0, 0, 0);
    sgd_elem(a, p4.x, g4.x, b4.x);
    sgd_elem(a, p4.y, g4.y, b4.y);
    sgd_elem(a, p4.z, g4.z, b4.z);
    sgd_elem(a, p4.w, g4.w, b4.w);
    reinterpret_cast<float4*>(p)[i] = p4;
    if (mom) reinterpret_cast<float4*>(buf)[i] = b4;
  }
  for (int64_t i = n4 * 4 + thread_start(); i < n; i += thread_step()) {
    float pi = p[i], bi = mom ? buf[i] : 0.0f;
    sgd_elem(a, pi, g[i], bi);
    p[i] = pi;
    if (mom) buf[i] = bi;
  }
}

struct AdamArgs {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps, l2, decay, step_size, inv_sqrt_bc2;
  bool vec;
};

// The CPU kernel's element update with its contractions: gi = fma(l2, p, g),
// m = fma(b1, m, gi * (1 - b1)), v = fma(b2, v, gi * (gi * (1 - b2))),
// denom = fma(inv_sqrt_bc2, sqrt(v), eps), p = fma(p, decay, -((m * step_size) / denom)).
__device__ __forceinline__ void adam_elem(const AdamArgs& a, float& p, float g, float& m,
                                          float& v) {
  const float gi = __fmaf_rn(a.l2, p, g);
  m = __fmaf_rn(a.beta1, m, __fmul_rn(gi, a.one_minus_beta1));
  v = __fmaf_rn(a.beta2, v, __fmul_rn(gi, __fmul_rn(gi, a.one_minus_beta2)));
  const float denom = __fmaf_rn(a.inv_sqrt_bc2, __fsqrt_rn(v), a.eps);
  const float q = __fdiv_rn(__fmul_rn(m, a.step_size), denom);
  p = __fmaf_rn(p, a.decay, -q);
}

__global__ void adam_kernel(AdamArgs a, float* __restrict__ p, const float* __restrict__ g,
                            float* __restrict__ m, float* __restrict__ v, int64_t n) {
  const int64_t n4 = a.vec ? n / 4 : 0;
  for (int64_t i = thread_start(); i < n4; i += thread_step()) {
    float4 p4 = reinterpret_cast<float4*>(p)[i];
    const float4 g4 = reinterpret_cast<const float4*>(g)[i];
    float4 m4 = reinterpret_cast<float4*>(m)[i];
    float4 v4 = reinterpret_cast<float4*>(v)[i];
    adam_elem(a, p4.x, g4.x, m4.x, v4.x);
    adam_elem(a, p4.y, g4.y, m4.y, v4.y);
    adam_elem(a, p4.z, g4.z, m4.z, v4.z);
    adam_elem(a, p4.w, g4.w, m4.w, v4.w);
    reinterpret_cast<float4*>(p)[i] = p4;
    reinterpret_cast<float4*>(m)[i] = m4;
    reinterpret_cast<float4*>(v)[i] = v4;
  }
  for (int64_t i = n4 * 4 + thread_start(); i < n; i += thread_step()) {
    float pi = p[i], mi = m[i], vi = v[i];
    adam_elem(a, pi, g[i], mi, vi);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

// Stage 1 of squared_norm: block b's threads walk a fixed set of elements in a fixed order, the
// block tree-sums them into partial[b].
__global__ void squared_norm_partials_kernel(const float* __restrict__ g, int64_t n, bool vec,
                                             double* __restrict__ partial) {
  __shared__ double scratch[kBlock / kWarp];
  double s = 0.0;
  const int64_t n4 = vec ? n / 4 : 0;
  for (int64_t i = thread_start(); i < n4; i += thread_step()) {
    const float4 x = reinterpret_cast<const float4*>(g)[i];
    s = __fma_rn(double(x.x), double(x.x), s);
    s = __fma_rn(double(x.y), double(x.y), s);
    s = __fma_rn(double(x.z), double(x.z), s);
    s = __fma_rn(double(x.w), double(x.w), s);
  }
  for (int64_t i = n4 * 4 + thread_start(); i < n; i += thread_step()) {
    const double x = g[i];
    s = __fma_rn(x, x, s);
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Stage 2: one block adds the partials in a fixed order.
__global__ void squared_norm_final_kernel(const double* __restrict__ partial, int count,
                                          double* __restrict__ out) {
  __shared__ double scratch[kBlock / kWarp];
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s = __dadd_rn(s, partial[i]);
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) *out = s;
}

__global__ void clip_scale_kernel(float* __restrict__ g, int64_t n,
                                  const double* __restrict__ squared_norm, double max_norm) {
  const double coef = __ddiv_rn(max_norm, __dadd_rn(__dsqrt_rn(*squared_norm), 1e-6));
  if (!(coef < 1.0)) return;  // also a NaN norm, as on the CPU
  const float factor = static_cast<float>(coef);
  for (int64_t i = thread_start(); i < n; i += thread_step()) g[i] = __fmul_rn(g[i], factor);
}

}  // namespace

void sgd_step(float* p, const float* g, float* buf, int64_t n, float lr, float momentum,
              float dampening, float weight_decay, bool nesterov, bool first, cudaStream_t stream) {
  if (n == 0) return;
  SgdArgs a{lr, momentum, 1.0f - dampening, weight_decay, nesterov, first, false};
  a.vec = aligned16(p) && aligned16(g) && (momentum == 0.0f || aligned16(buf));
  sgd_kernel<<<grid_for_vec(n, a.vec), kBlock, 0, stream>>>(a, p, g, buf, n);
  MEL_CUDA_CHECK_LAUNCH();
}

void adam_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
               float beta2, float eps, float weight_decay, bool decoupled, double bias_correction1,
               double bias_correction2, cudaStream_t stream) {
  if (n == 0) return;
  AdamArgs a{};
  a.beta1 = beta1;
  a.beta2 = beta2;
  a.one_minus_beta1 = 1.0f - beta1;
  a.one_minus_beta2 = 1.0f - beta2;
  a.eps = eps;
  a.l2 = decoupled ? 0.0f : weight_decay;
  // The CPU build contracts 1 - lr * wd into one fused multiply-add.
  a.decay = decoupled ? std::fma(-lr, weight_decay, 1.0f) : 1.0f;
  a.step_size = static_cast<float>(lr / bias_correction1);
  a.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bias_correction2));
  a.vec = aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v);
  adam_kernel<<<grid_for_vec(n, a.vec), kBlock, 0, stream>>>(a, p, g, m, v, n);
  MEL_CUDA_CHECK_LAUNCH();
}

void squared_norm(const float* g, int64_t n, double* out, double* scratch, cudaStream_t stream) {
  const bool vec = aligned16(g);
  // The grid depends on n only (never on the device), so the association of the sum does too.
  const int64_t items = vec ? (n + 3) / 4 : n;
  const int64_t per_block = int64_t(kBlock) * 4;
  const int blocks = static_cast<int>(
      std::clamp<int64_t>((items + per_block - 1) / per_block, 1, kSquaredNormPartials));
  squared_norm_partials_kernel<<<blocks, kBlock, 0, stream>>>(g, n, vec, scratch);
  MEL_CUDA_CHECK_LAUNCH();
  squared_norm_final_kernel<<<1, kBlock, 0, stream>>>(scratch, blocks, out);
  MEL_CUDA_CHECK_LAUNCH();
}

void clip_scale(float* g, int64_t n, const double* squared_norm, double max_norm,
                cudaStream_t stream) {
  if (n == 0) return;
  clip_scale_kernel<<<grid_for(n), kBlock, 0, stream>>>(g, n, squared_norm, max_norm);
  MEL_CUDA_CHECK_LAUNCH();
}

}  // namespace mel::kernels::cuda
