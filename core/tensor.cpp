#include "core/tensor.h"

#include <algorithm>
#include <numeric>

#include "core/autograd.h"
#include "core/cuda_context.h"
#include "core/iter.h"
#include "core/ops_reduce.h"
#include "kernels/cpu/elementwise.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/copy.h"
#endif

namespace mel {

int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

int64_t wrap_dim(int64_t d, int64_t ndim, const char* op) {
  const int64_t lo = -std::max<int64_t>(ndim, 1), hi = std::max<int64_t>(ndim, 1) - 1;
  if (d < lo || d > hi) {
    fail("{}: dimension {} is out of range for a tensor of {} dimension{} (expected {}..{})", op, d,
         ndim, ndim == 1 ? "" : "s", lo, hi);
  }
  return d < 0 ? d + std::max<int64_t>(ndim, 1) : d;
}

Tensor empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) {
    MEL_CHECK(d >= 0, "empty: negative size in shape {}", shape_str(shape));
  }
  auto impl = std::make_shared<TensorImpl>();
  size_t nbytes = static_cast<size_t>(numel_of(shape)) * dtype_size(dtype);
  impl->storage = std::make_shared<Storage>(nbytes, allocator_for(device));
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  impl->device = device;
  return Tensor(std::move(impl));
}

const TensorImpl& Tensor::checked() const {
  if (!impl_) throw Error("Tensor: operation on an undefined tensor");
  return *impl_;
}

int64_t Tensor::size(int64_t d) const {
  return shape()[wrap_dim(d, dim(), "Tensor::size")];
}
int64_t Tensor::stride(int64_t d) const {
  return strides()[wrap_dim(d, dim(), "Tensor::stride")];
}

bool Tensor::is_contiguous() const {
  const auto& s = shape();
  const auto& st = strides();
  int64_t expect = 1;
  for (size_t i = s.size(); i-- > 0;) {
    if (s[i] != 1 && st[i] != expect) return false;
    expect *= s[i];
  }
  return true;
}

void* Tensor::data_ptr() const {
  const TensorImpl& t = checked();
  if (!t.storage || !t.storage->data()) return nullptr;
  return static_cast<char*>(t.storage->data()) +
         t.offset * static_cast<int64_t>(dtype_size(t.dtype));
}

// ---- element access ------------------------------------------------------------------------

namespace {

int64_t element_offset(const Tensor& t, const std::vector<int64_t>& index, const char* op) {
  MEL_CHECK(static_cast<int64_t>(index.size()) == t.dim(),
            "{}: index has {} entries for a tensor of shape {}", op, index.size(),
            shape_str(t.shape()));
  int64_t off = 0;
  for (size_t i = 0; i < index.size(); ++i) {
    int64_t v = index[i] < 0 ? index[i] + t.shape()[i] : index[i];
    MEL_CHECK(v >= 0 && v < t.shape()[i],
              "{}: index {} is out of range for dimension {} of size {}", op, index[i], i,
              t.shape()[i]);
    off += v * t.strides()[i];
  }
  return off;
}

double read_at(const Tensor& t, int64_t off) {
  return dispatch_all(t.dtype(), "Tensor::at", [&](auto tag) {
    using T = typename decltype(tag)::type;
    return kernels::cpu::convert<double>(static_cast<const T*>(t.data_ptr())[off]);
  });
}

}  // namespace

double Tensor::item() const {
  MEL_CHECK(numel() == 1, "Tensor::item: tensor of shape {} has {} elements (expected 1)",
            shape_str(shape()), numel());
  if (device().is_cuda()) return detach().to(Device::cpu()).item();
  return read_at(*this, 0);
}

double Tensor::at(const std::vector<int64_t>& index) const {
  if (device().is_cuda()) return detach().to(Device::cpu()).at(index);
  return read_at(*this, element_offset(*this, index, "Tensor::at"));
}

void Tensor::set(const std::vector<int64_t>& index, double value) {
  if (device().is_cuda()) {
    Tensor v = detach();
    for (int64_t i : index) v = v.select(0, i);
    MEL_CHECK(v.dim() == 0, "Tensor::set: {} indices for a tensor of shape {}", index.size(),
              shape_str(shape()));
    v.fill_(value);
    return;
  }
  int64_t off = element_offset(*this, index, "Tensor::set");
  impl_->storage->bump_version();
  dispatch_all(dtype(), "Tensor::set", [&](auto tag) {
    using T = typename decltype(tag)::type;
    static_cast<T*>(data_ptr())[off] = kernels::cpu::convert<T>(value);
  });
}

std::vector<double> Tensor::to_vector() const {
  if (device().is_cuda()) return detach().to(Device::cpu()).to_vector();
  Tensor c = contiguous().to(DType::f64);
  const double* p = c.data<double>();
  return std::vector<double>(p, p + c.numel());
}

// ---- autograd entry points -----------------------------------------------------------------

