// The CUDA twins of the PReLU kernels (prelu.cpp): an elementwise forward, and a backward with
// one block per channel for the slope's gradient, reduced in a fixed order (deterministic).
#include <cuda_runtime.h>

#include <algorithm>

#include "prelu_kernels.h"

namespace custom::kernels::cuda {

namespace {

constexpr int kBlock = 256;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) launch_failed(what, cudaGetErrorString(e));
}

template <class T>
__global__ void forward_kernel(const T* x, const T* a, int64_t n, int64_t C, int64_t inner, T* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const T v = x[i];
    y[i] = v > T(0) ? v : a[(i / inner) % C] * v;
  }
}

// Block c: gx for channel c and its slope gradient, summed per thread in a fixed stride order
// and then over the block in a fixed tree.
template <class T>
__global__ void backward_kernel(const T* x, const T* a, const T* gy, int64_t outer, int64_t C,
                                int64_t inner, T* gx, T* ga) {
  __shared__ double partial[kBlock];
  const int64_t c = blockIdx.x;
  const int64_t per_channel = outer * inner;
  double s = 0;
  for (int64_t j = threadIdx.x; j < per_channel; j += blockDim.x) {
    const int64_t idx = ((j / inner) * C + c) * inner + j % inner;
    const T v = x[idx], g = gy[idx];
    if (gx) gx[idx] = v > T(0) ? g : a[c] * g;
    if (v <= T(0)) s += static_cast<double>(g * v);
  }
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int width = kBlock / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0 && ga) ga[c] = static_cast<T>(partial[0]);
}

}  // namespace

template <class T>
void prelu_forward(const T* x, const T* a, int64_t outer, int64_t C, int64_t inner, T* y,
                   cudaStream_t stream) {
  const int64_t n = outer * C * inner;
  if (n == 0) return;
  const int64_t blocks = std::min<int64_t>((n + kBlock - 1) / kBlock, 4096);
  forward_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, stream>>>(x, a, n, C, inner, y);
  check(cudaGetLastError(), "forward launch");
}

template <class T>
void prelu_backward(const T* x, const T* a, const T* gy, int64_t outer, int64_t C, int64_t inner,
                    T* gx, T* ga, cudaStream_t stream) {
  if (C == 0) return;
  backward_kernel<<<static_cast<unsigned>(C), kBlock, 0, stream>>>(x, a, gy, outer, C, inner, gx,
                                                                   ga);
  check(cudaGetLastError(), "backward launch");
}

template void prelu_forward<float>(const float*, const float*, int64_t, int64_t, int64_t, float*,
                                   cudaStream_t);
template void prelu_forward<double>(const double*, const double*, int64_t, int64_t, int64_t,
                                    double*, cudaStream_t);
template void prelu_backward<float>(const float*, const float*, const float*, int64_t, int64_t,
                                    int64_t, float*, float*, cudaStream_t);
template void prelu_backward<double>(const double*, const double*, const double*, int64_t, int64_t,
                                     int64_t, double*, double*, cudaStream_t);

}  // namespace custom::kernels::cuda
