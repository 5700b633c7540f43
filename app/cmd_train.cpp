// `mel train CONFIG` and `mel train --resume RUN_DIR [CONFIG]`.
#include <filesystem>

#include "app/commands.h"
#include "app/ensemble_run.h"
#include "app/placed_run.h"
#include "app/single.h"
#include "train/checkpoint.h"

namespace mel::app {

namespace {

const char* kind_of(const Json& cfg) {
  return is_mel_config(cfg) ? "mel" : "single";
}

// Continues the run in o.resume. Its config comes from the checkpoint; a config given beside it
// must describe the same run (the engine names the keys that differ).
void resume_run(const CliOptions& o, const RunOverrides& ov) {
  MEL_CHECK(std::filesystem::is_directory(o.resume), "mel train --resume: {} is not a run folder",
            o.resume);
  MEL_CHECK(!changes_config(o),
            "mel train --resume: --epochs, --batch, --train-limit, --test-limit, --seed and "
            "--data cannot change a run being resumed (its config is stored in {}/"
            "model.safetensors)",
            o.resume);
  const train::CheckpointInfo info = train::read_checkpoint_info(o.resume);
  const std::string stored_source = o.resume + "/model.safetensors (stored config)";
  Json cfg = Json::parse(info.config_json, nullptr, false);
  MEL_CHECK(!cfg.is_discarded(), "{}: the stored config is not valid JSON", stored_source);
  std::string source = stored_source;
  if (!o.config.empty()) {
    Json given = read_json_file(o.config);
    MEL_CHECK(is_mel_config(given) == is_mel_config(cfg),
              "mel train --resume: {} holds a run of kind '{}' but {} has kind '{}'", o.resume,
              kind_of(cfg), o.config, kind_of(given));
    cfg = std::move(given);
    source = o.config;
  }
  if (is_mel_config(cfg)) {
    MelConfig c = parse_mel_config(std::move(cfg), source, RunOverrides{});
    if (o.placement == "single") {
      train_mel(c, ov, o.resume);
    } else {
      train_mel_placed(c, ov, o.resume, {o.placement, o.replicas, o.comm_timeout, o.gpu_comm});
    }
  } else {
    MEL_CHECK(o.placement == "single",
              "mel train --resume {} --placement {}: a single-model run "
              "is not placed",
              o.resume, o.placement);
    train_single(parse_single_config(std::move(cfg), source, RunOverrides{}), ov, o.resume);
  }
}

}  // namespace

CLI::App* add_train(CLI::App& app, CliOptions& o) {
  auto* train = app.add_subcommand("train", "train the model a JSON config describes");
  train->add_option("config", o.config, "config file (e.g. configs/fmnist_mel2.json)");
  train->add_option("--stop-after", o.stop_after,
                    "stop after this epoch, checkpointed (continue with --resume)");
  train->add_option("--resume", o.resume,
                    "continue the run in this folder from its last checkpoint (a config given "
                    "beside it must be the run's own)");
  train
      ->add_option("--placement", o.placement,
                   "ensembles: single (one process), threads (one thread per server) or servers "
                   "(one MPI process per server: mpirun -np M+1 mel train ...)")
      ->check(CLI::IsMember({"single", "threads", "servers"}));
  train
      ->add_option("--replicas", o.replicas,
                   "placed ensembles: data parallelism, R copies of every server, each on 1/R of "
                   "every batch (threads or servers: (M+1)*R ranks)")
      ->check(CLI::PositiveNumber);
  train
      ->add_option("--comm-timeout", o.comm_timeout,
                   "placed runs: seconds a rank waits for another before it stops the run with "
                   "an error naming that rank (default 300)")
      ->check(CLI::PositiveNumber);
  train
      ->add_option("--gpu-comm", o.gpu_comm,
                   "placed runs on GPUs in separate processes: nccl (device to device, the "
                   "default) or host (staged through the host over MPI)")
      ->check(CLI::IsMember({"nccl", "host"}));
  add_run_options(train, o);
  return train;
}

void run_train(const CliOptions& o) {
  const RunOverrides ov = overrides_of(o);
  MEL_CHECK(o.replicas == 1 || o.placement != "single",
            "mel train --replicas {}: data parallelism replicates the servers of a placed run; "
            "add --placement threads or servers",
            o.replicas);
  if (!o.resume.empty()) return resume_run(o, ov);
  MEL_CHECK(!o.config.empty(), "mel train: give a config file (or --resume RUN_DIR)");
  Json cfg = read_json_file(o.config);
  if (is_mel_config(cfg)) {
    MelConfig c = parse_mel_config(std::move(cfg), o.config, ov);
    if (o.placement == "single") {
      train_mel(c, ov, "");
    } else {
      train_mel_placed(c, ov, "", {o.placement, o.replicas, o.comm_timeout, o.gpu_comm});
    }
  } else {
    MEL_CHECK(o.placement == "single",
              "mel train --placement {}: {} is a single model; placement splits an ensemble "
              "(\"kind\": \"mel\") over its servers",
              o.placement, o.config);
    train_single(parse_single_config(std::move(cfg), o.config, ov), ov);
  }
}

}  // namespace mel::app
