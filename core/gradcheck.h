// The finite-difference gradient checker in f64 that the project's tests use, as a library
// function so that extensions check their own ops the same way (no test framework needed).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mel {

struct GradcheckResult {
  bool ok = true;
  std::string message;  // where the first mismatch is, when !ok
  explicit operator bool() const { return ok; }
};

using GradFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Compares the autograd gradient of sum(f(inputs) * r), r a fixed random projection, with central
// differences for every element of every input that requires grad. Inputs must be f64 CPU leaves
// (they may be non-contiguous). An element passes when |numeric - analytic| <= atol + rtol *
// |numeric|.
GradcheckResult check_gradients(const GradFn& f, const std::vector<Tensor>& inputs,
                                double eps = 1e-6, double atol = 1e-7, double rtol = 1e-5);

}  // namespace mel
