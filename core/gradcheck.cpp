#include "core/gradcheck.h"

#include <fmt/format.h>

#include <cmath>

#include "core/autograd.h"
#include "core/factory.h"
#include "core/ops_elementwise.h"
#include "core/ops_reduce.h"
#include "core/random.h"

namespace mel {

namespace {

// The coordinates of element `e` of `shape` in row-major order.
Shape coords_of(int64_t e, const Shape& shape) {
  Shape idx(shape.size(), 0);
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = e % shape[d];
    e /= shape[d];
  }
  return idx;
}

}  // namespace

GradcheckResult check_gradients(const GradFn& f, const std::vector<Tensor>& inputs, double eps,
                                double atol, double rtol) {
  for (const Tensor& t : inputs) {
    if (t.requires_grad() && (t.dtype() != DType::f64 || !t.device().is_cpu())) {
      return {false, "gradcheck: inputs that require grad must be f64 CPU tensors"};
    }
  }
  for (const Tensor& t : inputs) {
    if (t.requires_grad()) const_cast<Tensor&>(t).zero_grad();
  }
  Tensor out = f(inputs);
  Generator gen(1234);
  Tensor r = randn(out.shape(), gen, DType::f64);
  sum(mul(out, r)).backward();
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
      return {false, fmt::format("input {}: gradient shape {} vs {}", k, shape_str(g.shape()),
                                 shape_str(x.shape()))};
    }
    for (int64_t e = 0; e < x.numel(); ++e) {
      const Shape idx = coords_of(e, x.shape());
      const double orig = x.at(idx);
      x.set(idx, orig + eps);
      const double lp = objective();
      x.set(idx, orig - eps);
      const double lm = objective();
      x.set(idx, orig);
      const double numeric = (lp - lm) / (2 * eps);
      const double analytic = g.at(idx);
      if (!(std::abs(numeric - analytic) <= atol + rtol * std::abs(numeric))) {
        return {false, fmt::format("input {} element {}: analytic {} vs numeric {}", k,
                                   shape_str(idx), analytic, numeric)};
      }
    }
  }
  return {};
}

}  // namespace mel
