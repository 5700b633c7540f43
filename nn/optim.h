// Optimizers over a FlatParameters buffer (SGD with momentum/Nesterov, Adam, AdamW), each step
// one fused pass, plus global-norm gradient clipping. State is exposed as named tensors.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace mel::nn {

class Optimizer {
 public:
  explicit Optimizer(FlatParameters& params) : params_(params) {}
  virtual ~Optimizer() = default;
  // One update of every parameter with learning rate `lr`; `momentum` overrides SGD's momentum or
  // Adam's beta1 for this step when >= 0 (one-cycle schedules cycle it).
  void step(double lr, double momentum = -1.0);
  // One update of the parameters whose entry of `trained` (one per FlatParameters entry, in
  // order) is true. The others keep their values and state, and their own step count (Adam's
  // bias correction, SGD's first momentum step) stays: PyTorch's handling of a parameter without
  // a gradient. Needs track_entry_steps().
  void step(double lr, double momentum, const std::vector<bool>& trained);
  // Keeps one step count per parameter from now on (saved as the state "entry_steps").
  void track_entry_steps();
  // Parameter groups for weight decay: one flag per FlatParameters entry (in order); a parameter
  // whose flag is false is updated without weight decay (empty, the default: all decay).
  void set_decay(std::vector<bool> decay);
  const std::vector<bool>& decay() const { return decay_; }
  void zero_grad() { params_.zero_grad(); }
  int64_t steps() const { return steps_; }
  virtual std::string name() const = 0;
  // Step count and per-element buffers, for checkpoints ("step", "exp_avg", ...; "entry_steps"
  // when tracked).
  virtual NamedTensors state() const = 0;
  virtual void load_state(const NamedTensors& state) = 0;

 protected:
  // Updates elements [begin, end) of the flat buffer as the `count`-th step of their parameters,
  // with the optimizer's weight decay when `decay`, else none.
  virtual void update(double lr, double momentum, int64_t begin, int64_t end, int64_t count,
                      bool decay) = 0;
  // `buffers` with the step counts around them, and the counts back from a state.
  NamedTensors with_steps(NamedTensors buffers) const;
  void load_steps(const NamedTensors& state, const char* who);

  FlatParameters& params_;
  int64_t steps_ = 0;                 // calls of step()
  std::vector<int64_t> entry_steps_;  // per parameter, when tracked
  std::vector<bool> decay_;           // per parameter; empty: all
};

struct SgdOptions {
  double momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
};

class Sgd final : public Optimizer {
 public:
  Sgd(FlatParameters& params, SgdOptions options);
  std::string name() const override { return "sgd"; }
  NamedTensors state() const override;
  void load_state(const NamedTensors& state) override;

 private:
  void update(double lr, double momentum, int64_t begin, int64_t end, int64_t count,
              bool decay) override;
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
  std::string name() const override { return options_.decoupled ? "adamw" : "adam"; }
  NamedTensors state() const override;
  void load_state(const NamedTensors& state) override;

 private:
  void update(double lr, double beta1, int64_t begin, int64_t end, int64_t count,
              bool decay) override;
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
