// CPU-versus-GPU parity check of a differentiable op for the nn-op tests (softmax, norms, pools):
// the same inputs and the same upstream gradient through both devices, outputs and input grads
// compared with one tolerance. Needs no other GPU op than the one under test.
#pragma once
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "cuda_testing.h"

namespace mel::testing {

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// gpu_close, except that equal values pass too (matching infinities, which all_close rejects).
inline ::testing::AssertionResult nn_close(const Tensor& gpu_result, const Tensor& cpu_ref,
                                           Tol tol) {
  if (!gpu_result.device().is_cuda()) {
    return ::testing::AssertionFailure() << "result is on " << gpu_result.device().str();
  }
  if (gpu_result.shape() != cpu_ref.shape()) {
    return ::testing::AssertionFailure() << "shapes differ: " << shape_str(gpu_result.shape())
                                         << " vs " << shape_str(cpu_ref.shape());
  }
  const std::vector<double> a = gpu_result.to_vector(), b = cpu_ref.to_vector();
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i]))) continue;
    if (!(std::abs(a[i] - b[i]) <= tol.atol + tol.rtol * std::abs(b[i]))) {
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs " << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// inputs: CPU tensors (any strides) or undefined; grad[k] marks those to differentiate. The GPU
// copies keep the strides. The upstream gradient is uniform in [-1, 1) (seed `seed`), of the
// output's dtype.
inline ::testing::AssertionResult parity(const OpFn& f, const std::vector<Tensor>& inputs,
                                         const std::vector<bool>& grad, Tol tol,
                                         uint64_t seed = 99) {
  std::vector<Tensor> c, g;
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (!inputs[k].defined()) {  // an absent optional input (e.g. no affine parameters)
      c.emplace_back();
      g.emplace_back();
      continue;
    }
    Tensor tc = inputs[k].detach();
    Tensor tg = to_gpu_keep_strides(inputs[k].detach());
    if (k < grad.size() && grad[k]) {
      tc.requires_grad_();
      tg.requires_grad_();
    }
    c.push_back(tc);
    g.push_back(tg);
  }
  Tensor yc = f(c), yg = f(g);
  if (yg.dtype() != yc.dtype()) {
    return ::testing::AssertionFailure()
           << "output dtype " << dtype_name(yg.dtype()) << " vs " << dtype_name(yc.dtype());
  }
  if (auto r = nn_close(yg, yc, tol); !r) return r << " (output)";
  bool any = false;
  for (size_t k = 0; k < grad.size(); ++k) any = any || grad[k];
  if (!any) return ::testing::AssertionSuccess();
  Tensor gy = random_cpu(yc.shape(), seed, yc.dtype());
  yc.backward(gy);
  yg.backward(gy.to(gpu()));
  for (size_t k = 0; k < grad.size(); ++k) {
    if (!grad[k] || !c[k].defined()) continue;
    const bool dc = c[k].grad().defined(), dg = g[k].grad().defined();
    if (dc != dg) {
      return ::testing::AssertionFailure()
             << "input " << k << ": gradient defined on " << (dc ? "CPU" : "GPU") << " only";
    }
    if (!dc) continue;
    if (auto r = nn_close(g[k].grad(), c[k].grad(), tol); !r) {
      return r << " (gradient of input " << k << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace mel::testing
