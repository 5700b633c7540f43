// Fused normalisation + activation ops for the CNN layers: batch norm followed by ReLU in one pass,
// so the normalised tensor is never written and read back, and backward recomputes the ReLU mask.
#pragma once
#include "core/tensor.h"

namespace mel {

// relu(batch_norm(x, ...)) with the same arguments, checks and running-statistics update as
// batch_norm in core/ops_norm.h; the gradient is zero where the output is zero.
Tensor batch_norm_relu(const Tensor& x, const Tensor& weight, const Tensor& bias,
                       const Tensor& running_mean, const Tensor& running_var, bool training,
                       double momentum = 0.1, double eps = 1e-5);

}  // namespace mel
