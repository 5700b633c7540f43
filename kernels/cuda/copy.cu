#include "kernels/cuda/check.h"
#include "kernels/cuda/copy.h"
#include "kernels/cuda/launch.cuh"

namespace mel::kernels::cuda {

namespace {

template <class D, class S>
__device__ __forceinline__ D convert(S s) {
  if constexpr (std::is_same_v<D, S>) {
    return s;
  } else if constexpr (std::is_same_v<D, bfloat16> || std::is_same_v<D, half>) {
    return D(static_cast<float>(s));
  } else if constexpr (std::is_same_v<S, bfloat16> || std::is_same_v<S, half>) {
    return static_cast<D>(static_cast<float>(s));
  } else {
    return static_cast<D>(s);
  }
}

template <class D, class S>
__global__ void copy_contiguous_kernel(int64_t n, D* __restrict__ dst, const S* __restrict__ src) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    dst[i] = convert<D>(src[i]);
  }
}

template <class D, class S>
__global__ void copy_strided_kernel(Iter<2> it, int64_t n, D* dst, const S* src) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    iter_offsets(it, i, off);
    dst[off[0]] = convert<D>(src[off[1]]);
  }
}

template <class T>
__global__ void fill_kernel(Iter<1> it, int64_t n, T* dst, T value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[1];
    iter_offsets(it, i, off);
    dst[off[0]] = value;
  }
}

}  // namespace

template <class D, class S>
void copy(const Iter<2>& it, D* dst, const S* src, cudaStream_t stream) {
  const int64_t n = it.numel();
  if (n == 0) return;
  if (iter_contiguous(it)) {
    copy_contiguous_kernel<<<grid_for(n), kBlock, 0, stream>>>(n, dst, src);
  } else {
    copy_strided_kernel<<<grid_for(n), kBlock, 0, stream>>>(it, n, dst, src);
  }
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void fill(const Iter<1>& it, T* dst, T value, cudaStream_t stream) {
  const int64_t n = it.numel();
  if (n == 0) return;
  fill_kernel<<<grid_for(n), kBlock, 0, stream>>>(it, n, dst, value);
  MEL_CUDA_CHECK_LAUNCH();
}

#define MEL_COPY_FROM(D)                                                              \
  template void copy<D, float>(const Iter<2>&, D*, const float*, cudaStream_t);       \
  template void copy<D, double>(const Iter<2>&, D*, const double*, cudaStream_t);     \
  template void copy<D, bfloat16>(const Iter<2>&, D*, const bfloat16*, cudaStream_t); \
  template void copy<D, half>(const Iter<2>&, D*, const half*, cudaStream_t);         \
  template void copy<D, int32_t>(const Iter<2>&, D*, const int32_t*, cudaStream_t);   \
  template void copy<D, int64_t>(const Iter<2>&, D*, const int64_t*, cudaStream_t);   \
  template void copy<D, uint8_t>(const Iter<2>&, D*, const uint8_t*, cudaStream_t);   \
  template void fill<D>(const Iter<1>&, D*, D, cudaStream_t);
MEL_COPY_FROM(float)
MEL_COPY_FROM(double)
MEL_COPY_FROM(bfloat16)
MEL_COPY_FROM(half)
MEL_COPY_FROM(int32_t)
MEL_COPY_FROM(int64_t)
MEL_COPY_FROM(uint8_t)
#undef MEL_COPY_FROM

}  // namespace mel::kernels::cuda
