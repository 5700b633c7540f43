#include "core/ops_nn.h"

#include <type_traits>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/factory.h"
#include "core/iter.h"
#include "core/ops_elementwise.h"
#include "core/ops_reduce.h"
#include "kernels/cpu/softmax.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/softmax.h"
#endif

namespace mel {

using autograd::GradMask;

namespace {

// A contiguous tensor seen as [A, C, B] around dimension `d`: the kernels normalise over C, so
// any dim of a contiguous tensor needs no permuted copy.
struct Axis {
  int64_t A = 1, C = 1, B = 1;
};

Axis axis_around(const Shape& s, int64_t d) {
  Axis ax;
  if (s.empty()) return ax;  // a 0-d tensor is one row of one element
  for (int64_t i = 0; i < d; ++i) ax.A *= s[i];
  ax.C = s[d];
  for (int64_t i = d + 1; i < static_cast<int64_t>(s.size()); ++i) ax.B *= s[i];
  return ax;
}

// f32, f64 and, on the GPU, the 16-bit types, which its softmax kernels read and write natively
// (f32 math, one rounding); the CPU op runs those through f32 copies instead.
template <class F>
void dispatch_softmax(const Tensor& x, const char* op, F&& f) {
  if (x.device().is_cuda() && is_half(x.dtype())) {
    dispatch_all(x.dtype(), op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, half>) f(tag);
    });
    return;
  }
  dispatch_float(x.dtype(), op, f);
}

Tensor softmax_backward_raw(const Tensor& y, const Tensor& g, const Axis& ax, bool log,
                            const char* name) {
  Tensor gc = g.contiguous();
  Tensor gx = empty(y.shape(), y.dtype(), y.device());
  dispatch_softmax(y, name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (log) {
      MEL_KERNEL_FLOAT_OR_GPU(T, y.device(), log_softmax_backward<T>, y.data<T>(), gc.data<T>(),
                              ax.A, ax.C, ax.B, gx.data<T>());
    } else {
      MEL_KERNEL_FLOAT_OR_GPU(T, y.device(), softmax_backward<T>, y.data<T>(), gc.data<T>(), ax.A,
                              ax.C, ax.B, gx.data<T>());
    }
  });
  return gx;
}

Tensor softmax_like(const Tensor& x, int64_t dim, bool log, const char* name) {
  check_defined(name, x, "the input");
  MEL_CHECK(is_floating(x.dtype()),
            "{}: expected a floating-point tensor (f32, f64, bf16 or f16), got {} with shape {}",
            name, dtype_name(x.dtype()), shape_str(x.shape()));
  const int64_t d = wrap_dim(dim, x.dim(), name);
  if (is_half(x.dtype()) && !x.device().is_cuda()) {
    return softmax_like(x.to(DType::f32), d, log, name).to(x.dtype());
  }
  const Axis ax = axis_around(x.shape(), d);
  Tensor xc = x.detach().contiguous();
  Tensor y = empty(x.shape(), x.dtype(), x.device());
  dispatch_softmax(x, name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (log) {
      MEL_KERNEL_FLOAT_OR_GPU(T, x.device(), log_softmax<T>, xc.data<T>(), ax.A, ax.C, ax.B,
                              y.data<T>());
    } else {
      MEL_KERNEL_FLOAT_OR_GPU(T, x.device(), softmax<T>, xc.data<T>(), ax.A, ax.C, ax.B,
                              y.data<T>());
    }
  });
  autograd::record(name, y, {x},
                   [ax, log, name, ys = y.detach()](const Tensor& g, const GradMask&) {
                     return std::vector<Tensor>{softmax_backward_raw(ys, g, ax, log, name)};
                   });
  return y;
}

