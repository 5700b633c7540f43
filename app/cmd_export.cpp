// `mel export RUN_DIR --out DIR [--format safetensors|onnx]`: one file per server of a trained
// ensemble (safetensors weights, or ONNX models: app/onnx_export.h).
#include "app/commands.h"
#include "app/ensemble_run.h"

namespace mel::app {

CLI::App* add_export(CLI::App& app, CliOptions& o) {
  auto* exp = app.add_subcommand(
      "export", "write one file per server of an ensemble (safetensors weights or ONNX models)");
  exp->add_option("run", o.config, "run folder or model .safetensors file")->required();
  exp->add_option("--out", o.out, "output folder")->required();
  exp->add_option("--format", o.export_format,
                  "safetensors (weights) or onnx (upstream_<i>.onnx, combination.onnx)")
      ->check(CLI::IsMember({"safetensors", "onnx"}))
      ->capture_default_str();
  return exp;
}

void run_export(const CliOptions& o) {
  export_servers(o.config, o.out, o.export_format);
}

}  // namespace mel::app
