#include "mel/train_mel.h"

#include <fmt/format.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/cuda_context.h"
#include "core/ops_reduce.h"
#include "core/safetensors.h"
#include "data/loader.h"
#include "mel/chart.h"
#include "mel/checkpoint.h"
#include "mel/failure.h"
#include "mel/files.h"
#include "mel/joint_loss.h"
#include "mel/progress.h"

namespace mel::app {

namespace {

using Clock = std::chrono::steady_clock;

const std::vector<std::string> kBaselines = {"joint", "independent", "combination_only"};

LossConfig read_loss(const JsonReader& ens, int M, int64_t num_classes, const DataConfig& data) {
  LossConfig l;
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

int64_t coarse_classes(const LossConfig& l) {
  if (!l.hierarchical) return 0;
  if (l.coarse_map.empty()) return 20;  // CIFAR-100 super-classes
  int64_t mx = 0;
  for (int64_t v : l.coarse_map) mx = std::max(mx, v);
  return mx + 1;
}

PhaseConfig read_phase2(const JsonReader& top, const TrainConfig& t) {
  PhaseConfig p;
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

// Coarse labels for a batch: the dataset's own, or the fine labels mapped.
Tensor coarse_of(const data::Batch& b, const LossConfig& l) {
  if (!l.hierarchical) return Tensor();
  if (l.coarse_map.empty()) return b.y_coarse;
  Tensor out = empty({b.y.numel()}, DType::i64);
  const int64_t* y = b.y.data<int64_t>();
  int64_t* o = out.data<int64_t>();
  for (int64_t i = 0; i < b.y.numel(); ++i) o[i] = l.coarse_map[static_cast<size_t>(y[i])];
  return out;
}

enum class Phase { joint, exits_only, heads_only };

JointLossOptions loss_options(const MelConfig& c, const Ensemble& m, Phase phase) {
  JointLossOptions o;
  const int M = m.spec.M;
  for (int i = 0; i < M; ++i) {
    double w = c.loss.size_weights[1];
    if (phase == Phase::heads_only || c.baseline == "combination_only") w = 0.0;
    o.weights.push_back(w);
    o.coarse.push_back(c.loss.hierarchical);
  }
  for (const auto& s : m.spec.head_subsets) {
    o.weights.push_back(phase == Phase::exits_only ? 0.0 : c.loss.size_weights[s.size()]);
    o.coarse.push_back(false);
  }
  o.label_smoothing = c.train.label_smoothing;
  if (c.loss.diversity_weight > 0 && phase != Phase::heads_only) {
    o.diversity_weight = c.loss.diversity_weight;
    o.diversity_margin = c.loss.diversity_margin;
    for (int i = 0; i < M; ++i) {
      for (int j = i + 1; j < M; ++j) o.diversity_pairs.emplace_back(i, j);
    }
  }
  return o;
}

std::vector<int64_t> correct_counts(const std::vector<Tensor>& logits, const Tensor& y,
                                    const Tensor& yc, int M) {
  std::vector<int64_t> out;
  for (size_t k = 0; k < logits.size(); ++k) {
    const Tensor& labels = (static_cast<int>(k) < M && yc.defined()) ? yc : y;
    out.push_back(count_correct(logits[k], labels));
  }
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Json params_json(const Ensemble& m, int64_t original) {
  Json servers = Json::object();
  for (int i = 0; i < m.spec.M; ++i) servers[std::to_string(i + 1)] = m.upstream_parameters(i);
  servers["C"] = m.head_parameters();
  Json p = {{"total", m.num_parameters()}, {"servers", servers}};
  if (original > 0) {
    p["original"] = original;
    p["fraction_of_original"] =
        static_cast<double>(m.num_parameters()) / static_cast<double>(original);
  }
  return p;
}

Json accuracy_json(const EnsembleEval& e) {
  Json a = Json::object();
  for (size_t k = 0; k < e.names.size(); ++k) a[e.names[k]] = e.accuracy[k];
  return a;
}

FailureReport failures_of(const Ensemble& m, const EnsembleEval& e) {
  const int M = m.spec.M;
  std::vector<double> exits(e.accuracy.begin(), e.accuracy.begin() + M);
  std::vector<double> heads(e.accuracy.begin() + M, e.accuracy.end());
  return evaluate_failures(M, exits, m.spec.head_subsets, heads);
}

}  // namespace

bool is_mel_config(const Json& json) {
  return json.is_object() && json.contains("kind") && json["kind"] == "mel";
}

MelConfig parse_mel_config(Json json, const std::string& path, const RunOverrides& ov) {
  MelConfig c;
  c.path = path;
  c.json = std::move(json);
  JsonReader top(c.json, path, "");
  c.name = top.get_string("name", std::filesystem::path(path).stem().string());
  if (top.get_string("kind") != "mel") top.error("kind", "expected \"mel\"");
  top.allow({"description"});
  c.data = read_data_config(top.has("data") ? top.object("data")
                                            : JsonReader(Json::object(), path, "data"));
  c.train = read_train_config(top.has("train") ? top.object("train")
                                               : JsonReader(Json::object(), path, "train"));
  c.baseline = top.get_string("baseline", "joint");
  if (std::find(kBaselines.begin(), kBaselines.end(), c.baseline) == kBaselines.end()) {
    const std::string close = closest_match(c.baseline, kBaselines);
    top.error(
        "baseline",
        fmt::format("unknown baseline '{}' (expected joint, independent or "
                    "combination_only{})",
                    c.baseline, close.empty() ? "" : fmt::format("; did you mean '{}'?", close)));
  }
  c.phase2 = read_phase2(top, c.train);
  if (c.baseline == "independent" && c.phase2.epochs == 0) c.phase2.epochs = c.train.epochs;
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
  }
  c.exit_classes = c.loss.hierarchical ? coarse_classes(c.loss) : num_classes;
  build_ensemble(ens, num_classes, c.exit_classes);
  if (top.has("original_params")) c.original_params = top.get_int("original_params");
  if (top.has("original")) {
    const std::string rel = top.get_string("original");
    const std::string orig = (std::filesystem::path(path).parent_path() / rel).string();
    SingleConfig oc = load_single_config(orig, RunOverrides{});
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

std::shared_ptr<Ensemble> build_ensemble_model(const MelConfig& c) {
  JsonReader top(c.json, c.path, "");
  return build_ensemble(top.object("ensemble"), c.data.num_classes(), c.exit_classes);
}

EnsembleEval evaluate_ensemble(Ensemble& model, const MelConfig& c, const data::ImageDataset& ds,
                               int64_t limit) {
  autograd::NoGradGuard ng;
  const bool was = model.is_training();
  model.eval();
  data::DataLoader loader(ds, loader_options(c.data, c.train.eval_batch_size, 0, false, limit));
  loader.start_epoch(0);
  EnsembleEval e;
  e.names = model.predictor_names();
  std::vector<int64_t> correct(e.names.size(), 0);
  const JointLossOptions lo = loss_options(c, model, Phase::joint);
  double loss_sum = 0.0;
  int64_t batches = 0;
  const Device device = module_device(model);
  data::Batch b;
  while (loader.next(b)) {
    const Tensor yc = coarse_of(b, c.loss);
    std::vector<Tensor> logits = model.forward_all(b.x.to(device));
    loss_sum +=
        joint_loss(logits, b.y.to(device), yc.defined() ? yc.to(device) : yc, lo).total_value;
    ++batches;
    auto cc = correct_counts(logits, b.y, yc, model.spec.M);
    for (size_t k = 0; k < cc.size(); ++k) correct[k] += cc[k];
    e.samples += b.y.numel();
  }
  model.train(was);
  for (int64_t v : correct) {
    e.accuracy.push_back(e.samples ? static_cast<double>(v) / static_cast<double>(e.samples) : 0);
  }
  e.loss = batches ? loss_sum / static_cast<double>(batches) : 0.0;
  return e;
}

Json train_mel(const MelConfig& c, const RunOverrides& ov, const std::string& resume_dir) {
  const Device device = run_device(ov.device, "mel train");
  const TrainConfig& tc = c.train;
  const data::ImageDataset train_ds =
      data::load_dataset(c.data.dataset, c.data.dir, data::Split::train);
  const data::ImageDataset test_ds =
      data::load_dataset(c.data.dataset, c.data.dir, data::Split::test);
  if (c.loss.hierarchical && c.loss.coarse_map.empty()) {
    MEL_CHECK(train_ds.coarse_labels.defined(),
              "{}: hierarchical labels need coarse labels, "
              "and the {} dataset has none",
              c.path, c.data.dataset);
  }
  auto model = build_ensemble_model(c);
  Generator gen(tc.seed);
  model->reset_parameters(gen);
  model->to(device);

  int64_t done_epochs = 0;
  std::string metrics;
  if (!resume_dir.empty()) {
    const Checkpoint ckpt = read_checkpoint(resume_dir);
    load_model_checkpoint(ckpt, *model);
    done_epochs = ckpt.info.epoch;
    // Keep the metrics of the epochs the checkpoint covers.
    std::istringstream in(read_text(resume_dir + "/metrics.jsonl"));
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      Json j = Json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.value("epoch", int64_t{0}) <= done_epochs) metrics += line + "\n";
    }
  }
  const int64_t p1 = tc.epochs, p2 = c.phase2.epochs, total_epochs = p1 + p2;
  MEL_CHECK(done_epochs <= total_epochs,
            "{}: the checkpoint is at epoch {} but the run has {} "
            "epochs",
            resume_dir, done_epochs, total_epochs);
  data::DataLoader loader(train_ds,
                          loader_options(c.data, tc.batch_size, tc.seed, true, tc.train_limit));
  const int64_t steps_per_epoch = loader.num_batches();
  MEL_CHECK(steps_per_epoch > 0, "mel train: the training set is empty");

  const std::string out =
      !resume_dir.empty() ? resume_dir : (ov.out.empty() ? "runs/" + c.name : ov.out);
  ensure_dir(out);
  const bool terminal = ov.progress && stdout_is_terminal();
  fmt::print(
      "mel train {} ({} models, {} heads, baseline {}): {} parameters, {} train samples, "
      "batch {}, {} + {} epochs, {}{}\n",
      c.name, model->spec.M, model->heads.size(), c.baseline, model->num_parameters(),
      loader.num_samples(), tc.batch_size, p1, p2, compute_description(device),
      done_epochs ? fmt::format(", resuming after epoch {}", done_epochs) : "");

  EnsembleEval last;
  const std::vector<std::string> names = model->predictor_names();
  for (int phase_index = 0; phase_index < 2; ++phase_index) {
    const int64_t first = phase_index == 0 ? 0 : p1;
    const int64_t count = phase_index == 0 ? p1 : p2;
    if (count == 0 || done_epochs >= first + count) continue;
    const bool heads_only = phase_index == 1;
    const Phase phase = heads_only
                            ? Phase::heads_only
                            : (c.baseline == "independent" ? Phase::exits_only : Phase::joint);
    // Phase 2 optimises the heads alone: its flat buffer holds only their parameters.
    std::unique_ptr<nn::FlatParameters> flat;
    if (heads_only) {
      flat = std::make_unique<nn::FlatParameters>(*model->child("heads"));
    } else {
      flat = std::make_unique<nn::FlatParameters>(*model);
    }
    const OptimizerConfig& oc = heads_only ? c.phase2.optimizer : tc.optimizer;
    auto optimizer = make_optimizer(oc, *flat);
    auto schedule =
        make_schedule(heads_only ? c.phase2.schedule : tc.schedule, oc, steps_per_epoch, count);
    const int64_t start = std::max(first, done_epochs);
    if (start > first) load_optimizer_checkpoint(out, *optimizer);
    const JointLossOptions lo = loss_options(c, *model, phase);
    int64_t step = (start - first) * steps_per_epoch;
    for (int64_t epoch = start; epoch < first + count; ++epoch) {
      model->train();
      if (heads_only) model->child("upstream")->eval();  // frozen: running statistics fixed
      loader.start_epoch(epoch);
      Progress progress(
          fmt::format("epoch {}/{}{}", epoch + 1, total_epochs, heads_only ? " (heads)" : ""),
          steps_per_epoch, terminal);
      const auto t0 = Clock::now();
      double loss_sum = 0.0;
      int64_t seen = 0, done = 0;
      std::vector<int64_t> correct(names.size(), 0);
      data::Batch b;
      while (loader.next(b)) {
        const nn::LrMomentum lm = schedule->at(step);
        const Tensor yc = coarse_of(b, c.loss);
        const Tensor x = b.x.to(device);
        std::vector<Tensor> logits =
            heads_only ? model->forward_all_frozen_upstream(x) : model->forward_all(x);
        JointLossResult jl =
            joint_loss(logits, b.y.to(device), yc.defined() ? yc.to(device) : yc, lo);
        optimizer->zero_grad();
        jl.total.backward();
        if (tc.clip_grad_norm > 0) nn::clip_grad_norm(*flat, tc.clip_grad_norm);
        optimizer->step(lm.lr, lm.momentum);
        const double l = jl.total_value;  // read back with the loss terms, no extra sync
        MEL_CHECK(std::isfinite(l),
                  "mel train: the loss became {} at epoch {} (lr {}); lower the "
                  "learning rate or enable clip_grad_norm",
                  l, epoch + 1, lm.lr);
        const int64_t n = b.y.numel();
        loss_sum += l * static_cast<double>(n);
        auto cc = correct_counts(logits, b.y, yc, model->spec.M);
        for (size_t k = 0; k < cc.size(); ++k) correct[k] += cc[k];
        seen += n;
        ++done;
        ++step;
        progress.update(done, seen, loss_sum / seen,
                        static_cast<double>(correct.back()) / static_cast<double>(seen));
      }
      progress.finish();
      const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      last = evaluate_ensemble(*model, c, test_ds, tc.test_limit);
      std::string accs;
      for (size_t k = 0; k < names.size(); ++k) {
        accs += fmt::format(" {} {:.2f}", names[k], 100.0 * last.accuracy[k]);
      }
      fmt::print("epoch {}/{}: train loss {:.4f}  test accuracy %:{}  {:.0f} samples/s ({})\n",
                 epoch + 1, total_epochs, loss_sum / seen, accs, seen / secs,
                 format_duration(secs));
      Json line = {{"epoch", epoch + 1},     {"phase", heads_only ? 2 : 1},
                   {"step", step},           {"train_loss", loss_sum / seen},
                   {"test_loss", last.loss}, {"test_accuracy", accuracy_json(last)},
                   {"epoch_seconds", secs},  {"samples_per_second", seen / secs}};
      metrics += line.dump() + "\n";
      write_file_atomic(out + "/metrics.jsonl", metrics);
      save_checkpoint(out, *model, optimizer.get(), {c.json.dump(), epoch + 1, step});
      if (ov.stop_after && epoch + 1 == *ov.stop_after && epoch + 1 < total_epochs) {
        fmt::print("stopped after epoch {} as asked; continue with: mel train --resume {}\n",
                   epoch + 1, out);
        return Json{{"stopped_after", epoch + 1}, {"run", out}};
      }
    }
  }
  if (last.names.empty()) last = evaluate_ensemble(*model, c, test_ds, tc.test_limit);

  // Totals over every epoch of the run, resumed ones included.
  double train_seconds = 0.0, train_samples_total = 0.0;
  {
    std::istringstream in(metrics);
    std::string line;
    while (std::getline(in, line)) {
      Json j = Json::parse(line);
      train_seconds += j.value("epoch_seconds", 0.0);
      train_samples_total += j.value("epoch_seconds", 0.0) * j.value("samples_per_second", 0.0);
    }
  }
  const FailureReport fr = failures_of(*model, last);
  Json report = {
      {"config", c.json},
      {"device", device.str()},
      {"epochs", total_epochs},
      {"baseline", c.baseline},
      {"train_samples", loader.num_samples()},
      {"test_samples", last.samples},
      {"params", params_json(*model, c.original_params)},
      {"accuracy", accuracy_json(last)},
      {"exit_labels", c.loss.hierarchical ? "coarse" : "fine"},
      {"train_seconds", train_seconds},
      {"samples_per_second", train_seconds > 0 ? train_samples_total / train_seconds : 0.0},
      {"threads", omp_get_max_threads()}};
  Json fj = failure_report_json(fr);
  for (auto it = fj.begin(); it != fj.end(); ++it) report[it.key()] = it.value();
  if (device.is_cuda()) report["peak_gpu_memory_bytes"] = memory_stats(device).peak_bytes;
  write_file_atomic(out + "/report.json", report.dump(2) + "\n");
  write_failure_chart(out + "/failures.svg", fr, c.name);
  fmt::print("\n{}\n", failure_table(fr));
  fmt::print(
      "run folder {} (report.json, failures.svg, metrics.jsonl, model.safetensors); "
      "{} training, {:.0f} samples/s\n",
      out, format_duration(train_seconds),
      train_seconds > 0 ? train_samples_total / train_seconds : 0.0);
  return report;
}

Json eval_mel(const MelConfig& c, const std::string& checkpoint, const RunOverrides& ov) {
  const Device device = run_device(ov.device, "mel eval");
  auto model = build_ensemble_model(c);
  load_model_checkpoint(checkpoint, *model);
  model->to(device);
  const data::ImageDataset test_ds =
      data::load_dataset(c.data.dataset, c.data.dir, data::Split::test);
  const EnsembleEval e = evaluate_ensemble(*model, c, test_ds, c.train.test_limit);
  const FailureReport fr = failures_of(*model, e);
  fmt::print("{}: test accuracy on {} samples:", c.name, e.samples);
  for (size_t k = 0; k < e.names.size(); ++k) {
    fmt::print(" {} {:.2f}%", e.names[k], 100.0 * e.accuracy[k]);
  }
  fmt::print("\n\n{}\n", failure_table(fr));
  Json report = {{"test_samples", e.samples},
                 {"params", params_json(*model, c.original_params)},
                 {"accuracy", accuracy_json(e)}};
  Json fj = failure_report_json(fr);
  for (auto it = fj.begin(); it != fj.end(); ++it) report[it.key()] = it.value();
  return report;
}

void export_servers(const std::string& run_dir, const std::string& out_dir) {
  const Checkpoint ckpt = read_checkpoint(run_dir);
  const std::string& file = ckpt.file;
  Json cfg = Json::parse(ckpt.info.config_json, nullptr, false);
  MEL_CHECK(!cfg.is_discarded(), "{}: the stored config is not valid JSON", file);
  MEL_CHECK(is_mel_config(cfg),
            "{}: not an ensemble run (\"kind\" is not \"mel\"); export "
            "writes one file per server of an ensemble",
            file);
  MelConfig c = parse_mel_config(std::move(cfg), file + " (stored config)", RunOverrides{});
  auto model = build_ensemble_model(c);
  load_model_checkpoint(ckpt, *model);
  ensure_dir(out_dir);
  for (int i = 0; i < model->spec.M; ++i) {
    const auto& up = model->upstreams[static_cast<size_t>(i)];
    std::map<std::string, std::string> meta = {{"format", "mel-server-1"},
                                               {"server", std::to_string(i + 1)},
                                               {"feature_shape", shape_str(up->feature_shape)},
                                               {"exit_classes", std::to_string(c.exit_classes)},
                                               {"config", c.json.dump()}};
    save_safetensors(fmt::format("{}/upstream_{}.safetensors", out_dir, i + 1), up->state_dict(),
                     meta);
  }
  nn::NamedTensors heads;
  std::vector<std::string> subsets;
  for (auto& [name, t] : model->child("heads")->state_dict())
    heads.emplace_back("heads." + name, t);
  for (const auto& s : model->spec.head_subsets) subsets.push_back(subset_name(s));
  save_safetensors(out_dir + "/combination.safetensors", heads,
                   {{"format", "mel-server-1"},
                    {"server", "C"},
                    {"subsets", fmt::format("{}", fmt::join(subsets, ","))},
                    {"num_classes", std::to_string(c.data.num_classes())},
                    {"config", c.json.dump()}});
  fmt::print("wrote {} upstream files and combination.safetensors to {}\n", model->spec.M, out_dir);
}

}  // namespace mel::app
