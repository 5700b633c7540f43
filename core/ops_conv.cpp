#include <array>
#include <vector>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/iter.h"
#include "core/ops_conv.h"
#include "kernels/cpu/conv.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/conv.h"
#endif

namespace mel {

using autograd::GradMask;
using kernels::cpu::Conv2dGeometry;

namespace {

// The channel counts of input, weight and bias agree with each other and with `groups`.
void check_channels(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias,
                    int64_t groups) {
  const int64_t c_in = x.size(1), c_out = weight.size(0);
  MEL_CHECK(groups >= 1, "{}: groups must be >= 1, got {}", op, groups);
  MEL_CHECK(c_in >= 1 && c_out >= 1,
            "{}: input shape {} and weight shape {} need at least one input and one output "
            "channel",
            op, shape_str(x.shape()), shape_str(weight.shape()));
  MEL_CHECK(c_in % groups == 0,
            "{}: the input's {} channels (shape {}) are not divisible by groups = {}", op, c_in,
            shape_str(x.shape()), groups);
  MEL_CHECK(c_out % groups == 0,
            "{}: the weight's {} output channels (shape {}) are not divisible by groups = {}", op,
            c_out, shape_str(weight.shape()), groups);
  MEL_CHECK(weight.size(1) * groups == c_in,
            "{}: weight shape {} expects {} input channels per group, but the input {} has {} "
            "channels in {} group(s), i.e. {} per group",
            op, shape_str(weight.shape()), weight.size(1), shape_str(x.shape()), c_in, groups,
            c_in / groups);
  if (bias.defined()) {
    MEL_CHECK(bias.dim() == 1 && bias.size(0) == c_out,
              "{}: bias must have shape [{}] (one value per output channel of weight {}), got {}",
              op, c_out, shape_str(weight.shape()), shape_str(bias.shape()));
  }
}

// Checks the arguments of conv1d (spatial = 1: x [N, C, L]) or conv2d (spatial = 2) and returns
// the 2-D geometry (a 1-D convolution is a 2-D one of height 1).
Conv2dGeometry conv_geometry(const char* op, int spatial, const Tensor& x, const Tensor& weight,
                             const Tensor& bias, const Conv2dOptions& o) {
  check_defined(op, x, "the input");
  check_defined(op, weight, "the weight");
  const char* x_layout = spatial == 2 ? "[N, C_in, H, W]" : "[N, C_in, L]";
  const char* w_layout =
      spatial == 2 ? "[C_out, C_in / groups, kh, kw]" : "[C_out, C_in / groups, k]";
  MEL_CHECK(x.dim() == 2 + spatial, "{}: input must be {}-D {}, got shape {}", op, 2 + spatial,
            x_layout, shape_str(x.shape()));
  MEL_CHECK(weight.dim() == 2 + spatial, "{}: weight must be {}-D {}, got shape {}", op,
            2 + spatial, w_layout, shape_str(weight.shape()));
  if (bias.defined()) {
    check_same(op, {x, weight, bias});
  } else {
    check_same(op, {x, weight});
  }
  MEL_CHECK(is_floating(x.dtype()),
            "{}: dtype {} is not supported (input shape {}; expected f32, f64, bf16 or f16)", op,
            dtype_name(x.dtype()), shape_str(x.shape()));
  for (int d = 2 - spatial; d < 2; ++d) {
    MEL_CHECK(o.stride[d] >= 1 && o.dilation[d] >= 1 && o.padding[d] >= 0,
              "{}: stride {} and dilation {} must be >= 1 and padding {} >= 0", op, o.stride[d],
              o.dilation[d], o.padding[d]);
  }
  check_channels(op, x, weight, bias, o.groups);
  const int64_t groups = o.groups;
  const int64_t c_in = x.size(1), c_out = weight.size(0);
  Conv2dGeometry g;
  g.n = x.size(0);
  g.c_in = c_in;
  g.c_out = c_out;
  g.groups = groups;
  g.h = spatial == 2 ? x.size(2) : 1;
  g.w = x.size(-1);
  g.kh = spatial == 2 ? weight.size(2) : 1;
  g.kw = weight.size(-1);
  g.stride_h = o.stride[0];
  g.stride_w = o.stride[1];
  g.pad_h = o.padding[0];
  g.pad_w = o.padding[1];
  g.dil_h = o.dilation[0];
  g.dil_w = o.dilation[1];
  MEL_CHECK(g.kh >= 1 && g.kw >= 1, "{}: weight shape {} has an empty kernel", op,
            shape_str(weight.shape()));
  // Floor division: C++'s truncation would turn a too-small input's -1 / 2 into a valid 0 + 1.
  auto out_size = [](int64_t in, int64_t pad, int64_t dil, int64_t k, int64_t stride) {
    const int64_t num = in + 2 * pad - dil * (k - 1) - 1;
    return (num >= 0 ? num / stride : -((-num + stride - 1) / stride)) + 1;
  };
  g.h_out = out_size(g.h, g.pad_h, g.dil_h, g.kh, g.stride_h);
  g.w_out = out_size(g.w, g.pad_w, g.dil_w, g.kw, g.stride_w);
  if (g.h_out < 1 || g.w_out < 1) {
    if (spatial == 2) {
      fail(
          "{}: input shape {} with padding ({}, {}) is smaller than the dilated kernel of weight "
          "{} (dilation ({}, {})): the output would be {}x{}, expected at least 1x1",
          op, shape_str(x.shape()), g.pad_h, g.pad_w, shape_str(weight.shape()), g.dil_h, g.dil_w,
          g.h_out, g.w_out);
    }
    fail(
        "{}: input shape {} with padding {} is shorter than the dilated kernel of weight {} "
        "(dilation {}): the output length would be {}, expected at least 1",
        op, shape_str(x.shape()), g.pad_w, shape_str(weight.shape()), g.dil_w, g.w_out);
  }
  return g;
}

// What a convolution on `d` runs with: a GPU's cuDNN handle, algorithm cache and context
// workspace, or, on the CPU, scratch from the allocator that `scratch` keeps alive for the call.
kernels::cpu::ConvResources conv_resources(Device d, Tensor& scratch) {
  kernels::cpu::ConvResources r;
  if (d.is_cuda()) {
    MEL_CUDA_ONLY({
      CudaContext& ctx = cuda_context(d.index);
      r.cudnn = ctx.cudnn();
      r.algorithm_cache = &ctx.cache<kernels::cuda::ConvCache>("conv");
      r.allow_tf32 = allow_tf32();
      r.workspace = [&ctx](size_t bytes) { return ctx.workspace(bytes); };
    });
  } else {
    r.workspace = [&scratch](size_t bytes) {
      scratch = kernel_scratch(Device::cpu(), bytes);
      return scratch_ptr(scratch);
    };
  }
  return r;
}

template <class T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? const_cast<T*>(t.data<T>()) : nullptr;
}

// dx, dw and db (those defined) of the convolution from the output gradient.
void conv2d_grads(const char* op, const Conv2dGeometry& g, const Tensor& gc, const Tensor& xs,
                  const Tensor& ws, const Tensor& dx, const Tensor& dw, const Tensor& db) {
  const Device dev = gc.device();
  dispatch_floating(gc.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    Tensor scratch;
    const kernels::cpu::ConvResources r = conv_resources(dev, scratch);
    MEL_KERNEL_FLOAT_OR_GPU(T, dev, conv2d_backward<T>, g, gc.data<T>(), ptr_or_null<T>(xs),
                            ptr_or_null<T>(ws), ptr_or_null<T>(dx), ptr_or_null<T>(dw),
                            ptr_or_null<T>(db), r);
  });
}

