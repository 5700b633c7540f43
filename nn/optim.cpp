#include "nn/optim.h"

#include <cmath>
#include <map>

#include "core/factory.h"
#include "kernels/cpu/optim.h"

namespace mel::nn {

namespace {

void check_cpu_flat(const FlatParameters& p, const char* who) {
  MEL_CHECK(p.data().device().is_cpu(),
            "{}: the parameters are on {}; this build steps CPU "
            "parameters only",
            who, p.data().device().str());
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

int64_t load_steps(const NamedTensors& state, const char* who) {
  Tensor s = find_state(state, "step", {}, who);
  return static_cast<int64_t>(s.item());
}

}  // namespace

Sgd::Sgd(FlatParameters& params, SgdOptions options) : Optimizer(params), options_(options) {
  MEL_CHECK(options.momentum >= 0.0, "sgd: momentum must be >= 0, got {}", options.momentum);
  MEL_CHECK(options.weight_decay >= 0.0, "sgd: weight_decay must be >= 0, got {}",
            options.weight_decay);
  MEL_CHECK(!options.nesterov || (options.momentum > 0.0 && options.dampening == 0.0),
            "sgd: Nesterov momentum needs momentum > 0 and dampening 0");
  buf_ = zeros({params.numel()}, DType::f32, params.data().device());
}

void Sgd::step(double lr, double momentum) {
  check_cpu_flat(params_, "sgd");
  const double mom = momentum >= 0.0 ? momentum : options_.momentum;
  kernels::cpu::sgd_step(params_.data().data<float>(), params_.grad().data<float>(),
                         buf_.data<float>(), params_.numel(), static_cast<float>(lr),
                         static_cast<float>(mom), static_cast<float>(options_.dampening),
                         static_cast<float>(options_.weight_decay), options_.nesterov, steps_ == 0);
  ++steps_;
}

NamedTensors Sgd::state() const {
  return {{"step", tensor_i64({steps_}, {})}, {"momentum_buffer", buf_}};
}

void Sgd::load_state(const NamedTensors& state) {
  steps_ = load_steps(state, "sgd");
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

void Adam::step(double lr, double beta1) {
  check_cpu_flat(params_, name().c_str());
  const double b1 = beta1 >= 0.0 ? beta1 : options_.beta1;
  ++steps_;
  // As PyTorch: the bias correction uses the current beta1 (one-cycle changes it every step).
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(steps_));
  const double bc2 = 1.0 - std::pow(options_.beta2, static_cast<double>(steps_));
  kernels::cpu::adam_step(params_.data().data<float>(), params_.grad().data<float>(),
                          m_.data<float>(), v_.data<float>(), params_.numel(),
                          static_cast<float>(lr), static_cast<float>(b1),
                          static_cast<float>(options_.beta2), static_cast<float>(options_.eps),
                          static_cast<float>(options_.weight_decay), options_.decoupled, bc1, bc2);
}

NamedTensors Adam::state() const {
  return {{"step", tensor_i64({steps_}, {})}, {"exp_avg", m_}, {"exp_avg_sq", v_}};
}

void Adam::load_state(const NamedTensors& state) {
  const char* who = options_.decoupled ? "adamw" : "adam";
  steps_ = load_steps(state, who);
  m_.copy_(find_state(state, "exp_avg", m_.shape(), who));
  v_.copy_(find_state(state, "exp_avg_sq", v_.shape(), who));
}

double clip_grad_norm(FlatParameters& params, double max_norm) {
  check_cpu_flat(params, "clip_grad_norm");
  MEL_CHECK(max_norm > 0.0, "clip_grad_norm: max_norm must be positive, got {}", max_norm);
  float* g = params.grad().data<float>();
  const double norm = std::sqrt(kernels::cpu::squared_norm(g, params.numel()));
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) kernels::cpu::scale(g, params.numel(), static_cast<float>(coef));
  return norm;
}

}  // namespace mel::nn
