// The fused causal self-attention op of core/ops_attention.h: validation, the f32 round trip of
// 16-bit inputs, the kernels of kernels/{cpu,cuda}/attention and the autograd node.
#include "core/ops_attention.h"

#include <cmath>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/iter.h"
#include "kernels/cpu/attention.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/attention.h"
#endif

namespace mel {

namespace {

// The largest head dim the CUDA kernels take (their tiles live in static shared memory).
constexpr int64_t kCudaMaxHeadDim = 128;

}  // namespace

Tensor causal_self_attention(const Tensor& qkv, int64_t heads, double scale) {
  const char* op = "causal_self_attention";
  check_defined(op, qkv, "the input");
  MEL_CHECK(qkv.dim() == 3, "{}: expected a 3-D input [B, T, 3 * D], got shape {}", op,
            shape_str(qkv.shape()));
  MEL_CHECK(is_floating(qkv.dtype()),
            "{}: expected a floating-point input (f32, f64, bf16 or f16), got {} with shape {}", op,
            dtype_name(qkv.dtype()), shape_str(qkv.shape()));
  MEL_CHECK(heads >= 1, "{}: heads must be at least 1, got {} (input shape {})", op, heads,
            shape_str(qkv.shape()));
  const int64_t B = qkv.shape()[0], L = qkv.shape()[1], C = qkv.shape()[2];
  MEL_CHECK(C > 0 && C % (3 * heads) == 0,
            "{}: the last dimension of the input {} must be a positive multiple of 3 * heads = {} "
            "(q, k and v, each {} heads wide)",
            op, shape_str(qkv.shape()), 3 * heads, heads);
  MEL_CHECK(L >= 1, "{}: expected a sequence length T >= 1, got input shape {}", op,
            shape_str(qkv.shape()));
  MEL_CHECK(std::isfinite(scale) && scale >= 0.0,
            "{}: scale must be positive (or 0 for 1 / sqrt(head dim)), got {} (input shape {})", op,
            scale, shape_str(qkv.shape()));
  const int64_t D = C / 3, Dh = D / heads;
  MEL_CHECK(!qkv.device().is_cuda() || Dh <= kCudaMaxHeadDim,
            "{}: head dim {} (input shape {}, {} heads) is above the CUDA kernels' limit of {}", op,
            Dh, shape_str(qkv.shape()), heads, kCudaMaxHeadDim);
  if (is_half(qkv.dtype())) {
    return causal_self_attention(qkv.to(DType::f32), heads, scale).to(qkv.dtype());
  }
  const double sc = scale > 0.0 ? scale : 1.0 / std::sqrt(static_cast<double>(Dh));
  const DType dt = qkv.dtype();
  const Device dev = qkv.device();
  Tensor x = qkv.detach().contiguous();
  Tensor out = empty({B, L, D}, dt, dev);
  Tensor lse = empty({B, heads, L}, dt, dev);
  dispatch_float(dt, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(dev, causal_attention_forward<T>, x.data<T>(), B, L, heads, Dh, sc, out.data<T>(),
               lse.data<T>());
  });
  autograd::record(
      op, out, {qkv},
      [x, o = out.detach(), lse, B, L, heads, Dh, sc](const Tensor& g, const autograd::GradMask&) {
        Tensor gc = g.contiguous();
        Tensor delta = empty({B, heads, L}, x.dtype(), x.device());
        Tensor dx = empty(x.shape(), x.dtype(), x.device());
        dispatch_float(x.dtype(), "causal_self_attention backward", [&](auto tag) {
          using T = typename decltype(tag)::type;
          MEL_KERNEL(x.device(), causal_attention_backward<T>, x.data<T>(), o.data<T>(),
                     lse.data<T>(), gc.data<T>(), B, L, heads, Dh, sc, delta.data<T>(),
                     dx.data<T>());
        });
        return std::vector<Tensor>{dx};
      },
      {lse});
  return out;
}

}  // namespace mel
