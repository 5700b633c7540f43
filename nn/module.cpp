#include "nn/module.h"

#include <fmt/format.h>

#include <map>
#include <set>

#include "core/factory.h"

namespace mel::nn {

Tensor Module::forward(const Tensor&) {
  fail("{}: this module has no forward(x); call its parts directly", type_);
}

Tensor& Module::register_parameter(const std::string& name, Tensor t) {
  MEL_CHECK(t.defined(), "{}: parameter '{}' is undefined", type_, name);
  if (!t.requires_grad()) t.requires_grad_(true);
  params_.emplace_back(name, std::move(t));
  return params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  buffers_.emplace_back(name, std::move(t));
  return buffers_.back().second;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  MEL_CHECK(m != nullptr, "{}: child module '{}' is null", type_, name);
  for (const auto& c : children_) {
    MEL_CHECK(c.first != name, "{}: a child module named '{}' already exists", type_, name);
  }
  m->training_ = training_;
  children_.emplace_back(name, std::move(m));
}

std::shared_ptr<Module> Module::child(const std::string& name) const {
  for (const auto& c : children_) {
    if (c.first == name) return c.second;
  }
  return nullptr;
}

void Module::collect(const std::string& prefix, bool params, bool buffers,
                     NamedTensors& out) const {
  if (params) {
    for (const auto& p : params_) out.emplace_back(prefix + p.first, p.second);
  }
  if (buffers) {
    for (const auto& b : buffers_) {
      if (b.second.defined()) out.emplace_back(prefix + b.first, b.second);
    }
  }
  for (const auto& c : children_) c.second->collect(prefix + c.first + ".", params, buffers, out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", true, false, out);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, true, out);
  return out;
}

NamedTensors Module::state_dict() const {
  NamedTensors out;
  collect("", true, true, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& p : named_parameters()) out.push_back(p.second);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : named_parameters()) n += p.second.numel();
  return n;
}

void Module::reset_parameters(Generator& gen) {
  init_parameters(gen);
  for (auto& c : children_) c.second->reset_parameters(gen);
}

void Module::train(bool on) {
  training_ = on;
  for (auto& c : children_) c.second->train(on);
}

void Module::load_state_dict(const NamedTensors& state, bool strict) {
  NamedTensors mine = state_dict();
  std::map<std::string, Tensor> given;
  for (const auto& kv : state) given[kv.first] = kv.second;
  std::vector<std::string> missing, mismatched;
  std::set<std::string> used;
  for (const auto& [name, t] : mine) {
    auto it = given.find(name);
    if (it == given.end()) {
      missing.push_back(name);
      continue;
    }
    used.insert(name);
    if (it->second.shape() != t.shape()) {
      mismatched.push_back(fmt::format("{} (checkpoint {}, model {})", name,
                                       shape_str(it->second.shape()), shape_str(t.shape())));
    }
  }
  std::vector<std::string> unexpected;
  for (const auto& kv : state) {
    if (!used.count(kv.first)) unexpected.push_back(kv.first);
  }
  if (!mismatched.empty() || (strict && (!missing.empty() || !unexpected.empty()))) {
    std::string msg = "load_state_dict: the state does not match the model";
    if (!missing.empty()) msg += fmt::format("; missing: {}", fmt::join(missing, ", "));
    if (!unexpected.empty()) msg += fmt::format("; unexpected: {}", fmt::join(unexpected, ", "));
    if (!mismatched.empty()) msg += fmt::format("; wrong shape: {}", fmt::join(mismatched, ", "));
    fail("{}", msg);
  }
  autograd::NoGradGuard ng;
  for (auto& [name, t] : mine) {
    auto it = given.find(name);
    if (it != given.end()) const_cast<Tensor&>(t).copy_(it->second.to(t.device()));
  }
}

namespace {
void move_in_place(Tensor& t, Device device) {
  if (!t.defined() || t.device() == device) return;
  Tensor moved = t.detach().to(device);
  TensorImpl* impl = t.impl();
  impl->storage = moved.impl()->storage;
  impl->offset = moved.offset();
  impl->strides = moved.strides();
  impl->device = device;
  if (impl->grad) impl->grad.reset();
}
}  // namespace

void Module::to(Device device) {
  for (auto& p : params_) move_in_place(p.second, device);
  for (auto& b : buffers_) move_in_place(b.second, device);
  for (auto& c : children_) c.second->to(device);
}

namespace {
void convert_in_place(Tensor& t, DType dtype) {
  if (!t.defined() || !is_floating(t.dtype()) || t.dtype() == dtype) return;
  Tensor converted = t.detach().to(dtype);
  TensorImpl* impl = t.impl();
  impl->storage = converted.impl()->storage;
  impl->offset = converted.offset();
  impl->strides = converted.strides();
  impl->dtype = dtype;
  if (impl->grad) impl->grad.reset();
}
}  // namespace

void Module::to(DType dtype) {
  for (auto& p : params_) convert_in_place(p.second, dtype);
  for (auto& b : buffers_) convert_in_place(b.second, dtype);
  for (auto& c : children_) c.second->to(dtype);
}

void Module::repr_into(std::string& out, int indent, bool with_counts) const {
  out += type_ + "(" + extra_repr();
  if (children_.empty()) {
    out += ")";
  } else {
    out += "\n";
    for (const auto& [name, c] : children_) {
      out += std::string(indent + 2, ' ') + "(" + name + "): ";
      c->repr_into(out, indent + 2, with_counts);
      out += "\n";
    }
    out += std::string(indent, ' ') + ")";
  }
  if (with_counts) {
    const int64_t n = num_parameters();
    if (n > 0) out += fmt::format("  # {} params", n);
  }
}

std::string Module::repr(bool with_counts) const {
  std::string out;
  repr_into(out, 0, with_counts);
  return out;
}

// ---- FlatParameters ----------------------------------------------------------------------------

FlatParameters::FlatParameters(const Module& module) {
  build(module.named_parameters());
}

FlatParameters::FlatParameters(const std::vector<std::pair<std::string, const Module*>>& modules) {
  NamedTensors all;
  for (const auto& [prefix, m] : modules) {
    for (auto& [name, t] : m->named_parameters()) all.emplace_back(prefix + name, t);
  }
  build(all);
}

void FlatParameters::build(const NamedTensors& params) {
  int64_t total = 0;
  std::set<TensorImpl*> seen;
  Device device = Device::cpu();
  for (const auto& [name, t] : params) {
    MEL_CHECK(t.dtype() == DType::f32, "FlatParameters: parameter '{}' has dtype {}, expected f32",
              name, dtype_name(t.dtype()));
    MEL_CHECK(t.is_leaf(), "FlatParameters: parameter '{}' is not a leaf", name);
    MEL_CHECK(seen.insert(t.impl()).second, "FlatParameters: parameter '{}' appears twice", name);
    if (total == 0) device = t.device();
    MEL_CHECK(t.device() == device, "FlatParameters: parameter '{}' is on {}, the others on {}",
              name, t.device().str(), device.str());
    total += t.numel();
  }
  data_ = empty({total}, DType::f32, device);
  grad_ = zeros({total}, DType::f32, device);
  int64_t off = 0;
  for (const auto& [name, t] : params) {
    const int64_t n = t.numel();
    Tensor dst = data_.narrow(0, off, n).view(t.shape());
    dst.copy_(t.detach());
    // Re-point the parameter's impl at the flat storage: every handle to it follows.
    TensorImpl* impl = t.impl();
    impl->storage = dst.impl()->storage;
    impl->offset = dst.offset();
    impl->strides = dst.strides();
    impl->grad = grad_.narrow(0, off, n).view(t.shape()).impl_ptr();
    entries_.push_back({name, t, off, n});
    off += n;
  }
}

void FlatParameters::zero_grad() {
  grad_.fill_(0.0);
}

}  // namespace mel::nn
