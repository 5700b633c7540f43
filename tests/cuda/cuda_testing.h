// Shared helpers of the GPU parity tests: the skip-without-GPU guard, random inputs (contiguous or
// strided) and the per-dtype tolerances every CUDA-versus-CPU comparison uses.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/cuda_context.h"
#include "core/mel.h"
#include "gradcheck.h"

namespace mel::testing {

// Empty when a CUDA device can run the test, else the reason it is skipped.
inline std::string gpu_skip_reason() {
  if (!cuda_built()) return "this build has no CUDA backend (configure with -DMEL_CUDA=ON)";
  if (cuda_device_count() == 0) return "no CUDA GPU is visible on this machine";
  return "";
}

#define MEL_REQUIRE_GPU()                                                    \
  do {                                                                       \
    if (std::string why = ::mel::testing::gpu_skip_reason(); !why.empty()) { \
      GTEST_SKIP() << why;                                                   \
    }                                                                        \
  } while (0)

// Tests of paths that run cuBLASLt or cuDNN (matmuls, convolutions, whole models): GPU-only. The
// kernel simulator (MEL_CUDA=SIM) runs mel's own kernels, not the vendor libraries.
#ifdef MEL_CUDA_SIM
#define MEL_REQUIRE_VENDOR_LIBS() \
  GTEST_SKIP() << "uses cuBLASLt or cuDNN, which the kernel simulator does not run (GPU-only)"
#else
#define MEL_REQUIRE_VENDOR_LIBS() \
  do {                            \
  } while (0)
#endif

inline Device gpu() {
  return Device::cuda(0);
}

// Tolerances for comparing a GPU result with the CPU reference computed in the same dtype.
// Elementwise results differ only by the last bits of transcendental functions; reductions and
// matmuls add up in a different order (atol absorbs cancellation near zero).
struct Tol {
  double atol, rtol;
};
inline Tol tol_for(DType t, bool accumulates = false) {
  switch (t) {
    case DType::f64:
      return {1e-12, 1e-10};
    case DType::f32:
      return accumulates ? Tol{1e-4, 1e-4} : Tol{1e-6, 1e-5};
    case DType::bf16:
      return {2e-2, 2e-2};
    case DType::f16:
      return {2e-3, 5e-3};
    default:
      return {0, 0};  // integers match exactly
  }
}

// Uniform random values in [lo, hi) of `dtype` on the CPU (no grad).
inline Tensor random_cpu(const Shape& shape, uint64_t seed, DType dtype = DType::f32,
                         double lo = -1.0, double hi = 1.0) {
  Generator gen(seed);
  return rand(shape, gen, DType::f64, lo, hi).to(dtype);
}

// The same values with non-contiguous strides: a transposed view of fresh storage.
inline Tensor random_strided_cpu(const Shape& shape, uint64_t seed, DType dtype = DType::f32) {
  Shape rev(shape.rbegin(), shape.rend());
  Shape perm;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) perm.push_back(i);
  return random_cpu(rev, seed, dtype).permute(perm);
}

// A GPU copy that keeps `t`'s strides (a transposed CPU tensor becomes a transposed GPU tensor).
inline Tensor to_gpu_keep_strides(const Tensor& t) {
  if (t.is_contiguous()) return t.to(gpu());
  // rebuild the permutation that makes t contiguous, move that, and undo it on the GPU
  Shape order(t.dim());
  for (int64_t i = 0; i < t.dim(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return t.stride(a) > t.stride(b); });
  Shape inverse(t.dim());
  for (int64_t i = 0; i < t.dim(); ++i) inverse[order[i]] = i;
  return t.permute(order).contiguous().to(gpu()).permute(inverse);
}

inline ::testing::AssertionResult gpu_close(const Tensor& gpu_result, const Tensor& cpu_ref,
                                            Tol tol) {
  if (!gpu_result.device().is_cuda()) {
    return ::testing::AssertionFailure() << "result is on " << gpu_result.device().str();
  }
  return all_close(gpu_result, cpu_ref, tol.atol, tol.rtol);
}

// Largest |gpu - cpu| over the largest |cpu|: TF32 rounds the operands to 10 mantissa bits, so
// its error scales with the size of the sums, not with each (possibly cancelling) result.
inline double max_rel_error(const Tensor& g, const Tensor& c) {
  std::vector<double> vg = g.to_vector(), vc = c.to_vector();
  double err = 0, mag = 0;
  for (size_t i = 0; i < vg.size(); ++i) {
    err = std::max(err, std::abs(vg[i] - vc[i]));
    mag = std::max(mag, std::abs(vc[i]));
  }
  return mag > 0 ? err / mag : err;
}

// Restores the TF32 switch when a test ends (also on failure).
struct Tf32Guard {
  bool prev = allow_tf32();
  ~Tf32Guard() { set_allow_tf32(prev); }
};

}  // namespace mel::testing
