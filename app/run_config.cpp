#include "app/run_config.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>

#include "data/speech.h"

namespace mel::app {

int64_t DataConfig::num_classes() const {
  if (is_text()) {
    MEL_CHECK(!text.vocabulary.empty(), "text data: the vocabulary is not known yet");
    return data::Vocabulary::from_string(text.vocabulary, "data.text.vocabulary").size();
  }
  if (dataset == data::kSpokenWordsName) {
    return static_cast<int64_t>(
        data::spoken_word_classes(dir.empty() ? data::spoken_words_default_dir() : dir).size());
  }
  return dataset == "cifar100" ? 100 : 10;
}

data::ImageDataset load_split(const DataConfig& dc, data::Split split) {
  MEL_CHECK(!dc.is_text(),
            "a text corpus has no images or feature maps; text runs are evaluated with mel eval "
            "and generate with mel sample");
  return data::load_dataset(dc.dataset, dc.dir, split, dc.dataset_options());
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
  one_of(r, "dataset", c.dataset,
         {"fashion-mnist", "mnist", "cifar10", "cifar100", data::kSpokenWordsName, "text"});
  c.dir = r.get_string("dir", "");
  if (r.has("text")) {
    if (!c.is_text()) r.error("text", "only the text dataset has text options");
    JsonReader t = r.object("text");
    c.text.validation_fraction = t.get_number("validation_fraction", c.text.validation_fraction);
    if (!(c.text.validation_fraction > 0.0 && c.text.validation_fraction < 1.0)) {
      t.error("validation_fraction",
              fmt::format("must be in (0, 1), got {}", c.text.validation_fraction));
    }
    c.text_batches_per_epoch = t.get_int("batches_per_epoch", c.text_batches_per_epoch);
    if (c.text_batches_per_epoch < 1 || c.text_batches_per_epoch > (int64_t{1} << 30)) {
      t.error("batches_per_epoch",
              fmt::format("must be in [1, 2^30], got {}", c.text_batches_per_epoch));
    }
    c.text.vocabulary = t.get_string("vocabulary", "");
    if (t.has("vocabulary")) {
      try {
        data::Vocabulary::from_string(c.text.vocabulary, "the vocabulary");
      } catch (const Error& e) {
        t.error("vocabulary", e.what());
      }
    }
    t.finish();
  }
  const bool speech = c.dataset == data::kSpokenWordsName;
  if (r.has("features")) {
    if (!speech) r.error("features", "only the spoken-words dataset has a feature front end");
    JsonReader f = r.object("features");
    data::LogMelOptions& o = c.speech.features;
    o.sample_rate = f.get_int("sample_rate", o.sample_rate);
    o.n_fft = f.get_int("n_fft", o.n_fft);
    o.win_length = f.get_int("win_length", o.win_length);
    o.hop_length = f.get_int("hop_length", o.hop_length);
    o.n_mels = f.get_int("n_mels", o.n_mels);
    o.f_min = f.get_number("f_min", o.f_min);
    o.f_max = f.get_number("f_max", o.f_max);
    o.log_offset = f.get_number("log_offset", o.log_offset);
    o.window = f.get_string("window", o.window);
    c.speech.clip_samples = f.get_int("clip_samples", c.speech.clip_samples);
    c.speech.cache = f.get_bool("cache", c.speech.cache);
    f.finish();
    try {
      data::validate(o);
    } catch (const Error& e) {
      f.error("", e.what());
    }
    if (c.speech.clip_samples < o.win_length || c.speech.clip_samples > (int64_t{1} << 26)) {
      f.error("clip_samples", fmt::format("must be in [win_length = {}, 2^26], got {}",
                                          o.win_length, c.speech.clip_samples));
    }
  }
  if (r.has("spec_augment")) {
    JsonReader a = r.object("spec_augment");
    data::SpecAugment& sa = c.spec_augment;
    const auto count = [&](const char* key) {
      const int64_t v = a.get_int(key, 0);
      if (v < 0 || v > 1000) a.error(key, fmt::format("must be in [0, 1000], got {}", v));
      return v;
    };
    sa.freq_masks = count("freq_masks");
    sa.freq_width = count("freq_width");
    sa.time_masks = count("time_masks");
    sa.time_width = count("time_width");
    a.finish();
  }
  const int64_t channels = c.dataset.rfind("cifar", 0) == 0 ? 3 : 1;  // spoken words: 1 map
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
  if (speech && (c.crop_padding > 0 || c.hflip)) {
    r.error(c.hflip ? "hflip" : "crop_padding",
            "spoken-words features take no crop or flip (use spec_augment)");
  }
  r.finish();
  return c;
}

namespace {

int64_t int_in(const JsonReader& r, const std::string& key, int64_t fallback, int64_t lo,
               int64_t hi) {
  const int64_t v = r.get_int(key, fallback);
  if (v < lo || v > hi) r.error(key, fmt::format("must be in [{}, {}], got {}", lo, hi, v));
  return v;
}

// A finite number in [lo, hi], or (lo, hi] / [lo, hi) with an open end.
double number_in(const JsonReader& r, const std::string& key, double fallback, double lo, double hi,
                 bool open_low, bool open_high) {
  const double v = r.get_number(key, fallback);
  const bool ok =
      std::isfinite(v) && (open_low ? v > lo : v >= lo) && (open_high ? v < hi : v <= hi);
  if (!ok) {
    r.error(key, fmt::format("must be in {}{}, {}{}, got {}", open_low ? "(" : "[", lo, hi,
                             open_high ? ")" : "]", v));
  }
  return v;
}

}  // namespace

TrainConfig read_train_config(const JsonReader& r) {
  TrainConfig c;
  c.epochs = int_in(r, "epochs", c.epochs, 1, kMaxEpochs);
  c.batch_size = int_in(r, "batch_size", c.batch_size, 1, kMaxBatch);
  c.eval_batch_size = int_in(r, "eval_batch_size", c.eval_batch_size, 1, kMaxBatch);
  const int64_t seed = r.get_int("seed", 0);
  if (seed < 0) r.error("seed", "must be >= 0");
  c.seed = static_cast<uint64_t>(seed);
  c.train_limit = r.get_int("train_limit", 0);
  c.test_limit = r.get_int("test_limit", 0);
  if (c.train_limit < 0 || c.test_limit < 0) r.error("train_limit", "limits must be >= 0");
  c.clip_grad_norm = number_in(r, "clip_grad_norm", 0.0, 0.0, 1e12, false, false);
  c.label_smoothing = r.get_number("label_smoothing", 0.0);
  c.divergence_factor = r.get_number("divergence_factor", c.divergence_factor);
  if (!(c.divergence_factor == 0.0 ||
        (c.divergence_factor >= 1.0 && c.divergence_factor <= 1e12))) {
    r.error("divergence_factor",
            fmt::format("must be 0 (off) or in [1, 1e12], got {}", c.divergence_factor));
  }
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
    oc.lr = number_in(o, "lr", oc.lr, 0.0, 1e9, true, false);
    oc.weight_decay = number_in(o, "weight_decay", 0.0, 0.0, 1e3, false, false);
    oc.exclude_from_decay = o.get_string("exclude_from_decay", oc.exclude_from_decay);
    one_of(o, "exclude_from_decay", oc.exclude_from_decay, {"none", "norms_and_biases"});
    if (oc.type == "sgd") {
      oc.momentum = number_in(o, "momentum", 0.0, 0.0, 1.0, false, true);
      oc.dampening = number_in(o, "dampening", 0.0, 0.0, 1.0, false, false);
      oc.nesterov = o.get_bool("nesterov", false);
    } else {
      if (o.has("betas")) {
        auto b = o.get_numbers("betas");
        if (b.size() != 2) o.error("betas", "expected two numbers [beta1, beta2]");
        for (double v : b) {
          if (!(v >= 0.0 && v < 1.0)) {
            o.error("betas", fmt::format("each beta must be in [0, 1), got {}", v));
          }
        }
        oc.beta1 = b[0];
        oc.beta2 = b[1];
      }
      oc.eps = number_in(o, "eps", oc.eps, 0.0, 1.0, true, false);
    }
    o.finish();
  }
  if (r.has("schedule")) {
    JsonReader s = r.object("schedule");
    auto& sc = c.schedule;
    sc.type = s.get_string("type", sc.type);
    one_of(s, "type", sc.type, {"constant", "step", "cosine", "onecycle"});
    if (sc.type == "onecycle") {
      sc.max_lr = number_in(s, "max_lr", 0.0, 0.0, 1e9, false, false);
      sc.pct_start = s.get_number("pct_start", sc.pct_start);
      sc.div_factor = number_in(s, "div_factor", sc.div_factor, 0.0, 1e12, true, false);
      sc.final_div_factor =
          number_in(s, "final_div_factor", sc.final_div_factor, 0.0, 1e12, true, false);
      sc.cycle_momentum = s.get_bool("cycle_momentum", true);
      sc.base_momentum = number_in(s, "base_momentum", sc.base_momentum, 0.0, 1.0, false, true);
      sc.max_momentum = number_in(s, "max_momentum", sc.max_momentum, 0.0, 1.0, false, true);
      sc.anneal = s.get_string("anneal", "cos");
      one_of(s, "anneal", sc.anneal, {"cos", "linear"});
      if (sc.pct_start <= 0.0 || sc.pct_start >= 1.0) {
        s.error("pct_start", fmt::format("must be in (0, 1), got {}", sc.pct_start));
      }
    } else if (sc.type == "step") {
      sc.step_epochs = s.get_number("step_epochs");
      sc.gamma = number_in(s, "gamma", sc.gamma, 0.0, 1e3, true, false);
      if (!(sc.step_epochs > 0.0 && sc.step_epochs <= kMaxEpochs)) {
        s.error("step_epochs",
                fmt::format("must be in (0, {}], got {}", kMaxEpochs, sc.step_epochs));
      }
    } else if (sc.type == "cosine") {
      sc.warmup_epochs = number_in(s, "warmup_epochs", 0.0, 0.0, kMaxEpochs, false, false);
      sc.min_lr = number_in(s, "min_lr", 0.0, 0.0, 1e9, false, false);
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
  MEL_CHECK(t.epochs >= 1 && t.epochs <= kMaxEpochs, "--epochs must be in [1, {}], got {}",
            kMaxEpochs, t.epochs);
  MEL_CHECK(t.batch_size >= 1 && t.batch_size <= kMaxBatch, "--batch must be in [1, {}], got {}",
            kMaxBatch, t.batch_size);
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
  if (c.data.dataset == data::kSpokenWordsName) {
    // The front end as trained, every field spelled out, stored with the run: a later default
    // change cannot alter what an evaluation of this run computes.
    const data::LogMelOptions& o = c.data.speech.features;
    c.json["data"]["features"] = Json{{"sample_rate", o.sample_rate},
                                      {"n_fft", o.n_fft},
                                      {"win_length", o.win_length},
                                      {"hop_length", o.hop_length},
                                      {"n_mels", o.n_mels},
                                      {"f_min", o.f_min},
                                      {"f_max", o.f_max},
                                      {"log_offset", o.log_offset},
                                      {"window", o.window},
                                      {"clip_samples", c.data.speech.clip_samples},
                                      {"cache", c.data.speech.cache}};
  }
}

namespace {
// Replaces every "vocab": "data" under `j` by `v`.
void substitute_vocab(Json& j, int64_t v) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "vocab" && it.value().is_string() && it.value() == "data") {
        it.value() = v;
      } else {
        substitute_vocab(it.value(), v);
      }
    }
  } else if (j.is_array()) {
    for (auto& x : j) substitute_vocab(x, v);
  }
}
}  // namespace

