#include "core/ops_elementwise.h"

#include "core/autograd.h"
#include "core/cuda_context.h"
#include "core/factory.h"
#include "core/iter.h"
#include "core/ops_reduce.h"
#include "kernels/cpu/elementwise.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace mel {

using autograd::GradMask;
using kernels::cpu::BinaryOp;
using kernels::cpu::CompareOp;
using kernels::cpu::UnaryArgs;
using kernels::cpu::UnaryOp;

namespace {

// Half types compute in f32 and convert back (autograd flows through both conversions).
bool upcast(const Tensor& t) {
  return is_half(t.dtype());
}

// Callers have run check_same and upcast half types.
Tensor binary_forward(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = empty(shape, a.dtype(), a.device());
  auto it = make_iter<3>(shape, {&out, &a, &b}, name);
  dispatch_all(a.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, half>) {
      fail("{}: internal error, half types must be upcast", name);
    } else {
      if (a.device().is_cuda()) {
        MEL_CUDA_ONLY(kernels::cuda::binary<T>(op, it, out.data<T>(), a.data<T>(), b.data<T>(),
                                               cuda_stream(a.device())));
      } else {
        kernels::cpu::binary<T>(op, it, out.data<T>(), a.data<T>(), b.data<T>());
      }
    }
  });
  return out;
}

Tensor scalar_like(const Tensor& t, double v) {
  return full({}, v, t.dtype(), t.device());
}

Tensor unary_forward(UnaryOp op, UnaryArgs args, const Tensor& x, const char* name) {
  check_defined(name, x, "the input");
  Tensor out = empty(x.shape(), x.dtype(), x.device());
  auto it = make_iter<2>(x.shape(), {&out, &x}, name);
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.device().is_cuda()) {
      MEL_CUDA_ONLY(kernels::cuda::unary<T>(op, args, it, out.data<T>(), x.data<T>(),
                                            cuda_stream(x.device())));
    } else {
      kernels::cpu::unary<T>(op, args, it, out.data<T>(), x.data<T>());
    }
  });
  return out;
}

// Which of x and y = op(x) the derivative reads: backward saves only those, so a chain of
// activations keeps one tensor per op alive rather than two.
bool grad_reads_output(UnaryOp op) {
  switch (op) {
    case UnaryOp::exp:
    case UnaryOp::sqrt:
    case UnaryOp::rsqrt:
    case UnaryOp::tanh:
    case UnaryOp::sigmoid:
      return true;
    default:
      return false;
  }
}
bool grad_reads_input(UnaryOp op) {
  return op != UnaryOp::neg && !grad_reads_output(op);
}

// x or y may be undefined when the derivative does not read it (see grad_reads_*).
Tensor unary_grad(UnaryOp op, UnaryArgs args, const Tensor& x, const Tensor& y, const Tensor& g,
                  const char* name) {
  Tensor xc = x.defined() ? x.contiguous() : Tensor();
  Tensor yc = y.defined() ? y.contiguous() : Tensor();
  Tensor gc = g.contiguous();
  Tensor gx = empty(g.shape(), g.dtype(), g.device());
  dispatch_float(g.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = xc.defined() ? xc.data<T>() : nullptr;
    const T* yp = yc.defined() ? yc.data<T>() : nullptr;
    if (g.device().is_cuda()) {
      MEL_CUDA_ONLY(kernels::cuda::unary_backward<T>(op, args, g.numel(), xp, yp, gc.data<T>(),
                                                     gx.data<T>(), cuda_stream(g.device())));
    } else {
      kernels::cpu::unary_backward<T>(op, args, g.numel(), xp, yp, gc.data<T>(), gx.data<T>());
    }
  });
  return gx;
}

Tensor unary_op(UnaryOp op, const Tensor& x, const char* name, UnaryArgs args = {}) {
  check_defined(name, x, "the input");
  if (upcast(x)) return unary_op(op, x.to(DType::f32), name, args).to(x.dtype());
  Tensor y = unary_forward(op, args, x, name);
  autograd::record(
      name, y, {x},
      [op, args, name, xs = grad_reads_input(op) ? x.detach() : Tensor(),
       ys = grad_reads_output(op) ? y.detach() : Tensor()](const Tensor& g, const GradMask&) {
        return std::vector<Tensor>{unary_grad(op, args, xs, ys, g, name)};
      });
  return y;
}

}  // namespace

// ---- binary ----------------------------------------------------------------------------------

