// Normalisation and dropout: batch norm (training and inference forms, running statistics),
// layer norm over trailing dimensions, and dropout drawn from the Philox generator.
#pragma once
#include <cstdint>
#include "core/random.h"
#include "core/tensor.h"

namespace mel {

// x: [N, C] or [N, C, *]; weight, bias: [C] or undefined (affine off).
// training: normalises with the batch mean and biased variance, and (when running_mean /
// running_var are defined) updates them in place without autograd, PyTorch style:
// running = (1 - momentum) * running + momentum * batch_stat, the variance unbiased (n / (n - 1)).
// Not training: normalises with the running statistics (which must then be defined).
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  double momentum = 0.1, double eps = 1e-5);

// Normalises over the trailing dims given by normalized_shape; weight, bias have that shape
// or are undefined.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);

// Zeroes each element with probability p and scales the rest by 1 / (1 - p) when training;
// identity otherwise. The mask is a pure function of (generator seed, offset, element index).
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

}  // namespace mel
