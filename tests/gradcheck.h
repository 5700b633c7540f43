// Test helpers: the finite-difference gradient checker (core/gradcheck.h) as a gtest assertion,
// leaves and tensor comparisons.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/gradcheck.h"
#include "core/mel.h"

namespace mel::testing {

using Fn = GradFn;

// The library's checker (core/gradcheck.h) as a gtest assertion.
inline ::testing::AssertionResult gradcheck(const Fn& f, const std::vector<Tensor>& inputs,
                                            double eps = 1e-6, double atol = 1e-7,
                                            double rtol = 1e-5) {
  const GradcheckResult r = check_gradients(f, inputs, eps, atol, rtol);
  if (r.ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << r.message;
}

// An f64 leaf with values uniform in [lo, hi), requiring grad.
inline Tensor leaf(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Generator gen(seed);
  Tensor t = rand(shape, gen, DType::f64, lo, hi);
  t.requires_grad_();
  return t;
}

// An f64 leaf of `shape` whose strides are not contiguous (a transposed view of fresh storage).
inline Tensor strided_leaf(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Shape rev(shape.rbegin(), shape.rend());
  Generator gen(seed);
  Shape perm;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) perm.push_back(i);
  Tensor t = rand(rev, gen, DType::f64, lo, hi).permute(perm).detach();
  t.requires_grad_();
  return t;
}

inline ::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double atol = 1e-6,
                                            double rtol = 1e-5) {
  if (a.shape() != b.shape()) {
    return ::testing::AssertionFailure()
           << "shapes differ: " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  }
  std::vector<double> va = a.to_vector(), vb = b.to_vector();
  for (size_t i = 0; i < va.size(); ++i) {
    bool both_nan = std::isnan(va[i]) && std::isnan(vb[i]);
    if (!both_nan && !(std::abs(va[i] - vb[i]) <= atol + rtol * std::abs(vb[i]))) {
      return ::testing::AssertionFailure() << "element " << i << ": " << va[i] << " vs " << vb[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// Asserts that `stmt` throws mel::Error whose message contains every fragment.
#define EXPECT_MEL_ERROR(stmt, ...)                                    \
  do {                                                                 \
    try {                                                              \
      stmt;                                                            \
      ADD_FAILURE() << "expected mel::Error from: " #stmt;             \
    } catch (const ::mel::Error& e) {                                  \
      for (const char* frag : {__VA_ARGS__}) {                         \
        EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) \
            << "message '" << e.what() << "' lacks '" << frag << "'";  \
      }                                                                \
    }                                                                  \
  } while (0)

}  // namespace mel::testing
