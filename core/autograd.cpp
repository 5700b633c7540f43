#include "core/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "core/ops_elementwise.h"

namespace mel::autograd {
namespace {

thread_local bool g_grad_enabled = true;  // per-thread mode flag, like a scoped setting

std::shared_ptr<Node> edge_of(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return nullptr;
  if (t.grad_fn()) return t.grad_fn();
  TensorImpl* impl = t.impl();
  auto acc = impl->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    acc->out_shape = impl->shape;
    acc->out_dtype = impl->dtype;
    impl->grad_accumulator = acc;
  }
  return acc;
}

}  // namespace

bool grad_enabled() {
  return g_grad_enabled;
}

NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) {
  g_grad_enabled = false;
}
NoGradGuard::~NoGradGuard() {
  g_grad_enabled = prev_;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

bool needs_grad(std::initializer_list<Tensor> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn,
            const std::vector<Tensor>& also_saved) {
  if (!needs_grad(inputs)) return;
  auto node = std::make_shared<FunctionNode>(name, std::move(fn));
  node->next.reserve(inputs.size());
  for (const Tensor& t : inputs) node->next.push_back(edge_of(t));
  auto remember = [&](const Tensor& t) {
    if (t.defined() && t.impl()->storage) {
      node->saved_versions.push_back({t.impl()->storage, t.impl()->storage->version()});
    }
  };
  for (const Tensor& t : inputs) remember(t);
  for (const Tensor& t : also_saved) remember(t);
  remember(out);
  node->out_shape = out.shape();
  node->out_dtype = out.dtype();
  out.impl()->grad_fn = std::move(node);
  out.impl()->requires_grad = true;
}

void Node::check_saved_versions() const {
  for (const SavedVersion& s : saved_versions) {
    auto st = s.storage.lock();
    if (st && st->version() != s.version) {
      fail(
          "backward: a tensor that '{}' saved for its gradient was modified in place (fill_, "
          "copy_ or set) after the forward pass; its gradient would be wrong. Modify a clone() "
          "instead, or run the forward pass again",
          name());
    }
  }
}

std::vector<Tensor> FunctionNode::apply(const Tensor& grad_out) {
  if (!fn_) {
    fail(
        "backward: the graph through '{}' was already freed by an earlier backward(); pass "
        "retain_graph=true to the first call to go back through it twice",
        name_);
  }
  check_saved_versions();
  std::vector<bool> need(next.size());
  for (size_t i = 0; i < next.size(); ++i) need[i] = next[i] != nullptr;
  return fn_(grad_out, GradMask(std::move(need)));
}

std::vector<Tensor> AccumulateGrad::apply(const Tensor& grad_out) {
  Tensor g = grad_out;
  if (g.shape() != leaf_->shape) {
    fail("backward: gradient of shape {} for a leaf of shape {}", shape_str(g.shape()),
         shape_str(leaf_->shape));
  }
  if (!leaf_->grad) {
    // own the storage: the incoming gradient may alias another tensor
    leaf_->grad = g.detach().clone().impl_ptr();
  } else {
    // In place, as in PyTorch: a gradient that is a view into a model's flat gradient buffer
    // (nn::FlatParameters) must stay one.
    Tensor acc(leaf_->grad);
    acc.copy_(add(acc, g));
  }
  return {};
}

void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  NoGradGuard no_grad;
  std::shared_ptr<Node> root_node = edge_of(root);
  if (!root_node) return;

  // Count, for every node reachable from the root, how many edges lead into it.
  std::unordered_map<Node*, int> deps;
  std::vector<Node*> stack{root_node.get()};
  std::unordered_set<Node*> seen{root_node.get()};
  std::vector<Node*> order;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    order.push_back(n);
    for (const auto& e : n->next) {
      if (!e) continue;
      ++deps[e.get()];
      if (seen.insert(e.get()).second) stack.push_back(e.get());
    }
  }

  std::unordered_map<Node*, Tensor> pending;
  pending[root_node.get()] = grad;
  std::vector<Node*> ready{root_node.get()};
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    Tensor g = std::move(pending[n]);
    pending.erase(n);
    std::vector<Tensor> grads;
    if (g.defined()) {
      if (g.shape() != n->out_shape) {
        fail("backward: '{}' received a gradient of shape {} but produced shape {}", n->name(),
             shape_str(g.shape()), shape_str(n->out_shape));
      }
      grads = n->apply(g);
    }
    for (size_t i = 0; i < n->next.size(); ++i) {
      Node* m = n->next[i].get();
      if (!m) continue;
      if (i < grads.size() && grads[i].defined()) {
        Tensor gi = grads[i].dtype() == m->out_dtype ? grads[i] : grads[i].to(m->out_dtype);
        auto it = pending.find(m);
        if (it == pending.end() || !it->second.defined()) {
          pending[m] = gi;
        } else {
          it->second = add(it->second, gi);
        }
      } else {
        pending.try_emplace(m);
      }
      if (--deps[m] == 0) ready.push_back(m);
    }
  }
  if (!retain_graph) {
    for (Node* n : order) {
      n->release();
      n->released = true;
    }
  }
}

}  // namespace mel::autograd
