// Views of a tensor's storage (view, reshape, permute, slice, expand, squeeze, ...): new shape,
// strides and offset over the same bytes, never a copy (reshape copies only when it must).
#include "core/tensor.h"

#include <algorithm>
#include <numeric>

#include "core/autograd.h"
#include "core/ops_reduce.h"

namespace mel {

namespace {

Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  Tensor v = base.detach();
  v.impl()->shape = std::move(shape);
  v.impl()->strides = std::move(strides);
  v.impl()->offset = offset;
  return v;
}

Shape infer_shape(const Shape& req, int64_t numel, const Shape& from, const char* op) {
  Shape out = req;
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      MEL_CHECK(infer < 0, "{}: only one dimension can be -1 (requested {})", op, shape_str(req));
      infer = static_cast<int>(i);
    } else {
      MEL_CHECK(out[i] >= 0, "{}: invalid size {} in requested shape {}", op, out[i],
                shape_str(req));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    MEL_CHECK(known != 0 && numel % known == 0,
              "{}: cannot reshape a tensor of shape {} ({} elements) into {}", op, shape_str(from),
              numel, shape_str(req));
    out[infer] = numel / known;
  } else {
    MEL_CHECK(known == numel,
              "{}: cannot reshape a tensor of shape {} ({} elements) into {} ({} "
              "elements)",
              op, shape_str(from), numel, shape_str(req), known);
  }
  return out;
}

// Strides for viewing (shape, strides) as `target` without a copy, or empty when impossible.
bool view_strides(const Shape& shape, const Shape& strides, const Shape& target, Shape& out) {
  out.assign(target.size(), 0);
  if (numel_of(shape) == 0) {
    out = contiguous_strides(target);
    return true;
  }
  // Walk groups of source dims that are mutually contiguous, matching target dims to each group.
  size_t ti = 0;
  size_t si = 0;
  const size_t sn = shape.size(), tn = target.size();
  while (si < sn || ti < tn) {
    // skip size-1 dims in target (any stride works)
    if (ti < tn && target[ti] == 1) {
      out[ti] = 1;
      ++ti;
      continue;
    }
    if (si < sn && shape[si] == 1) {
      ++si;
      continue;
    }
    if (si >= sn || ti >= tn) return false;
    // collect a contiguous chunk of source dims
    int64_t chunk = shape[si];
    int64_t inner = strides[si];  // stride of the chunk's innermost non-unit dimension
    size_t send = si + 1;
    while (send < sn && (shape[send] == 1 || inner == strides[send] * shape[send])) {
      if (shape[send] != 1) {
        chunk *= shape[send];
        inner = strides[send];
      }
      ++send;
    }
    // consume target dims whose product equals chunk
    int64_t prod = 1;
    size_t tstart = ti;
    while (ti < tn && prod < chunk) {
      prod *= target[ti];
      ++ti;
    }
    if (prod != chunk) return false;
    int64_t acc = inner;
    for (size_t k = ti; k-- > tstart;) {
      out[k] = acc;
      acc *= target[k];
    }
    si = send;
  }
  return true;
}

}  // namespace

Tensor Tensor::view(const Shape& req) const {
  Shape target = infer_shape(req, numel(), shape(), "view");
  Shape st;
  MEL_CHECK(view_strides(shape(), strides(), target, st),
            "view: a tensor of shape {} with strides {} cannot be viewed as {} without a copy; "
            "use reshape() or contiguous() first",
            shape_str(shape()), shape_str(strides()), shape_str(target));
  Tensor out = make_view(*this, target, st, offset());
  Shape in_shape = shape();
  autograd::record("view", out, {*this}, [in_shape](const Tensor& g, const autograd::GradMask&) {
    return std::vector<Tensor>{g.reshape(in_shape)};
  });
  return out;
}

Tensor Tensor::reshape(const Shape& req) const {
  Shape target = infer_shape(req, numel(), shape(), "reshape");
  Shape st;
  if (view_strides(shape(), strides(), target, st)) return view(target);
  return contiguous().view(target);
}

