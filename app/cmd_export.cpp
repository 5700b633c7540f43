// `mel export RUN_DIR --out DIR`: one safetensors file per server of a trained ensemble.
#include "app/commands.h"
#include "app/ensemble_run.h"

namespace mel::app {

CLI::App* add_export(CLI::App& app, CliOptions& o) {
  auto* exp = app.add_subcommand("export", "write one safetensors file per server of an ensemble");
  exp->add_option("run", o.config, "run folder or model .safetensors file")->required();
  exp->add_option("--out", o.out, "output folder")->required();
  return exp;
}

void run_export(const CliOptions& o) {
  export_servers(o.config, o.out);
}

}  // namespace mel::app
