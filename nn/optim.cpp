#include "nn/optim.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <map>

#include "core/dispatch.h"
#include "core/factory.h"
#include "kernels/cpu/optim.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/optim.h"
#endif

namespace mel::nn {

namespace {

// The flat buffers and the optimizer's state must share one device: a module moved with
// Module::to after its FlatParameters were built no longer views them (build FlatParameters, and
// then the optimizer, after moving the module).
void check_flat(const FlatParameters& p, const char* who,
                std::initializer_list<const Tensor*> state) {
  const Device dev = p.data().device();
  MEL_CHECK(p.grad().device() == dev, "{}: the parameters are on {} but their gradients on {}", who,
            dev.str(), p.grad().device().str());
  // Module::to / to(dtype) give a parameter new storage; stepping the flat buffer would then
  // silently leave the model's weights behind.
  for (const FlatParameters::Entry& e : p.entries()) {
    MEL_CHECK(e.param.impl()->storage == p.data().impl()->storage,
              "{}: parameter '{}' (on {}) no longer lives in the flat parameter buffer (on {}); "
              "build FlatParameters after moving or converting the model",
              who, e.name, e.param.device().str(), dev.str());
  }
  for (const Tensor* t : state) {
    MEL_CHECK(t->device() == dev,
              "{}: the parameters are on {} but the optimizer state is on {}; create the "
              "optimizer after moving the model and building its FlatParameters",
              who, dev.str(), t->device().str());
  }
}

Tensor find_state(const NamedTensors& state, const std::string& name, const Shape& shape,
                  const char* who) {
  for (const auto& [k, t] : state) {
    if (k != name) continue;
    MEL_CHECK(t.shape() == shape, "{}: optimizer state '{}' has shape {}, expected {}", who, name,
              shape_str(t.shape()), shape_str(shape));
    return t;
  }
  fail("{}: optimizer state has no entry '{}'", who, name);
}

}  // namespace

void Optimizer::track_entry_steps() {
  if (entry_steps_.empty()) entry_steps_.assign(params_.entries().size(), steps_);
}

void Optimizer::set_decay(std::vector<bool> decay) {
  MEL_CHECK(decay.empty() || decay.size() == params_.entries().size(),
            "{}: the weight decay groups have {} entries for {} parameters", name(), decay.size(),
            params_.entries().size());
  decay_ = std::move(decay);
}

void Optimizer::step(double lr, double momentum) {
  if (!entry_steps_.empty() || !decay_.empty()) {
    step(lr, momentum, std::vector<bool>(params_.entries().size(), true));
    return;
  }
  ++steps_;
  update(lr, momentum, 0, params_.numel(), steps_, true);
}

void Optimizer::step(double lr, double momentum, const std::vector<bool>& trained) {
  const auto& entries = params_.entries();
  MEL_CHECK(!entry_steps_.empty() || entries.empty() ||
                std::find(trained.begin(), trained.end(), false) == trained.end(),
            "{}: a step of some parameters only needs track_entry_steps() first", name());
  MEL_CHECK(trained.size() == entries.size(), "{}: the step mask has {} entries for {} parameters",
            name(), trained.size(), entries.size());
  ++steps_;
  for (size_t e = 0; e < entry_steps_.size(); ++e) entry_steps_[e] += trained[e] ? 1 : 0;
  const auto count = [&](size_t e) { return entry_steps_.empty() ? steps_ : entry_steps_[e]; };
  const auto decays = [&](size_t e) { return decay_.empty() || decay_[e]; };
  // Runs of adjacent trained parameters at the same count and decay: one fused update each
  // (typically one per model of an ensemble, or per weight-decay group).
  size_t e = 0;
  while (e < entries.size()) {
    if (!trained[e]) {
      ++e;
      continue;
    }
    size_t f = e + 1;
    while (f < entries.size() && trained[f] && count(f) == count(e) && decays(f) == decays(e)) ++f;
    const int64_t begin = entries[e].offset;
    const int64_t end = entries[f - 1].offset + entries[f - 1].numel;
    update(lr, momentum, begin, end, count(e), decays(e));
    e = f;
  }
}

NamedTensors Optimizer::with_steps(NamedTensors buffers) const {
  buffers.insert(buffers.begin(), {"step", tensor_i64({steps_}, {})});
  if (!entry_steps_.empty()) {
    buffers.emplace_back("entry_steps",
                         tensor_i64(entry_steps_, {static_cast<int64_t>(entry_steps_.size())}));
  }
  return buffers;
}

void Optimizer::load_steps(const NamedTensors& state, const char* who) {
  steps_ = static_cast<int64_t>(find_state(state, "step", {}, who).item());
  if (entry_steps_.empty()) return;
  const auto n = static_cast<int64_t>(entry_steps_.size());
  for (const auto& [k, t] : state) {
    if (k != "entry_steps") continue;
    const Tensor c = find_state(state, "entry_steps", {n}, who).to(DType::i64).contiguous();
    entry_steps_.assign(c.data<int64_t>(), c.data<int64_t>() + n);
    return;
  }
  entry_steps_.assign(static_cast<size_t>(n), steps_);  // a state from untracked steps
}

Sgd::Sgd(FlatParameters& params, SgdOptions options) : Optimizer(params), options_(options) {
  MEL_CHECK(options.momentum >= 0.0, "sgd: momentum must be >= 0, got {}", options.momentum);
  MEL_CHECK(options.weight_decay >= 0.0, "sgd: weight_decay must be >= 0, got {}",
            options.weight_decay);
  MEL_CHECK(!options.nesterov || (options.momentum > 0.0 && options.dampening == 0.0),
            "sgd: Nesterov momentum needs momentum > 0 and dampening 0");
  buf_ = zeros({params.numel()}, DType::f32, params.data().device());
}

void Sgd::update(double lr, double momentum, int64_t begin, int64_t end, int64_t count,
                 bool decay) {
  check_flat(params_, "sgd", {&buf_});
  const double mom = momentum >= 0.0 ? momentum : options_.momentum;
  float* p = params_.data().data<float>() + begin;
  const float* g = params_.grad().data<float>() + begin;
  float* buf = buf_.data<float>() + begin;
  const float f_lr = static_cast<float>(lr), f_mom = static_cast<float>(mom);
  const float f_damp = static_cast<float>(options_.dampening);
  const float f_wd = decay ? static_cast<float>(options_.weight_decay) : 0.0f;
  MEL_KERNEL(params_.data().device(), sgd_step, p, g, buf, end - begin, f_lr, f_mom, f_damp, f_wd,
             options_.nesterov, count == 1);
}

NamedTensors Sgd::state() const {
  return with_steps({{"momentum_buffer", buf_}});
}

void Sgd::load_state(const NamedTensors& state) {
  load_steps(state, "sgd");
  buf_.copy_(find_state(state, "momentum_buffer", buf_.shape(), "sgd"));
}

Adam::Adam(FlatParameters& params, AdamOptions options) : Optimizer(params), options_(options) {
  const char* who = options.decoupled ? "adamw" : "adam";
  MEL_CHECK(
      options.beta1 >= 0.0 && options.beta1 < 1.0 && options.beta2 >= 0.0 && options.beta2 < 1.0,
      "{}: betas must be in [0, 1), got ({}, {})", who, options.beta1, options.beta2);
  MEL_CHECK(options.eps > 0.0, "{}: eps must be positive, got {}", who, options.eps);
  MEL_CHECK(options.weight_decay >= 0.0, "{}: weight_decay must be >= 0, got {}", who,
            options.weight_decay);
  m_ = zeros({params.numel()}, DType::f32, params.data().device());
  v_ = zeros({params.numel()}, DType::f32, params.data().device());
}

void Adam::update(double lr, double beta1, int64_t begin, int64_t end, int64_t count, bool decay) {
  check_flat(params_, name().c_str(), {&m_, &v_});
  const double b1 = beta1 >= 0.0 ? beta1 : options_.beta1;
  // As PyTorch: the bias correction uses the current beta1 (one-cycle changes it every step).
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(count));
  const double bc2 = 1.0 - std::pow(options_.beta2, static_cast<double>(count));
  float* p = params_.data().data<float>() + begin;
  const float* g = params_.grad().data<float>() + begin;
  const float f_lr = static_cast<float>(lr), f_b1 = static_cast<float>(b1);
  const float f_b2 = static_cast<float>(options_.beta2), f_eps = static_cast<float>(options_.eps);
  const float f_wd = decay ? static_cast<float>(options_.weight_decay) : 0.0f;
  MEL_KERNEL(params_.data().device(), adam_step, p, g, m_.data<float>() + begin,
             v_.data<float>() + begin, end - begin, f_lr, f_b1, f_b2, f_eps, f_wd,
             options_.decoupled, bc1, bc2);
}

