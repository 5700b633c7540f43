// Device helpers of the row-wise and per-channel kernels (softmax, cross-entropy, normalisation,
// pooling): grid sizes, device math overloads and reductions over groups of 8 to 256 threads.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/launch.cuh"

namespace mel::kernels::cuda {

// Blocks for `items` work items at `per_block` each, capped: kernels loop grid-stride beyond it.
inline unsigned blocks_for(int64_t items, int64_t per_block, int64_t cap = int64_t(1) << 16) {
  const int64_t g = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(std::clamp<int64_t>(g, 1, cap));
}

template <class A>
__device__ __forceinline__ A neg_inf() {
  return -static_cast<A>(INFINITY);
}
template <class A>
__device__ __forceinline__ A quiet_nan() {
  return static_cast<A>(NAN);
}

// Accurate (not the fast-math intrinsics) exp and log in the precision of the argument.
__device__ __forceinline__ float dexp(float v) {
  return expf(v);
}
__device__ __forceinline__ double dexp(double v) {
  return exp(v);
}
__device__ __forceinline__ float dlog(float v) {
  return logf(v);
}
__device__ __forceinline__ double dlog(double v) {
  return log(v);
}
__device__ __forceinline__ float dmax(float a, float b) {
  return fmaxf(a, b);
}
__device__ __forceinline__ double dmax(double a, double b) {
  return fmax(a, b);
}

// Sum and max over an aligned group of G threads (G a power of two <= 32, all lanes of the warp
// calling), or over the whole block when G > 32 (`scratch`: 32 values, every thread calling).
// Every thread of the group gets the result.
template <int G, class T>
__device__ __forceinline__ T group_sum(T v, T* scratch) {
  if constexpr (G > kWarp) {
    return block_sum(v, scratch);
  } else {
    for (int o = G / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
  }
}

template <int G, class T>
__device__ __forceinline__ T group_max(T v, T* scratch) {
  if constexpr (G > kWarp) {
    return block_max(v, scratch, neg_inf<T>());
  } else {
    for (int o = G / 2; o > 0; o /= 2) v = dmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
  }
}

// Threads per row for rows of length n: a sub-warp of 8 or 16 for short rows, a warp up to
// kMaxWarpRow, else the whole block (one row per block).
constexpr int kMaxWarpRow = 1024;
inline int group_for(int64_t n) {
  if (n <= 8) return 8;
  if (n <= 16) return 16;
  if (n <= kMaxWarpRow) return kWarp;
  return kBlock;
}

// Calls f(std::integral_constant<int, G>) for the group size g returned by group_for.
template <class F>
void with_group(int g, F&& f) {
  switch (g) {
    case 8:
      f(std::integral_constant<int, 8>{});
      break;
    case 16:
      f(std::integral_constant<int, 16>{});
      break;
    case kWarp:
      f(std::integral_constant<int, kWarp>{});
      break;
    default:
      f(std::integral_constant<int, kBlock>{});
      break;
  }
}

}  // namespace mel::kernels::cuda
