// Reductions over chosen dimensions (sum, mean, max/argmax, var) with keepdim, and sum_to, the
// reduction that undoes broadcasting in backward passes.
#pragma once
#include <utility>

#include "core/tensor.h"

namespace mel {

// `dims` empty means all dimensions. Negative dims count from the end; repeats are an error.
Tensor sum(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const Shape& dims = {}, bool keepdim = false);

// Maximum over one dimension: values and i64 indices (first occurrence). Gradient goes to the
// selected element.
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& x);  // over all elements (gradient split evenly among ties)
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);

// Variance with `correction` (1: unbiased, 0: population) over dims (empty: all).
Tensor var(const Tensor& x, const Shape& dims = {}, int64_t correction = 1, bool keepdim = false);

// Sums `x` down to `shape` (the inverse of broadcasting `shape` up to x's shape).
Tensor sum_to(const Tensor& x, const Shape& shape);

}  // namespace mel
