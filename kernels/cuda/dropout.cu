// The dropout kernels of kernels/cuda/dropout.h: one thread per Philox block of four elements,
// the CPU's mask bit for bit.
#include "kernels/cuda/check.h"
#include "kernels/cuda/dropout.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/philox.h"

namespace mel::kernels::cuda {

namespace {

template <class T>
__global__ void dropout_forward_kernel(uint64_t seed, uint64_t offset, int64_t n, int64_t blocks,
                                       float keep, T scale, const T* __restrict__ x,
                                       T* __restrict__ y, uint8_t* __restrict__ mask) {
  for (int64_t blk = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; blk < blocks;
       blk += int64_t(gridDim.x) * blockDim.x) {
    const Philox4 r = philox_block(seed, offset, static_cast<uint64_t>(blk));
    const int64_t i0 = blk * 4;
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      if (i0 + lane >= n) break;
      const bool kept = philox_unit_f32(r.v[lane]) < keep;
      mask[i0 + lane] = kept ? 1 : 0;
      // a multiply rather than a select, so that dropped inf / NaN give NaN as on the CPU
      y[i0 + lane] = x[i0 + lane] * (kept ? scale : T(0));
    }
  }
}

template <class T>
__global__ void dropout_backward_kernel(int64_t n, T scale, const T* __restrict__ gy,
                                        const uint8_t* __restrict__ mask, T* __restrict__ gx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    gx[i] = gy[i] * (mask[i] ? scale : T(0));
  }
}

}  // namespace

template <class T>
void dropout_forward(uint64_t seed, uint64_t offset, int64_t n, float keep, T scale, const T* x,
                     T* y, uint8_t* mask, cudaStream_t stream) {
  if (n == 0) return;
  const auto blocks = static_cast<int64_t>(dropout_blocks(n));
  dropout_forward_kernel<T>
      <<<grid_for(blocks), kBlock, 0, stream>>>(seed, offset, n, blocks, keep, scale, x, y, mask);
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void dropout_backward(int64_t n, T scale, const T* gy, const uint8_t* mask, T* gx,
                      cudaStream_t stream) {
  if (n == 0) return;
  dropout_backward_kernel<T><<<grid_for(n, kBlock, 4), kBlock, 0, stream>>>(n, scale, gy, mask, gx);
  MEL_CUDA_CHECK_LAUNCH();
}

#define MEL_DROPOUT_INSTANTIATE(T)                                                                \
  template void dropout_forward<T>(uint64_t, uint64_t, int64_t, float, T, const T*, T*, uint8_t*, \
                                   cudaStream_t);                                                 \
  template void dropout_backward<T>(int64_t, T, const T*, const uint8_t*, T*, cudaStream_t);
MEL_DROPOUT_INSTANTIATE(float)
MEL_DROPOUT_INSTANTIATE(double)
#undef MEL_DROPOUT_INSTANTIATE

}  // namespace mel::kernels::cuda
