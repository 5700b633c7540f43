// The subcommands of `mel`, one file each (cmd_train.cpp, cmd_eval.cpp, cmd_export.cpp,
// cmd_info.cpp, cmd_predict.cpp, cmd_serve.cpp, cmd_simulate.cpp, cmd_features.cpp, cmd_sample.cpp): each adds its
// options to the parser and runs once parsing succeeded.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "app/run_config.h"
#include "app/serving.h"
#include "app/simulate.h"
#include "app/text_run.h"

namespace mel::app {

// Everything the subcommands parse into; an empty optional is an option that was not given.
struct CliOptions {
  RunOverrides overrides;
  std::optional<int64_t> epochs, batch, train_limit, test_limit, seed, stop_after;
  std::string config;  // a config file, or the run folder / checkpoint of eval and export
  std::string resume;  // train --resume RUN_DIR
  std::string out;     // export and predict --out
  std::string placement = "single";           // train --placement
  int replicas = 1;                           // train --replicas
  bool overwrite = false;                     // train --overwrite
  double comm_timeout = 300;                  // train --comm-timeout (seconds)
  std::string gpu_comm = "nccl";              // train --gpu-comm
  std::string input;                          // predict --input
  std::string format = "npy";                 // predict --format
  bool logits = false;                        // predict --logits
  std::string export_format = "safetensors";  // export --format
  std::string splits = "train,test";          // features --splits
  std::string eval_split = "test";            // eval --split
  SampleOptions sample;                       // sample
  serving::ServeOptions serve;                // serve
  SimulateOptions simulate;                   // simulate
};

// --device, --epochs, --batch, --train-limit, --test-limit, --seed, --data, --out, --no-progress.
void add_run_options(CLI::App* cmd, CliOptions& o);
// The overrides with the numeric options checked and applied.
RunOverrides overrides_of(const CliOptions& o);
// True when an option that changes the run's config (epochs, batch, limits, seed, data) was given.
bool changes_config(const CliOptions& o);

CLI::App* add_train(CLI::App& app, CliOptions& o);
void run_train(const CliOptions& o);
CLI::App* add_eval(CLI::App& app, CliOptions& o);
void run_eval(const CliOptions& o);
CLI::App* add_export(CLI::App& app, CliOptions& o);
void run_export(const CliOptions& o);
CLI::App* add_info(CLI::App& app, CliOptions& o);
void run_info(const CliOptions& o);
CLI::App* add_predict(CLI::App& app, CliOptions& o);
void run_predict(const CliOptions& o);
CLI::App* add_serve(CLI::App& app, CliOptions& o);
void run_serve(const CliOptions& o);
CLI::App* add_simulate(CLI::App& app, CliOptions& o);
void run_simulate(const CliOptions& o);
CLI::App* add_features(CLI::App& app, CliOptions& o);
void run_features(const CliOptions& o);
CLI::App* add_sample(CLI::App& app, CliOptions& o);
void run_sample(const CliOptions& o);

}  // namespace mel::app