Tensor add(const Tensor& a, const Tensor& b) {
  check_same("add", {a, b});
  if (upcast(a)) return add(a.to(DType::f32), b.to(DType::f32)).to(a.dtype());
  Tensor out = binary_forward(BinaryOp::add, a, b, "add");
  autograd::record("add", out, {a, b},
                   [sa = a.shape(), sb = b.shape()](const Tensor& g, const GradMask& need) {
                     return std::vector<Tensor>{need[0] ? sum_to(g, sa) : Tensor(),
                                                need[1] ? sum_to(g, sb) : Tensor()};
                   });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  check_same("sub", {a, b});
  if (upcast(a)) return sub(a.to(DType::f32), b.to(DType::f32)).to(a.dtype());
  Tensor out = binary_forward(BinaryOp::sub, a, b, "sub");
  autograd::record("sub", out, {a, b},
                   [sa = a.shape(), sb = b.shape()](const Tensor& g, const GradMask& need) {
                     return std::vector<Tensor>{need[0] ? sum_to(g, sa) : Tensor(),
                                                need[1] ? sum_to(neg(g), sb) : Tensor()};
                   });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  check_same("mul", {a, b});
  if (upcast(a)) return mul(a.to(DType::f32), b.to(DType::f32)).to(a.dtype());
  Tensor out = binary_forward(BinaryOp::mul, a, b, "mul");
  autograd::record("mul", out, {a, b},
                   [ad = a.detach(), bd = b.detach()](const Tensor& g, const GradMask& need) {
                     return std::vector<Tensor>{
                         need[0] ? sum_to(mul(g, bd), ad.shape()) : Tensor(),
                         need[1] ? sum_to(mul(g, ad), bd.shape()) : Tensor()};
                   });
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  check_same("div", {a, b});
  if (upcast(a)) return div(a.to(DType::f32), b.to(DType::f32)).to(a.dtype());
  Tensor out = binary_forward(BinaryOp::div, a, b, "div");
  autograd::record(
      "div", out, {a, b},
      [sa = a.shape(), bd = b.detach(), od = out.detach()](const Tensor& g, const GradMask& need) {
        Tensor ga = div(g, bd);  // d(a/b)/db = -(a/b)/b, so gb = -ga * out
        return std::vector<Tensor>{need[0] ? sum_to(ga, sa) : Tensor(),
                                   need[1] ? sum_to(neg(mul(ga, od)), bd.shape()) : Tensor()};
      });
  return out;
}

namespace {

Tensor minmax(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  check_same(name, {a, b});
  if (upcast(a)) return minmax(op, a.to(DType::f32), b.to(DType::f32), name).to(a.dtype());
  Tensor out = binary_forward(op, a, b, name);
  autograd::record(name, out, {a, b},
                   [op, ad = a.detach(), bd = b.detach()](const Tensor& g, const GradMask& need) {
                     Tensor pick_a = op == BinaryOp::maximum ? ge(ad, bd) : le(ad, bd);
                     Tensor zero = full({}, 0.0, g.dtype(), g.device());
                     return std::vector<Tensor>{
                         need[0] ? sum_to(where(pick_a, g, zero), ad.shape()) : Tensor(),
                         need[1] ? sum_to(where(pick_a, zero, g), bd.shape()) : Tensor()};
                   });
  return out;
}

}  // namespace

Tensor maximum(const Tensor& a, const Tensor& b) {
  return minmax(BinaryOp::maximum, a, b, "maximum");
}
Tensor minimum(const Tensor& a, const Tensor& b) {
  return minmax(BinaryOp::minimum, a, b, "minimum");
}

Tensor add(const Tensor& a, double b) {
  return add(a, scalar_like(a, b));
}
Tensor sub(const Tensor& a, double b) {
  return sub(a, scalar_like(a, b));
}
Tensor mul(const Tensor& a, double b) {
  return mul(a, scalar_like(a, b));
}
Tensor div(const Tensor& a, double b) {
  return div(a, scalar_like(a, b));
}

// ---- unary ---------------------------------------------------------------------------------

