// The self-test's kernels (broken_kernels.h). Written as CUDA and rewritten for the simulator like
// kernels/cuda; they are never compiled by nvcc.
#include <cuda_runtime.h>

#include "tests/cudasim/broken_kernels.h"

namespace cudasim_selftest {
namespace {

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void warp_sums_kernel(const float* x, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = i < n ? x[i] : 0.0f;
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) out[i / 32] = v;
}

__global__ void warp_sum_in_branch_kernel(const float* x, float* out, int n) {
  const int i = threadIdx.x;
  float v = i < n ? x[i] : 0.0f;
  if (i % 32 < 16) v = warp_sum(v);  // BUG: lanes 16..31 skip a full-mask shuffle
  if (i % 32 == 0) out[i / 32] = v;
}

__global__ void block_sum_kernel(const float* x, float* out, int n, bool early_exit, bool barrier) {
  __shared__ float s[256];
  const int t = threadIdx.x;
  if (early_exit && t >= n) return;  // BUG when early_exit: these threads miss the barrier
  s[t] = t < n ? x[t] : 0.0f;
  if (barrier) __syncthreads();  // BUG when absent: thread 0 may read before the others write
  if (t == 0) {
    float a = 0.0f;
    for (int k = 0; k < n; ++k) a += s[k];
    out[0] = a;
  }
}

__global__ void copy_kernel(const float* x, float* y, int n, int drop, int overrun) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n - drop + overrun;
       i += gridDim.x * blockDim.x) {
    y[i] = x[i];
  }
}

__global__ void copy4_kernel(const float* x, float* y, int n4, int offset) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n4) reinterpret_cast<float4*>(y)[i] = reinterpret_cast<const float4*>(x + offset)[i];
}

__global__ void rotate_kernel(const float* x, float* y, bool wrap) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  s[t] = x[t];
  __syncthreads();
  y[t] = wrap ? s[(t + 1) % 32] : s[t + 1];  // BUG unless wrap: s[32] was never written
}

__global__ void shared_overflow_kernel(const float* x, float* y) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  s[t] = x[t];
  __syncthreads();
  y[t] = s[t + 64];  // BUG: past the end of s
}

}  // namespace

void warp_sums(const float* x, float* out, int n, int block) {
  warp_sums_kernel<<<(n + block - 1) / block, block, 0, nullptr>>>(x, out, n);
}
void warp_sum_in_branch(const float* x, float* out, int n) {
  warp_sum_in_branch_kernel<<<1, 64, 0, nullptr>>>(x, out, n);
}
void block_sum(const float* x, float* out, int n, int block, bool early_exit, bool barrier) {
  block_sum_kernel<<<1, block, 0, nullptr>>>(x, out, n, early_exit, barrier);
}
void copy(const float* x, float* y, int n, int drop, int overrun) {
  copy_kernel<<<2, 32, 0, nullptr>>>(x, y, n, drop, overrun);
}
void copy4(const float* x, float* y, int n4, int offset) {
  copy4_kernel<<<1, 64, 0, nullptr>>>(x, y, n4, offset);
}
void rotate(const float* x, float* y, bool wrap) {
  rotate_kernel<<<1, 32, 0, nullptr>>>(x, y, wrap);
}
void shared_overflow(const float* x, float* y) {
  shared_overflow_kernel<<<1, 64, 0, nullptr>>>(x, y);
}

}  // namespace cudasim_selftest