std::string text_dir(const DataConfig& dc) {
  return dc.dir.empty() ? data::text_corpus_default_dir() : dc.dir;
}

void resolve_text_config(RunConfigBase& c, const RunOverrides& ov) {
  if (!c.data.is_text()) return;
  if (c.data.text.vocabulary.empty()) {
    DataConfig dc = c.data;
    if (!ov.data_dir.empty()) dc.dir = ov.data_dir;
    c.data.text.vocabulary = data::load_text_data(text_dir(dc), dc.text).vocab.to_string();
  }
  c.json["data"]["text"] = Json{{"validation_fraction", c.data.text.validation_fraction},
                                {"batches_per_epoch", c.data.text_batches_per_epoch},
                                {"vocabulary", c.data.text.vocabulary}};
  const int64_t v = c.data.num_classes();
  for (const char* key : {"model", "ensemble"}) {
    if (c.json.contains(key)) substitute_vocab(c.json[key], v);
  }
}

RunLoaders make_loaders(const RunData& ds, const DataConfig& dc, const TrainConfig& tc) {
  return {std::make_unique<data::DataLoader>(
              ds.train, loader_options(dc, tc.batch_size, tc.seed, true, tc.train_limit)),
          std::make_unique<data::DataLoader>(
              ds.test, loader_options(dc, tc.eval_batch_size, 0, false, tc.test_limit))};
}

