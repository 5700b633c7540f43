#include "mel/cli.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <filesystem>

#include "core/error.h"
#include "mel/checkpoint.h"
#include "mel/train_mel.h"
#include "mel/train_single.h"

namespace mel::app {

namespace {

void add_run_options(CLI::App* cmd, RunOverrides& ov, int64_t& epochs, int64_t& batch,
                     int64_t& train_limit, int64_t& test_limit, int64_t& seed) {
  cmd->add_option("--device", ov.device, "cpu or cuda[:N]")->capture_default_str();
  cmd->add_option("--epochs", epochs, "number of epochs (overrides the config)");
  cmd->add_option("--batch", batch, "batch size (overrides the config)");
  cmd->add_option("--train-limit", train_limit, "train on the first N samples only");
  cmd->add_option("--test-limit", test_limit, "evaluate on the first N test samples only");
  cmd->add_option("--seed", seed, "random seed (overrides the config)");
  cmd->add_option("--data", ov.data_dir, "dataset folder (overrides the config)");
  cmd->add_option("--out", ov.out, "run folder (default runs/<config name>)");
  cmd->add_flag("!--no-progress", ov.progress, "plain progress lines even on a terminal");
}

void apply(RunOverrides& ov, int64_t epochs, int64_t batch, int64_t train_limit, int64_t test_limit,
           int64_t seed) {
  if (epochs != -1) ov.epochs = epochs;
  if (batch != -1) ov.batch_size = batch;
  if (train_limit != -1) ov.train_limit = train_limit;
  if (test_limit != -1) ov.test_limit = test_limit;
  if (seed != -1) {
    MEL_CHECK(seed >= 0, "--seed must be >= 0, got {}", seed);
    ov.seed = static_cast<uint64_t>(seed);
  }
}

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{"mel: multi-level ensemble learning and the layers to build it"};
  app.require_subcommand(1);
  RunOverrides ov;
  int64_t epochs = -1, batch = -1, train_limit = -1, test_limit = -1, seed = -1;
  std::string config;

  std::string resume, export_out;
  auto* train = app.add_subcommand("train", "train the model a JSON config describes");
  train->add_option("config", config, "config file (e.g. configs/fmnist_mel2.json)");
  int64_t stop_after = -1;
  train->add_option("--stop-after", stop_after,
                    "stop after this epoch, checkpointed (ensembles; continue with --resume)");
  train->add_option("--resume", resume,
                    "continue the run in this folder from its last checkpoint (ensembles)");
  add_run_options(train, ov, epochs, batch, train_limit, test_limit, seed);

  auto* info = app.add_subcommand("info", "print a config's module tree and parameter counts");
  info->add_option("config", config, "config file")->required();

  auto* eval =
      app.add_subcommand("eval", "recompute test accuracy from a run folder or checkpoint");
  eval->add_option("run", config, "run folder or model .safetensors file")->required();
  eval->add_option("--device", ov.device, "cpu or cuda[:N]")->capture_default_str();
  eval->add_option("--data", ov.data_dir, "dataset folder (overrides the stored config)");
  eval->add_option("--test-limit", test_limit, "evaluate on the first N test samples only");

  auto* exp = app.add_subcommand("export", "write one safetensors file per server of an ensemble");
  exp->add_option("run", config, "run folder or model .safetensors file")->required();
  exp->add_option("--out", export_out, "output folder")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    apply(ov, epochs, batch, train_limit, test_limit, seed);
    if (stop_after != -1) {
      MEL_CHECK(stop_after >= 1, "--stop-after must be >= 1, got {}", stop_after);
      ov.stop_after = stop_after;
    }
    if (*train) {
      if (!resume.empty()) {
        // The run's own config (with its overrides) comes from the checkpoint.
        MEL_CHECK(config.empty(), "mel train: give either a config or --resume RUN_DIR, not both");
        MEL_CHECK(std::filesystem::is_directory(resume),
                  "mel train --resume: {} is not a run folder", resume);
        const CheckpointInfo info = read_checkpoint_info(resume);
        Json cfg = Json::parse(info.config_json, nullptr, false);
        MEL_CHECK(is_mel_config(cfg),
                  "mel train --resume: {} is not an ensemble run (resume "
                  "is supported for ensembles)",
                  resume);
        train_mel(parse_mel_config(std::move(cfg), resume + "/model.safetensors (stored config)",
                                   RunOverrides{}),
                  ov, resume);
      } else {
        MEL_CHECK(!config.empty(), "mel train: give a config file (or --resume RUN_DIR)");
        Json cfg = read_json_file(config);
        if (is_mel_config(cfg)) {
          train_mel(parse_mel_config(std::move(cfg), config, ov), ov, "");
        } else {
          train_single(parse_single_config(std::move(cfg), config, ov), ov);
        }
      }
    } else if (*eval) {
      const std::string file = model_checkpoint_path(config);
      const CheckpointInfo info = read_checkpoint_info(file);
      Json cfg = Json::parse(info.config_json, nullptr, false);
      if (is_mel_config(cfg)) {
        eval_mel(parse_mel_config(std::move(cfg), file + " (stored config)", ov), file, ov);
      } else {
        eval_single(config, ov);
      }
    } else if (*exp) {
      export_servers(config, export_out);
    } else if (*info) {
      Json cfg = read_json_file(config);
      if (is_mel_config(cfg)) {
        MelConfig c = parse_mel_config(std::move(cfg), config, RunOverrides{});
        auto model = build_ensemble_model(c);
        fmt::print("{}\n{}\n", c.name, model->repr(true));
        for (int i = 0; i < model->spec.M; ++i) {
          fmt::print("server {}: {} parameters\n", i + 1, model->upstream_parameters(i));
        }
        fmt::print("server C: {} parameters\ntotal parameters: {}", model->head_parameters(),
                   model->num_parameters());
        if (c.original_params > 0) {
          fmt::print(" ({:.1f}% of the original model's {})",
                     100.0 * model->num_parameters() / static_cast<double>(c.original_params),
                     c.original_params);
        }
        fmt::print("\n");
      } else {
        SingleConfig c = parse_single_config(std::move(cfg), config, RunOverrides{});
        auto model = build_model(c);
        fmt::print("{}\n{}\ntotal parameters: {}\n", c.name, model->repr(true),
                   model->num_parameters());
      }
    }
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "mel: error: {}\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace mel::app
