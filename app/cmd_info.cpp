// `mel info CONFIG`: the module tree and parameter counts (per server for ensembles).
#include <fmt/format.h>

#include "app/commands.h"
#include "app/ensemble_config.h"
#include "app/single.h"

namespace mel::app {

CLI::App* add_info(CLI::App& app, CliOptions& o) {
  auto* info = app.add_subcommand("info", "print a config's module tree and parameter counts");
  info->add_option("config", o.config, "config file")->required();
  return info;
}

void run_info(const CliOptions& o) {
  Json cfg = read_json_file(o.config);
  if (!is_mel_config(cfg)) {
    SingleConfig c = parse_single_config(std::move(cfg), o.config, RunOverrides{});
    auto model = build_model(c);
    fmt::print("{}\n{}\ntotal parameters: {}\n", c.name, model->repr(true),
               model->num_parameters());
    return;
  }
  MelConfig c = parse_mel_config(std::move(cfg), o.config, RunOverrides{});
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
}

}  // namespace mel::app
