// Convolution and pooling on NCHW / NCL tensors with PyTorch's semantics and weight layouts
// (conv weight [out, in / groups, kh, kw]); every op is differentiable.
#pragma once
#include <array>
#include <cstdint>
#include "core/tensor.h"

namespace mel {

struct Conv2dOptions {
  std::array<int64_t, 2> stride{1, 1};
  std::array<int64_t, 2> padding{0, 0};  // zero padding on both sides
  std::array<int64_t, 2> dilation{1, 1};
  int64_t groups = 1;
};

// x: [N, C_in, H, W]; weight: [C_out, C_in / groups, kh, kw]; bias: [C_out] or undefined.
// Output [N, C_out, H_out, W_out] with H_out = (H + 2 p - d (kh - 1) - 1) / s + 1.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dOptions& options = {});

// x: [N, C_in, L]; weight: [C_out, C_in / groups, k]; bias: [C_out] or undefined.
Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              int64_t stride = 1, int64_t padding = 0, int64_t dilation = 1, int64_t groups = 1);

struct Pool2dOptions {
  std::array<int64_t, 2> kernel{2, 2};
  std::array<int64_t, 2> stride{0, 0};  // 0 means "same as kernel", as in PyTorch
  std::array<int64_t, 2> padding{0, 0};
  bool count_include_pad = true;  // avg_pool2d only
};

// x: [N, C, H, W] (floating). Max pooling pads with -inf; the gradient goes to the first maximum.
Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options);
Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options);
// PyTorch's adaptive average pooling: output cell (i, j) averages rows
// [floor(i H / oh), ceil((i + 1) H / oh)) and the same for columns.
Tensor adaptive_avg_pool2d(const Tensor& x, std::array<int64_t, 2> output_size);

}  // namespace mel
