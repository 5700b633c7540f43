#include <algorithm>
#include <string>
#include <type_traits>

#include "kernels/cuda/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.h"

namespace mel::kernels::cuda {
namespace {

// A reduction is a policy: an accumulator, its identity, how an element enters it, an
// associative and commutative combine, a warp shuffle and how the result is stored.
template <class T>
struct SumRed {
  using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;
  __device__ static Acc identity() { return Acc(0); }
  __device__ static Acc load(T v, int64_t) { return static_cast<Acc>(v); }
  __device__ static Acc combine(Acc p, Acc q) { return p + q; }
  __device__ static Acc shfl_xor(Acc p, int o) { return __shfl_xor_sync(0xffffffffu, p, o); }
  __device__ static void store(Acc p, T* out, int64_t*, int64_t j) { out[j] = static_cast<T>(p); }
};

// i < 0 marks the identity (no element seen yet). No default member initialisers: the type
// lives in __shared__ arrays.
template <class T>
struct MaxVal {
  T v;
  int64_t i;
};

// Ties go to the smaller index and any NaN beats every number (the first NaN among NaNs), which
// is what the CPU's sequential scan returns whatever the combination order.
template <class T>
struct MaxRed {
  using Acc = MaxVal<T>;
  __device__ static Acc identity() { return Acc{T(0), -1}; }
  __device__ static Acc load(T v, int64_t r) { return Acc{v, r}; }
  __device__ static Acc combine(Acc p, Acc q) {
    if (p.i < 0) return q;
    if (q.i < 0) return p;
    if constexpr (std::is_floating_point_v<T>) {
      const bool pn = p.v != p.v, qn = q.v != q.v;
      if (pn || qn) {
        if (pn && qn) return p.i < q.i ? p : q;
        return pn ? p : q;
      }
    }
    if (q.v > p.v) return q;
    if (p.v > q.v) return p;
    return p.i < q.i ? p : q;
  }
  __device__ static Acc shfl_xor(Acc p, int o) {
    return Acc{__shfl_xor_sync(0xffffffffu, p.v, o), __shfl_xor_sync(0xffffffffu, p.i, o)};
  }
  __device__ static void store(Acc p, T* out, int64_t* idx, int64_t j) {
    out[j] = p.v;
    idx[j] = p.i;
  }
};

// Stores an accumulator into global memory. MaxVal<float> has 4 bytes of padding: it is stored
// field by field, so that no indeterminate padding bytes (from shared memory or registers) reach
// device memory and a workspace's bytes are the same on every run.
template <class Acc>
__device__ __forceinline__ void put(Acc* p, const Acc& a) {
  *p = a;
}
template <class T>
__device__ __forceinline__ void put(MaxVal<T>* p, const MaxVal<T>& a) {
  p->v = a.v;
  p->i = a.i;
}

template <class Red, class Acc>
__device__ __forceinline__ Acc warp_reduce(Acc v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v = Red::combine(v, Red::shfl_xor(v, o));
  return v;
}

// How a reduction is laid out on the GPU; a pure function of (A, R, B) so the workspace size
// asked for beforehand matches the launch.
struct Plan {
  int group = 0;  // B == 1: threads per row (1, kWarp or kBlock); 0: the column kernel
  int bx = 1;     // column kernel: block is bx (over b) x kBlock / bx (over r)
  int64_t chunks = 1, chunk = 0;  // R split into `chunks` pieces of `chunk` (blockIdx.y)
  unsigned grid_x = 1;
};

constexpr int64_t kTargetBlocks = 2048;  // enough resident blocks to fill any current GPU
constexpr int64_t kMaxGridX = 65535;

std::string shape_text(int64_t A, int64_t R, int64_t B) {
  std::string s("[");
  s.append(std::to_string(A)).append(", ").append(std::to_string(R)).append(", ");
  s.append(std::to_string(B)).append("]");
  return s;
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

Plan plan_for(int64_t A, int64_t R, int64_t B) {
  Plan p;
  int64_t units = 0, min_chunk = 1;
  if (B == 1) {
    p.group = R <= 16 ? 1 : (R < 1024 ? kWarp : kBlock);
    units = ceil_div(A, kBlock / p.group);
    // only whole-block rows are long enough to be worth splitting
    min_chunk = p.group == kBlock ? int64_t(kBlock) * 16 : std::max<int64_t>(R, 1);
  } else {
    p.bx = 1;
    while (p.bx < kWarp && p.bx < B) p.bx *= 2;
    units = A * ceil_div(B, p.bx);
    min_chunk = int64_t(kBlock / p.bx) * 8;  // every thread walks at least 8 values of r
  }
  if (R > 0) {
    int64_t want =
        std::min(ceil_div(kTargetBlocks, std::max<int64_t>(units, 1)), ceil_div(R, min_chunk));
    want = std::clamp<int64_t>(want, 1, 4096);
    p.chunk = ceil_div(R, want);
    p.chunks = ceil_div(R, p.chunk);
  }
  p.grid_x = static_cast<unsigned>(std::clamp<int64_t>(units, 1, kMaxGridX));
  return p;
}

// B == 1: G threads per row (G = 1, a warp or the block), rows strided over the grid; blockIdx.y
// is the chunk of the row this block reduces.
template <class Red, int G, class T>
__global__ void __launch_bounds__(kBlock)
    rows_kernel(const T* __restrict__ x, int64_t A, int64_t R, int64_t chunk,
                typename Red::Acc* __restrict__ partial, T* out, int64_t* idx) {
  using Acc = typename Red::Acc;
  constexpr int kRows = kBlock / G;
  __shared__ Acc scratch[kBlock / kWarp];
  const int lane = static_cast<int>(threadIdx.x % G);
  const int64_t r0 = blockIdx.y * chunk;
  const int64_t r1 = min(R, r0 + chunk);
  // the loop bound is uniform over each group, so the shuffles and barriers below are safe
  for (int64_t row = int64_t(blockIdx.x) * kRows + threadIdx.x / G; row < A;
       row += int64_t(gridDim.x) * kRows) {
    const T* p = x + row * R;
    Acc acc = Red::identity();
#pragma unroll 4
    for (int64_t r = r0 + lane; r < r1; r += G) acc = Red::combine(acc, Red::load(p[r], r));
    if constexpr (G == kWarp) {
      acc = warp_reduce<Red>(acc);
    } else if constexpr (G == kBlock) {
      acc = warp_reduce<Red>(acc);
      __syncthreads();  // the previous row's scratch reads are done
      if (threadIdx.x % kWarp == 0) scratch[threadIdx.x / kWarp] = acc;
      __syncthreads();
      if (threadIdx.x < kWarp) {
        acc = threadIdx.x < kBlock / kWarp ? scratch[threadIdx.x] : Red::identity();
        acc = warp_reduce<Red>(acc);
      }
    }
    if (lane == 0) {
      if (partial) {
        put(&partial[blockIdx.y * A + row], acc);
      } else {
        Red::store(acc, out, idx, row);
      }
    }
  }
}

// B > 1: a (bx, by) block covers bx consecutive b (coalesced loads) and spreads the chunk's r
// over by threads, then combines them in shared memory. blockIdx.x strides over (a, b-block).
template <class Red, class T>
__global__ void __launch_bounds__(kBlock)
    cols_kernel(const T* __restrict__ x, int64_t A, int64_t R, int64_t B, int64_t chunk,
                typename Red::Acc* __restrict__ partial, T* out, int64_t* idx) {
  using Acc = typename Red::Acc;
  __shared__ Acc sm[kBlock];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int bx = blockDim.x, by = blockDim.y;
  const int64_t nbb = (B + bx - 1) / bx;
  const int64_t r0 = blockIdx.y * chunk;
  const int64_t r1 = min(R, r0 + chunk);
  for (int64_t job = blockIdx.x; job < A * nbb; job += gridDim.x) {
    const int64_t a = job / nbb;
    const int64_t b = (job % nbb) * bx + tx;
    Acc acc = Red::identity();
    if (b < B) {
      const T* p = x + a * R * B + b;
#pragma unroll 4
      for (int64_t r = r0 + ty; r < r1; r += by) acc = Red::combine(acc, Red::load(p[r * B], r));
    }
    __syncthreads();  // the previous job's reads of sm are done
    sm[ty * bx + tx] = acc;
    __syncthreads();
    for (int s = by / 2; s > 0; s /= 2) {
      if (ty < s) sm[ty * bx + tx] = Red::combine(sm[ty * bx + tx], sm[(ty + s) * bx + tx]);
      __syncthreads();
    }
    if (ty == 0 && b < B) {
      const int64_t j = a * B + b;
      if (partial) {
        put(&partial[blockIdx.y * A * B + j], sm[tx]);
      } else {
        Red::store(sm[tx], out, idx, j);
      }
    }
  }
}

// Combines the chunks' partial results of each output in chunk order.
template <class Red, class T>
__global__ void __launch_bounds__(kBlock)
    finish_kernel(const typename Red::Acc* __restrict__ partial, int64_t chunks, int64_t M, T* out,
                  int64_t* idx) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < M;
       j += int64_t(gridDim.x) * blockDim.x) {
    typename Red::Acc acc = partial[j];
    for (int64_t c = 1; c < chunks; ++c) acc = Red::combine(acc, partial[c * M + j]);
    Red::store(acc, out, idx, j);
  }
}

template <class Red>
size_t workspace_bytes(int64_t A, int64_t R, int64_t B) {
  if (A * B == 0) return 0;
  const Plan p = plan_for(A, R, B);
  return p.chunks > 1 ? static_cast<size_t>(p.chunks * A * B) * sizeof(typename Red::Acc) : 0;
}

template <class Red, class T>
void run(const T* x, int64_t A, int64_t R, int64_t B, T* out, int64_t* idx, void* workspace,
         cudaStream_t stream) {
  using Acc = typename Red::Acc;
  if (A * B == 0) return;
  const Plan p = plan_for(A, R, B);
  Acc* partial = nullptr;
  if (p.chunks > 1) {
    if (workspace == nullptr)
      throw Error("CUDA reduction of " + shape_text(A, R, B) + ": no workspace");
    partial = static_cast<Acc*>(workspace);
  }
  const dim3 grid(p.grid_x, static_cast<unsigned>(p.chunks));
  switch (p.group) {
    case 0:
      cols_kernel<Red>
          <<<grid, dim3(p.bx, kBlock / p.bx), 0, stream>>>(x, A, R, B, p.chunk, partial, out, idx);
      break;
    case 1:
      rows_kernel<Red, 1><<<grid, kBlock, 0, stream>>>(x, A, R, p.chunk, partial, out, idx);
      break;
    case kWarp:
      rows_kernel<Red, kWarp><<<grid, kBlock, 0, stream>>>(x, A, R, p.chunk, partial, out, idx);
      break;
    default:
      rows_kernel<Red, kBlock><<<grid, kBlock, 0, stream>>>(x, A, R, p.chunk, partial, out, idx);
      break;
  }
  MEL_CUDA_CHECK_LAUNCH();
  if (partial) {
    finish_kernel<Red><<<grid_for(A * B), kBlock, 0, stream>>>(partial, p.chunks, A * B, out, idx);
    MEL_CUDA_CHECK_LAUNCH();
  }
}

template <class T, class I>
__global__ void __launch_bounds__(kBlock)
    max_backward_kernel(const T* __restrict__ g, const int64_t* __restrict__ idx, I R, I B, I n,
                        T* __restrict__ gx) {
  for (I j = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; j < n;
       j += static_cast<I>(gridDim.x) * blockDim.x) {
    const I b = j % B, ar = j / B;
    const I r = ar % R, a = ar / R;
    const I o = a * B + b;
    gx[j] = idx[o] == static_cast<int64_t>(r) ? g[o] : T(0);
  }
}

}  // namespace

