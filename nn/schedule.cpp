#include "nn/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace mel::nn {

StepLr::StepLr(double lr, int64_t step_size, double gamma)
    : lr_(lr), gamma_(gamma), step_size_(step_size) {
  MEL_CHECK(step_size > 0, "step schedule: step_size must be positive, got {}", step_size);
  MEL_CHECK(gamma > 0.0, "step schedule: gamma must be positive, got {}", gamma);
}

LrMomentum StepLr::at(int64_t step) const {
  return {lr_ * std::pow(gamma_, static_cast<double>(step / step_size_)), -1.0};
}

CosineLr::CosineLr(double lr, int64_t total, int64_t warmup, double min_lr)
    : lr_(lr), min_lr_(min_lr), total_(total), warmup_(warmup) {
  MEL_CHECK(total > 0, "cosine schedule: total steps must be positive, got {}", total);
  MEL_CHECK(warmup >= 0 && warmup < total,
            "cosine schedule: warm-up steps must be in [0, total steps {}), got {}", total, warmup);
}

LrMomentum CosineLr::at(int64_t step) const {
  if (step < warmup_) return {lr_ * static_cast<double>(step + 1) / (warmup_ + 1), -1.0};
  const double t = std::min(1.0, static_cast<double>(step - warmup_) / (total_ - warmup_));
  return {min_lr_ + (lr_ - min_lr_) * 0.5 * (1.0 + std::cos(std::numbers::pi * t)), -1.0};
}

OneCycleLr::OneCycleLr(OneCycleOptions o) : o_(o) {
  MEL_CHECK(o.total_steps > 0, "onecycle schedule: total steps must be positive, got {}",
            o.total_steps);
  MEL_CHECK(o.pct_start > 0.0 && o.pct_start < 1.0,
            "onecycle schedule: pct_start must be in (0, 1), got {}", o.pct_start);
  MEL_CHECK(o.max_lr > 0.0, "onecycle schedule: max_lr must be positive, got {}", o.max_lr);
  MEL_CHECK(o.div_factor > 0.0 && o.final_div_factor > 0.0,
            "onecycle schedule: div_factor and final_div_factor must be positive");
}

LrMomentum OneCycleLr::at(int64_t step) const {
  // PyTorch: phase 1 ends at pct_start * total - 1, phase 2 at total - 1; pct is measured from
  // the previous phase's end step.
  const double initial = o_.max_lr / o_.div_factor;
  const double min_lr = initial / o_.final_div_factor;
  const double end1 = o_.pct_start * static_cast<double>(o_.total_steps) - 1.0;
  const double end2 = static_cast<double>(o_.total_steps) - 1.0;
  const double s = static_cast<double>(step);
  auto anneal = [&](double a, double b, double pct) {
    if (o_.cos) return b + (a - b) / 2.0 * (std::cos(std::numbers::pi * pct) + 1.0);
    return (b - a) * pct + a;
  };
  double lr, mom;
  if (s <= end1) {
    const double pct = s / end1;
    lr = anneal(initial, o_.max_lr, pct);
    mom = anneal(o_.max_momentum, o_.base_momentum, pct);
  } else {
    const double pct = (s - end1) / (end2 - end1);
    lr = anneal(o_.max_lr, min_lr, pct);
    mom = anneal(o_.base_momentum, o_.max_momentum, pct);
  }
  return {lr, o_.cycle_momentum ? mom : -1.0};
}

}  // namespace mel::nn
