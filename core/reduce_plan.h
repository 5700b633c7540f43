// Internal: lays a tensor out as a contiguous [A, R, B] block for reducing the chosen dimensions
// (R), permuting and copying only when the reduced dimensions are not already adjacent.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace mel {

struct ReducePlan {
  Tensor x;  // contiguous; viewed as [A, R, B]
  int64_t A = 1, R = 1, B = 1;
  std::vector<bool> reduced;  // per input dimension
  Shape out_keep;             // output shape with keepdim (reduced dims are 1)
  Shape out;                  // output shape without keepdim
  Shape perm;                 // when not empty, x is the input permuted by perm (reduced dims last)
  Shape permuted_shape;       // the input's shape after that permutation
};

// dims empty: all dimensions. Repeated or out-of-range dims throw naming `op`.
ReducePlan plan_reduce(const Tensor& x, const Shape& dims, const char* op);

}  // namespace mel