// Every label of a CPU tensor (contiguous i64) is a class or ignore_index.
void check_labels(const Tensor& lab, int64_t C, int64_t ignore_index) {
  const int64_t* p = lab.data<int64_t>();
  const int64_t n = lab.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (p[i] != ignore_index && (p[i] < 0 || p[i] >= C)) {
      fail(
          "cross_entropy: label {} at row {} is out of range for {} classes (expected 0..{} or "
          "ignore_index {})",
          p[i], i, C, C - 1, ignore_index);
    }
  }
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) {
  return softmax_like(x, dim, false, "softmax");
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  return softmax_like(x, dim, true, "log_softmax");
}

Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options) {
  const char* op = "cross_entropy";
  check_defined(op, logits, "the logits");
  check_defined(op, labels, "the labels");
  MEL_CHECK(logits.dim() == 2, "cross_entropy: logits must be 2-D [N, C], got shape {}",
            shape_str(logits.shape()));
  MEL_CHECK(is_floating(logits.dtype()),
            "cross_entropy: logits must be floating point (f32, f64, bf16 or f16), got {}",
            dtype_name(logits.dtype()));
  const int64_t N = logits.shape()[0], C = logits.shape()[1];
  MEL_CHECK(labels.dim() == 1 && labels.shape()[0] == N,
            "cross_entropy: logits {} and labels {} do not match (expected labels of shape [{}])",
            shape_str(logits.shape()), shape_str(labels.shape()), N);
  MEL_CHECK(labels.dtype() == DType::i64 || labels.dtype() == DType::i32,
            "cross_entropy: labels must be i64 or i32 class indices, got {}",
            dtype_name(labels.dtype()));
  const double eps = options.label_smoothing;
  MEL_CHECK(eps >= 0.0 && eps <= 1.0, "cross_entropy: label_smoothing must be in [0, 1], got {}",
            eps);
  check_same(op, {logits, labels}, false);
  if (is_half(logits.dtype())) {
    return cross_entropy(logits.to(DType::f32), labels, options).to(logits.dtype());
  }

  // On the GPU the labels are not read back: a bad label gives NaN, the row count for the mean
  // stays on the device (`scale`, the backward's 1 / count), and nothing waits for the host. On
  // the CPU they are checked here, since its kernels trust them.
  const Device dev = logits.device();
  Tensor lab = labels.detach().to(DType::i64).contiguous();
  if (dev.is_cpu()) check_labels(lab, C, options.ignore_index);
  Tensor x = logits.detach().contiguous();
  Tensor rows = empty({N}, x.dtype(), dev);
  Tensor lse = empty({N}, x.dtype(), dev);
  Tensor out = rows, scale;
  if (options.reduction != Reduction::none) out = empty({}, x.dtype(), dev);
  if (options.reduction == Reduction::mean) scale = empty({1}, DType::f64, dev);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(dev, cross_entropy_forward<T>, x.data<T>(), lab.data<int64_t>(), N, C, eps,
               options.ignore_index, rows.data<T>(), lse.data<T>());
    if (options.reduction != Reduction::none) {
      MEL_KERNEL(dev, cross_entropy_reduce<T>, rows.data<T>(), lab.data<int64_t>(), N,
                 options.ignore_index, options.reduction == Reduction::mean, out.data<T>(),
                 scale.defined() ? scale.data<double>() : nullptr);
    }
  });

  autograd::record(op, out, {logits},
                   [x, lab, lse, scale, options, N, C](const Tensor& g, const GradMask&) {
                     Tensor gc = g.contiguous();
                     Tensor dx = empty({N, C}, x.dtype(), x.device());
                     const int64_t g_stride = options.reduction == Reduction::none ? 1 : 0;
                     // `scale` holds the mean's 1 / count, where the reduction left it
                     dispatch_float(x.dtype(), "cross_entropy backward", [&](auto tag) {
                       using T = typename decltype(tag)::type;
                       MEL_KERNEL(x.device(), cross_entropy_backward<T>, x.data<T>(),
                                  lab.data<int64_t>(), lse.data<T>(), gc.data<T>(), g_stride, 1.0,
                                  N, C, options.label_smoothing, options.ignore_index, dx.data<T>(),
                                  scale.defined() ? scale.data<double>() : nullptr);
                     });
                     return std::vector<Tensor>{dx};
                   },
                   {lab});
  return out;
}

}  // namespace mel