std::vector<std::pair<std::string, Json>> model_inputs(const Json& config) {
  std::vector<std::pair<std::string, Json>> inputs;
  if (config.contains("model")) {
    inputs.emplace_back("model.input", config["model"].value("input", Json()));
  } else if (config.contains("ensemble")) {
    const Json& up = config["ensemble"].value("upstream", Json());
    if (up.is_array()) {
      for (size_t i = 0; i < up.size(); ++i) {
        inputs.emplace_back(fmt::format("ensemble.upstream[{}].input", i),
                            up[i].value("input", Json()));
      }
    } else {
      inputs.emplace_back("ensemble.upstream.input", up.value("input", Json()));
    }
  }
  return inputs;
}

RunData load_run_data(const RunConfigBase& c) {
  RunData ds = load_run_data(c.data);
  const Shape image(ds.train.images.shape().begin() + 1, ds.train.images.shape().end());
  for (const auto& [key, in] : model_inputs(c.json)) {
    if (!in.is_array()) continue;
    const Shape want(in.begin(), in.end());
    MEL_CHECK(want == image,
              "{}: {} is {}, but the {} images are {}{}: the data does not fit the model", c.path,
              key, shape_str(want), c.data.dataset, shape_str(image),
              c.data.dir.empty() ? "" : fmt::format(" (in {})", c.data.dir));
  }
  return ds;
}

RunData load_run_data(const DataConfig& dc) {
  return {load_split(dc, data::Split::train), load_split(dc, data::Split::test)};
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
  if (train) o.spec_augment = dc.spec_augment;
  o.prefetch = true;
  return o;
}

}  // namespace mel::app
