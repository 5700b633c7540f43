#include <bit>
#include <cub/device/device_radix_sort.cuh>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/index.h"
#include "kernels/cuda/launch.cuh"

namespace mel::kernels::cuda {

namespace {

__device__ __forceinline__ int64_t thread_start() {
  return blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
}
__device__ __forceinline__ int64_t thread_step() {
  return int64_t(gridDim.x) * blockDim.x;
}

__global__ void out_of_range_kernel(const int64_t* __restrict__ idx, int64_t n, int64_t limit,
                                    unsigned long long* first) {
  for (int64_t i = thread_start(); i < n; i += thread_step()) {
    const int64_t v = idx[i];
    // Only offending positions touch the atomic, so the valid case costs one read per index.
    if (v < 0 || v >= limit) atomicMin(first, static_cast<unsigned long long>(i));
  }
}

template <class T>
__global__ void index_select_kernel(const T* __restrict__ x, int64_t D, int64_t B,
                                    const int64_t* __restrict__ idx, int64_t K, int64_t total,
                                    T* __restrict__ out) {
  for (int64_t j = thread_start(); j < total; j += thread_step()) {
    const int64_t b = j % B, ak = j / B;
    const int64_t k = ak % K, a = ak / K;
    const int64_t d = idx[k];
    out[j] = (d >= 0 && d < D) ? x[(a * D + d) * B + b] : T(0);
  }
}

// Sort input for index_add: key = the index (D for an invalid one, which is then skipped), value
// = its position k.
__global__ void index_add_keys_kernel(const int64_t* __restrict__ idx, int64_t K, int64_t D,
                                      uint64_t* __restrict__ keys, int64_t* __restrict__ vals) {
  for (int64_t k = thread_start(); k < K; k += thread_step()) {
    const int64_t d = idx[k];
    keys[k] = static_cast<uint64_t>((d >= 0 && d < D) ? d : D);
    vals[k] = k;
  }
}

// One thread per (a, sorted position s, b); the thread at the start of a run of equal keys adds
// the run's sources in increasing k (the radix sort is stable) onto the zeroed destination.
// b varies fastest, so a warp shares s and either all of it or none of it works.
template <class T>
__global__ void index_add_runs_kernel(const T* __restrict__ g, int64_t K, int64_t B,
                                      const uint64_t* __restrict__ keys,
                                      const int64_t* __restrict__ vals, int64_t D, int64_t total,
                                      T* __restrict__ gx) {
  for (int64_t j = thread_start(); j < total; j += thread_step()) {
    const int64_t b = j % B, as = j / B;
    const int64_t s = as % K, a = as / K;
    const uint64_t key = keys[s];
    if (key >= static_cast<uint64_t>(D)) continue;
    if (s > 0 && keys[s - 1] == key) continue;
    T* dst = gx + (a * D + static_cast<int64_t>(key)) * B + b;
    T acc = *dst;
    for (int64_t t = s; t < K && keys[t] == key; ++t) acc += g[(a * K + vals[t]) * B + b];
    *dst = acc;
  }
}

template <class T>
__global__ void gather_kernel(GatherGeom geom, int64_t dim_size, int64_t n, const T* __restrict__ x,
                              const int64_t* __restrict__ index, T* __restrict__ out) {
  for (int64_t p = thread_start(); p < n; p += thread_step()) {
    const int64_t v = index[p];
    if (v < 0 || v >= dim_size) {
      out[p] = T(0);
      continue;
    }
    int64_t rem = p, xo = 0;
    for (int d = geom.ndim - 1; d >= 0; --d) {
      const int64_t c = rem % geom.shape[d];
      rem /= geom.shape[d];
      xo += (d == geom.dim ? v : c) * geom.x_stride[d];
    }
    out[p] = x[xo];
  }
}

// One thread per line along geom.dim: the offsets of the line's first element in the contiguous
// index and in x, then its K elements in order.
template <class T>
__global__ void scatter_add_kernel(GatherGeom geom, int64_t dim_size, int64_t lines,
                                   const T* __restrict__ src, const int64_t* __restrict__ index,
                                   T* __restrict__ x) {
  const int64_t K = geom.shape[geom.dim];
  const int64_t xs = geom.x_stride[geom.dim];
  for (int64_t l = thread_start(); l < lines; l += thread_step()) {
    int64_t rem = l, io = 0, xo = 0, contig = 1, is = 1;
    for (int d = geom.ndim - 1; d >= 0; --d) {
      if (d == geom.dim) {
        is = contig;
      } else {
        const int64_t c = rem % geom.shape[d];
        rem /= geom.shape[d];
        io += c * contig;
        xo += c * geom.x_stride[d];
      }
      contig *= geom.shape[d];
    }
    for (int64_t k = 0; k < K; ++k) {
      const int64_t p = io + k * is;
      const int64_t v = index[p];
      if (v >= 0 && v < dim_size) x[xo + v * xs] += src[p];
    }
  }
}

template <class T>
__global__ void one_hot_kernel(const int64_t* __restrict__ labels, int64_t classes, int64_t total,
                               T* __restrict__ out) {
  for (int64_t j = thread_start(); j < total; j += thread_step()) {
    out[j] = labels[j / classes] == j % classes ? T(1) : T(0);
  }
}

// Where index_add's arrays live in its workspace (256-byte aligned, as CUB wants its scratch).
struct AddLayout {
  size_t keys_in = 0, keys_out = 0, vals_in = 0, vals_out = 0, temp = 0, temp_bytes = 0;
  size_t total = 0;
  int end_bit = 1;
};

size_t align_up(size_t x) {
  return (x + 255) / 256 * 256;
}

AddLayout add_layout(int64_t K, int64_t D) {
  AddLayout l;
  // Keys lie in [0, D]: sorting only their low bits is exact and saves radix passes.
  l.end_bit = std::max(1, static_cast<int>(std::bit_width(static_cast<uint64_t>(D))));
  MEL_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, l.temp_bytes, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
      static_cast<const int64_t*>(nullptr), static_cast<int64_t*>(nullptr), K, 0, l.end_bit));
  const size_t arr = align_up(static_cast<size_t>(K) * 8);
  l.keys_in = 0;
  l.keys_out = arr;
  l.vals_in = 2 * arr;
  l.vals_out = 3 * arr;
  l.temp = 4 * arr;
  l.total = l.temp + align_up(std::max<size_t>(l.temp_bytes, 1));
  return l;
}

}  // namespace

