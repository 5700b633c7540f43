#include "core/tensor.h"

#include <algorithm>

#include "core/autograd.h"
#include "core/dispatch.h"
#include "core/iter.h"
#include "kernels/cpu/copy.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/copy.h"
#endif

namespace mel {

int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (__builtin_mul_overflow(n, d, &n)) {
      fail("shape {} has more elements than a 64-bit count holds", shape_str(s));
    }
  }
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    // Empty dimensions count as 1 (as PyTorch's strides do), so a shape with a zero can still
    // name sizes whose product no stride can hold: an error, not a wrapped stride.
    if (__builtin_mul_overflow(acc, std::max<int64_t>(s[i], 1), &acc)) {
      fail("shape {} has strides beyond a 64-bit count", shape_str(s));
    }
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
  // Checked: a shape read from a config or a file must not wrap the byte count around to a
  // small allocation that the fill then overruns.
  int64_t bytes = 0;
  if (__builtin_mul_overflow(numel_of(shape), static_cast<int64_t>(dtype_size(dtype)), &bytes) ||
      bytes > (int64_t{1} << 62)) {
    fail("empty: a {} tensor of shape {} needs more than 2^62 bytes", dtype_name(dtype),
         shape_str(shape));
  }
  auto impl = std::make_shared<TensorImpl>();
  const size_t nbytes = static_cast<size_t>(bytes);
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

// ---- copies --------------------------------------------------------------------------------

namespace {

// dst (any strides) <- src broadcast to dst's shape, converting dtypes.
void copy_into(const Tensor& dst, const Tensor& src, const char* op) {
  MEL_CHECK(dst.device() == src.device(), "{}: source on {} and destination on {}", op,
            src.device().str(), dst.device().str());
  auto it = make_iter<2>(dst.shape(), {&dst, &src}, op);
  dispatch_all(dst.dtype(), op, [&](auto dt) {
    using D = typename decltype(dt)::type;
    dispatch_all(src.dtype(), op, [&](auto st) {
      using S = typename decltype(st)::type;
      auto* d = static_cast<D*>(dst.data_ptr());
      auto* s = static_cast<const S*>(src.data_ptr());
      MEL_KERNEL_T(dst.device(), copy, (D, S), it, d, s);
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
  dispatch_all(dtype(), "fill_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    MEL_KERNEL(device(), fill<T>, it, static_cast<T*>(data_ptr()), kernels::cpu::convert<T>(value));
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
