// `mel train CONFIG` and `mel train --resume RUN_DIR [CONFIG]`.
#include <exception>
#include <filesystem>
#include <memory>

#include "app/commands.h"
#include "app/ensemble_run.h"
#include "app/placed_run.h"
#include "app/single.h"
#include "train/checkpoint.h"
#include "train/files.h"

namespace mel::app {

namespace {

const char* kind_of(const Json& cfg) {
  return is_mel_config(cfg) ? "mel" : "single";
}

// Holds the run folder while the command runs: a second `mel train` into it is an error naming
// this process. Placed as processes, each rank runs this command and only the rank that writes
// the folder holds it (the engine takes the lock there): nullptr.
std::unique_ptr<train::RunFolderLock> hold_folder(const CliOptions& o, const std::string& out) {
  if (o.placement == "servers") return nullptr;
  return std::make_unique<train::RunFolderLock>(out);
}

// A run name becomes a folder under runs/: it must stay there.
void check_run_name(const RunConfigBase& c) {
  const std::string& n = c.name;
  MEL_CHECK(!n.empty() && n.find('/') == std::string::npos && n.find('\\') == std::string::npos &&
                n.find("..") == std::string::npos && !n.starts_with("."),
            "{}: \"name\": '{}' cannot name a run folder under runs/ (a name must not be empty, "
            "contain '/', '\\' or '..', or start with '.')",
            c.path, n);
}

// The claim on the folder of a new run, taken before its data is read: the run name is checked,
// a folder holding a finished or resumable run is kept unless --overwrite, the folder is held
// (hold_folder) and must be writable. The engine then starts the run from an empty checkpoint. A
// start that fails before the run wrote anything (missing data, a bad device, ...) removes what
// the claim created, so it leaves no trace.
class NewRunClaim {
 public:
  NewRunClaim(const RunConfigBase& c, const CliOptions& o, const RunOverrides& ov)
      : out_(ov.out.empty() ? "runs/" + c.name : ov.out) {
    check_run_name(c);
    std::error_code ec;
    created_dir_ = !std::filesystem::exists(out_, ec);
    created_lock_ = !std::filesystem::exists(out_ + "/.lock", ec);
    hold_ = hold_folder(o, out_);
    train::ensure_dir(out_);
    if (!o.overwrite && train::has_checkpoint(out_)) {
      std::string what = "a checkpoint";
      try {
        what = fmt::format("a checkpoint at epoch {}", train::read_checkpoint_info(out_).epoch);
      } catch (const Error&) {
      }
      const bool finished = std::filesystem::exists(out_ + "/report.json", ec);
      fail(
          "mel train: {} already holds a {} run ({}); continue it with `mel train --resume {}`, "
          "start it over with --overwrite, or choose another --out",
          out_, finished ? "finished" : "resumable", what, out_);
    }
    train::check_writable(out_);
  }
  NewRunClaim(const NewRunClaim&) = delete;
  NewRunClaim& operator=(const NewRunClaim&) = delete;
  ~NewRunClaim() {
    if (std::uncaught_exceptions() > exceptions_) undo();
  }

 private:
  // Only a folder that holds nothing but the lock file is taken back.
  void undo() noexcept {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(out_, ec)) {
      if (e.path().filename() != ".lock") return;
    }
    if (ec) return;
    if (created_lock_) std::filesystem::remove(out_ + "/.lock", ec);
    hold_.reset();
    if (created_dir_) std::filesystem::remove(out_, ec);
  }

  std::string out_;
  bool created_dir_ = false, created_lock_ = false;
  std::unique_ptr<train::RunFolderLock> hold_;
  int exceptions_ = std::uncaught_exceptions();
};

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
  MEL_CHECK(!o.overwrite,
            "mel train --resume: --overwrite starts a run over; it cannot resume one");
  const auto hold = hold_folder(o, o.resume);
  train::check_writable(o.resume);
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
  train->add_flag("--overwrite", o.overwrite,
                  "start the run over in a run folder that holds a finished or resumable run "
                  "(its checkpoint, metrics and report are removed); without it such a folder is "
                  "an error");
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
    const NewRunClaim claim(c, o, ov);
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
    const SingleConfig c = parse_single_config(std::move(cfg), o.config, ov);
    const NewRunClaim claim(c, o, ov);
    train_single(c, ov);
  }
}

}  // namespace mel::app