Tensor neg(const Tensor& x) {
  check_defined("neg", x, "the input");
  if (is_integral(x.dtype())) return sub(zeros_like(x), x);
  return unary_op(UnaryOp::neg, x, "neg");
}
Tensor pow(const Tensor& x, double e) {
  return unary_op(UnaryOp::pow, x, "pow", {e, 0});
}
Tensor exp(const Tensor& x) {
  return unary_op(UnaryOp::exp, x, "exp");
}
Tensor log(const Tensor& x) {
  return unary_op(UnaryOp::log, x, "log");
}
Tensor sqrt(const Tensor& x) {
  return unary_op(UnaryOp::sqrt, x, "sqrt");
}
Tensor rsqrt(const Tensor& x) {
  return unary_op(UnaryOp::rsqrt, x, "rsqrt");
}
Tensor abs(const Tensor& x) {
  return unary_op(UnaryOp::abs, x, "abs");
}
Tensor tanh(const Tensor& x) {
  return unary_op(UnaryOp::tanh, x, "tanh");
}
Tensor sigmoid(const Tensor& x) {
  return unary_op(UnaryOp::sigmoid, x, "sigmoid");
}
Tensor relu(const Tensor& x) {
  return unary_op(UnaryOp::relu, x, "relu");
}
Tensor gelu(const Tensor& x, GeluApprox approx) {
  return approx == GeluApprox::tanh ? unary_op(UnaryOp::gelu_tanh, x, "gelu")
                                    : unary_op(UnaryOp::gelu_erf, x, "gelu");
}
Tensor silu(const Tensor& x) {
  return unary_op(UnaryOp::silu, x, "silu");
}
Tensor clamp(const Tensor& x, double lo, double hi) {
  MEL_CHECK(lo <= hi, "clamp: min {} is greater than max {}", lo, hi);
  return unary_op(UnaryOp::clamp, x, "clamp", {lo, hi});
}

// ---- where and comparisons -----------------------------------------------------------------

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same("where", {a, b});
  check_defined("where", cond, "the condition");
  MEL_CHECK(cond.dtype() == DType::u8, "where: condition must be u8 (0/1), got {} with shape {}",
            dtype_name(cond.dtype()), shape_str(cond.shape()));
  MEL_CHECK(cond.device() == a.device(), "where: condition on {} but values on {}",
            cond.device().str(), a.device().str());
  if (upcast(a)) return where(cond, a.to(DType::f32), b.to(DType::f32)).to(a.dtype());
  Shape shape =
      broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = empty(shape, a.dtype(), a.device());
  auto it = make_iter<4>(shape, {&out, &cond, &a, &b}, "where");
  dispatch_numeric(a.dtype(), "where", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (a.device().is_cuda()) {
      MEL_CUDA_ONLY(kernels::cuda::where<T>(it, out.data<T>(), cond.data<uint8_t>(), a.data<T>(),
                                            b.data<T>(), cuda_stream(a.device())));
    } else {
      kernels::cpu::where<T>(it, out.data<T>(), cond.data<uint8_t>(), a.data<T>(), b.data<T>());
    }
  });
  autograd::record(
      "where", out, {a, b},
      [c = cond.detach(), sa = a.shape(), sb = b.shape()](const Tensor& g, const GradMask& need) {
        Tensor zero = full({}, 0.0, g.dtype(), g.device());
        return std::vector<Tensor>{need[0] ? sum_to(where(c, g, zero), sa) : Tensor(),
                                   need[1] ? sum_to(where(c, zero, g), sb) : Tensor()};
      },
      {cond});
  return out;
}

namespace {

Tensor compare_op(CompareOp op, const Tensor& a, const Tensor& b, const char* name) {
  check_same(name, {a, b});
  if (upcast(a)) return compare_op(op, a.to(DType::f32), b.to(DType::f32), name);
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = empty(shape, DType::u8, a.device());
  auto it = make_iter<3>(shape, {&out, &a, &b}, name);
  auto run = [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (a.device().is_cuda()) {
      MEL_CUDA_ONLY(kernels::cuda::compare<T>(op, it, out.data<uint8_t>(), a.data<T>(), b.data<T>(),
                                              cuda_stream(a.device())));
    } else {
      kernels::cpu::compare<T>(op, it, out.data<uint8_t>(), a.data<T>(), b.data<T>());
    }
  };
  if (a.dtype() == DType::u8) {
    run(TypeTag<uint8_t>{});
  } else {
    dispatch_numeric(a.dtype(), name, run);
  }
  return out;
}

}  // namespace

Tensor eq(const Tensor& a, const Tensor& b) {
  return compare_op(CompareOp::eq, a, b, "eq");
}
Tensor ne(const Tensor& a, const Tensor& b) {
  return compare_op(CompareOp::ne, a, b, "ne");
}
Tensor lt(const Tensor& a, const Tensor& b) {
  return compare_op(CompareOp::lt, a, b, "lt");
}
Tensor le(const Tensor& a, const Tensor& b) {
  return compare_op(CompareOp::le, a, b, "le");
}
Tensor gt(const Tensor& a, const Tensor& b) {
  return compare_op(CompareOp::gt, a, b, "gt");
}
Tensor ge(const Tensor& a, const Tensor& b) {
  return compare_op(CompareOp::ge, a, b, "ge");
}

}  // namespace mel