// x, weight (and bias) as 4-D tensors of one float dtype, already checked against `g`.
Tensor conv2d_core(const char* op, const Conv2dGeometry& g, const Tensor& x, const Tensor& weight,
                   const Tensor& bias) {
  Tensor xc = x.detach().contiguous(), wc = weight.detach().contiguous();
  Tensor bc = bias.defined() ? bias.detach().contiguous() : Tensor();
  Tensor y = empty({g.n, g.c_out, g.h_out, g.w_out}, x.dtype(), x.device());
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    Tensor scratch;
    const kernels::cpu::ConvResources r = conv_resources(x.device(), scratch);
    MEL_KERNEL_FLOAT_OR_GPU(T, x.device(), conv2d_forward<T>, g, xc.data<T>(), wc.data<T>(),
                            ptr_or_null<T>(bc), y.data<T>(), r);
  });
  // Each gradient reads only the other operand: dx needs the weight, dw needs the input.
  const bool x_needed = weight.requires_grad(), w_needed = x.requires_grad();
  autograd::record(
      op, y, {x, weight, bias},
      [op, g, xs = x_needed ? xc : Tensor(), ws = w_needed ? wc : Tensor(),
       has_bias = bias.defined()](const Tensor& grad, const GradMask& need) {
        Tensor gc = grad.contiguous();
        const DType dt = gc.dtype();
        const Device dev = gc.device();
        Tensor dx = need[0] ? empty({g.n, g.c_in, g.h, g.w}, dt, dev) : Tensor();
        Tensor dw = need[1] ? empty({g.c_out, g.c_in / g.groups, g.kh, g.kw}, dt, dev) : Tensor();
        Tensor db = need[2] && has_bias ? empty({g.c_out}, dt, dev) : Tensor();
        conv2d_grads(op, g, gc, xs, ws, dx, dw, db);
        return std::vector<Tensor>{dx, dw, db};
      });
  return y;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              const Conv2dOptions& options) {
  constexpr const char* op = "conv2d";
  const Conv2dGeometry g = conv_geometry(op, 2, x, weight, bias, options);
  // cuDNN convolves 16-bit tensors natively (f32 accumulation); the CPU in f32.
  if (is_half(x.dtype()) && !x.device().is_cuda()) {
    return conv2d(x.to(DType::f32), weight.to(DType::f32),
                  bias.defined() ? bias.to(DType::f32) : Tensor(), options)
        .to(x.dtype());
  }
  return conv2d_core(op, g, x, weight, bias);
}

Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,
              int64_t padding, int64_t dilation, int64_t groups) {
  constexpr const char* op = "conv1d";
  Conv2dOptions o;
  o.stride = {1, stride};
  o.padding = {0, padding};
  o.dilation = {1, dilation};
  o.groups = groups;
  const Conv2dGeometry g = conv_geometry(op, 1, x, weight, bias, o);
  if (is_half(x.dtype()) && !x.device().is_cuda()) {
    return conv1d(x.to(DType::f32), weight.to(DType::f32),
                  bias.defined() ? bias.to(DType::f32) : Tensor(), stride, padding, dilation,
                  groups)
        .to(x.dtype());
  }
  // Height-1 views: autograd carries the gradients back through unsqueeze and squeeze.
  return conv2d_core(op, g, x.unsqueeze(2), weight.unsqueeze(2), bias).squeeze(2);
}

}  // namespace mel
