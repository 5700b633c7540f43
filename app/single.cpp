#include "app/single.h"

#include "app/text_run.h"
#include "train/files.h"

#include <fmt/format.h>

#include <filesystem>

#include "core/random.h"
#include "nn/registry.h"
#include "nn/transformer.h"
#include "train/checkpoint.h"
#include "train/device.h"
#include "train/trainer.h"

namespace mel::app {

SingleConfig load_single_config(const std::string& path, const RunOverrides& ov) {
  return parse_single_config(read_json_file(path), path, ov);
}

SingleConfig parse_single_config(Json json, const std::string& path, const RunOverrides& ov) {
  SingleConfig c;
  c.path = path;
  c.json = std::move(json);
  JsonReader top(c.json, path, "");
  const std::string kind = top.get_string("kind", "single");
  if (kind != "single") {
    top.error("kind", fmt::format("expected \"single\" or \"mel\", got '{}'", kind));
  }
  read_common_sections(top, c);
  resolve_text_config(c, ov);
  if (!c.train.failout.empty()) {
    top.object("train").error("failout",
                              "simulates failing servers of a MEL ensemble; this config is a "
                              "single model (kind \"single\")");
  }
  build_classifier(top.object("model"), c.data.num_classes());  // validates the model
  top.finish();
  apply_overrides(ov, c.train, c.data, c.json);
  return c;
}

std::shared_ptr<Classifier> build_classifier(const JsonReader& model, int64_t num_classes) {
  const std::vector<int64_t> input = model.get_ints("input");
  if (input.empty() || input.size() > 3) {
    model.error("input",
                fmt::format("expected [C, H, W], [C, L] or [F], got {} dims", input.size()));
  }
  for (int64_t v : input) {
    if (v <= 0 || v > (int64_t{1} << 24)) {
      model.error("input", fmt::format("sizes must be in [1, {}], got {}", int64_t{1} << 24, v));
    }
  }
  Shape shape(input.begin(), input.end());
  auto trunk = nn::build_layers(model, "trunk", shape);
  auto head = nn::build_layers(model, "head", shape);
  model.finish();
  if (shape.size() != 1 || shape[0] != num_classes) {
    model.error("head", fmt::format("the model must end in {} outputs (one per class), but it "
                                    "produces {} per sample",
                                    num_classes, shape_str(shape)));
  }
  auto m = std::make_shared<Classifier>(std::move(trunk), std::move(head));
  nn::bind_tied_weights(*m, model.source());
  return m;
}

std::shared_ptr<Classifier> build_model(const SingleConfig& c) {
  JsonReader top(c.json, c.path, "");
  return build_classifier(top.object("model"), c.data.num_classes());
}

train::Evaluation evaluate(nn::Module& model, const data::ImageDataset& ds, const DataConfig& dc,
                           int64_t batch_size, int64_t limit) {
  data::DataLoader test(ds, loader_options(dc, batch_size, 0, false, limit));
  // A task over the module (shared without ownership) just for its evaluation.
  std::shared_ptr<nn::Module> m(&model, [](nn::Module*) {});
  train::ClassificationSpec spec;
  spec.device = train::module_device(model);
  return train::ClassificationTask(m, spec, test, test).evaluate();
}

Json train_single(const SingleConfig& c, const RunOverrides& ov, const std::string& resume_dir) {
  const Device device = train::run_device(ov.device, "mel train");
  const TrainConfig& tc = c.train;
  const bool is_text = c.data.is_text();
  const auto data = open_run_sources(c);
  auto model = build_model(c);
  Generator gen(tc.seed);
  model->reset_parameters(gen);
  model->to(device);
  train::ClassificationSpec spec{tc.epochs,          tc.optimizer,  tc.schedule,
                                 tc.label_smoothing, tc.batch_size, device};
  train::ClassificationTask task(model, spec, data->train(), data->test());
  train::TrainerHooks hooks;
  if (is_text) {
    hooks.report = [](Json& report, const train::Evaluation& last) {
      report["text"] = text_metrics_json(last);
    };
    hooks.finish = [](const train::RunSummary& s) {
      fmt::print("\n{}run folder {}; {} training, {:.0f} characters/s\n",
                 text_metrics_table(s.last), s.out, train::format_duration(s.train_seconds),
                 s.samples_per_second);
    };
  }
  return train::Trainer(task, run_options(c.name, c.json, device, tc, ov, resume_dir), hooks).run();
}

Json eval_single(const std::string& run, const RunOverrides& ov) {
  const Device device = train::run_device(ov.device, "mel eval");
  const train::Checkpoint ckpt = train::read_checkpoint(run);
  const std::string& file = ckpt.file;
  Json cfg;
  try {
    cfg = Json::parse(ckpt.info.config_json);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: the config stored in the checkpoint is not valid JSON: {}", file, e.what());
  }
  SingleConfig c = parse_single_config(std::move(cfg), file + " (stored config)", ov);
  auto model = build_model(c);
  train::load_model_checkpoint(ckpt, *model);
  model->to(device);
  if (c.data.is_text()) {
    const TextLoaders loaders = make_text_loaders(c);
    std::shared_ptr<nn::Module> m(model.get(), [](nn::Module*) {});
    train::ClassificationSpec spec;
    spec.device = device;
    const train::Evaluation r =
        train::ClassificationTask(m, spec, *loaders.train, *loaders.test).evaluate();
    fmt::print("{} (epoch {}), validation split:\n{}", c.name, ckpt.info.epoch,
               text_metrics_table(r));
    return {{"split", "validation"},
            {"epoch", ckpt.info.epoch},
            {"test_loss", r.loss},
            {"test_samples", r.samples},
            {"accuracy", {{"1", r.accuracy[0]}}},
            {"text", text_metrics_json(r)}};
  }
  const data::ImageDataset test_ds = load_split(c.data, ov.eval_split);
  const train::Evaluation r =
      evaluate(*model, test_ds, c.data, c.train.eval_batch_size, c.train.test_limit);
  fmt::print("{} (epoch {}): {} accuracy {:.2f}% loss {:.4f} on {} samples\n", c.name,
             ckpt.info.epoch, data::split_name(ov.eval_split), 100.0 * r.accuracy[0], r.loss,
             r.samples);
  return {{"accuracy", {{"1", r.accuracy[0]}}},
          {"split", data::split_name(ov.eval_split)},
          {"test_loss", r.loss},
          {"test_samples", r.samples},
          {"epoch", ckpt.info.epoch}};
}

}  // namespace mel::app
