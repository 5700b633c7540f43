// Ops of core/ops_norm.h and core/ops_norm_fused.h: batch norm (with the fused ReLU form), layer
// norm and dropout.
#include "core/ops_norm.h"

#include <cmath>
#include <type_traits>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/iter.h"
#include "core/ops_norm_fused.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/norm.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/dropout.h"
#include "kernels/cuda/norm.h"
#endif

namespace mel {

using autograd::GradMask;
using kernels::cpu::BatchNormDims;

namespace {

// A per-channel (or per-feature) parameter: undefined, or of `shape` on x's device with x's dtype
// (f32 also allowed for half inputs, the mixed-precision case).
void check_param(const char* op, const Tensor& x, const Tensor& t, const char* what,
                 const Shape& shape, const char* expected) {
  if (!t.defined()) return;
  MEL_CHECK(t.shape() == shape, "{}: {} has shape {} but the input {} needs {} {}", op, what,
            shape_str(t.shape()), shape_str(x.shape()), expected, shape_str(shape));
  MEL_CHECK(t.device() == x.device(), "{}: {} is on {} but the input is on {}", op, what,
            t.device().str(), x.device().str());
  const bool ok = t.dtype() == x.dtype() || (is_half(x.dtype()) && t.dtype() == DType::f32);
  MEL_CHECK(ok, "{}: {} has dtype {} but the input has dtype {}", op, what, dtype_name(t.dtype()),
            dtype_name(x.dtype()));
}

Tensor to_f32(const Tensor& t) {
  return t.defined() ? t.to(DType::f32) : Tensor();
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

template <class T>
T* out_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Device scratch of the norm kernels: the context's workspace of a GPU (none on the CPU).
void* norm_workspace(Device d, size_t bytes) {
  return context_workspace(d, bytes);
}

// Calls f(TypeTag<R>) for a floating dtype (the running statistics may be 16-bit).
template <class F>
void dispatch_running(DType t, F&& f) {
  dispatch_all(t, "batch_norm", [&](auto tag) {
    using R = typename decltype(tag)::type;
    if constexpr (std::is_floating_point_v<R> || std::is_same_v<R, bfloat16> ||
                  std::is_same_v<R, half>) {
      f(tag);
    }
  });
}

// running = (1 - momentum) * running + momentum * factor * stat, in place and outside autograd
// (any floating dtype, any stride).
void update_running(const Tensor& running, const Tensor& stat, double momentum, double factor) {
  dispatch_running(running.dtype(), [&](auto rtag) {
    using R = typename decltype(rtag)::type;
    dispatch_float(stat.dtype(), "batch_norm", [&](auto tag) {
      using T = typename decltype(tag)::type;
      MEL_KERNEL_T(running.device(), batch_norm_update_running, (R, T), running.shape()[0],
                   static_cast<R*>(running.data_ptr()), running.stride(0), stat.data<T>(), momentum,
                   factor);
    });
  });
  running.impl()->storage->bump_version();
}

// Validates batch norm's arguments; returns x's [N, C, S] view.
BatchNormDims check_batch_norm(const char* op, const Tensor& x, const Tensor& weight,
                               const Tensor& bias, const Tensor& running_mean,
                               const Tensor& running_var, bool training) {
  check_defined(op, x, "the input");
  MEL_CHECK(x.dim() >= 2, "{}: expected an input of shape [N, C] or [N, C, *], got {}", op,
            shape_str(x.shape()));
  MEL_CHECK(is_floating(x.dtype()), "{}: expected a floating-point input, got {} with shape {}", op,
            dtype_name(x.dtype()), shape_str(x.shape()));
  const int64_t C = x.shape()[1];
  check_param(op, x, weight, "weight", {C}, "C-sized");
  check_param(op, x, bias, "bias", {C}, "C-sized");
  for (const Tensor* r : {&running_mean, &running_var}) {
    if (!r->defined()) continue;
    const char* what = r == &running_mean ? "running_mean" : "running_var";
    MEL_CHECK(r->shape() == Shape{C}, "{}: {} has shape {} but the input {} needs C-sized {}", op,
              what, shape_str(r->shape()), shape_str(x.shape()), shape_str({C}));
    MEL_CHECK(is_floating(r->dtype()), "{}: {} must be floating point, got {}", op, what,
              dtype_name(r->dtype()));
    MEL_CHECK(r->device() == x.device(), "{}: {} is on {} but the input is on {}", op, what,
              r->device().str(), x.device().str());
  }
  BatchNormDims d{x.shape()[0], C, 1};
  for (int64_t i = 2; i < x.dim(); ++i) d.s *= x.shape()[i];
  if (training) {
    MEL_CHECK(d.n * d.s > 1,
              "{}: expected more than 1 value per channel when training, got input shape {}", op,
              shape_str(x.shape()));
  } else {
    MEL_CHECK(running_mean.defined() && running_var.defined(),
              "{}: running_mean and running_var are required when not training", op);
  }
  return d;
}

// The backward node: gradients of x, weight and bias from the saved input and statistics.
void record_batch_norm(const char* op, Tensor& y, const Tensor& x, const Tensor& weight,
                       const Tensor& bias, const Tensor& xc, const Tensor& wc, const Tensor& bc,
                       const Tensor& mean, const Tensor& rstd, BatchNormDims d, bool training,
                       bool relu) {
  autograd::record(
      op, y, {x, weight, bias},
      [xc, wc, bc, mean, rstd, d, training, relu, op](const Tensor& g, const GradMask& need) {
        Tensor gc = g.contiguous();
        const DType gt = xc.dtype();
        const Device dev = xc.device();
        Tensor gx = need[0] ? empty(xc.shape(), gt, dev) : Tensor();
        Tensor gw = need[1] ? empty({d.c}, gt, dev) : Tensor();
        Tensor gb = need[2] ? empty({d.c}, gt, dev) : Tensor();
        dispatch_float(gt, op, [&](auto tag) {
          using T = typename decltype(tag)::type;
          void* ws =
              norm_workspace(dev, MEL_KERNEL_QUERY(dev, batch_norm_workspace_bytes, d, sizeof(T)));
          MEL_KERNEL(dev, batch_norm_backward<T>, d, xc.data<T>(), gc.data<T>(), mean.data<T>(),
                     rstd.data<T>(), ptr_or_null<T>(wc), ptr_or_null<T>(bc), training, relu,
                     out_or_null<T>(gx), out_or_null<T>(gw), out_or_null<T>(gb), ws);
        });
        return std::vector<Tensor>{gx, gw, gb};
      },
      {mean, rstd});
}

Tensor batch_norm_impl(const Tensor& x, const Tensor& weight, const Tensor& bias,
                       const Tensor& running_mean, const Tensor& running_var, bool training,
                       double momentum, double eps, bool relu, const char* op) {
  const BatchNormDims d =
      check_batch_norm(op, x, weight, bias, running_mean, running_var, training);
  if (is_half(x.dtype())) {
    return batch_norm_impl(x.to(DType::f32), to_f32(weight), to_f32(bias), running_mean,
                           running_var, training, momentum, eps, relu, op)
        .to(x.dtype());
  }
  const DType dt = x.dtype();
  const Device dev = x.device();
  Tensor xc = x.detach().contiguous();
  Tensor wc = weight.defined() ? weight.detach().contiguous() : Tensor();
  Tensor bc = bias.defined() ? bias.detach().contiguous() : Tensor();
  Tensor y = empty(x.shape(), dt, dev);
  Tensor mean = empty({d.c}, dt, dev), rstd = empty({d.c}, dt, dev);
  if (training) {
    Tensor var = empty({d.c}, dt, dev);
    dispatch_float(dt, op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      void* ws =
          norm_workspace(dev, MEL_KERNEL_QUERY(dev, batch_norm_workspace_bytes, d, sizeof(T)));
      MEL_KERNEL(dev, batch_norm_forward_train<T>, d, xc.data<T>(), ptr_or_null<T>(wc),
                 ptr_or_null<T>(bc), eps, relu, y.data<T>(), mean.data<T>(), var.data<T>(),
                 rstd.data<T>(), ws);
    });
    const double n = static_cast<double>(d.n * d.s);
    if (running_mean.defined()) update_running(running_mean, mean, momentum, 1.0);
    if (running_var.defined()) update_running(running_var, var, momentum, n / (n - 1));
  } else {
    // mean and rstd are fresh copies of the running statistics, not views: a later training step
    // updates those in place, which must not invalidate this graph.
    const Tensor rm = running_mean.detach();
    const Tensor rv = running_var.detach().to(rm.dtype());
    dispatch_running(rm.dtype(), [&](auto rtag) {
      using R = typename decltype(rtag)::type;
      dispatch_float(dt, op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        MEL_KERNEL_T(dev, batch_norm_eval_stats, (R, T), d.c, static_cast<const R*>(rm.data_ptr()),
                     rm.stride(0), static_cast<const R*>(rv.data_ptr()), rv.stride(0), eps,
                     mean.data<T>(), rstd.data<T>());
        void* ws =
            norm_workspace(dev, MEL_KERNEL_QUERY(dev, batch_norm_workspace_bytes, d, sizeof(T)));
        MEL_KERNEL(dev, batch_norm_forward_apply<T>, d, xc.data<T>(), mean.data<T>(),
                   rstd.data<T>(), ptr_or_null<T>(wc), ptr_or_null<T>(bc), relu, y.data<T>(), ws);
      });
    });
  }
  record_batch_norm(op, y, x, weight, bias, xc, wc, bc, mean, rstd, d, training, relu);
  return y;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  double momentum, double eps) {
  return batch_norm_impl(x, weight, bias, running_mean, running_var, training, momentum, eps, false,
                         "batch_norm");
}

Tensor batch_norm_relu(const Tensor& x, const Tensor& weight, const Tensor& bias,
                       const Tensor& running_mean, const Tensor& running_var, bool training,
                       double momentum, double eps) {
  return batch_norm_impl(x, weight, bias, running_mean, running_var, training, momentum, eps, true,
                         "batch_norm_relu");
}

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, double eps) {
  const char* op = "layer_norm";
  check_defined(op, x, "the input");
  MEL_CHECK(is_floating(x.dtype()), "{}: expected a floating-point input, got {} with shape {}", op,
            dtype_name(x.dtype()), shape_str(x.shape()));
  const int64_t nd = static_cast<int64_t>(normalized_shape.size());
  bool match = nd >= 1 && nd <= x.dim();
  for (int64_t i = 0; match && i < nd; ++i) {
    match = normalized_shape[i] == x.shape()[x.dim() - nd + i];
  }
  MEL_CHECK(match, "{}: normalized_shape {} does not match the trailing dimensions of the input {}",
            op, shape_str(normalized_shape), shape_str(x.shape()));
  check_param(op, x, weight, "weight", normalized_shape, "normalized_shape");
  check_param(op, x, bias, "bias", normalized_shape, "normalized_shape");
  if (is_half(x.dtype())) {
    return layer_norm(x.to(DType::f32), normalized_shape, to_f32(weight), to_f32(bias), eps)
        .to(x.dtype());
  }
  const int64_t k = numel_of(normalized_shape);
  const int64_t m = k == 0 ? 0 : x.numel() / k;
  const DType dt = x.dtype();
  Tensor xc = x.detach().contiguous();
  Tensor wc = weight.defined() ? weight.detach().contiguous() : Tensor();
  Tensor bc = bias.defined() ? bias.detach().contiguous() : Tensor();
  Tensor y = empty(x.shape(), dt, x.device());
  Tensor mean = empty({m}, dt, x.device()), rstd = empty({m}, dt, x.device());
  dispatch_float(dt, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(x.device(), layer_norm_forward<T>, xc.data<T>(), m, k, ptr_or_null<T>(wc),
               ptr_or_null<T>(bc), eps, y.data<T>(), mean.data<T>(), rstd.data<T>());
  });
  autograd::record(
      op, y, {x, weight, bias},
      [xc, wc, mean, rstd, m, k, ns = normalized_shape](const Tensor& g, const GradMask& need) {
        Tensor gc = g.contiguous();
        const DType gt = xc.dtype();
        Tensor gx = need[0] ? empty(xc.shape(), gt, xc.device()) : Tensor();
        Tensor gw = need[1] ? empty(ns, gt, xc.device()) : Tensor();
        Tensor gb = need[2] ? empty(ns, gt, xc.device()) : Tensor();
        dispatch_float(gt, "layer_norm backward", [&](auto tag) {
          using T = typename decltype(tag)::type;
          const Device dev = xc.device();
          void* ws = norm_workspace(dev, MEL_KERNEL_QUERY(dev, layer_norm_workspace_bytes, m, k));
          MEL_KERNEL(dev, layer_norm_backward<T>, xc.data<T>(), gc.data<T>(), mean.data<T>(),
                     rstd.data<T>(), ptr_or_null<T>(wc), m, k, out_or_null<T>(gx),
                     out_or_null<T>(gw), out_or_null<T>(gb), ws);
        });
        return std::vector<Tensor>{gx, gw, gb};
      },
      {mean, rstd});
  return y;
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  const char* op = "dropout";
  check_defined(op, x, "the input");
  MEL_CHECK(p >= 0.0 && p <= 1.0, "{}: probability p must be in [0, 1], got {}", op, p);
  MEL_CHECK(is_floating(x.dtype()), "{}: expected a floating-point input, got {} with shape {}", op,
            dtype_name(x.dtype()), shape_str(x.shape()));
  if (!training || p == 0.0 || x.numel() == 0) return x;  // PyTorch returns the input itself
  if (is_half(x.dtype())) return dropout(x.to(DType::f32), p, training, gen).to(x.dtype());
  const int64_t n = x.numel();
  Tensor xc = x.detach().contiguous();
  Tensor y = empty(x.shape(), x.dtype(), x.device());
  Tensor mask = empty(x.shape(), DType::u8, x.device());
  const uint64_t offset = gen.reserve(kernels::cpu::dropout_blocks(n));
  // p == 1 drops everything (keep nothing, scale 0) rather than scaling by infinity
  const float keep = p == 1.0 ? 0.0f : static_cast<float>(1.0 - p);
  const double scale = p == 1.0 ? 0.0 : 1.0 / (1.0 - p);
  // the same (seed, offset) and element mapping on both devices: the same mask
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(x.device(), dropout_forward<T>, gen.seed(), offset, n, keep, static_cast<T>(scale),
               xc.data<T>(), y.data<T>(), mask.data<uint8_t>());
  });
  autograd::record(op, y, {x},
                   [mask, scale](const Tensor& g, const GradMask&) {
                     Tensor gc = g.contiguous();
                     Tensor gx = empty(g.shape(), g.dtype(), g.device());
                     dispatch_float(g.dtype(), "dropout backward", [&](auto tag) {
                       using T = typename decltype(tag)::type;
                       MEL_KERNEL(gc.device(), dropout_backward<T>, gc.numel(),
                                  static_cast<T>(scale), gc.data<T>(), mask.data<uint8_t>(),
                                  gx.data<T>());
                     });
                     return std::vector<Tensor>{gx};
                   },
                   {mask});
  return y;
}

}  // namespace mel
