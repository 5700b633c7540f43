// CUDA indexing kernels: the twins of kernels/cpu/index.h (index_select / index_add over [A, D, B]
// blocks, gather / scatter_add along one dimension, one-hot) plus a device-side index range check.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/index.h"

namespace mel::kernels::cuda {

using cpu::GatherGeom;

// Every pointer below is device memory. The caller checks the indices (find_out_of_range) before
// the other kernels run; the kernels still never touch memory through an index outside its range
// (index_select and gather write 0 there, index_add and scatter_add skip it), so an unchecked call
// (e.g. inside a CUDA-graph capture, where the check cannot be read back) stays memory-safe.

// *first_bad = the smallest position p < n with idx[p] outside [0, limit), or a value >= n (the
// sentinel 0x7f7f7f7f7f7f7f7f) when every index is valid. One memset and one kernel.
void find_out_of_range(const int64_t* idx, int64_t n, int64_t limit, int64_t* first_bad,
                       cudaStream_t stream);

// out[a, k, b] = x[a, idx[k], b]; x contiguous [A, D, B], out contiguous [A, K, B].
// T: float, double, int32_t, int64_t.
template <class T>
void index_select(const T* x, int64_t A, int64_t D, int64_t B, const int64_t* idx, int64_t K,
                  T* out, cudaStream_t stream);

// Scratch bytes index_add needs for K indices into a dimension of size D.
size_t index_add_workspace_bytes(int64_t K, int64_t D);

// gx[a, idx[k], b] += g[a, k, b]; g contiguous [A, K, B], gx contiguous [A, D, B] and zeroed by the
// caller. Deterministic without atomics: the indices are stably sorted (CUB radix sort in
// `workspace`, index_add_workspace_bytes(K, D) bytes) and each destination element adds its
// sources in increasing k, the CPU kernel's order, so the result is bitwise the CPU's.
// T: float, double.
template <class T>
void index_add(const T* g, int64_t A, int64_t K, int64_t B, const int64_t* idx, int64_t D, T* gx,
               void* workspace, size_t workspace_bytes, cudaStream_t stream);

// out[p] = x[coords(p) with dim -> index[p]]; out contiguous like index. dim_size: x's size along
// g.dim (the range guard). T: float, double, int32_t, int64_t.
template <class T>
void gather(const GatherGeom& g, const T* x, const int64_t* index, T* out, int64_t dim_size,
            cudaStream_t stream);

// x[coords(p) with dim -> index[p]] += src[p]; src contiguous like index, x's strides must not
// overlap. One thread per line along `dim` adds its K values in order (the CPU's order, no
// atomics). T: float, double.
template <class T>
void scatter_add(const GatherGeom& g, const T* src, const int64_t* index, T* x, int64_t dim_size,
                 cudaStream_t stream);

// out[i, c] = (labels[i] == c); out contiguous [n, classes].
// T: float, double, int32_t, int64_t, uint8_t.
template <class T>
void one_hot(const int64_t* labels, int64_t n, int64_t classes, T* out, cudaStream_t stream);

}  // namespace mel::kernels::cuda