NamedTensors Adam::state() const {
  return with_steps({{"exp_avg", m_}, {"exp_avg_sq", v_}});
}

void Adam::load_state(const NamedTensors& state) {
  const char* who = options_.decoupled ? "adamw" : "adam";
  load_steps(state, who);
  m_.copy_(find_state(state, "exp_avg", m_.shape(), who));
  v_.copy_(find_state(state, "exp_avg_sq", v_.shape(), who));
}

namespace {

// The squared norm and the scaling stay on the device (the scale kernel reads the norm there);
// without `reduce` the one synchronisation is the read-back of the norm returned, queued last.
// With it, this part's squared norm is read back and turned into the total's first.
double clip(FlatParameters& params, double max_norm, const std::function<double(double)>* reduce) {
  check_flat(params, "clip_grad_norm", {});
  MEL_CHECK(max_norm > 0.0, "clip_grad_norm: max_norm must be positive, got {}", max_norm);
  float* g = params.grad().data<float>();
  const Device dev = params.grad().device();
  Tensor sq = empty({1 + kernels::cpu::kSquaredNormPartials}, DType::f64, dev);
  double* sq_ptr = sq.data<double>();
  MEL_KERNEL(dev, squared_norm, g, params.numel(), sq_ptr, sq_ptr + 1);
  if (!reduce) {
    MEL_KERNEL(dev, clip_scale, g, params.numel(), sq_ptr, max_norm);
    return std::sqrt(sq.narrow(0, 0, 1).item());
  }
  const double total = (*reduce)(sq.narrow(0, 0, 1).item());
  Tensor total_t = full({1}, total, DType::f64, dev);
  MEL_KERNEL(dev, clip_scale, g, params.numel(), total_t.data<double>(), max_norm);
  return std::sqrt(total);
}

}  // namespace

double clip_grad_norm(FlatParameters& params, double max_norm) {
  return clip(params, max_norm, nullptr);
}

double clip_grad_norm(FlatParameters& params, double max_norm,
                      const std::function<double(double)>& reduce) {
  return clip(params, max_norm, &reduce);
}

}  // namespace mel::nn
