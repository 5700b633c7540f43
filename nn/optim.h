// Optimizers over a FlatParameters buffer (SGD with momentum/Nesterov, Adam, AdamW), each step
// one fused pass, plus global-norm gradient clipping. State is exposed as named tensors.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "nn/module.h"

namespace mel::nn {

class Optimizer {
 public:
  explicit Optimizer(FlatParameters& params) : params_(params) {}
  virtual ~Optimizer() = default;
  // One update with learning rate `lr`; `momentum` overrides SGD's momentum or Adam's beta1 for
  // this step when >= 0 (one-cycle schedules cycle it).
  virtual void step(double lr, double momentum = -1.0) = 0;
  void zero_grad() { params_.zero_grad(); }
  int64_t steps() const { return steps_; }
  virtual std::string name() const = 0;
  // Step count and per-element buffers, for checkpoints ("step", "exp_avg", ...).
  virtual NamedTensors state() const = 0;
  virtual void load_state(const NamedTensors& state) = 0;

 protected:
  FlatParameters& params_;
  int64_t steps_ = 0;
};

struct SgdOptions {
  double momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
};

class Sgd final : public Optimizer {
 public:
  Sgd(FlatParameters& params, SgdOptions options);
  void step(double lr, double momentum = -1.0) override;
  std::string name() const override { return "sgd"; }
  NamedTensors state() const override;
  void load_state(const NamedTensors& state) override;

 private:
  SgdOptions options_;
  Tensor buf_;
};

struct AdamOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool decoupled = false;  // AdamW
};

class Adam final : public Optimizer {
 public:
  Adam(FlatParameters& params, AdamOptions options);
  void step(double lr, double beta1 = -1.0) override;
  std::string name() const override { return options_.decoupled ? "adamw" : "adam"; }
  NamedTensors state() const override;
  void load_state(const NamedTensors& state) override;

 private:
  AdamOptions options_;
  Tensor m_, v_;
};

// Scales all gradients so that their global L2 norm is at most max_norm; returns the norm before
// clipping (PyTorch's clip_grad_norm_, with its 1e-6 in the denominator).
double clip_grad_norm(FlatParameters& params, double max_norm);
// The same over a buffer split across ranks: `reduce` turns this part's squared norm into the
// total's (an all-reduce), and every part is scaled by the one coefficient.
double clip_grad_norm(FlatParameters& params, double max_norm,
                      const std::function<double(double)>& reduce);

}  // namespace mel::nn
