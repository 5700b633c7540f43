// Generic elementwise launch shared by the elementwise .cu files: out = f(in...) over an Iter,
// vectorised when every operand is contiguous and aligned, strided otherwise. nvcc only.
#pragma once
#include <cstdint>
#include <limits>
#include <utility>

#include "kernels/cuda/check.h"
#include "kernels/cuda/launch.cuh"

namespace mel::kernels::cuda::ew {

// V elements moved as one load/store (16 bytes for the widest operand).
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <class... T>
constexpr int vec_width() {
  constexpr size_t widest = std::max({sizeof(T)...});
  return widest >= 16 ? 1 : static_cast<int>(16 / widest);
}

template <int V, class T>
inline bool aligned_for(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * V) == 0;
}

template <int V, class T>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p, int64_t i) {
  return reinterpret_cast<const Pack<T, V>*>(p)[i];
}

template <int V, class F, class Out, class... P>
__device__ __forceinline__ void apply_pack(const F& f, Pack<Out, V>& o, const P&... p) {
#pragma unroll
  for (int j = 0; j < V; ++j) o.v[j] = f(p.v[j]...);
}

// Every operand contiguous: each thread moves V elements per step; the n % V tail goes to the
// first threads of the grid.
template <int V, class F, class Out, class... In>
__global__ void __launch_bounds__(kBlock)
    contiguous_kernel(int64_t n, F f, Out* __restrict__ out, const In* __restrict__... in) {
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  const int64_t nv = n / V;
  for (int64_t i = tid; i < nv; i += step) {
    Pack<Out, V> o;
    apply_pack<V>(f, o, load_pack<V>(in, i)...);
    reinterpret_cast<Pack<Out, V>*>(out)[i] = o;
  }
  if constexpr (V > 1) {
    const int64_t t = nv * V + tid;
    if (t < n) out[t] = f(in[t]...);
  }
}

// Element offsets of every operand at linear index i. I is uint32_t when the iteration has fewer
// than 2^31 elements: 32-bit division is several times cheaper than 64-bit on the GPU.
template <class I, int N>
__device__ __forceinline__ void offsets_of(const Iter<N>& it, I i, int64_t (&off)[N]) {
  if (it.ndim == 1) {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = static_cast<int64_t>(i) * it.stride[k][0];
    return;
  }
#pragma unroll
  for (int k = 0; k < N; ++k) off[k] = 0;
  for (int d = it.ndim - 1; d > 0; --d) {
    const I s = static_cast<I>(it.shape[d]);
    const I c = i % s;
    i /= s;
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] += static_cast<int64_t>(c) * it.stride[k][d];
  }
#pragma unroll
  for (int k = 0; k < N; ++k) off[k] += static_cast<int64_t>(i) * it.stride[k][0];
}

template <class F, class... In, size_t... K>
__device__ __forceinline__ auto call_at(const F& f, const int64_t (&off)[sizeof...(In) + 1],
                                        std::index_sequence<K...>, const In*... in) {
  return f(in[off[K + 1]]...);
}

// Broadcast or strided operands; __grid_constant__ keeps `it` in parameter space, where the
// dynamic indexing of offsets_of reads it without a local copy.
template <class I, class F, class Out, class... In>
__global__ void __launch_bounds__(kBlock)
    strided_kernel(const __grid_constant__ Iter<sizeof...(In) + 1> it, I n, F f, Out* out,
                   const In*... in) {
  const I step = static_cast<I>(gridDim.x) * blockDim.x;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[sizeof...(In) + 1];
    offsets_of<I>(it, i, off);
    out[off[0]] = call_at(f, off, std::index_sequence_for<In...>{}, in...);
  }
}

// out[i] = f(in[i]...) for n contiguous elements.
template <class F, class Out, class... In>
void launch_contiguous(int64_t n, cudaStream_t stream, F f, Out* out, const In*... in) {
  if (n <= 0) return;
  constexpr int V = vec_width<Out, In...>();
  if constexpr (V > 1) {
    if (aligned_for<V>(out) && (aligned_for<V>(in) && ...)) {
      contiguous_kernel<V><<<grid_for(n, kBlock, V), kBlock, 0, stream>>>(n, f, out, in...);
      MEL_CUDA_CHECK_LAUNCH();
      return;
    }
  }
  contiguous_kernel<1><<<grid_for(n), kBlock, 0, stream>>>(n, f, out, in...);
  MEL_CUDA_CHECK_LAUNCH();
}

// out = f(in...) over a coalesced iterator (operand 0 is out).
template <class F, class Out, class... In>
void launch(const Iter<sizeof...(In) + 1>& it, cudaStream_t stream, F f, Out* out,
            const In*... in) {
  const int64_t n = it.numel();
  if (n <= 0) return;
  if (iter_contiguous(it)) return launch_contiguous(n, stream, f, out, in...);
  if (n <= index32_limit()) {
    strided_kernel<uint32_t>
        <<<grid_for(n), kBlock, 0, stream>>>(it, static_cast<uint32_t>(n), f, out, in...);
  } else {
    strided_kernel<int64_t><<<grid_for(n), kBlock, 0, stream>>>(it, n, f, out, in...);
  }
  MEL_CUDA_CHECK_LAUNCH();
}

}  // namespace mel::kernels::cuda::ew
