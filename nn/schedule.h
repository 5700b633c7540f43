// Learning-rate schedules as pure functions of the step: constant, step decay, cosine with
// linear warm-up, and one-cycle with PyTorch's OneCycleLR semantics (including momentum cycling).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace mel::nn {

struct LrMomentum {
  double lr = 0.0;
  double momentum = -1.0;  // < 0: leave the optimizer's own momentum / beta1
};

class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  // Values for optimizer step `step` (0-based).
  virtual LrMomentum at(int64_t step) const = 0;
};

class ConstantLr final : public LrSchedule {
 public:
  explicit ConstantLr(double lr) : lr_(lr) {}
  LrMomentum at(int64_t) const override { return {lr_, -1.0}; }

 private:
  double lr_;
};

// lr * gamma^(floor(step / step_size)); step_size in optimizer steps.
class StepLr final : public LrSchedule {
 public:
  StepLr(double lr, int64_t step_size, double gamma);
  LrMomentum at(int64_t step) const override;

 private:
  double lr_, gamma_;
  int64_t step_size_;
};

// Linear warm-up from 0 over warmup_steps, then cosine from lr to min_lr at total_steps.
class CosineLr final : public LrSchedule {
 public:
  CosineLr(double lr, int64_t total_steps, int64_t warmup_steps, double min_lr = 0.0);
  LrMomentum at(int64_t step) const override;

 private:
  double lr_, min_lr_;
  int64_t total_, warmup_;
};

// torch.optim.lr_scheduler.OneCycleLR with anneal_strategy "cos" or "linear", two phases, and
// cycle_momentum (momentum or Adam's beta1 goes max -> base during warm-up and back).
struct OneCycleOptions {
  double max_lr = 1e-3;
  int64_t total_steps = 0;
  double pct_start = 0.3;
  double div_factor = 25.0;
  double final_div_factor = 1e4;
  bool cos = true;
  bool cycle_momentum = true;
  double base_momentum = 0.85, max_momentum = 0.95;
};

class OneCycleLr final : public LrSchedule {
 public:
  explicit OneCycleLr(OneCycleOptions options);
  LrMomentum at(int64_t step) const override;

 private:
  OneCycleOptions o_;
};

}  // namespace mel::nn
