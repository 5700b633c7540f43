#include "mel/run_config.h"

#include <fmt/format.h>

#include <cmath>

namespace mel::app {

Device run_device(const std::string& spec, const char* command) {
  const Device device = Device::parse(spec);
  try {
    check_device_available(device);
  } catch (const Error& e) {
    fail("{}: --device {}: {}", command, spec, e.what());
  }
  return device;
}

int64_t DataConfig::num_classes() const {
  return dataset == "cifar100" ? 100 : 10;
}

namespace {
void one_of(const JsonReader& r, const std::string& key, const std::string& value,
            const std::vector<std::string>& allowed) {
  for (const auto& a : allowed) {
    if (a == value) return;
  }
  const std::string close = closest_match(value, allowed);
  r.error(key,
          fmt::format("unknown value '{}' (expected one of: {}{})", value, fmt::join(allowed, ", "),
                      close.empty() ? "" : fmt::format("; did you mean '{}'?", close)));
}
}  // namespace

DataConfig read_data_config(const JsonReader& r) {
  DataConfig c;
  c.dataset = r.get_string("dataset", c.dataset);
  one_of(r, "dataset", c.dataset, {"fashion-mnist", "mnist", "cifar10", "cifar100"});
  c.dir = r.get_string("dir", "");
  const int64_t channels = c.dataset.rfind("cifar", 0) == 0 ? 3 : 1;
  if (r.has("mean") || r.has("std")) {
    for (double v : r.get_numbers("mean")) c.mean.push_back(static_cast<float>(v));
    for (double v : r.get_numbers("std")) {
      if (v <= 0.0) r.error("std", fmt::format("must be positive, got {}", v));
      c.std.push_back(static_cast<float>(v));
    }
    if (static_cast<int64_t>(c.mean.size()) != channels ||
        static_cast<int64_t>(c.std.size()) != channels) {
      r.error("mean", fmt::format("mean and std need one value per channel ({} for {}), got {} "
                                  "and {}",
                                  channels, c.dataset, c.mean.size(), c.std.size()));
    }
  }
  c.crop_padding = r.get_int("crop_padding", 0);
  if (c.crop_padding < 0) r.error("crop_padding", "must be >= 0");
  c.hflip = r.get_bool("hflip", false);
  r.finish();
  return c;
}

TrainConfig read_train_config(const JsonReader& r) {
  TrainConfig c;
  c.epochs = r.get_int("epochs", c.epochs);
  if (c.epochs < 1) r.error("epochs", fmt::format("must be >= 1, got {}", c.epochs));
  c.batch_size = r.get_int("batch_size", c.batch_size);
  if (c.batch_size < 1) r.error("batch_size", fmt::format("must be >= 1, got {}", c.batch_size));
  c.eval_batch_size = r.get_int("eval_batch_size", c.eval_batch_size);
  if (c.eval_batch_size < 1) r.error("eval_batch_size", "must be >= 1");
  const int64_t seed = r.get_int("seed", 0);
  if (seed < 0) r.error("seed", "must be >= 0");
  c.seed = static_cast<uint64_t>(seed);
  c.train_limit = r.get_int("train_limit", 0);
  c.test_limit = r.get_int("test_limit", 0);
  if (c.train_limit < 0 || c.test_limit < 0) r.error("train_limit", "limits must be >= 0");
  c.clip_grad_norm = r.get_number("clip_grad_norm", 0.0);
  if (c.clip_grad_norm < 0.0) r.error("clip_grad_norm", "must be >= 0 (0 turns it off)");
  c.label_smoothing = r.get_number("label_smoothing", 0.0);
  if (c.label_smoothing < 0.0 || c.label_smoothing > 1.0) {
    r.error("label_smoothing", fmt::format("must be in [0, 1], got {}", c.label_smoothing));
  }
  if (r.has("optimizer")) {
    JsonReader o = r.object("optimizer");
    auto& oc = c.optimizer;
    oc.type = o.get_string("type", oc.type);
    one_of(o, "type", oc.type, {"sgd", "adam", "adamw"});
    oc.lr = o.get_number("lr", oc.lr);
    if (!(oc.lr > 0.0)) o.error("lr", fmt::format("must be positive, got {}", oc.lr));
    oc.weight_decay = o.get_number("weight_decay", 0.0);
    if (oc.type == "sgd") {
      oc.momentum = o.get_number("momentum", 0.0);
      oc.dampening = o.get_number("dampening", 0.0);
      oc.nesterov = o.get_bool("nesterov", false);
    } else {
      if (o.has("betas")) {
        auto b = o.get_numbers("betas");
        if (b.size() != 2) o.error("betas", "expected two numbers [beta1, beta2]");
        oc.beta1 = b[0];
        oc.beta2 = b[1];
      }
      oc.eps = o.get_number("eps", oc.eps);
    }
    o.finish();
  }
  if (r.has("schedule")) {
    JsonReader s = r.object("schedule");
    auto& sc = c.schedule;
    sc.type = s.get_string("type", sc.type);
    one_of(s, "type", sc.type, {"constant", "step", "cosine", "onecycle"});
    if (sc.type == "onecycle") {
      sc.max_lr = s.get_number("max_lr", 0.0);
      sc.pct_start = s.get_number("pct_start", sc.pct_start);
      sc.div_factor = s.get_number("div_factor", sc.div_factor);
      sc.final_div_factor = s.get_number("final_div_factor", sc.final_div_factor);
      sc.cycle_momentum = s.get_bool("cycle_momentum", true);
      sc.base_momentum = s.get_number("base_momentum", sc.base_momentum);
      sc.max_momentum = s.get_number("max_momentum", sc.max_momentum);
      sc.anneal = s.get_string("anneal", "cos");
      one_of(s, "anneal", sc.anneal, {"cos", "linear"});
      if (sc.pct_start <= 0.0 || sc.pct_start >= 1.0) {
        s.error("pct_start", fmt::format("must be in (0, 1), got {}", sc.pct_start));
      }
    } else if (sc.type == "step") {
      sc.step_epochs = s.get_number("step_epochs");
      sc.gamma = s.get_number("gamma", sc.gamma);
      if (sc.step_epochs <= 0.0) s.error("step_epochs", "must be positive");
    } else if (sc.type == "cosine") {
      sc.warmup_epochs = s.get_number("warmup_epochs", 0.0);
      sc.min_lr = s.get_number("min_lr", 0.0);
      if (sc.warmup_epochs < 0.0) s.error("warmup_epochs", "must be >= 0");
    }
    s.finish();
  }
  r.finish();
  return c;
}

std::unique_ptr<nn::Optimizer> make_optimizer(const OptimizerConfig& c, nn::FlatParameters& p) {
  if (c.type == "sgd") {
    return std::make_unique<nn::Sgd>(
        p, nn::SgdOptions{c.momentum, c.dampening, c.weight_decay, c.nesterov});
  }
  return std::make_unique<nn::Adam>(
      p, nn::AdamOptions{c.beta1, c.beta2, c.eps, c.weight_decay, c.type == "adamw"});
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

}  // namespace mel::app
