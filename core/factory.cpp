#include "core/factory.h"

#include <cmath>

#include "kernels/cpu/random.h"

namespace mel {

Tensor zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}
Tensor ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}
Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}
Tensor zeros_like(const Tensor& t) {
  return zeros(t.shape(), t.dtype(), t.device());
}
Tensor ones_like(const Tensor& t) {
  return ones(t.shape(), t.dtype(), t.device());
}

Tensor arange(double start, double end, double step, DType dtype, Device device) {
  MEL_CHECK(step != 0.0 && std::isfinite(step), "arange: step must be finite and non-zero (got {})",
            step);
  MEL_CHECK(std::isfinite(start) && std::isfinite(end),
            "arange: start {} and end {} must be finite", start, end);
  const double count = std::ceil((end - start) / step);
  const int64_t n = count > 0 ? static_cast<int64_t>(count) : 0;
  Tensor f = empty({n}, DType::f64, Device::cpu());
  double* p = f.data<double>();
  for (int64_t i = 0; i < n; ++i) p[i] = start + static_cast<double>(i) * step;
  Tensor out = f.to(dtype);
  return device.is_cpu() ? out : out.to(device);
}

Tensor tensor(const std::vector<double>& values, const Shape& shape, DType dtype) {
  MEL_CHECK(static_cast<int64_t>(values.size()) == numel_of(shape),
            "tensor: {} values given for shape {} ({} elements)", values.size(), shape_str(shape),
            numel_of(shape));
  Tensor f = empty(shape, DType::f64);
  std::copy(values.begin(), values.end(), f.data<double>());
  return f.to(dtype);
}

Tensor tensor_i64(const std::vector<int64_t>& values, const Shape& shape) {
  MEL_CHECK(static_cast<int64_t>(values.size()) == numel_of(shape),
            "tensor_i64: {} values given for shape {} ({} elements)", values.size(),
            shape_str(shape), numel_of(shape));
  Tensor t = empty(shape, DType::i64);
  std::copy(values.begin(), values.end(), t.data<int64_t>());
  return t;
}

Tensor rand(const Shape& shape, Generator& gen, DType dtype, double low, double high) {
  MEL_CHECK(is_floating(dtype), "rand: dtype must be floating point (got {})", dtype_name(dtype));
  MEL_CHECK(low <= high, "rand: low {} must not exceed high {}", low, high);
  const int64_t n = numel_of(shape);
  if (dtype == DType::f64) {
    Tensor t = empty(shape, DType::f64);
    uint64_t off = gen.reserve(kernels::cpu::philox_blocks_uniform(n, true));
    kernels::cpu::uniform(gen.seed(), off, n, t.data<double>(), low, high);
    return t;
  }
  Tensor t = empty(shape, DType::f32);
  uint64_t off = gen.reserve(kernels::cpu::philox_blocks_uniform(n, false));
  kernels::cpu::uniform(gen.seed(), off, n, t.data<float>(), low, high);
  return t.to(dtype);
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype, double mean, double std) {
  MEL_CHECK(is_floating(dtype), "randn: dtype must be floating point (got {})", dtype_name(dtype));
  MEL_CHECK(std >= 0, "randn: std must be >= 0 (got {})", std);
  const int64_t n = numel_of(shape);
  Tensor t = empty(shape, DType::f64);
  uint64_t off = gen.reserve(kernels::cpu::philox_blocks(n));
  kernels::cpu::normal_f64(gen.seed(), off, n, t.data<double>(), mean, std);
  return t.to(dtype);
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen, DType dtype) {
  MEL_CHECK(high > low && static_cast<uint64_t>(high - low) <= (uint64_t(1) << 32),
            "randint: need low < high with high - low <= 2^32 (got low={}, high={})", low, high);
  const int64_t n = numel_of(shape);
  Tensor t = empty(shape, DType::i64);
  uint64_t off = gen.reserve(kernels::cpu::philox_blocks(n));
  kernels::cpu::randint_i64(gen.seed(), off, n, t.data<int64_t>(), low,
                            static_cast<uint64_t>(high - low));
  return t.to(dtype);
}

}  // namespace mel
