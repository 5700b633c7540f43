// Test helpers: a finite-difference gradient checker in f64 and tensor comparisons.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/mel.h"

namespace mel::testing {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Compares the autograd gradient of sum(f(inputs) * r), r a fixed random projection, with central
// differences for every element of every input that requires grad. Inputs must be f64 CPU leaves
// (they may be non-contiguous).
inline ::testing::AssertionResult gradcheck(const Fn& f, const std::vector<Tensor>& inputs,
                                            double eps = 1e-6, double atol = 1e-7,
                                            double rtol = 1e-5) {
  for (const Tensor& t : inputs) {
    if (t.requires_grad() && t.dtype() != DType::f64) {
      return ::testing::AssertionFailure() << "gradcheck: inputs must be f64";
    }
  }
  for (const Tensor& t : inputs) {
    if (t.requires_grad()) const_cast<Tensor&>(t).zero_grad();
  }
  Tensor out = f(inputs);
  Generator gen(1234);
  Tensor r = randn(out.shape(), gen, DType::f64);
  Tensor loss = sum(mul(out, r));
  loss.backward();
  auto objective = [&]() {
    autograd::NoGradGuard ng;
    return sum(mul(f(inputs), r)).item();
  };
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor x = inputs[k];
    if (!x.requires_grad()) continue;
    Tensor g = x.grad();
    if (!g.defined()) g = zeros(x.shape(), DType::f64);
    if (g.shape() != x.shape()) {
      return ::testing::AssertionFailure()
             << "input " << k << ": gradient shape " << shape_str(g.shape()) << " vs "
             << shape_str(x.shape());
    }
    const int64_t n = x.numel();
    std::vector<int64_t> idx(x.dim(), 0);
    for (int64_t e = 0; e < n; ++e) {
      int64_t rem = e;
      for (int64_t d = x.dim() - 1; d >= 0; --d) {
        idx[d] = rem % x.shape()[d];
        rem /= x.shape()[d];
      }
      const double orig = x.at(idx);
      x.set(idx, orig + eps);
      const double lp = objective();
      x.set(idx, orig - eps);
      const double lm = objective();
      x.set(idx, orig);
      const double numeric = (lp - lm) / (2 * eps);
      const double analytic = g.at(idx);
      if (std::abs(numeric - analytic) > atol + rtol * std::abs(numeric)) {
        return ::testing::AssertionFailure()
               << "input " << k << " element " << shape_str(idx) << ": analytic " << analytic
               << " vs numeric " << numeric;
      }
    }
  }
  return ::testing::AssertionSuccess();
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
