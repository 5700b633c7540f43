#include "train/config.h"

#include <algorithm>
#include <cmath>

namespace mel::train {

std::unique_ptr<nn::Optimizer> make_optimizer(const OptimizerConfig& c, nn::FlatParameters& p) {
  std::unique_ptr<nn::Optimizer> opt;
  if (c.type == "sgd") {
    opt = std::make_unique<nn::Sgd>(
        p, nn::SgdOptions{c.momentum, c.dampening, c.weight_decay, c.nesterov});
  } else {
    opt = std::make_unique<nn::Adam>(
        p, nn::AdamOptions{c.beta1, c.beta2, c.eps, c.weight_decay, c.type == "adamw"});
  }
  MEL_CHECK(c.exclude_from_decay == "none" || c.exclude_from_decay == "norms_and_biases",
            "optimizer: unknown exclude_from_decay '{}' (expected none or norms_and_biases)",
            c.exclude_from_decay);
  if (c.exclude_from_decay == "norms_and_biases") {
    std::vector<bool> decay;
    for (const auto& e : p.entries()) decay.push_back(e.param.dim() >= 2);
    opt->set_decay(std::move(decay));
  }
  return opt;
}

std::unique_ptr<nn::LrSchedule> make_schedule(const ScheduleConfig& s, const OptimizerConfig& o,
                                              int64_t steps_per_epoch, int64_t epochs) {
  const int64_t total = steps_per_epoch * epochs;
  if (s.type == "onecycle") {
    nn::OneCycleOptions oc;
    oc.max_lr = s.max_lr > 0.0 ? s.max_lr : o.lr;
    oc.total_steps = total;
    oc.pct_start = s.pct_start;
    oc.div_factor = s.div_factor;
    oc.final_div_factor = s.final_div_factor;
    oc.cos = s.anneal == "cos";
    // SGD without momentum has nothing to cycle (PyTorch refuses; we just keep it off).
    oc.cycle_momentum = s.cycle_momentum && !(o.type == "sgd" && o.momentum == 0.0);
    oc.base_momentum = s.base_momentum;
    oc.max_momentum = s.max_momentum;
    return std::make_unique<nn::OneCycleLr>(oc);
  }
  if (s.type == "step") {
    const auto step = std::max<int64_t>(
        1,
        static_cast<int64_t>(std::llround(s.step_epochs * static_cast<double>(steps_per_epoch))));
    return std::make_unique<nn::StepLr>(o.lr, step, s.gamma);
  }
  if (s.type == "cosine") {
    const auto warm =
        static_cast<int64_t>(std::llround(s.warmup_epochs * static_cast<double>(steps_per_epoch)));
    return std::make_unique<nn::CosineLr>(o.lr, total, std::min(warm, total - 1), s.min_lr);
  }
  return std::make_unique<nn::ConstantLr>(o.lr);
}

}  // namespace mel::train
