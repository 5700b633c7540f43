// Reverse-mode automatic differentiation: graph nodes recorded by differentiable ops, the engine
// that runs them in reverse topological order, and NoGradGuard.
#pragma once
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mel::autograd {

// Which inputs of a node need a gradient; backward functions may skip the others.
class GradMask {
 public:
  explicit GradMask(std::vector<bool> need) : need_(std::move(need)) {}
  bool operator[](size_t i) const { return i < need_.size() && need_[i]; }

 private:
  std::vector<bool> need_;
};

class Node {
 public:
  virtual ~Node() = default;
  // Gradients with respect to each input, in the order of `next` (undefined ones are skipped).
  virtual std::vector<Tensor> apply(const Tensor& grad_out) = 0;
  // Frees what was saved for backward.
  virtual void release() {}
  virtual std::string name() const = 0;

  std::vector<std::shared_ptr<Node>> next;  // null where an input needs no gradient
  Shape out_shape;                          // shape and dtype of the gradient this node expects
  DType out_dtype = DType::f32;
  bool released = false;

  // Storage versions of the tensors this node may have saved (its inputs, its output and any
  // extra tensors named at record time); checked before backward runs.
  struct SavedVersion {
    std::weak_ptr<Storage> storage;
    uint64_t version = 0;
  };
  std::vector<SavedVersion> saved_versions;
  // Throws if a saved tensor was modified in place since the node was recorded.
  void check_saved_versions() const;
};

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad, const GradMask& need)>;

// A node whose backward is a closure (captures are what it saves).
class FunctionNode final : public Node {
 public:
  FunctionNode(std::string name, BackwardFn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  std::vector<Tensor> apply(const Tensor& grad_out) override;
  void release() override { fn_ = nullptr; }
  std::string name() const override { return name_; }

 private:
  std::string name_;
  BackwardFn fn_;
};

// Accumulates into a leaf's .grad.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::vector<Tensor> apply(const Tensor& grad_out) override;
  std::string name() const override { return "AccumulateGrad"; }

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

bool grad_enabled();

// Disables recording in its scope (restores the previous mode on exit).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when recording is on and some input requires grad.
bool needs_grad(std::initializer_list<Tensor> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Records `out` as produced by an op named `name` from `inputs`; `fn` computes the input gradients.
// Does nothing when needs_grad(inputs) is false. `also_saved` lists tensors the closure keeps that
// are not inputs (indices, masks), so that in-place writes to them are caught too.
void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn,
            const std::vector<Tensor>& also_saved = {});

// Runs backward from `root` seeded with `grad` (same shape as root).
void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph);

}  // namespace mel::autograd
