#include "app/run_config.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>

namespace mel::app {

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
  c.log_every = r.get_int("log_every", c.log_every);
  if (c.log_every < 1) r.error("log_every", fmt::format("must be >= 1, got {}", c.log_every));
  if (c.label_smoothing < 0.0 || c.label_smoothing > 1.0) {
    r.error("label_smoothing", fmt::format("must be in [0, 1], got {}", c.label_smoothing));
  }
  if (r.has("failout")) {
    c.failout = r.raw("failout").is_array() ? r.get_numbers("failout")
                                            : std::vector<double>{r.get_number("failout")};
    if (c.failout.empty()) r.error("failout", "expected a probability or one per server");
    for (double p : c.failout) {
      if (!(p >= 0.0 && p < 1.0)) {
        r.error("failout", fmt::format("probabilities must be in [0, 1), got {}", p));
      }
    }
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

void apply_overrides(const RunOverrides& ov, TrainConfig& t, DataConfig& data, Json& json) {
  if (ov.epochs) t.epochs = *ov.epochs;
  if (ov.batch_size) t.batch_size = *ov.batch_size;
  if (ov.train_limit) t.train_limit = *ov.train_limit;
  if (ov.test_limit) t.test_limit = *ov.test_limit;
  if (ov.seed) t.seed = *ov.seed;
  if (!ov.data_dir.empty()) data.dir = ov.data_dir;
  MEL_CHECK(t.epochs >= 1, "--epochs must be >= 1, got {}", t.epochs);
  MEL_CHECK(t.batch_size >= 1, "--batch must be >= 1, got {}", t.batch_size);
  MEL_CHECK(t.train_limit >= 0 && t.test_limit >= 0, "--train-limit / --test-limit must be >= 0");
  // Recorded in the config stored with the run, so eval and resume see what was trained.
  Json& tj = json["train"];
  tj["epochs"] = t.epochs;
  tj["batch_size"] = t.batch_size;
  tj["seed"] = t.seed;
  if (t.train_limit) tj["train_limit"] = t.train_limit;
  if (t.test_limit) tj["test_limit"] = t.test_limit;
  if (!data.dir.empty()) json["data"]["dir"] = data.dir;
}

void read_common_sections(const JsonReader& top, RunConfigBase& c) {
  c.name = top.get_string("name", std::filesystem::path(c.path).stem().string());
  top.allow({"description"});
  const Json none = Json::object();
  c.data =
      read_data_config(top.has("data") ? top.object("data") : JsonReader(none, c.path, "data"));
  c.train =
      read_train_config(top.has("train") ? top.object("train") : JsonReader(none, c.path, "train"));
}

RunLoaders make_loaders(const RunData& ds, const DataConfig& dc, const TrainConfig& tc) {
  return {std::make_unique<data::DataLoader>(
              ds.train, loader_options(dc, tc.batch_size, tc.seed, true, tc.train_limit)),
          std::make_unique<data::DataLoader>(
              ds.test, loader_options(dc, tc.eval_batch_size, 0, false, tc.test_limit))};
}

RunData load_run_data(const DataConfig& dc) {
  return {data::load_dataset(dc.dataset, dc.dir, data::Split::train),
          data::load_dataset(dc.dataset, dc.dir, data::Split::test)};
}

train::RunOptions run_options(const std::string& name, const Json& config, Device device,
                              const TrainConfig& tc, const RunOverrides& ov,
                              const std::string& resume_dir) {
  train::RunOptions run;
  run.name = name;
  run.out = !resume_dir.empty() ? resume_dir : (ov.out.empty() ? "runs/" + name : ov.out);
  run.config_json = config.dump();
  run.device = device;
  run.train = tc;
  run.stop_after = ov.stop_after;
  run.progress = ov.progress;
  run.resume = !resume_dir.empty();
  return run;
}

data::LoaderOptions loader_options(const DataConfig& dc, int64_t batch, uint64_t seed, bool train,
                                   int64_t limit) {
  data::LoaderOptions o;
  o.batch_size = batch;
  o.shuffle = train;
  o.drop_last = false;
  o.seed = seed;
  o.limit = limit;
  o.mean = dc.mean;
  o.std = dc.std;
  o.crop_padding = train ? dc.crop_padding : 0;
  o.hflip = train && dc.hflip;
  o.prefetch = true;
  return o;
}

}  // namespace mel::app
