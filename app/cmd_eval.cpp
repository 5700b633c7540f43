// `mel eval RUN_DIR_OR_CHECKPOINT`: the test (or validation) accuracy and an ensemble's failure
// table from the model stored in a checkpoint, with the config stored beside it.
#include "app/commands.h"
#include "app/ensemble_run.h"
#include "app/single.h"
#include "train/checkpoint.h"

namespace mel::app {

CLI::App* add_eval(CLI::App& app, CliOptions& o) {
  auto* eval =
      app.add_subcommand("eval", "recompute test accuracy from a run folder or checkpoint");
  eval->add_option("run", o.config, "run folder or model .safetensors file")->required();
  eval->add_option("--device", o.overrides.device, "cpu or cuda[:N]")->capture_default_str();
  eval->add_option("--data", o.overrides.data_dir, "dataset folder (overrides the stored config)");
  eval->add_option("--test-limit", o.test_limit, "evaluate on the first N test samples only");
  eval->add_option("--split", o.eval_split, "test, or validation (datasets that have one)")
      ->check(CLI::IsMember({"test", "validation"}))
      ->capture_default_str();
  return eval;
}

void run_eval(const CliOptions& o) {
  RunOverrides ov = overrides_of(o);
  ov.eval_split = o.eval_split == "validation" ? data::Split::validation : data::Split::test;
  const std::string file = train::model_checkpoint_path(o.config);
  // The run folder itself when given one: its files are checked against checkpoint.json (or a
  // folder of an older mel is named in a warning).
  const train::CheckpointInfo info = train::read_checkpoint_info(o.config);
  Json cfg = Json::parse(info.config_json, nullptr, false);
  if (is_mel_config(cfg)) {
    eval_mel(parse_mel_config(std::move(cfg), file + " (stored config)", ov), file, ov);
  } else {
    eval_single(o.config, ov);
  }
}

}  // namespace mel::app