void find_out_of_range(const int64_t* idx, int64_t n, int64_t limit, int64_t* first_bad,
                       cudaStream_t stream) {
  MEL_CUDA_CHECK(cudaMemsetAsync(first_bad, 0x7f, sizeof(int64_t), stream));
  if (n == 0) return;
  out_of_range_kernel<<<grid_for(n), kBlock, 0, stream>>>(
      idx, n, limit, reinterpret_cast<unsigned long long*>(first_bad));
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void index_select(const T* x, int64_t A, int64_t D, int64_t B, const int64_t* idx, int64_t K,
                  T* out, cudaStream_t stream) {
  const int64_t total = A * K * B;
  if (total == 0) return;
  index_select_kernel<<<grid_for(total), kBlock, 0, stream>>>(x, D, B, idx, K, total, out);
  MEL_CUDA_CHECK_LAUNCH();
}

size_t index_add_workspace_bytes(int64_t K, int64_t D) {
  if (K == 0) return 0;
  return add_layout(K, D).total;
}

template <class T>
void index_add(const T* g, int64_t A, int64_t K, int64_t B, const int64_t* idx, int64_t D, T* gx,
               void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (A == 0 || K == 0 || B == 0) return;
  const AddLayout l = add_layout(K, D);
  if (workspace_bytes < l.total) {
    throw Error("index_add (cuda): workspace of " + std::to_string(workspace_bytes) + " bytes, " +
                std::to_string(l.total) + " needed for " + std::to_string(K) + " indices");
  }
  char* base = static_cast<char*>(workspace);
  auto* keys_in = reinterpret_cast<uint64_t*>(base + l.keys_in);
  auto* keys_out = reinterpret_cast<uint64_t*>(base + l.keys_out);
  auto* vals_in = reinterpret_cast<int64_t*>(base + l.vals_in);
  auto* vals_out = reinterpret_cast<int64_t*>(base + l.vals_out);
  index_add_keys_kernel<<<grid_for(K), kBlock, 0, stream>>>(idx, K, D, keys_in, vals_in);
  MEL_CUDA_CHECK_LAUNCH();
  size_t temp_bytes = l.temp_bytes;
  MEL_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(base + l.temp, temp_bytes, keys_in, keys_out,
                                                 vals_in, vals_out, K, 0, l.end_bit, stream));
  const int64_t total = A * K * B;
  index_add_runs_kernel<<<grid_for(total), kBlock, 0, stream>>>(g, K, B, keys_out, vals_out, D,
                                                                total, gx);
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void gather(const GatherGeom& g, const T* x, const int64_t* index, T* out, int64_t dim_size,
            cudaStream_t stream) {
  int64_t n = 1;
  for (int d = 0; d < g.ndim; ++d) n *= g.shape[d];
  if (g.ndim == 0 || n == 0) return;
  gather_kernel<<<grid_for(n), kBlock, 0, stream>>>(g, dim_size, n, x, index, out);
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void scatter_add(const GatherGeom& g, const T* src, const int64_t* index, T* x, int64_t dim_size,
                 cudaStream_t stream) {
  if (g.ndim == 0) return;
  int64_t lines = 1;
  for (int d = 0; d < g.ndim; ++d) {
    if (d != g.dim) lines *= g.shape[d];
  }
  if (lines == 0 || g.shape[g.dim] == 0) return;
  scatter_add_kernel<<<grid_for(lines), kBlock, 0, stream>>>(g, dim_size, lines, src, index, x);
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void one_hot(const int64_t* labels, int64_t n, int64_t classes, T* out, cudaStream_t stream) {
  const int64_t total = n * classes;
  if (total == 0) return;
  one_hot_kernel<<<grid_for(total), kBlock, 0, stream>>>(labels, classes, total, out);
  MEL_CUDA_CHECK_LAUNCH();
}

#define MEL_INSTANTIATE_SELECT(T)                                                                 \
  template void index_select<T>(const T*, int64_t, int64_t, int64_t, const int64_t*, int64_t, T*, \
                                cudaStream_t);                                                    \
  template void gather<T>(const GatherGeom&, const T*, const int64_t*, T*, int64_t, cudaStream_t);
MEL_INSTANTIATE_SELECT(float)
MEL_INSTANTIATE_SELECT(double)
MEL_INSTANTIATE_SELECT(int32_t)
MEL_INSTANTIATE_SELECT(int64_t)
#undef MEL_INSTANTIATE_SELECT

#define MEL_INSTANTIATE_ADD(T)                                                                 \
  template void index_add<T>(const T*, int64_t, int64_t, int64_t, const int64_t*, int64_t, T*, \
                             void*, size_t, cudaStream_t);                                     \
  template void scatter_add<T>(const GatherGeom&, const T*, const int64_t*, T*, int64_t,       \
                               cudaStream_t);
MEL_INSTANTIATE_ADD(float)
MEL_INSTANTIATE_ADD(double)
#undef MEL_INSTANTIATE_ADD

template void one_hot<float>(const int64_t*, int64_t, int64_t, float*, cudaStream_t);
template void one_hot<double>(const int64_t*, int64_t, int64_t, double*, cudaStream_t);
template void one_hot<int32_t>(const int64_t*, int64_t, int64_t, int32_t*, cudaStream_t);
template void one_hot<int64_t>(const int64_t*, int64_t, int64_t, int64_t*, cudaStream_t);
template void one_hot<uint8_t>(const int64_t*, int64_t, int64_t, uint8_t*, cudaStream_t);

}  // namespace mel::kernels::cuda
