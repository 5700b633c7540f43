#include "mel/joint_loss.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/factory.h"
#include "core/iter.h"
#include "core/ops_elementwise.h"
#include "core/ops_nn.h"
#include "core/ops_reduce.h"
#include "kernels/cpu/joint_loss.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/joint_loss.h"
#endif

namespace mel::method {

using autograd::GradMask;

namespace {

bool is_coarse(const JointLossOptions& o, size_t k) {
  return !o.coarse.empty() && o.coarse[k];
}

// Labels as contiguous i64, after checking that they are a [B] tensor of class indices on the
// logits' device.
Tensor label_tensor(const char* op, const Tensor& t, const char* what, int64_t B, Device device) {
  MEL_CHECK(t.device() == device,
            "{}: {} are on {} but the logits are on {}; move them with .to(device)", op, what,
            t.device().str(), device.str());
  MEL_CHECK(t.dim() == 1 && t.shape()[0] == B,
            "{}: {} have shape {} but the logits have batch size {} (expected [{}])", op, what,
            shape_str(t.shape()), B, B);
  MEL_CHECK(t.dtype() == DType::i64 || t.dtype() == DType::i32,
            "{}: {} must be i64 or i32 class indices, got {}", op, what, dtype_name(t.dtype()));
  return t.detach().to(DType::i64).contiguous();
}

struct Checked {
  int64_t batch = 0;
  std::vector<int64_t> widths;
  Tensor labels, coarse_labels;  // contiguous i64 (coarse undefined when no term is coarse)
};

// Every check both versions share; label ranges are left to the kernel (which reports the first
// bad label of every term) and, in the reference, to cross_entropy.
Checked validate(const char* op, const std::vector<Tensor>& logits, const Tensor& labels,
                 const Tensor& coarse_labels, const JointLossOptions& o) {
  const size_t K = logits.size();
  MEL_CHECK(K > 0, "{}: no terms (expected at least one logits tensor)", op);
  MEL_CHECK(o.weights.size() == K, "{}: {} weights for {} terms (expected one weight per term)", op,
            o.weights.size(), K);
  MEL_CHECK(o.coarse.empty() || o.coarse.size() == K,
            "{}: {} coarse flags for {} terms (expected one per term, or none for all fine)", op,
            o.coarse.size(), K);
  MEL_CHECK(o.label_smoothing >= 0.0 && o.label_smoothing <= 1.0,
            "{}: label_smoothing must be in [0, 1], got {}", op, o.label_smoothing);
  MEL_CHECK(std::isfinite(o.diversity_weight) && o.diversity_weight >= 0.0,
            "{}: diversity_weight must be finite and >= 0, got {}", op, o.diversity_weight);
  MEL_CHECK(std::isfinite(o.diversity_margin), "{}: diversity_margin must be finite, got {}", op,
            o.diversity_margin);
  for (size_t k = 0; k < K; ++k) {
    MEL_CHECK(std::isfinite(o.weights[k]), "{}: weight of term {} is {} (expected finite)", op, k,
              o.weights[k]);
  }

  Checked c;
  for (size_t k = 0; k < K; ++k) {
    const Tensor& z = logits[k];
    MEL_CHECK(z.defined(), "{}: the logits of term {} are undefined", op, k);
    MEL_CHECK(z.device() == logits[0].device(),
              "{}: the logits of term {} are on {} but those of term 0 are on {} (expected one "
              "device)",
              op, k, z.device().str(), logits[0].device().str());
    MEL_CHECK(z.dim() == 2, "{}: the logits of term {} must be 2-D [B, C], got shape {}", op, k,
              shape_str(z.shape()));
    MEL_CHECK(is_floating(z.dtype()), "{}: the logits of term {} must be floating point, got {}",
              op, k, dtype_name(z.dtype()));
    MEL_CHECK(z.dtype() == logits[0].dtype(),
              "{}: the logits of term {} are {} but those of term 0 are {} (expected one dtype)",
              op, k, dtype_name(z.dtype()), dtype_name(logits[0].dtype()));
    MEL_CHECK(z.shape()[0] == logits[0].shape()[0],
              "{}: the logits of term {} have shape {} but those of term 0 have {} (every term "
              "needs the same batch size)",
              op, k, shape_str(z.shape()), shape_str(logits[0].shape()));
    MEL_CHECK(z.shape()[1] > 0, "{}: the logits of term {} have shape {} (no classes)", op, k,
              shape_str(z.shape()));
    c.widths.push_back(z.shape()[1]);
  }
  c.batch = logits[0].shape()[0];
  MEL_CHECK(c.batch > 0, "{}: empty batch (logits of shape {})", op, shape_str(logits[0].shape()));

  for (const auto& [i, j] : o.diversity_pairs) {
    MEL_CHECK(i >= 0 && j >= 0 && static_cast<size_t>(i) < K && static_cast<size_t>(j) < K,
              "{}: diversity pair ({}, {}) names a term outside 0..{}", op, i, j, K - 1);
    MEL_CHECK(i != j, "{}: diversity pair ({}, {}) pairs a term with itself", op, i, j);
    MEL_CHECK(c.widths[i] == c.widths[j],
              "{}: diversity pair ({}, {}) joins logits of shapes {} and {} (expected equal "
              "widths)",
              op, i, j, shape_str(logits[i].shape()), shape_str(logits[j].shape()));
  }

  MEL_CHECK(labels.defined(), "{}: the labels are undefined", op);
  const Device device = logits[0].device();
  c.labels = label_tensor(op, labels, "the labels", c.batch, device);
  const bool any_coarse = std::find(o.coarse.begin(), o.coarse.end(), true) != o.coarse.end();
  if (any_coarse) {
    for (size_t k = 0; k < K; ++k) {
      MEL_CHECK(!is_coarse(o, k) || coarse_labels.defined(),
                "{}: term {} uses coarse labels but no coarse labels were given", op, k);
    }
    c.coarse_labels = label_tensor(op, coarse_labels, "the coarse labels", c.batch, device);
  }
  return c;
}

// The fused kernel's arguments for the checked problem: `in` / `out` hold the logits' and the
// gradients' data pointers, `res` the results buffer (f64 bits in i64 slots, then the label
// checks; see joint_loss below).
template <class T>
kernels::JointLossArgs<T> kernel_args(const Checked& c, const JointLossOptions& o,
                                      const std::vector<const T*>& in, const std::vector<T*>& out,
                                      const std::vector<uint8_t>& coarse,
                                      const std::vector<int64_t>& pair_i,
                                      const std::vector<int64_t>& pair_j, int64_t* res) {
  const int64_t K = static_cast<int64_t>(in.size()), P = static_cast<int64_t>(pair_i.size());
  double* d = reinterpret_cast<double*>(res);
  kernels::JointLossArgs<T> a;
  a.num_terms = K;
  a.batch = c.batch;
  a.logits = in.data();
  a.widths = c.widths.data();
  a.weights = o.weights.data();
  a.coarse = coarse.data();
  a.labels = c.labels.data<int64_t>();
  a.coarse_labels = c.coarse_labels.defined() ? c.coarse_labels.data<int64_t>() : nullptr;
  a.label_smoothing = o.label_smoothing;
  a.num_pairs = P;
  a.pair_i = pair_i.data();
  a.pair_j = pair_j.data();
  a.diversity_weight = o.diversity_weight;
  a.diversity_margin = o.diversity_margin;
  a.grads = out.empty() ? nullptr : out.data();
  a.term_loss = d;
  a.pair_dist = d + K;
  a.diversity = d + K + P;
  a.total = d + K + P + 1;
  a.label_check = res + K + P + 2;
  return a;
}

// The backward pass: the gradients were computed with the loss; it scales them by the incoming
// gradient, read where it lives (no synchronisation on a GPU to test it for 1).
std::vector<Tensor> scale_saved_grads(const std::vector<Tensor>& grads, const Tensor& g,
                                      const GradMask& need) {
  std::vector<Tensor> out(grads.size());
  if (grads.empty()) return out;
  const Device dev = grads[0].device();
  const Tensor factor = g.to(dev).to(grads[0].dtype()).contiguous();
  dispatch_float(factor.dtype(), "joint_loss backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    std::vector<T*> dst;
    std::vector<const T*> src;
    std::vector<int64_t> numel;
    for (size_t k = 0; k < grads.size(); ++k) {
      if (!need[k]) continue;
      out[k] = empty(grads[k].shape(), grads[k].dtype(), dev);
      dst.push_back(out[k].data<T>());
      src.push_back(grads[k].data<T>());
      numel.push_back(grads[k].numel());
    }
    MEL_KERNEL(dev, scale_by_device_scalar<T>, dst.data(), src.data(), numel.data(),
               static_cast<int64_t>(dst.size()), factor.data<T>());
  });
  return out;
}

}  // namespace

