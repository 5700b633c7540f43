#include "core/ops_reduce.h"

#include <algorithm>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/factory.h"
#include "core/iter.h"
#include "core/ops_elementwise.h"
#include "core/reduce_plan.h"
#include "kernels/cpu/reduce.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/reduce.h"
#endif

namespace mel {

using autograd::GradMask;

ReducePlan plan_reduce(const Tensor& x_in, const Shape& dims, const char* op) {
  check_defined(op, x_in, "the input");
  Tensor x = x_in.detach();
  const int64_t n = x.dim();
  ReducePlan p;
  p.reduced.assign(n, dims.empty());
  for (int64_t d : dims) {
    int64_t w = wrap_dim(d, n, op);
    MEL_CHECK(n == 0 || !p.reduced[w], "{}: dimension {} appears twice in {}", op, w,
              shape_str(dims));
    if (n > 0) p.reduced[w] = true;
  }
  for (int64_t i = 0; i < n; ++i) {
    p.out_keep.push_back(p.reduced[i] ? 1 : x.shape()[i]);
    if (!p.reduced[i]) p.out.push_back(x.shape()[i]);
  }
  // Adjacent reduced dims (ignoring size-1 dims) on a contiguous tensor need no copy.
  int64_t first = -1, last = -1;
  bool adjacent = true;
  for (int64_t i = 0; i < n; ++i) {
    if (!p.reduced[i] || x.shape()[i] == 1) continue;
    if (first < 0) first = i;
    if (last >= 0) {
      for (int64_t k = last + 1; k < i; ++k) {
        if (x.shape()[k] != 1) adjacent = false;
      }
    }
    last = i;
  }
  if (adjacent && x.is_contiguous()) {
    p.x = x;
    for (int64_t i = 0; i < n; ++i) {
      int64_t s = x.shape()[i];
      if (first < 0 || i < first) {
        p.A *= s;
      } else if (i <= last) {
        p.R *= s;
      } else {
        p.B *= s;
      }
    }
    if (first < 0) {  // nothing of size > 1 is reduced
      p.R = 1;
      p.B = 1;
      p.A = x.numel();
    }
    return p;
  }
  Shape perm;
  for (int64_t i = 0; i < n; ++i) {
    if (!p.reduced[i]) {
      perm.push_back(i);
      p.A *= x.shape()[i];
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    if (p.reduced[i]) {
      perm.push_back(i);
      p.R *= x.shape()[i];
    }
  }
  p.x = x.permute(perm).contiguous();
  p.permuted_shape = p.x.shape();
  p.perm = std::move(perm);
  return p;
}

namespace {

// Number of elements each output of a reduction over `dims` combines.
int64_t reduced_count(const Tensor& x, const Shape& dims, const char* op) {
  if (dims.empty()) return x.numel();
  int64_t c = 1;
  for (int64_t d : dims) c *= x.shape()[wrap_dim(d, x.dim(), op)];
  return c;
}

Tensor reduce_sum_raw(const ReducePlan& p, DType dt, const char* op) {
  Tensor out = empty(p.out_keep, dt, p.x.device());
  dispatch_numeric(dt, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Device dev = p.x.device();
    // Split reductions meet in scratch memory (combined in a fixed order).
    Tensor ws =
        kernel_scratch(dev, MEL_KERNEL_QUERY(dev, sum_axis_workspace_bytes<T>, p.A, p.R, p.B));
    MEL_KERNEL(dev, sum_axis<T>, p.x.data<T>(), p.A, p.R, p.B, out.data<T>(), scratch_ptr(ws));
  });
  return out;
}

}  // namespace

Tensor sum(const Tensor& x, const Shape& dims, bool keepdim) {
  check_defined("sum", x, "the input");
  if (is_half(x.dtype())) return sum(x.to(DType::f32), dims, keepdim).to(x.dtype());
  Tensor xin = x.dtype() == DType::u8 ? x.to(DType::i64) : x;
  ReducePlan p = plan_reduce(xin, dims, "sum");
  Tensor out = reduce_sum_raw(p, xin.dtype(), "sum");
  if (!keepdim) out = out.view(p.out);
  autograd::record("sum", out, {x},
                   [keep = p.out_keep, in = x.shape()](const Tensor& g, const GradMask&) {
                     return std::vector<Tensor>{g.reshape(keep).expand(in).contiguous()};
                   });
  return out;
}

Tensor mean(const Tensor& x, const Shape& dims, bool keepdim) {
  check_defined("mean", x, "the input");
  MEL_CHECK(is_floating(x.dtype()), "mean: expected a floating-point tensor, got {}",
            dtype_name(x.dtype()));
  const int64_t count = reduced_count(x, dims, "mean");
  return div(sum(x, dims, keepdim), static_cast<double>(count));
}

std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  check_defined("max", x, "the input");
  if (is_half(x.dtype())) {
    auto [v, i] = max(x.to(DType::f32), dim, keepdim);
    return {v.to(x.dtype()), i};
  }
  int64_t d = wrap_dim(dim, x.dim(), "max");
  MEL_CHECK(x.dim() == 0 || x.shape()[d] > 0, "max: dimension {} of shape {} is empty", d,
            shape_str(x.shape()));
  ReducePlan p = plan_reduce(x, x.dim() == 0 ? Shape{} : Shape{d}, "max");
  Tensor values = empty(p.out_keep, x.dtype(), x.device());
  Tensor idx = empty(p.out_keep, DType::i64, x.device());
  dispatch_numeric(x.dtype(), "max", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Device dev = x.device();
    Tensor ws =
        kernel_scratch(dev, MEL_KERNEL_QUERY(dev, max_axis_workspace_bytes<T>, p.A, p.R, p.B));
    MEL_KERNEL(dev, max_axis<T>, p.x.data<T>(), p.A, p.R, p.B, values.data<T>(),
               idx.data<int64_t>(), scratch_ptr(ws));
  });
  if (!keepdim) {
    values = values.view(p.out);
    idx = idx.view(p.out);
  }
  autograd::record("max", values, {x},
                   [A = p.A, R = p.R, B = p.B, perm = p.perm,
                    layout = p.perm.empty() ? x.shape() : p.permuted_shape,
                    ix = idx](const Tensor& g, const GradMask&) {
                     Tensor gc = g.contiguous();
                     Tensor ixc = ix.contiguous();
                     Tensor gx = empty(layout, g.dtype(), g.device());
                     dispatch_float(g.dtype(), "max backward", [&](auto tag) {
                       using T = typename decltype(tag)::type;
                       MEL_KERNEL(g.device(), max_axis_backward<T>, gc.data<T>(),
                                  ixc.data<int64_t>(), A, R, B, gx.data<T>());
                     });
                     if (perm.empty()) return std::vector<Tensor>{gx};
                     Shape inv(perm.size());
                     for (size_t i = 0; i < perm.size(); ++i)
                       inv[perm[i]] = static_cast<int64_t>(i);
                     return std::vector<Tensor>{gx.permute(inv)};
                   });
  return {values, idx};
}

