#include "mel/cli.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "core/error.h"
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

void apply(RunOverrides& ov, int64_t epochs, int64_t batch, int64_t train_limit,
           int64_t test_limit, int64_t seed) {
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

  auto* train = app.add_subcommand("train", "train the model a JSON config describes");
  train->add_option("config", config, "config file (e.g. configs/fmnist_original.json)")
      ->required();
  add_run_options(train, ov, epochs, batch, train_limit, test_limit, seed);

  auto* info = app.add_subcommand("info", "print a config's module tree and parameter counts");
  info->add_option("config", config, "config file")->required();

  auto* eval = app.add_subcommand("eval", "recompute test accuracy from a run folder or checkpoint");
  eval->add_option("run", config, "run folder or model .safetensors file")->required();
  eval->add_option("--device", ov.device, "cpu or cuda[:N]")->capture_default_str();
  eval->add_option("--data", ov.data_dir, "dataset folder (overrides the stored config)");
  eval->add_option("--test-limit", test_limit, "evaluate on the first N test samples only");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    apply(ov, epochs, batch, train_limit, test_limit, seed);
    if (*train) {
      SingleConfig c = load_single_config(config, ov);
      train_single(c, ov);
    } else if (*eval) {
      eval_single(config, ov);
    } else if (*info) {
      SingleConfig c = load_single_config(config, RunOverrides{});
      auto model = build_model(c);
      fmt::print("{}\n{}\ntotal parameters: {}\n", c.name, model->repr(true),
                 model->num_parameters());
    }
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "mel: error: {}\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace mel::app
