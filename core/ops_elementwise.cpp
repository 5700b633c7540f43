// The elementwise ops of core/ops_elementwise.h, driven by the op tables: one generic forward and
// backward per kind (unary, binary, comparison), what autograd keeps read off the table.
#include "core/ops_elementwise.h"

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/factory.h"
#include "core/iter.h"
#include "core/ops_reduce.h"
#include "kernels/cpu/elementwise.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace mel {

using autograd::GradMask;
using kernels::GradReads;

namespace {

// Half types compute in f32 and convert back (autograd flows through both conversions).
bool upcast(const Tensor& t) {
  return is_half(t.dtype());
}

template <class T>
constexpr bool is_half_type = std::is_same_v<T, bfloat16> || std::is_same_v<T, half>;

// Callers have run check_same and upcast half types.
Tensor binary_forward(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = empty(shape, a.dtype(), a.device());
  auto it = make_iter<3>(shape, {&out, &a, &b}, name);
  dispatch_all(a.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (is_half_type<T>) {
      fail("{}: internal error, half types must be upcast", name);
    } else {
      MEL_KERNEL(a.device(), binary<T>, op, it, out.data<T>(), a.data<T>(), b.data<T>());
    }
  });
  return out;
}

// The gradient of operand `which` of y = a op b, reduced to that operand's shape. Operands the
// table's gradient does not read were not kept (undefined): g stands in for them.
Tensor binary_grad(BinaryOp op, int which, const Tensor& g, const Tensor& a, const Tensor& b,
                   const Tensor& y, const Shape& shape) {
  if (kernels::binary_grad_is_g(op, which)) return sum_to(g, shape);
  const char* name = kernels::binary_op_name(op);
  const Tensor& ar = a.defined() ? a : g;
  const Tensor& br = b.defined() ? b : g;
  const Tensor& yr = y.defined() ? y : g;
  Tensor grad = empty(g.shape(), g.dtype(), g.device());
  auto it = make_iter<5>(g.shape(), {&grad, &g, &ar, &br, &yr}, name);
  dispatch_float(g.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(g.device(), binary_backward<T>, op, which, it, grad.data<T>(), g.data<T>(),
               ar.data<T>(), br.data<T>(), yr.data<T>());
  });
  return sum_to(grad, shape);
}

Tensor scalar_like(const Tensor& t, double v) {
  return full({}, v, t.dtype(), t.device());
}

Tensor unary_forward(UnaryOp op, UnaryArgs args, const Tensor& x, const char* name) {
  Tensor out = empty(x.shape(), x.dtype(), x.device());
  auto it = make_iter<2>(x.shape(), {&out, &x}, name);
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(x.device(), unary<T>, op, args, it, out.data<T>(), x.data<T>());
  });
  return out;
}

// x or y may be undefined when the derivative does not read it (grad_reads).
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
    MEL_KERNEL(g.device(), unary_backward<T>, op, args, g.numel(), xp, yp, gc.data<T>(),
               gx.data<T>());
  });
  return gx;
}

}  // namespace

// ---- generic forms -------------------------------------------------------------------------

Tensor unary(UnaryOp op, const Tensor& x, UnaryArgs args) {
  const char* name = kernels::unary_op_name(op);
  check_defined(name, x, "the input");
  if (op == UnaryOp::neg && is_integral(x.dtype())) return sub(zeros_like(x), x);
  if (upcast(x)) return unary(op, x.to(DType::f32), args).to(x.dtype());
  Tensor y = unary_forward(op, args, x, name);
  // Only what the derivative reads is kept, so a chain of activations holds one tensor per op.
  const GradReads reads = kernels::grad_reads(op);
  autograd::record(
      name, y, {x},
      [op, args, name, xs = reads == GradReads::input ? x.detach() : Tensor(),
       ys = reads == GradReads::output ? y.detach() : Tensor()](const Tensor& g, const GradMask&) {
        return std::vector<Tensor>{unary_grad(op, args, xs, ys, g, name)};
      });
  return y;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = kernels::binary_op_name(op);
  check_same(name, {a, b});
  if (upcast(a)) return binary(op, a.to(DType::f32), b.to(DType::f32)).to(a.dtype());
  Tensor out = binary_forward(op, a, b, name);
  auto keep = [op](const Tensor& t, int what) {
    return kernels::binary_grad_reads(op, what) ? t.detach() : Tensor();
  };
  autograd::record(name, out, {a, b},
                   [op, sa = a.shape(), sb = b.shape(), ad = keep(a, 0), bd = keep(b, 1),
                    yd = keep(out, 2)](const Tensor& g, const GradMask& need) {
                     return std::vector<Tensor>{
                         need[0] ? binary_grad(op, 0, g, ad, bd, yd, sa) : Tensor(),
                         need[1] ? binary_grad(op, 1, g, ad, bd, yd, sb) : Tensor()};
                   });
  return out;
}

Tensor compare(CompareOp op, const Tensor& a, const Tensor& b) {
  const char* name = kernels::kCompareOpNames[static_cast<int>(op)];
  check_same(name, {a, b});
  if (upcast(a)) return compare(op, a.to(DType::f32), b.to(DType::f32));
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = empty(shape, DType::u8, a.device());
  auto it = make_iter<3>(shape, {&out, &a, &b}, name);
  auto run = [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(a.device(), compare<T>, op, it, out.data<uint8_t>(), a.data<T>(), b.data<T>());
  };
  if (a.dtype() == DType::u8) {
    run(TypeTag<uint8_t>{});
  } else {
    dispatch_numeric(a.dtype(), name, run);
  }
  return out;
}

// ---- named forms, generated from the tables ------------------------------------------------

#define MEL_X(name, ...)                          \
  Tensor name(const Tensor& a, const Tensor& b) { \
    return binary(BinaryOp::name, a, b);          \
  }
MEL_BINARY_OPS(MEL_X)
#undef MEL_X
#define MEL_X(name, ...)                          \
  Tensor name(const Tensor& a, const Tensor& b) { \
    return compare(CompareOp::name, a, b);        \
  }
MEL_COMPARE_OPS(MEL_X)
#undef MEL_X
#define MEL_DEFINE_UNARY_plain(name) \
  Tensor name(const Tensor& x) {     \
    return unary(UnaryOp::name, x);  \
  }
#define MEL_DEFINE_UNARY_args(name)
#define MEL_X(name, takes, ...) MEL_DEFINE_UNARY_##takes(name)
MEL_UNARY_OPS(MEL_X)
#undef MEL_X

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

Tensor pow(const Tensor& x, double e) {
  return unary(UnaryOp::pow, x, {e, 0});
}
Tensor clamp(const Tensor& x, double lo, double hi) {
  MEL_CHECK(lo <= hi, "clamp: min {} is greater than max {}", lo, hi);
  return unary(UnaryOp::clamp, x, {lo, hi});
}
Tensor gelu(const Tensor& x, GeluApprox approx) {
  return approx == GeluApprox::tanh ? gelu_tanh(x) : gelu_erf(x);
}

// ---- where ---------------------------------------------------------------------------------

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
    MEL_KERNEL(a.device(), where<T>, it, out.data<T>(), cond.data<uint8_t>(), a.data<T>(),
               b.data<T>());
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

}  // namespace mel
