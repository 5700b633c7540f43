#include "app/ensemble_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "app/single.h"
#include "mel/failure.h"
#include "nn/registry.h"
#include "nn/transformer.h"

namespace mel::app {

using method::HeadKind;

namespace {

// An ensemble is a handful of servers; "all" subsets is 2^M - M - 1 heads.
constexpr int64_t kMaxModels = 16;
constexpr int kMaxAllSubsetsModels = 10;

const std::vector<std::string> kBaselines = {"joint", "independent", "combination_only"};

method::Baseline read_baseline(const JsonReader& top) {
  const std::string b = top.get_string("baseline", "joint");
  for (size_t i = 0; i < kBaselines.size(); ++i) {
    if (b == kBaselines[i]) return static_cast<method::Baseline>(i);
  }
  const std::string close = closest_match(b, kBaselines);
  top.error("baseline",
            fmt::format("unknown baseline '{}' (expected joint, independent or "
                        "combination_only{})",
                        b, close.empty() ? "" : fmt::format("; did you mean '{}'?", close)));
}

method::LossSpec read_loss(const JsonReader& ens, int M, int64_t num_classes,
                           const DataConfig& data) {
  method::LossSpec l;
  l.size_weights.assign(static_cast<size_t>(M) + 1, 1.0);
  if (!ens.has("loss")) return l;
  JsonReader r = ens.object("loss");
  if (r.has("size_weights")) {
    // Keys are subset sizes; checked against M once the ensemble is built.
    JsonReader w = r.object("size_weights");
    for (auto it = w.json().begin(); it != w.json().end(); ++it) {
      const std::string& key = it.key();
      size_t pos = 0;
      int s = 0;
      try {
        s = std::stoi(key, &pos);
      } catch (const std::logic_error&) {
        pos = 0;
      }
      if (pos != key.size() || s < 1) {
        w.error(key, "keys are subset sizes 1, 2, ... (\"1\" weighs the exits)");
      }
      if (s > M) {
        w.error(key,
                fmt::format("a subset of size {} needs at least {} models; the ensemble has {}", s,
                            s, M));
      }
      const double v = w.get_number(key);
      if (v < 0) w.error(key, "loss weights must be >= 0");
      l.size_weights[static_cast<size_t>(s)] = v;
    }
  }
  if (r.has("diversity")) {
    JsonReader d = r.object("diversity");
    l.diversity_weight = d.get_number("weight", 0.0);
    l.diversity_margin = d.get_number("margin", 1.0);
    if (l.diversity_weight < 0) d.error("weight", "must be >= 0");
    d.finish();
  }
  l.hierarchical = r.get_bool("hierarchical", false);
  if (r.has("coarse_map")) {
    l.coarse_map = r.get_ints("coarse_map");
    if (static_cast<int64_t>(l.coarse_map.size()) != num_classes) {
      r.error("coarse_map",
              fmt::format(
                  "maps {} classes but the dataset has {}; class {} has no coarse label",
                  l.coarse_map.size(), num_classes,
                  std::min<int64_t>(static_cast<int64_t>(l.coarse_map.size()), num_classes - 1)));
    }
    for (size_t i = 0; i < l.coarse_map.size(); ++i) {
      if (l.coarse_map[i] < 0) {
        r.error("coarse_map",
                fmt::format("class {} maps to {} (must be >= 0)", i, l.coarse_map[i]));
      }
    }
    if (!l.hierarchical) r.error("coarse_map", "given but \"hierarchical\" is not true");
  }
  if (l.hierarchical && l.coarse_map.empty() && data.dataset != "cifar100") {
    r.error("hierarchical", fmt::format("hierarchical labels need a \"coarse_map\" or a dataset "
                                        "with coarse labels (cifar100), and {} has none",
                                        data.dataset));
  }
  r.finish();
  return l;
}

int64_t coarse_classes(const method::LossSpec& l) {
  if (!l.hierarchical) return 0;
  if (l.coarse_map.empty()) return 20;  // CIFAR-100 super-classes
  int64_t mx = 0;
  for (int64_t v : l.coarse_map) mx = std::max(mx, v);
  return mx + 1;
}

method::PhaseSpec read_phase2(const JsonReader& top, const TrainConfig& t) {
  method::PhaseSpec p;
  p.optimizer = t.optimizer;
  p.schedule = t.schedule;
  if (!top.has("phase2")) return p;
  JsonReader r = top.object("phase2");
  // The same keys as "train" (optimizer, schedule) plus epochs.
  Json tj = Json::object();
  for (auto it = r.json().begin(); it != r.json().end(); ++it) tj[it.key()] = it.value();
  JsonReader tr(tj, r.source(), r.path());
  TrainConfig t2 = read_train_config(tr);
  p.epochs = r.json().contains("epochs") ? t2.epochs : 0;
  if (r.json().contains("optimizer")) p.optimizer = t2.optimizer;
  if (r.json().contains("schedule")) p.schedule = t2.schedule;
  return p;
}

HeadKind parse_head_kind(const JsonReader& r, const std::string& s) {
  if (s == "linear") return HeadKind::linear;
  if (s == "mlp") return HeadKind::mlp;
  if (s == "conv") return HeadKind::conv;
  const std::string close = closest_match(s, {"linear", "mlp", "conv"});
  r.error("type", fmt::format("unknown head type '{}' (expected linear, mlp or conv{})", s,
                              close.empty() ? "" : fmt::format("; did you mean '{}'?", close)));
}

std::shared_ptr<method::Upstream> build_upstream(const JsonReader& r, int index,
                                                 int64_t exit_classes) {
  const std::vector<int64_t> input = r.get_ints("input");
  if (input.empty() || input.size() > 3) {
    r.error("input", fmt::format("expected [C, H, W], [C, L] or [F], got {} dims", input.size()));
  }
  for (int64_t v : input) {
    if (v <= 0 || v > (int64_t{1} << 24)) {
      r.error("input", fmt::format("sizes must be in [1, {}], got {}", int64_t{1} << 24, v));
    }
  }
  Shape shape(input.begin(), input.end());
  auto full = nn::build_layers(r, "backbone", shape);
  const int64_t n = static_cast<int64_t>(full->size());
  const int64_t cut = r.get_int("cut", n);
  if (cut < 1 || cut > n) {
    r.error("cut", fmt::format("cut point {} is beyond the backbone of upstream {} ({} layers; "
                               "expected 1..{})",
                               cut, index + 1, n, n));
  }
  // Rebuild the kept prefix so that the feature shape is the one at the cut.
  Shape feat(input.begin(), input.end());
  Json prefix = Json::array();
  for (int64_t i = 0; i < cut; ++i) prefix.push_back(r.raw("backbone")[static_cast<size_t>(i)]);
  Json holder = {{"backbone", prefix}};
  JsonReader hr(holder, r.source(), r.path());
  auto backbone = nn::build_layers(hr, "backbone", feat);
  Shape exit_shape = feat;
  auto exit = nn::build_layers(r, "exit", exit_shape);
  r.finish();
  if (exit_shape.size() != 1 || exit_shape[0] != exit_classes) {
    r.error("exit", fmt::format("the exit of upstream {} must end in {} outputs, but it produces "
                                "{} per sample",
                                index + 1, exit_classes, shape_str(exit_shape)));
  }
  auto up = std::make_shared<method::Upstream>(backbone, exit, feat);
  nn::bind_tied_weights(*up, fmt::format("{}: upstream {}", r.source(), index + 1));
  return up;
}

std::vector<std::vector<int>> read_subsets(const JsonReader& r, int M) {
  if (!r.has("subsets") || (r.raw("subsets").is_string() && r.get_string("subsets") == "all")) {
    if (M > kMaxAllSubsetsModels) {
      r.error("subsets",
              fmt::format("\"all\" with {} models means {} heads; with more than {} models list "
                          "the subsets",
                          M, (int64_t{1} << M) - M - 1, kMaxAllSubsetsModels));
    }
    return method::all_subsets(M, 2);
  }
  const Json& j = r.raw("subsets");
  if (!j.is_array() || j.empty()) {
    r.error("subsets", "expected \"all\" or a list of subsets like [[1, 2], [1, 2, 3]]");
  }
  std::vector<std::vector<int>> out;
  std::set<std::vector<int>> seen;
  for (const auto& s : j) {
    if (!s.is_array()) {
      r.error("subsets", fmt::format("expected a list of model numbers, got {}", s.dump()));
    }
    std::vector<int> sub;
    for (const auto& v : s) {
      if (!v.is_number_integer() || v.get<int>() < 1 || v.get<int>() > M) {
        r.error("subsets", fmt::format("subset {} names model {}, but the ensemble has models "
                                       "1..{}",
                                       s.dump(), v.dump(), M));
      }
      sub.push_back(v.get<int>() - 1);
    }
    std::sort(sub.begin(), sub.end());
    if (std::adjacent_find(sub.begin(), sub.end()) != sub.end() || sub.size() < 2) {
      r.error("subsets",
              fmt::format("subset {} must name at least two different models", s.dump()));
    }
    if (!seen.insert(sub).second) {
      r.error("subsets", fmt::format("subset {} is listed twice", s.dump()));
    }
    out.push_back(sub);
  }
  return out;
}

// The "heads" object: type, subsets and the type's own options.
method::HeadSpec read_heads(const JsonReader& h, int M) {
  method::HeadSpec spec;
  spec.kind = parse_head_kind(h, h.get_string("type", "linear"));
  spec.subsets = read_subsets(h, M);
  if (spec.kind == HeadKind::mlp) spec.hidden = h.get_int("hidden", 256);
  if (spec.kind == HeadKind::conv) spec.channels = h.get_int("channels", 128);
  if (spec.kind != HeadKind::linear) spec.activation = h.get_string("activation", "relu");
  if (spec.kind != HeadKind::conv) spec.norm = h.get_bool("norm", false);
  if (spec.hidden < 1) h.error("hidden", "must be positive");
  if (spec.channels < 1) h.error("channels", "must be positive");
  try {
    nn::find_activation(spec.activation);
  } catch (const Error& e) {
    h.error("activation", e.what());
  }
  return spec;
}

std::vector<std::shared_ptr<method::Upstream>> read_upstreams(const JsonReader& r,
                                                              int64_t exit_classes) {
  std::vector<std::shared_ptr<method::Upstream>> ups;
  if (r.raw("upstream").is_object()) {
    // One spec for all M models.
    const int64_t M = r.get_int("models");
    if (M < 2 || M > kMaxModels) {
      r.error("models", fmt::format("must be in [2, {}] (an ensemble of 2 or more models, one per "
                                    "server), got {}",
                                    kMaxModels, M));
    }
    for (int64_t i = 0; i < M; ++i) {
      ups.push_back(build_upstream(r.object("upstream"), static_cast<int>(i), exit_classes));
    }
    return ups;
  }
  auto list = r.objects("upstream");
  if (list.size() < 2 || list.size() > static_cast<size_t>(kMaxModels)) {
    r.error("upstream",
            fmt::format("an ensemble needs 2 to {} models, got {}", kMaxModels, list.size()));
  }
  if (r.has("models") && r.get_int("models") != static_cast<int64_t>(list.size())) {
    r.error("models", fmt::format("says {} but 'upstream' lists {} models", r.get_int("models"),
                                  list.size()));
  }
  for (size_t i = 0; i < list.size(); ++i) {
    ups.push_back(build_upstream(list[i], static_cast<int>(i), exit_classes));
  }
  return ups;
}

}  // namespace

std::shared_ptr<method::Ensemble> build_ensemble(const JsonReader& r, int64_t num_classes,
                                                 int64_t exit_classes) {
  auto ups = read_upstreams(r, exit_classes);
  const int M = static_cast<int>(ups.size());
  const Json no_heads = Json::object();  // outlives the reader that points at it
  const JsonReader h =
      r.has("heads") ? r.object("heads") : JsonReader(no_heads, r.source(), r.path() + ".heads");
  const method::HeadSpec heads = read_heads(h, M);
  std::shared_ptr<method::Ensemble> ensemble;
  try {
    ensemble = method::build_ensemble(std::move(ups), heads, num_classes, exit_classes);
  } catch (const Error& e) {
    h.error("type", e.what());
  }
  h.finish();
  r.allow({"loss"});
  r.finish();
  return ensemble;
}

bool is_mel_config(const Json& json) {
  return json.is_object() && json.contains("kind") && json["kind"] == "mel";
}

MelConfig parse_mel_config(Json json, const std::string& path, const RunOverrides& ov) {
  MelConfig c;
  c.path = path;
  c.json = std::move(json);
  JsonReader top(c.json, path, "");
  if (top.get_string("kind") != "mel") top.error("kind", "expected \"mel\"");
  read_common_sections(top, c);
  resolve_text_config(c, ov);
  c.baseline = read_baseline(top);
  c.phase2 = read_phase2(top, c.train);
  if (c.baseline == method::Baseline::independent && c.phase2.epochs == 0) {
    c.phase2.epochs = c.train.epochs;
  }
  JsonReader ens = top.object("ensemble");
  const int64_t num_classes = c.data.num_classes();
  // Build once to validate (and to learn M for the loss weights).
  {
    const Json& u = ens.raw("upstream");
    int M = u.is_array()
                ? static_cast<int>(u.size())
                : static_cast<int>(ens.has("models") && ens.raw("models").is_number_integer()
                                       ? ens.get_int("models")
                                       : 0);
    if (M < 2) {
      build_ensemble(ens, num_classes, num_classes);  // reports the model count
    }
    c.loss = read_loss(ens, M, num_classes, c.data);
    const size_t n = c.train.failout.size();
    if (n > 1 && n != static_cast<size_t>(M)) {
      top.object("train").error(
          "failout", fmt::format("has {} probabilities for {} upstream servers (give one for all, "
                                 "or one per server)",
                                 n, M));
    }
    if (n == 1) c.train.failout.assign(static_cast<size_t>(M), c.train.failout[0]);
  }
  c.exit_classes = c.loss.hierarchical ? coarse_classes(c.loss) : num_classes;
  build_ensemble(ens, num_classes, c.exit_classes);
  if (top.has("original_params")) c.original_params = top.get_int("original_params");
  if (top.has("original")) {
    const std::string rel = top.get_string("original");
    const std::string orig = (std::filesystem::path(path).parent_path() / rel).string();
    RunOverrides oo;  // a text original reads the same corpus
    if (c.data.is_text()) oo.data_dir = ov.data_dir.empty() ? c.data.dir : ov.data_dir;
    SingleConfig oc = load_single_config(orig, oo);
    c.original_params = build_model(oc)->num_parameters();
  }
  top.finish();
  if (c.json.contains("original")) {
    // The stored config must stand alone (eval, resume and export read it from a checkpoint),
    // so the original model's file reference becomes its parameter count.
    c.json.erase("original");
    c.json["original_params"] = c.original_params;
  }
  apply_overrides(ov, c.train, c.data, c.json);
  return c;
}

std::shared_ptr<method::Ensemble> build_ensemble_model(const MelConfig& c) {
  JsonReader top(c.json, c.path, "");
  return build_ensemble(top.object("ensemble"), c.data.num_classes(), c.exit_classes);
}

method::MelSpec mel_spec(const MelConfig& c, Device device) {
  method::MelSpec s;
  s.loss = c.loss;
  s.loss.label_smoothing = c.train.label_smoothing;
  s.baseline = c.baseline;
  s.phase1 = {c.train.epochs, c.train.optimizer, c.train.schedule};
  s.phase2 = c.phase2;
  s.batch_size = c.train.batch_size;
  s.device = device;
  s.failout = {c.train.failout, c.train.seed};
  return s;
}

}  // namespace mel::app
