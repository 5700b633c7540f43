// nn::Module: a tree of layers with named parameters and buffers (PyTorch's naming), train/eval
// modes, state dicts, and FlatParameters, which moves every parameter into one contiguous buffer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/autograd.h"
#include "core/random.h"
#include "core/tensor.h"

namespace mel::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  explicit Module(std::string type) : type_(std::move(type)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The computation; containers and layers override it.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  const std::string& type() const { return type_; }
  // Constructor arguments as PyTorch prints them, e.g. "64, 128, kernel_size=(3, 3)".
  virtual std::string extra_repr() const { return ""; }

  // Parameters and buffers of this module and its descendants, depth first in registration
  // order, named "child.grandchild.name".
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  std::vector<Tensor> parameters() const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
    return children_;
  }
  std::shared_ptr<Module> child(const std::string& name) const;  // null when absent
  int64_t num_parameters() const;

  // Draws fresh initial values (PyTorch's defaults) from `gen`, depth first in registration order.
  void reset_parameters(Generator& gen);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Parameters then buffers of each module, depth first (PyTorch's state_dict order).
  NamedTensors state_dict() const;
  // Copies values into the existing tensors (so views into a flat buffer stay views). With
  // strict, a missing, unexpected or mis-shaped entry is an error that lists all of them.
  void load_state_dict(const NamedTensors& state, bool strict = true);

  // Moves every parameter and buffer to `device` in place (existing handles see the move).
  void to(Device device);
  // Converts every floating-point parameter and buffer to `dtype` in place (f64 for gradient
  // checks; FlatParameters wants f32).
  void to(DType dtype);

  // The module tree as PyTorch prints it, optionally with parameter counts per module.
  std::string repr(bool with_counts = false) const;

 protected:
  Tensor& register_parameter(const std::string& name, Tensor t);
  Tensor& register_buffer(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }
  // Layers with parameters override this; the default does nothing.
  virtual void init_parameters(Generator& gen) { (void)gen; }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void collect(const std::string& prefix, bool params, bool buffers, NamedTensors& out) const;
  void repr_into(std::string& out, int indent, bool with_counts) const;

  std::string type_;
  bool training_ = true;
  NamedTensors params_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// Every parameter of a module in one contiguous f32 buffer, every gradient in another; each
// parameter becomes a view into `data` (its TensorImpl is re-pointed, so every handle to it
// follows) and its .grad a view into `grad`. Optimizers and clipping run one pass over the two.
class FlatParameters {
 public:
  struct Entry {
    std::string name;
    Tensor param;
    int64_t offset = 0;
    int64_t numel = 0;
  };
  explicit FlatParameters(const Module& module);
  // For a set of modules sharing one optimizer (names prefixed by the given strings).
  explicit FlatParameters(const std::vector<std::pair<std::string, const Module*>>& modules);

  const Tensor& data() const { return data_; }
  const Tensor& grad() const { return grad_; }
  const std::vector<Entry>& entries() const { return entries_; }
  int64_t numel() const { return data_.numel(); }
  void zero_grad();

 private:
  void build(const NamedTensors& params);
  Tensor data_, grad_;
  std::vector<Entry> entries_;
};

}  // namespace mel::nn