Tensor Tensor::permute(const Shape& dims) const {
  const int64_t n = dim();
  MEL_CHECK(static_cast<int64_t>(dims.size()) == n,
            "permute: {} dims given for a tensor of shape {} (expected a permutation of 0..{})",
            dims.size(), shape_str(shape()), n - 1);
  Shape perm(n), ns(n), nst(n), inv(n);
  std::vector<bool> seen(n, false);
  for (int64_t i = 0; i < n; ++i) {
    int64_t d = wrap_dim(dims[i], n, "permute");
    MEL_CHECK(!seen[d], "permute: dimension {} repeated in {}", d, shape_str(dims));
    seen[d] = true;
    perm[i] = d;
    ns[i] = shape()[d];
    nst[i] = strides()[d];
    inv[d] = i;
  }
  Tensor out = make_view(*this, ns, nst, offset());
  autograd::record("permute", out, {*this}, [inv](const Tensor& g, const autograd::GradMask&) {
    return std::vector<Tensor>{g.permute(inv)};
  });
  return out;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  const int64_t n = dim();
  d0 = wrap_dim(d0, n, "transpose");
  d1 = wrap_dim(d1, n, "transpose");
  Shape perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  if (n > 0) std::swap(perm[d0], perm[d1]);
  return permute(perm);
}

Tensor Tensor::t() const {
  MEL_CHECK(dim() == 2, "t: expected a 2-D tensor, got shape {}", shape_str(shape()));
  return transpose(0, 1);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  MEL_CHECK(step >= 1, "slice: step must be >= 1 (got {})", step);
  const int64_t sz = shape()[d];
  if (start < 0) start += sz;
  if (end < 0) end += sz;
  start = std::clamp<int64_t>(start, 0, sz);
  end = std::clamp<int64_t>(end, start, sz);
  const int64_t len = (end - start + step - 1) / step;
  Shape ns = shape(), nst = strides();
  ns[d] = len;
  nst[d] *= step;
  Tensor out = make_view(*this, ns, nst, offset() + start * strides()[d]);
  Shape in_shape = shape();
  autograd::record("slice", out, {*this},
                   [in_shape, d, start, end, step](const Tensor& g, const autograd::GradMask&) {
                     Tensor full = empty(in_shape, g.dtype(), g.device());
                     full.fill_(0.0);
                     full.slice(d, start, end, step).copy_(g);
                     return std::vector<Tensor>{full};
                   });
  return out;
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  const int64_t sz = shape()[d];
  MEL_CHECK(start >= 0 && length >= 0 && start + length <= sz,
            "narrow: range [{}, {}) is out of bounds for dimension {} of size {} (shape {})", start,
            start + length, d, sz, shape_str(shape()));
  return slice(d, start, start + length, 1);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  const int64_t sz = shape()[d];
  MEL_CHECK(index >= -sz && index < sz,
            "select: index {} is out of range for dimension {} of size {}", index, d, sz);
  if (index < 0) index += sz;
  return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& req) const {
  const size_t n = req.size();
  MEL_CHECK(n >= shape().size(), "expand: cannot expand shape {} to {} (fewer dimensions)",
            shape_str(shape()), shape_str(req));
  Shape ns(n), nst(n, 0);
  const size_t lead = n - shape().size();
  for (size_t i = 0; i < n; ++i) {
    if (i < lead) {
      MEL_CHECK(req[i] >= 0,
                "expand: size -1 is not allowed for a new leading dimension ({} -> {})",
                shape_str(shape()), shape_str(req));
      ns[i] = req[i];
      continue;
    }
    int64_t cur = shape()[i - lead];
    int64_t want = req[i] == -1 ? cur : req[i];
    if (want == cur) {
      ns[i] = cur;
      nst[i] = strides()[i - lead];
    } else {
      MEL_CHECK(cur == 1,
                "expand: dimension {} has size {} and cannot be expanded to {} (shape {} "
                "-> {}); only size-1 dimensions expand",
                i - lead, cur, want, shape_str(shape()), shape_str(req));
      ns[i] = want;
    }
  }
  Tensor out = make_view(*this, ns, nst, offset());
  Shape in_shape = shape();
  autograd::record("expand", out, {*this}, [in_shape](const Tensor& g, const autograd::GradMask&) {
    return std::vector<Tensor>{sum_to(g, in_shape)};
  });
  return out;
}

Tensor Tensor::squeeze() const {
  Shape ns;
  for (int64_t s : shape()) {
    if (s != 1) ns.push_back(s);
  }
  return view(ns);
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  if (shape()[d] != 1) return *this;
  Shape ns = shape();
  ns.erase(ns.begin() + d);
  return view(ns);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape ns = shape();
  ns.insert(ns.begin() + d, 1);
  return view(ns);
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  MEL_CHECK(start <= end, "flatten: start_dim {} is after end_dim {}", start, end);
  Shape ns(shape().begin(), shape().begin() + start);
  int64_t p = 1;
  for (int64_t i = start; i <= end; ++i) p *= shape()[i];
  ns.push_back(p);
  ns.insert(ns.end(), shape().begin() + end + 1, shape().end());
  return reshape(ns);
}

}  // namespace mel