Tensor& Tensor::requires_grad_(bool on) {
  checked();
  MEL_CHECK(!on || is_floating(dtype()),
            "requires_grad_: only floating-point tensors can require gradients (got {})",
            dtype_name(dtype()));
  MEL_CHECK(is_leaf(),
            "requires_grad_: only leaf tensors can change requires_grad (this one comes "
            "from {}); use detach() first",
            grad_fn() ? "an op" : "?");
  impl_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const {
  return Tensor(checked().grad);
}

void Tensor::zero_grad() {
  checked();
  impl_->grad.reset();
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  MEL_CHECK(requires_grad(),
            "backward: the tensor does not require grad (no input had requires_grad set, or it "
            "was computed under NoGradGuard)");
  Tensor g = gradient;
  if (!g.defined()) {
    MEL_CHECK(numel() == 1,
              "backward: a gradient must be given for a non-scalar output of shape {}",
              shape_str(shape()));
    g = empty(shape(), dtype(), device());
    g.fill_(1.0);
  }
  MEL_CHECK(g.shape() == shape(), "backward: gradient shape {} does not match the output shape {}",
            shape_str(g.shape()), shape_str(shape()));
  autograd::run_backward(*this, g.dtype() == dtype() ? g : g.to(dtype()), retain_graph);
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  const TensorImpl& s = checked();
  impl->storage = s.storage;
  impl->shape = s.shape;
  impl->strides = s.strides;
  impl->offset = s.offset;
  impl->dtype = s.dtype;
  impl->device = s.device;
  return Tensor(std::move(impl));
}

// ---- views ---------------------------------------------------------------------------------

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

// ---- copies --------------------------------------------------------------------------------

namespace {

// dst (any strides) <- src broadcast to dst's shape, converting dtypes.
void copy_into(const Tensor& dst, const Tensor& src, const char* op) {
  MEL_CHECK(dst.device() == src.device(), "{}: source on {} and destination on {}", op,
            src.device().str(), dst.device().str());
  auto it = make_iter<2>(dst.shape(), {&dst, &src}, op);
  const bool cuda = dst.device().is_cuda();
  dispatch_all(dst.dtype(), op, [&](auto dt) {
    using D = typename decltype(dt)::type;
    dispatch_all(src.dtype(), op, [&](auto st) {
      using S = typename decltype(st)::type;
      auto* d = static_cast<D*>(dst.data_ptr());
      auto* s = static_cast<const S*>(src.data_ptr());
      if (cuda) {
        MEL_CUDA_ONLY(kernels::cuda::copy(it, d, s, cuda_stream(dst.device())));
      } else {
        kernels::cpu::copy(it, d, s);
      }
    });
  });
}

// A contiguous copy of `src` (any strides) on another device, same dtype.
Tensor copy_across(const Tensor& src, Device to) {
  check_device_available(to);
  Tensor s = src.detach().contiguous();
  Tensor out = empty(s.shape(), s.dtype(), to);
  if (s.numel() == 0) return out;
  [[maybe_unused]] const size_t n = s.nbytes();
  if (s.device().is_cpu()) {
    MEL_CUDA_ONLY(cuda_context(to.index).copy_to_device(out.data_ptr(), s.data_ptr(), n));
  } else if (to.is_cpu()) {
    MEL_CUDA_ONLY(cuda_context(s.device().index).copy_to_host(out.data_ptr(), s.data_ptr(), n));
  } else {  // between GPUs: through the host, which keeps it simple and correct
    return copy_across(copy_across(s, Device::cpu()), to);
  }
  return out;
}

}  // namespace

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  copy_into(out, *this, "clone");
  autograd::record("clone", out, {*this}, [](const Tensor& g, const autograd::GradMask&) {
    return std::vector<Tensor>{g};
  });
  return out;
}

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  MEL_CHECK(!requires_grad() || is_floating(dt),
            "to: cannot convert a tensor that requires grad to the integer dtype {}",
            dtype_name(dt));
  Tensor out = empty(shape(), dt, device());
  copy_into(out, *this, "to");
  DType src = dtype();
  autograd::record("to", out, {*this}, [src](const Tensor& g, const autograd::GradMask&) {
    return std::vector<Tensor>{g.to(src)};
  });
  return out;
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor out = copy_across(*this, d);
  Device src = device();
  autograd::record("to", out, {*this}, [src](const Tensor& g, const autograd::GradMask&) {
    return std::vector<Tensor>{g.to(src)};
  });
  return out;
}

Tensor& Tensor::fill_(double value) {
  Tensor& self = *this;
  auto it = make_iter<1>(shape(), {&self}, "fill_");
  if (impl_->storage) impl_->storage->bump_version();
  const bool cuda = device().is_cuda();
  dispatch_all(dtype(), "fill_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T v = kernels::cpu::convert<T>(value);
    if (cuda) {
      MEL_CUDA_ONLY(kernels::cuda::fill(it, static_cast<T*>(data_ptr()), v, cuda_stream(device())));
    } else {
      kernels::cpu::fill(it, static_cast<T*>(data_ptr()), v);
    }
  });
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_defined("copy_", src, "the source");
  broadcast_strides(src, shape(), "copy_");
  if (impl_->storage) impl_->storage->bump_version();
  // Across devices the source first travels whole (contiguous, its own dtype), then the copy
  // broadcasts and converts on the destination's device.
  copy_into(*this, src.device() == device() ? src : copy_across(src, device()), "copy_");
  return *this;
}

}  // namespace mel
