// CPU indexing kernels: index_select / index_add over the middle axis of [A, D, B] blocks,
// gather / scatter_add along one dimension of a strided tensor, and one-hot encoding.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/strided.h"

namespace mel::kernels::cpu {

// Indices are int64 and already checked by the caller (with find_out_of_range) to lie in [0, D)
// (or [0, classes)); the kernels do not check them again.

// *first_bad = the first position i < n with idx[i] outside [0, limit), or a value >= n when every
// index is valid.
void find_out_of_range(const int64_t* idx, int64_t n, int64_t limit, int64_t* first_bad);

// out[a, k, b] = x[a, idx[k], b]; x contiguous [A, D, B], out contiguous [A, K, B].
// T: float, double, int32_t, int64_t.
template <class T>
void index_select(const T* x, int64_t A, int64_t D, int64_t B, const int64_t* idx, int64_t K,
                  T* out);

// gx[a, idx[k], b] += g[a, k, b]; g contiguous [A, K, B], gx contiguous [A, D, B] and zeroed by the
// caller. Repeated indices accumulate (work is split over a and b, never over k). T: float, double.
// `workspace` (index_add_workspace_bytes(K, D) bytes, none on the CPU) is unused here.
inline size_t index_add_workspace_bytes(int64_t, int64_t) {
  return 0;
}
template <class T>
void index_add(const T* g, int64_t A, int64_t K, int64_t B, const int64_t* idx, int64_t D, T* gx,
               void* workspace, size_t workspace_bytes);

// Where gather reads (and scatter_add writes): `index` is contiguous with shape `shape`, `x` has
// its own element strides, and position p of index reads x at p's coordinates with coordinate
// `dim` replaced by index[p].
struct GatherGeom {
  int ndim = 0;
  int dim = 0;
  int64_t shape[kMaxDims] = {};     // shape of the index (and of the gathered values)
  int64_t x_stride[kMaxDims] = {};  // element strides of x
};

// out[p] = x[coords(p) with dim -> index[p]]; out contiguous like index.
// T: float, double, int32_t, int64_t.
// dim_size is x's size along `dim` (the indices were checked against it).
template <class T>
void gather(const GatherGeom& g, const T* x, const int64_t* index, T* out, int64_t dim_size);

// x[coords(p) with dim -> index[p]] += src[p]; src contiguous like index. x's strides must not
// overlap (distinct coordinates, distinct elements) so that splitting the work over the
// coordinates other than `dim` is race-free. T: float, double.
template <class T>
void scatter_add(const GatherGeom& g, const T* src, const int64_t* index, T* x, int64_t dim_size);

// out[i, c] = (labels[i] == c); out contiguous [n, classes].
// T: float, double, int32_t, int64_t, uint8_t.
template <class T>
void one_hot(const int64_t* labels, int64_t n, int64_t classes, T* out);

}  // namespace mel::kernels::cpu
