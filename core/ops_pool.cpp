// Pooling ops of core/ops_conv.h (max, average, adaptive average); convolution lives in
// ops_conv.cpp.
#include <limits>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/iter.h"
#include "core/ops_conv.h"
#include "kernels/cpu/pool.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/pool.h"
#endif

namespace mel {

using autograd::GradMask;
using kernels::cpu::Pool2dGeom;

namespace {

// Checks x ([N, C, H, W], or [C, H, W] as in PyTorch) and returns its plane count, H and W.
Pool2dGeom pool_input(const Tensor& x, const char* op) {
  check_defined(op, x, "the input");
  MEL_CHECK(x.dim() == 4 || x.dim() == 3,
            "{}: expected a 4-D [N, C, H, W] (or 3-D [C, H, W]) input, got shape {}", op,
            shape_str(x.shape()));
  MEL_CHECK(is_floating(x.dtype()), "{}: expected a floating-point input, got {} with shape {}", op,
            dtype_name(x.dtype()), shape_str(x.shape()));
  Pool2dGeom g;
  const int64_t nd = x.dim();
  g.h = x.shape()[nd - 2];
  g.w = x.shape()[nd - 1];
  g.planes = 1;
  for (int64_t d = 0; d < nd - 2; ++d) g.planes *= x.shape()[d];
  return g;
}

// PyTorch's checks and output size (floor mode) for a windowed pooling op.
Pool2dGeom pool_geom(const Tensor& x, const Pool2dOptions& o, const char* op) {
  Pool2dGeom g = pool_input(x, op);
  const auto& k = o.kernel;
  const auto& p = o.padding;
  MEL_CHECK(k[0] > 0 && k[1] > 0, "{}: kernel size must be positive, got [{}, {}]", op, k[0], k[1]);
  MEL_CHECK(o.stride[0] >= 0 && o.stride[1] >= 0,
            "{}: stride must be positive (or 0 for the kernel size), got [{}, {}]", op, o.stride[0],
            o.stride[1]);
  MEL_CHECK(p[0] >= 0 && p[1] >= 0 && p[0] <= k[0] / 2 && p[1] <= k[1] / 2,
            "{}: padding [{}, {}] must be non-negative and at most half the kernel size [{}, {}]",
            op, p[0], p[1], k[0], k[1]);
  g.kh = k[0];
  g.kw = k[1];
  g.sh = o.stride[0] == 0 ? k[0] : o.stride[0];
  g.sw = o.stride[1] == 0 ? k[1] : o.stride[1];
  g.ph = p[0];
  g.pw = p[1];
  MEL_CHECK(g.h + 2 * g.ph >= g.kh && g.w + 2 * g.pw >= g.kw,
            "{}: the {}x{} window is larger than the padded input {}x{} (input shape {}, padding "
            "[{}, {}])",
            op, g.kh, g.kw, g.h + 2 * g.ph, g.w + 2 * g.pw, shape_str(x.shape()), g.ph, g.pw);
  g.oh = (g.h + 2 * g.ph - g.kh) / g.sh + 1;
  g.ow = (g.w + 2 * g.pw - g.kw) / g.sw + 1;
  return g;
}

Shape pooled_shape(const Tensor& x, int64_t oh, int64_t ow) {
  Shape s = x.shape();
  s[s.size() - 2] = oh;
  s[s.size() - 1] = ow;
  return s;
}

}  // namespace

Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options) {
  const char* op = "max_pool2d";
  const Pool2dGeom g = pool_geom(x, options, op);
  MEL_CHECK(g.h * g.w <= std::numeric_limits<int32_t>::max(),
            "{}: input planes of {}x{} elements exceed the 2^31 indices the argmax holds", op, g.h,
            g.w);
  if (is_half(x.dtype())) return max_pool2d(x.to(DType::f32), options).to(x.dtype());
  Tensor xc = x.detach().contiguous();
  Tensor y = empty(pooled_shape(x, g.oh, g.ow), x.dtype(), x.device());
  Tensor idx = empty(y.shape(), DType::i32, x.device());
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(x.device(), max_pool2d<T>, g, xc.data<T>(), y.data<T>(), idx.data<int32_t>());
  });
  autograd::record(op, y, {x},
                   [g, idx, shape = x.shape()](const Tensor& gy, const GradMask&) {
                     Tensor gc = gy.contiguous();
                     Tensor gx = empty(shape, gy.dtype(), gy.device());
                     dispatch_float(gy.dtype(), "max_pool2d backward", [&](auto tag) {
                       using T = typename decltype(tag)::type;
                       MEL_KERNEL(gy.device(), max_pool2d_backward<T>, g, gc.data<T>(),
                                  idx.data<int32_t>(), gx.data<T>());
                     });
                     return std::vector<Tensor>{gx};
                   },
                   {idx});
  return y;
}

Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options) {
  const char* op = "avg_pool2d";
  const Pool2dGeom g = pool_geom(x, options, op);
  if (is_half(x.dtype())) return avg_pool2d(x.to(DType::f32), options).to(x.dtype());
  Tensor xc = x.detach().contiguous();
  Tensor y = empty(pooled_shape(x, g.oh, g.ow), x.dtype(), x.device());
  const bool include_pad = options.count_include_pad;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(x.device(), avg_pool2d<T>, g, include_pad, xc.data<T>(), y.data<T>());
  });
  autograd::record(op, y, {x},
                   [g, include_pad, shape = x.shape()](const Tensor& gy, const GradMask&) {
                     Tensor gc = gy.contiguous();
                     Tensor gx = empty(shape, gy.dtype(), gy.device());
                     dispatch_float(gy.dtype(), "avg_pool2d backward", [&](auto tag) {
                       using T = typename decltype(tag)::type;
                       MEL_KERNEL(gy.device(), avg_pool2d_backward<T>, g, include_pad, gc.data<T>(),
                                  gx.data<T>());
                     });
                     return std::vector<Tensor>{gx};
                   });
  return y;
}

Tensor adaptive_avg_pool2d(const Tensor& x, std::array<int64_t, 2> output_size) {
  const char* op = "adaptive_avg_pool2d";
  Pool2dGeom g = pool_input(x, op);
  MEL_CHECK(output_size[0] > 0 && output_size[1] > 0,
            "{}: output size must be positive, got [{}, {}]", op, output_size[0], output_size[1]);
  MEL_CHECK(g.h > 0 && g.w > 0, "{}: input {} has an empty spatial dimension", op,
            shape_str(x.shape()));
  g.oh = output_size[0];
  g.ow = output_size[1];
  if (is_half(x.dtype())) return adaptive_avg_pool2d(x.to(DType::f32), output_size).to(x.dtype());
  Tensor xc = x.detach().contiguous();
  Tensor y = empty(pooled_shape(x, g.oh, g.ow), x.dtype(), x.device());
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(x.device(), adaptive_avg_pool2d<T>, g, xc.data<T>(), y.data<T>());
  });
  autograd::record(op, y, {x}, [g, shape = x.shape()](const Tensor& gy, const GradMask&) {
    Tensor gc = gy.contiguous();
    Tensor gx = empty(shape, gy.dtype(), gy.device());
    dispatch_float(gy.dtype(), "adaptive_avg_pool2d backward", [&](auto tag) {
      using T = typename decltype(tag)::type;
      MEL_KERNEL(gy.device(), adaptive_avg_pool2d_backward<T>, g, gc.data<T>(), gx.data<T>());
    });
    return std::vector<Tensor>{gx};
  });
  return y;
}

}  // namespace mel
