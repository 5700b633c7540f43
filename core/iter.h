// Internal helpers of the op layer: broadcasting shapes and building kernel iterators
// (kernels::Iter) from tensors.
#pragma once
#include <array>
#include <vector>

#include "core/tensor.h"
#include "kernels/strided.h"

namespace mel {

// Shape both `a` and `b` broadcast to; throws naming `op` when they cannot.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// Strides of `t` viewed with shape `shape` (t's shape broadcast to it, stride 0 on expanded dims).
Shape broadcast_strides(const Tensor& t, const Shape& shape, const char* op);

// An iterator over `shape` for tensors that broadcast to it (operand order kept), coalesced.
template <int N>
kernels::Iter<N> make_iter(const Shape& shape, const std::array<const Tensor*, N>& ts,
                           const char* op) {
  MEL_CHECK(static_cast<int>(shape.size()) <= kernels::kMaxDims,
            "{}: tensors of {} dimensions are not supported (at most {})", op, shape.size(),
            kernels::kMaxDims);
  kernels::Iter<N> it;
  it.ndim = static_cast<int>(shape.size());
  for (int d = 0; d < it.ndim; ++d) it.shape[d] = shape[d];
  for (int k = 0; k < N; ++k) {
    Shape st = broadcast_strides(*ts[k], shape, op);
    for (int d = 0; d < it.ndim; ++d) it.stride[k][d] = st[d];
  }
  it.coalesce();
  return it;
}

// Checks that all tensors share one device and (unless mixed_dtypes) one dtype.
void check_same(const char* op, const std::vector<Tensor>& ts, bool same_dtype = true);
void check_defined(const char* op, const Tensor& t, const char* what);
void check_cpu(const char* op, const Tensor& t);

}  // namespace mel
