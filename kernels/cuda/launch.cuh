// Device-side helpers shared by the .cu files: launch sizes, grid-stride loops, strided-operand
// offsets (kernels::Iter), accumulation types and warp/block reductions. Included by nvcc only.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/half.h"
#include "kernels/strided.h"

namespace mel::kernels::cuda {

constexpr int kBlock = 256;
constexpr int kWarp = 32;

// Blocks for n elements at `per_thread` elements each, capped: kernels loop grid-stride beyond it.
// On the kernel simulator the cap is a few blocks (cudasim::grid_cap), so every grid-stride loop
// wraps in the tests.
inline unsigned grid_for(int64_t n, int block = kBlock, int per_thread = 1) {
  int64_t per_block = int64_t(block) * per_thread;
  int64_t g = (n + per_block - 1) / per_block;
#ifdef MEL_CUDA_SIM
  const int64_t cap = ::cudasim::grid_cap();
#else
  const int64_t cap = int64_t(1) << 16;
#endif
  return static_cast<unsigned>(std::clamp<int64_t>(g, 1, cap));
}

// The largest element count kernels index with 32-bit integers; beyond it they use 64-bit ones.
// The kernel simulator can lower it (MEL_CUDASIM_INDEX32_LIMIT), so that the 64-bit paths run on
// small tensors in its tests.
inline int64_t index32_limit() {
#ifdef MEL_CUDA_SIM
  return ::cudasim::index32_limit();
#else
  return INT32_MAX;
#endif
}

// Floating accumulation type: double for double, float for float and the 16-bit types.
template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double,
                                 std::conditional_t<std::is_integral_v<T>, T, float>>;

template <class T>
__device__ __forceinline__ acc_t<T> load_acc(const T* p) {
  return static_cast<acc_t<T>>(*p);
}

// Element offsets of operand k at linear index `i` of `it` (row-major over it.shape).
template <int N>
__device__ __forceinline__ void iter_offsets(const Iter<N>& it, int64_t i, int64_t (&off)[N]) {
  for (int k = 0; k < N; ++k) off[k] = 0;
  for (int d = it.ndim - 1; d >= 0; --d) {
    int64_t c = i % it.shape[d];
    i /= it.shape[d];
    for (int k = 0; k < N; ++k) off[k] += c * it.stride[k][d];
  }
}

// True when every operand of `it` is one contiguous run (the common case after coalesce()).
template <int N>
inline bool iter_contiguous(const Iter<N>& it) {
  if (it.ndim != 1) return false;
  for (int k = 0; k < N; ++k) {
    if (it.stride[k][0] != 1) return false;
  }
  return true;
}

// Warp reductions shuffle with the full mask: all 32 lanes of the warp must call them (a partial
// warp or a divergent call is undefined behaviour). warp_max / block_max use max(), which for
// floating types is fmax: NaN is ignored unless every value is NaN.
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over a 1-D block; every thread gets the result. Every thread of the block must call it, and
// blockDim.x must be a multiple of 32 (<= 1024). `scratch` holds blockDim.x / 32 values.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp;
  const int nw = (blockDim.x + kWarp - 1) / kWarp;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[wid] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : T(0);
  return warp_sum(v);
}

template <class T>
__device__ __forceinline__ T block_max(T v, T* scratch, T lowest) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp;
  const int nw = (blockDim.x + kWarp - 1) / kWarp;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[wid] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : lowest;
  return warp_max(v);
}

}  // namespace mel::kernels::cuda