template <class T>
size_t sum_axis_workspace_bytes(int64_t A, int64_t R, int64_t B) {
  return workspace_bytes<SumRed<T>>(A, R, B);
}
template <class T>
size_t max_axis_workspace_bytes(int64_t A, int64_t R, int64_t B) {
  return workspace_bytes<MaxRed<T>>(A, R, B);
}

template <class T>
void sum_axis(const T* x, int64_t A, int64_t R, int64_t B, T* out, void* workspace,
              cudaStream_t stream) {
  run<SumRed<T>>(x, A, R, B, out, nullptr, workspace, stream);
}

template <class T>
void max_axis(const T* x, int64_t A, int64_t R, int64_t B, T* out, int64_t* idx, void* workspace,
              cudaStream_t stream) {
  if (R < 1) throw Error("CUDA max over the empty axis of " + shape_text(A, R, B));
  run<MaxRed<T>>(x, A, R, B, out, idx, workspace, stream);
}

template <class T>
void max_axis_backward(const T* g, const int64_t* idx, int64_t A, int64_t R, int64_t B, T* gx,
                       cudaStream_t stream) {
  const int64_t n = A * R * B;
  if (n == 0) return;
  if (n <= index32_limit()) {
    max_backward_kernel<T, uint32_t><<<grid_for(n), kBlock, 0, stream>>>(
        g, idx, static_cast<uint32_t>(R), static_cast<uint32_t>(B), static_cast<uint32_t>(n), gx);
  } else {
    max_backward_kernel<T, int64_t><<<grid_for(n), kBlock, 0, stream>>>(g, idx, R, B, n, gx);
  }
  MEL_CUDA_CHECK_LAUNCH();
}

#define MEL_INSTANTIATE_REDUCE(T)                                                             \
  template size_t sum_axis_workspace_bytes<T>(int64_t, int64_t, int64_t);                     \
  template size_t max_axis_workspace_bytes<T>(int64_t, int64_t, int64_t);                     \
  template void sum_axis<T>(const T*, int64_t, int64_t, int64_t, T*, void*, cudaStream_t);    \
  template void max_axis<T>(const T*, int64_t, int64_t, int64_t, T*, int64_t*, void*,         \
                            cudaStream_t);                                                    \
  template void max_axis_backward<T>(const T*, const int64_t*, int64_t, int64_t, int64_t, T*, \
                                     cudaStream_t);
MEL_INSTANTIATE_REDUCE(float)
MEL_INSTANTIATE_REDUCE(double)
MEL_INSTANTIATE_REDUCE(int32_t)
MEL_INSTANTIATE_REDUCE(int64_t)
#undef MEL_INSTANTIATE_REDUCE

}  // namespace mel::kernels::cuda