// Both devices run one kernel call. The term losses, pair distances, diversity, total and the
// per-term label checks land in one buffer where the kernel runs, read back with one copy (on a
// GPU the call's only synchronisation); the total is also written as the differentiable result.
JointLossResult joint_loss(const std::vector<Tensor>& logits, const Tensor& labels,
                           const Tensor& coarse_labels, const JointLossOptions& options) {
  const char* op = "joint_loss";
  const Checked c = validate(op, logits, labels, coarse_labels, options);
  const DType dtype = logits[0].dtype();
  if (is_half(dtype)) {
    std::vector<Tensor> up;
    for (const Tensor& z : logits) up.push_back(z.to(DType::f32));
    JointLossResult r = joint_loss(up, labels, coarse_labels, options);
    r.total = r.total.to(dtype);
    return r;
  }
  const Device dev = logits[0].device();
  const int64_t K = static_cast<int64_t>(logits.size());
  const bool want_grad = autograd::needs_grad(logits);
  std::vector<Tensor> xs, grads;
  for (int64_t k = 0; k < K; ++k) {
    xs.push_back(logits[k].detach().contiguous());
    if (want_grad) grads.push_back(empty({c.batch, c.widths[k]}, dtype, dev));
  }
  std::vector<uint8_t> coarse(K);
  for (int64_t k = 0; k < K; ++k) coarse[k] = is_coarse(options, k) ? 1 : 0;
  std::vector<int64_t> pair_i, pair_j;
  for (const auto& [i, j] : options.diversity_pairs) {
    pair_i.push_back(i);
    pair_j.push_back(j);
  }
  const int64_t P = static_cast<int64_t>(pair_i.size());

  // [0, K) term losses, [K, K + P) pair distances, K + P diversity, K + P + 1 total (f64 bits in
  // i64 slots), then the label checks: K first bad rows and K bad labels.
  const int64_t checks = K + P + 2;
  Tensor results = empty({checks + 2 * K}, DType::i64, dev);
  Tensor total = empty({}, dtype, dev);
  dispatch_float(dtype, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    std::vector<const T*> in;
    std::vector<T*> out;
    for (int64_t k = 0; k < K; ++k) {
      in.push_back(xs[k].data<T>());
      if (want_grad) out.push_back(grads[k].data<T>());
    }
    kernels::JointLossArgs<T> a =
        kernel_args<T>(c, options, in, out, coarse, pair_i, pair_j, results.data<int64_t>());
    a.total_out = total.data<T>();
    a.workspace_bytes = MEL_KERNEL_QUERY(dev, joint_loss_workspace_bytes, K, P, c.batch);
    Tensor ws = kernel_scratch(dev, a.workspace_bytes);
    a.workspace = scratch_ptr(ws);
    MEL_KERNEL(dev, joint_loss<T>, a);
  });
  const Tensor host = results.to(Device::cpu());
  const int64_t* h = host.data<int64_t>();
  for (int64_t k = 0; k < K; ++k) {
    const int64_t row = h[checks + k];
    if (row < 0) continue;
    const int64_t C = c.widths[k];
    fail(
        "{}: term {} ({} labels): label {} at row {} is out of range for its {} classes "
        "(expected 0..{})",
        op, k, coarse[k] ? "coarse" : "fine", h[checks + K + k], row, C, C - 1);
  }
  JointLossResult r;
  r.terms.resize(K);
  std::memcpy(r.terms.data(), h, K * sizeof(double));
  std::memcpy(&r.diversity, h + K + P, sizeof(double));
  std::memcpy(&r.total_value, h + K + P + 1, sizeof(double));
  r.total = total;
  autograd::record(op, r.total, logits, [grads](const Tensor& g, const GradMask& need) {
    return scale_saved_grads(grads, g, need);
  });
  return r;
}

Tensor joint_loss_reference(const std::vector<Tensor>& logits, const Tensor& labels,
                            const Tensor& coarse_labels, const JointLossOptions& options) {
  const Checked c = validate("joint_loss_reference", logits, labels, coarse_labels, options);
  CrossEntropyOptions ce;
  ce.label_smoothing = options.label_smoothing;
  Tensor total;
  for (size_t k = 0; k < logits.size(); ++k) {
    const Tensor& y = is_coarse(options, k) ? coarse_labels : labels;
    Tensor term = mul(cross_entropy(logits[k], y, ce), options.weights[k]);
    total = total.defined() ? add(total, term) : term;
  }
  if (options.diversity_pairs.empty()) return total;
  Tensor hinges;
  for (const auto& [i, j] : options.diversity_pairs) {
    Tensor d = sub(logits[i], logits[j]);
    Tensor dist = div(sum(mul(d, d)), static_cast<double>(c.batch));
    Tensor h = relu(options.diversity_margin - dist);
    hinges = hinges.defined() ? add(hinges, h) : h;
  }
  return add(total, mul(hinges, options.diversity_weight));
}

}  // namespace mel::method