Tensor max(const Tensor& x) {
  check_defined("max", x, "the input");
  MEL_CHECK(x.numel() > 0, "max: the input of shape {} has no elements", shape_str(x.shape()));
  Tensor m;
  {
    autograd::NoGradGuard ng;
    m = max(x.reshape({-1}), 0, false).first;
  }
  if (!autograd::needs_grad({x})) return m;
  Tensor out = m.detach();
  autograd::record("max_all", out, {x},
                   [xd = x.detach(), md = m](const Tensor& g, const GradMask&) {
                     Tensor mask = eq(xd, md);
                     Tensor count = sum(mask.to(g.dtype()));
                     Tensor zero = zeros({}, g.dtype(), g.device());
                     return std::vector<Tensor>{where(mask, div(g, count), zero)};
                   });
  return out;
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  autograd::NoGradGuard ng;
  return max(x, dim, keepdim).second;
}

Tensor var(const Tensor& x, const Shape& dims, int64_t correction, bool keepdim) {
  check_defined("var", x, "the input");
  MEL_CHECK(is_floating(x.dtype()), "var: expected a floating-point tensor, got {}",
            dtype_name(x.dtype()));
  MEL_CHECK(correction >= 0, "var: correction must be >= 0 (got {})", correction);
  const int64_t count = reduced_count(x, dims, "var");
  Tensor centered = sub(x, mean(x, dims, true));
  Tensor ss = sum(mul(centered, centered), dims, keepdim);
  return div(ss, static_cast<double>(std::max<int64_t>(count - correction, 0)));
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const size_t n = x.dim();
  MEL_CHECK(shape.size() <= n, "sum_to: cannot reduce shape {} to {}", shape_str(x.shape()),
            shape_str(shape));
  const size_t lead = n - shape.size();
  Shape dims;
  for (size_t i = 0; i < n; ++i) {
    if (i < lead) {
      dims.push_back(static_cast<int64_t>(i));
    } else if (shape[i - lead] == 1 && x.shape()[i] != 1) {
      dims.push_back(static_cast<int64_t>(i));
    } else {
      MEL_CHECK(shape[i - lead] == x.shape()[i], "sum_to: cannot reduce shape {} to {}",
                shape_str(x.shape()), shape_str(shape));
    }
  }
  if (dims.empty()) return x.reshape(shape);
  return sum(x, dims, true).reshape(shape);
}

}  // namespace mel
