// Tensor: a cheap shared handle to a TensorImpl (storage, shape, strides, offset, dtype, device and
// autograd state). View operations share storage; everything else lives in the op headers.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/storage.h"

namespace mel {

namespace autograd {
class Node;
}

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;       // in elements
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;
  Device device;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;         // set on outputs of recorded ops
  std::weak_ptr<autograd::Node> grad_accumulator;  // leaves: created on first use
};

int64_t numel_of(const Shape& s);
Shape contiguous_strides(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

  // ---- metadata ----
  const Shape& shape() const { return checked().shape; }
  const Shape& strides() const { return checked().strides; }
  int64_t offset() const { return checked().offset; }
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t numel() const { return numel_of(shape()); }
  DType dtype() const { return checked().dtype; }
  Device device() const { return checked().device; }
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }

  // Pointer to element 0 (storage base + offset).
  void* data_ptr() const;
  template <class T>
  T* data() const {
    MEL_CHECK(dtype() == dtype_v<T>, "Tensor::data: tensor has dtype {}, requested {}",
              dtype_name(dtype()), dtype_name(dtype_v<T>));
    return static_cast<T*>(data_ptr());
  }

  // ---- element access (CPU; meant for tests and small reads) ----
  double item() const;  // one-element tensors
  template <class T>
  T item() const {
    return static_cast<T>(item());
  }
  double at(const std::vector<int64_t>& index) const;
  void set(const std::vector<int64_t>& index, double value);  // writes in place, no autograd
  std::vector<double> to_vector() const;                      // all elements, row-major

  // ---- autograd ----
  bool requires_grad() const { return checked().requires_grad; }
  // Marks a leaf as needing gradients; throws on a non-leaf or an integer tensor.
  Tensor& requires_grad_(bool on = true);
  bool is_leaf() const { return checked().grad_fn == nullptr; }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return checked().grad_fn; }
  Tensor grad() const;
  void zero_grad();  // drops the accumulated gradient
  // Back-propagates from this tensor: with no gradient it must hold one element (seeded with 1).
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  // Same data, no autograd history.
  Tensor detach() const;

  // ---- views (no copy; autograd-aware) ----
  Tensor view(const Shape& shape) const;     // needs compatible strides; one dim may be -1
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a copy
  Tensor permute(const Shape& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;  // transpose of a 2-D tensor
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;  // removes `dim`
  Tensor expand(const Shape& shape) const;          // -1 keeps a size
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;

  // ---- copies ----
  Tensor contiguous() const;  // itself when already contiguous
  Tensor clone() const;
  Tensor to(DType dtype) const;  // itself when already of that dtype
  Tensor to(Device device) const;

  // In place, no autograd (initialisation, optimizers).
  Tensor& fill_(double value);
  Tensor& copy_(const Tensor& src);  // same shape (or broadcastable), any dtype

  std::string str() const;  // shape, dtype, device and (elided) values

 private:
  const TensorImpl& checked() const;
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Wraps a dimension index (negative counts from the end) and checks it for `op`.
int64_t wrap_dim(int64_t d, int64_t ndim, const char* op);

// A new tensor with fresh contiguous storage.
Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());

}  // namespace mel
