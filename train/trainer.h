// The generic training engine: epochs and phases over a Task, clipping, metrics read back every
// few steps, a divergence check, progress, per-epoch evaluation, checkpoints, resume and the run
// folder (metrics.jsonl, model/optimizer checkpoints, report.json), all written atomically.
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>

#include "core/device.h"
#include "core/json_reader.h"
#include "train/config.h"
#include "train/metrics.h"
#include "train/task.h"

namespace mel::train {

struct RunOptions {
  std::string name;         // the run's name (header line)
  std::string out;          // the run folder
  std::string config_json;  // the run's config, stored in every checkpoint
  Device device = Device::cpu();
  TrainConfig train;                  // clip_grad_norm and log_every (epochs come from phases)
  std::optional<int64_t> stop_after;  // stop, checkpointed, after this epoch
  bool progress = true;               // a redrawn bar on a terminal
  bool resume = false;                // continue from the checkpoint in `out`
};

// What the run did, for the closing lines.
struct RunSummary {
  std::string out;
  int64_t epochs = 0;
  double train_seconds = 0.0, samples_per_second = 0.0;
  Evaluation last;
};

// Method-specific additions: extra report.json fields (the failure table of an ensemble, say) and
// the closing lines (default: the accuracy and the run folder).
struct TrainerHooks {
  std::function<void(Json& report, const Evaluation& last)> report;
  std::function<void(const RunSummary& summary)> finish;
};

class Trainer {
 public:
  Trainer(Task& task, RunOptions options, TrainerHooks hooks = {});
  // Trains (or resumes) and writes the run folder; returns report.json's content, or
  // {"stopped_after": N, "run": out} when stop_after ended the run early.
  Json run();

 private:
  struct EpochStats;
  struct PhaseState;
  void print_header(int64_t done_epochs) const;
  void clip(PhaseState& ps);
  void print_epoch(const StepMetrics& m, double secs, int64_t epoch, int64_t total_epochs) const;
  EpochStats run_epoch(PhaseState& ps, int phase, int64_t epoch, int64_t total_epochs);
  void finish_epoch(const EpochStats& stats, int phase, int64_t epoch, int64_t total_epochs,
                    int64_t step, const nn::Optimizer& optimizer);
  Json report(int64_t total_epochs);

  Task& task_;
  RunOptions opt_;
  TrainerHooks hooks_;
  std::string metrics_;  // metrics.jsonl's content
  Evaluation last_;
  double lowest_loss_ = std::numeric_limits<double>::infinity();  // for the divergence check
  int num_phases_ = 0;
  bool writes_ = true;  // this rank prints and writes the run folder
};

// The checkpoint in `run_dir` must belong to a run with `config_json`: otherwise an error naming
// the first differing keys ("train.epochs: 3 in the run, 5 here"). Returns the epoch it is at.
int64_t check_resumable(const std::string& run_dir, const std::string& config_json);

}  // namespace mel::train
