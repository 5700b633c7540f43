// Matrix products: 2-D, batched with broadcast batch dimensions, and vector forms; f32 and f64.
#pragma once
#include "core/tensor.h"

namespace mel {

// a: [..., M, K], b: [..., K, N] -> [..., M, N], batch dims broadcast. A 1-D a is [1, K] and a 1-D
// b is [K, 1], with that dimension removed from the result (as numpy.matmul).
Tensor matmul(const Tensor& a, const Tensor& b);

}  // namespace mel
