#include "app/ensemble_run.h"

#include <fmt/format.h>

#include "app/chart.h"
#include "app/onnx_export.h"
#include "app/report.h"
#include "app/serving.h"
#include "app/text_run.h"
#include "core/random.h"
#include "core/safetensors.h"
#include "data/loader.h"
#include "mel/failure.h"
#include "train/checkpoint.h"
#include "train/device.h"
#include "train/files.h"
#include "train/trainer.h"

namespace mel::app {

namespace {

Json params_json(const method::Ensemble& m, int64_t original) {
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

Json accuracy_json(const train::Evaluation& e) {
  Json a = Json::object();
  for (size_t k = 0; k < e.names.size(); ++k) a[e.names[k]] = e.accuracy[k];
  return a;
}

// report.json's ensemble fields: per-server parameters, the baseline, the exits' labels and the
// failure report.
void add_report_fields(Json& report, const method::Ensemble& m, const MelConfig& c,
                       const method::FailureReport& fr) {
  report["baseline"] = method::baseline_name(c.baseline);
  report["params"] = params_json(m, c.original_params);
  report["exit_labels"] = c.loss.hierarchical ? "coarse" : "fine";
  Json fj = failure_report_json(fr);
  for (auto it = fj.begin(); it != fj.end(); ++it) report[it.key()] = it.value();
}

data::LoaderOptions test_options(const MelConfig& c, int64_t limit) {
  return loader_options(c.data, c.train.eval_batch_size, 0, false, limit);
}

// upstream_<i>.onnx and combination.onnx (app/onnx_export.h): the metadata says how inputs
// are normalised (mel's data loader: x = (pixel / 255 - mean[c]) / std[c]) and carries the run.
void export_onnx(method::Ensemble& model, const MelConfig& c, const std::string& run,
                 const std::string& out_dir) {
  const Json& ups = c.json.at("ensemble").at("upstream");
  std::vector<std::string> subsets;
  for (const auto& s : model.spec.head_subsets) subsets.push_back(method::subset_name(s));
  const OnnxMetadata common = {{"format", "mel-onnx-1"},
                               {"run_name", c.name},
                               {"config", c.json.dump()},
                               {"run", run},
                               {"dataset", c.data.dataset}};
  for (int i = 0; i < model.spec.M; ++i) {
    const auto& up = model.upstreams[static_cast<size_t>(i)];
    const Json& in = ups.is_object() ? ups.at("input") : ups.at(static_cast<size_t>(i)).at("input");
    const Shape input(in.begin(), in.end());
    // Per channel, as the loader's Normalizer reads them (none: 0 and 1).
    const size_t channels = static_cast<size_t>(input[0]);
    std::vector<float> mean = c.data.mean, std = c.data.std;
    if (mean.empty()) mean.assign(channels, 0.0f);
    if (std.empty()) std.assign(channels, 1.0f);
    if (mean.size() == 1) mean.assign(channels, mean[0]);
    if (std.size() == 1) std.assign(channels, std[0]);
    OnnxMetadata meta = {{"server", std::to_string(i + 1)}};
    meta.insert(meta.end(), common.begin(), common.end());
    meta.insert(meta.end(),
                {{"input_shape", fmt::format("[{}]", fmt::join(input, ", "))},
                 {"input_mean", fmt::format("[{}]", fmt::join(mean, ", "))},
                 {"input_std", fmt::format("[{}]", fmt::join(std, ", "))},
                 {"input_normalisation",
                  "x[n, c] = (pixel[n, c] / 255 - input_mean[c]) / input_std[c], pixels in "
                  "0..255"},
                 {"feature_shape", fmt::format("[{}]", fmt::join(up->feature_shape, ", "))},
                 {"exit_classes", std::to_string(c.exit_classes)}});
    write_upstream_onnx(*up, input, meta, fmt::format("{}/upstream_{}.onnx", out_dir, i + 1));
  }
  OnnxMetadata meta = {{"server", "C"}};
  meta.insert(meta.end(), common.begin(), common.end());
  meta.insert(meta.end(), {{"subsets", fmt::format("{}", fmt::join(subsets, ","))},
                           {"num_classes", std::to_string(c.data.num_classes())}});
  write_combination_onnx(model, meta, out_dir + "/combination.onnx");
  fmt::print("wrote {} upstream files and combination.onnx to {}\n", model.spec.M, out_dir);
}

}  // namespace

train::TrainerHooks ensemble_hooks(const std::shared_ptr<method::Ensemble>& model,
                                   const MelConfig& c, const std::function<void(Json&)>& extra) {
  train::TrainerHooks hooks;
  const bool text = c.data.is_text();
  hooks.report = [model, &c, extra, text](Json& report, const train::Evaluation& last) {
    add_report_fields(report, *model, c, failures_of(*model, last, text));
    if (text) report["text"] = text_metrics_json(last);
    if (extra) extra(report);
  };
  hooks.finish = [model, &c, text](const train::RunSummary& s) {
    const method::FailureReport fr = failures_of(*model, s.last, text);
    write_failure_chart(s.out + "/failures.svg", fr, c.name);
    if (text) fmt::print("\n{}", text_metrics_table(s.last));
    fmt::print("\n{}\n", failure_table(fr));
    fmt::print(
        "run folder {} (report.json, failures.svg, metrics.jsonl, model.safetensors, "
        "checkpoint.json); {} "
        "training, {:.0f} samples/s\n",
        s.out, train::format_duration(s.train_seconds), s.samples_per_second);
  };
  return hooks;
}

method::FailureReport failures_of(const method::Ensemble& m, const train::Evaluation& e,
                                  bool losses) {
  const int M = m.spec.M;
  std::vector<double> exits(e.accuracy.begin(), e.accuracy.begin() + M);
  std::vector<double> heads(e.accuracy.begin() + M, e.accuracy.end());
  method::FailureReport r =
      method::evaluate_failures(M, exits, m.spec.head_subsets, heads, e.combined);
  if (losses && e.losses.size() == e.names.size()) {
    std::map<std::string, double> by_name = e.combined_loss;
    for (size_t k = 0; k < e.names.size(); ++k) by_name[e.names[k]] = e.losses[k];
    method::add_losses(r, by_name);
  }
  return r;
}

train::Evaluation evaluate_ensemble(method::Ensemble& model, const MelConfig& c,
                                    const data::ImageDataset& ds, int64_t limit) {
  data::DataLoader test(ds, test_options(c, limit));
  // A task over the model (shared without ownership) just for its evaluation.
  std::shared_ptr<method::Ensemble> m(&model, [](method::Ensemble*) {});
  return method::MelTask(m, mel_spec(c, train::module_device(model)), test, test).evaluate();
}

Json train_mel(const MelConfig& c, const RunOverrides& ov, const std::string& resume_dir) {
  const Device device = train::run_device(ov.device, "mel train");
  const TrainConfig& tc = c.train;
  const auto data = open_run_sources(c);
  if (c.loss.hierarchical && c.loss.coarse_map.empty()) {
    MEL_CHECK(data->images.train.coarse_labels.defined(),
              "{}: hierarchical labels need coarse labels, and the {} dataset has none", c.path,
              c.data.dataset);
  }
  auto model = build_ensemble_model(c);
  Generator gen(tc.seed);
  model->reset_parameters(gen);
  model->to(device);
  method::MelTask task(model, mel_spec(c, device), data->train(), data->test());
  const train::TrainerHooks hooks = ensemble_hooks(model, c);
  return train::Trainer(task, run_options(c.name, c.json, device, tc, ov, resume_dir), hooks).run();
}

Json eval_mel(const MelConfig& c, const std::string& checkpoint, const RunOverrides& ov) {
  const Device device = train::run_device(ov.device, "mel eval");
  auto model = build_ensemble_model(c);
  train::load_model_checkpoint(checkpoint, *model);
  model->to(device);
  const bool text = c.data.is_text();
  train::Evaluation e;
  if (text) {
    const TextLoaders loaders = make_text_loaders(c);
    std::shared_ptr<method::Ensemble> m(model.get(), [](method::Ensemble*) {});
    e = method::MelTask(m, mel_spec(c, device), *loaders.train, *loaders.test).evaluate();
  } else {
    const data::ImageDataset test_ds = load_split(c.data, ov.eval_split);
    e = evaluate_ensemble(*model, c, test_ds, c.train.test_limit);
  }
  const method::FailureReport fr = failures_of(*model, e, text);
  const data::Split split = text ? data::Split::validation : ov.eval_split;
  fmt::print("{}: {} accuracy on {} samples:", c.name, data::split_name(split), e.samples);
  for (size_t k = 0; k < e.names.size(); ++k) {
    fmt::print(" {} {:.2f}%", e.names[k], 100.0 * e.accuracy[k]);
  }
  if (text) fmt::print("\n\n{}", text_metrics_table(e));
  fmt::print("\n\n{}\n", failure_table(fr));
  Json report = {{"split", data::split_name(split)},
                 {"test_samples", e.samples},
                 {"params", params_json(*model, c.original_params)},
                 {"accuracy", accuracy_json(e)}};
  Json fj = failure_report_json(fr);
  for (auto it = fj.begin(); it != fj.end(); ++it) report[it.key()] = it.value();
  if (text) report["text"] = text_metrics_json(e);
  return report;
}

void export_servers(const std::string& run_dir, const std::string& out_dir,
                    const std::string& format) {
  MEL_CHECK(format == "safetensors" || format == "onnx",
            "export: unknown format '{}' (expected safetensors or onnx)", format);
  MEL_CHECK(format != "onnx" || onnx_export_available(),
            "this mel was built without ONNX export (install libonnx-dev libprotobuf-dev)");
  const train::Checkpoint ckpt = train::read_checkpoint(run_dir);
  const std::string& file = ckpt.file;
  Json cfg = Json::parse(ckpt.info.config_json, nullptr, false);
  MEL_CHECK(!cfg.is_discarded(), "{}: the stored config is not valid JSON", file);
  MEL_CHECK(is_mel_config(cfg),
            "{}: not an ensemble run (\"kind\" is not \"mel\"); export writes one file per server "
            "of an ensemble",
            file);
  MelConfig c = parse_mel_config(std::move(cfg), file + " (stored config)", RunOverrides{});
  auto model = build_ensemble_model(c);
  train::load_model_checkpoint(ckpt, *model);
  train::ensure_dir(out_dir);
  // Every file carries the run's fingerprint, so servers of different runs are told apart.
  const std::string run = serving::run_fingerprint(c.json.dump(), *model);
  if (format == "onnx") {
    export_onnx(*model, c, run, out_dir);
    return;
  }
  for (int i = 0; i < model->spec.M; ++i) {
    const auto& up = model->upstreams[static_cast<size_t>(i)];
    std::map<std::string, std::string> meta = {{"format", "mel-server-1"},
                                               {"server", std::to_string(i + 1)},
                                               {"feature_shape", shape_str(up->feature_shape)},
                                               {"exit_classes", std::to_string(c.exit_classes)},
                                               {"config", c.json.dump()},
                                               {"run", run}};
    save_safetensors(fmt::format("{}/upstream_{}.safetensors", out_dir, i + 1), up->state_dict(),
                     meta);
  }
  nn::NamedTensors heads;
  std::vector<std::string> subsets;
  for (auto& [name, t] : model->child("heads")->state_dict()) {
    heads.emplace_back("heads." + name, t);
  }
  for (const auto& s : model->spec.head_subsets) subsets.push_back(method::subset_name(s));
  save_safetensors(out_dir + "/combination.safetensors", heads,
                   {{"format", "mel-server-1"},
                    {"server", "C"},
                    {"subsets", fmt::format("{}", fmt::join(subsets, ","))},
                    {"num_classes", std::to_string(c.data.num_classes())},
                    {"config", c.json.dump()},
                    {"run", run}});
  fmt::print("wrote {} upstream files and combination.safetensors to {}\n", model->spec.M, out_dir);
}

}  // namespace mel::app
