// Tensor factories: constants, ranges, tensors from host values, and random tensors drawn from a
// counter-based Philox generator so that CPU and GPU produce the same streams from a seed.
#pragma once
#include <cstdint>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"

namespace mel {

Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
            Device device = Device::cpu());
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
// [start, end) in steps of `step` (non-zero).
Tensor arange(double start, double end, double step = 1.0, DType dtype = DType::i64,
              Device device = Device::cpu());
inline Tensor arange(int64_t end, DType dtype = DType::i64) {
  return arange(0.0, static_cast<double>(end), 1.0, dtype);
}

// A tensor holding `values` (row-major) with `shape`, converted to `dtype`.
Tensor tensor(const std::vector<double>& values, const Shape& shape, DType dtype = DType::f32);
// Same for exact 64-bit integers (labels, indices).
Tensor tensor_i64(const std::vector<int64_t>& values, const Shape& shape);

// Uniform in [low, high).
Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::f32, double low = 0.0,
            double high = 1.0);
// Normal with the given mean and standard deviation.
Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::f32, double mean = 0.0,
             double std = 1.0);
// Integers uniform in [low, high); high - low must be in [1, 2^32].
Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen,
               DType dtype = DType::i64);

}  // namespace mel
