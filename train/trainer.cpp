#include "train/trainer.h"

#include <fmt/format.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/cuda_context.h"
#include "train/checkpoint.h"
#include "train/device.h"
#include "train/files.h"
#include "train/metrics.h"
#include "train/progress.h"

namespace mel::train {

namespace {

using Clock = std::chrono::steady_clock;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The metrics lines of the epochs a checkpoint covers (a later epoch's line may have been written
// before a crash prevented its checkpoint).
std::string metrics_up_to(const std::string& run_dir, int64_t epochs) {
  std::istringstream in(read_text(run_dir + "/metrics.jsonl"));
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    Json j = Json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("epoch", int64_t{0}) <= epochs) kept += line + "\n";
  }
  return kept;
}

// A number for one predictor, an object by predictor name for several.
Json per_predictor(const std::vector<std::string>& names, const std::vector<double>& values) {
  if (names.size() == 1) return values[0];
  Json o = Json::object();
  for (size_t k = 0; k < names.size(); ++k) o[names[k]] = values[k];
  return o;
}

// The epoch a checkpoint of `run_dir` is at, when it belongs to a run with `config_json`.
int64_t resumable_epoch(const CheckpointInfo& info, const std::string& run_dir,
                        const std::string& config_json) {
  if (info.config_json == config_json) return info.epoch;
  const Json stored = Json::parse(info.config_json, nullptr, false);
  const Json here = Json::parse(config_json, nullptr, false);
  fail(
      "{}: the checkpoint belongs to another run: {} (resume it with its own config: mel train "
      "--resume {})",
      run_dir, describe_differences(stored, here, "in the run", "here"), run_dir);
}

}  // namespace

int64_t check_resumable(const std::string& run_dir, const std::string& config_json) {
  return resumable_epoch(read_checkpoint_info(run_dir), run_dir, config_json);
}

namespace {

// Per parameter of `flat`: false when its name starts with one of `untrained`.
std::vector<bool> trained_mask(const nn::FlatParameters& flat,
                               const std::vector<std::string>& untrained) {
  std::vector<bool> mask;
  for (const auto& e : flat.entries()) {
    bool trained = true;
    for (const std::string& prefix : untrained) trained = trained && !e.name.starts_with(prefix);
    mask.push_back(trained);
  }
  return mask;
}

}  // namespace

struct Trainer::PhaseState {
  const Phase* phase = nullptr;
  std::unique_ptr<nn::FlatParameters> flat;
  std::unique_ptr<nn::Optimizer> optimizer;
  std::unique_ptr<nn::LrSchedule> schedule;
  int64_t step = 0;  // within the phase
  double lr = 0.0;   // of the last step
};

struct Trainer::EpochStats {
  StepMetrics metrics;
  double seconds = 0.0;
};

Trainer::Trainer(Task& task, RunOptions options, TrainerHooks hooks)
    : task_(task), opt_(std::move(options)), hooks_(std::move(hooks)) {
  MEL_CHECK(opt_.train.log_every >= 1, "train.log_every must be >= 1, got {}",
            opt_.train.log_every);
}

void Trainer::print_header(int64_t done_epochs) const {
  fmt::print("mel train {}{}, {}{}\n", opt_.name, task_.describe(),
             compute_description(opt_.device),
             done_epochs ? fmt::format(", resuming after epoch {}", done_epochs) : "");
}

void Trainer::clip(PhaseState& ps) {
  const double max_norm = opt_.train.clip_grad_norm;
  if (max_norm <= 0) return;
  double norm = 0.0;
  if (task_.spans_ranks()) {
    // Several ranks: the norm over all of them, then each scales its own part.
    norm = nn::clip_grad_norm(*ps.flat, max_norm,
                              [this](double sq) { return task_.reduce_squared_norm(sq); });
  } else {
    norm = nn::clip_grad_norm(*ps.flat, max_norm);
  }
  // Clipping a non-finite norm would write NaN into every parameter.
  MEL_CHECK(std::isfinite(norm),
            "mel train: the gradient norm became {} at step {} (lr {}); lower the learning rate "
            "(the last checkpoint written is kept)",
            norm, ps.step, ps.lr);
}

Trainer::EpochStats Trainer::run_epoch(PhaseState& ps, int phase, int64_t epoch,
                                       int64_t total_epochs) {
  data::BatchSource& loader = task_.train_data();
  task_.begin_epoch(phase);
  loader.start_epoch(epoch);
  const std::string& label = ps.phase->label;
  std::optional<Progress> progress;  // on the rank that writes the run folder
  if (writes_) {
    progress.emplace(fmt::format("epoch {}/{}{}", epoch + 1, total_epochs,
                                 label.empty() ? "" : " (" + label + ")"),
                     loader.num_batches(), opt_.progress && stdout_is_terminal());
  }
  EpochStats stats;
  stats.metrics = StepMetrics(task_.predictor_names().size(), epoch, opt_.train.log_every,
                              opt_.train.divergence_factor, lowest_loss_);
  const size_t shown = task_.progress_predictor();
  auto show = [&] {
    const StepMetrics& m = stats.metrics;
    if (progress && m.samples() > 0) {
      progress->update(m.steps(), m.samples(), m.mean_loss(), m.accuracy(shown));
    }
  };
  const auto t0 = Clock::now();
  data::Batch b;
  while (loader.next(b)) {
    const nn::LrMomentum lm = ps.schedule->at(ps.step);
    ps.lr = lm.lr;
    ps.optimizer->zero_grad();
    task_.begin_step(phase, ps.step);
    StepOutput out = task_.train_step(b, phase);
    if (out.loss.requires_grad()) out.loss.backward();
    task_.reduce_gradients(*ps.flat);
    clip(ps);
    if (out.untrained.empty()) {
      ps.optimizer->step(lm.lr, lm.momentum);
    } else {
      ps.optimizer->step(lm.lr, lm.momentum, trained_mask(*ps.flat, out.untrained));
    }
    if (stats.metrics.add(std::move(out), ps.step, lm.lr)) show();
    ++ps.step;
  }
  stats.metrics.flush();
  lowest_loss_ = stats.metrics.lowest_loss();
  show();
  if (progress) progress->finish();
  stats.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return stats;
}

void Trainer::print_epoch(const StepMetrics& m, double secs, int64_t epoch,
                          int64_t total_epochs) const {
  const double seen = static_cast<double>(m.samples());
  const std::vector<std::string> names = task_.predictor_names();
  if (names.size() == 1) {
    fmt::print(
        "epoch {}/{}: train loss {:.4f} acc {:.2f}%  test loss {:.4f} acc {:.2f}%  "
        "{:.0f} samples/s  ({})\n",
        epoch + 1, total_epochs, m.mean_loss(), 100.0 * m.accuracy(0), last_.loss,
        100.0 * last_.accuracy[0], seen / secs, format_duration(secs));
    return;
  }
  std::string accs;
  for (size_t k = 0; k < names.size(); ++k) {
    accs += fmt::format(" {} {:.2f}", names[k], 100.0 * last_.accuracy[k]);
  }
  fmt::print("epoch {}/{}: train loss {:.4f}  test accuracy %:{}  {:.0f} samples/s ({})\n",
             epoch + 1, total_epochs, m.mean_loss(), accs, seen / secs, format_duration(secs));
}

void Trainer::finish_epoch(const EpochStats& stats, int phase, int64_t epoch, int64_t total_epochs,
                           int64_t step, const nn::Optimizer& optimizer) {
  const StepMetrics& m = stats.metrics;
  const double seen = static_cast<double>(m.samples());
  const double secs = stats.seconds;
  last_ = task_.evaluate();  // collective when the task spans ranks
  task_.gather_model();
  const nn::NamedTensors state = task_.gather_optimizer_state(optimizer);
  if (!writes_) return;
  print_epoch(m, secs, epoch, total_epochs);
  const std::vector<std::string> names = task_.predictor_names();
  std::vector<double> train_acc;
  for (size_t k = 0; k < names.size(); ++k) train_acc.push_back(m.accuracy(k));
  Json line = {{"epoch", epoch + 1}};
  if (num_phases_ > 1) line["phase"] = phase + 1;
  line["step"] = step;
  line["lr"] = m.last_lr();
  line["train_loss"] = m.mean_loss();
  line["train_accuracy"] = per_predictor(names, train_acc);
  line["test_loss"] = last_.loss;
  line["test_accuracy"] = per_predictor(last_.names, last_.accuracy);
  if (last_.losses.size() == last_.names.size()) {
    line["test_losses"] = per_predictor(last_.names, last_.losses);
  }
  line["epoch_seconds"] = secs;
  line["samples_per_second"] = seen / secs;
  metrics_ += line.dump() + "\n";
  write_file_atomic(opt_.out + "/metrics.jsonl", metrics_);
  check_finite_state(task_.model(), epoch);
  save_checkpoint(opt_.out, task_.model(), &state, {opt_.config_json, epoch + 1, step});
}

Json Trainer::run() {
  writes_ = task_.writes_run_folder();
  const std::vector<Phase> phases = task_.phases();
  num_phases_ = static_cast<int>(phases.size());
  int64_t total_epochs = 0;
  for (const Phase& p : phases) total_epochs += p.epochs;
  const int64_t steps_per_epoch = task_.train_data().num_batches();
  MEL_CHECK(steps_per_epoch > 0, "mel train: the training set is empty");
  MEL_CHECK(!opt_.resume || std::filesystem::is_directory(opt_.out),
            "{}: not a run folder (nothing to resume)", opt_.out);
  // The rank that writes the run folder holds it for the whole run (a second writer is an error
  // naming this process) and finds a folder it cannot write before training. A new run starts
  // from an empty checkpoint; a resumed one first completes a save a crash cut short.
  std::optional<RunFolderLock> hold;
  if (writes_) {
    hold.emplace(opt_.out);
    check_writable(opt_.out);
    if (opt_.resume) {
      recover_checkpoint(opt_.out);
    } else {
      remove_run_files(opt_.out);
    }
  }
  int64_t done_epochs = 0;
  CheckpointInfo resumed;  // of the model checkpoint resumed from
  if (opt_.resume) {
    const Checkpoint checkpoint = read_checkpoint(opt_.out);
    resumed = checkpoint.info;
    done_epochs = resumable_epoch(resumed, opt_.out, opt_.config_json);
    load_model_checkpoint(checkpoint, task_.model());
    metrics_ = metrics_up_to(opt_.out, done_epochs);
    MEL_CHECK(done_epochs <= total_epochs,
              "{}: the checkpoint is at epoch {} but the run has {} epochs", opt_.out, done_epochs,
              total_epochs);
  }
  if (writes_) print_header(done_epochs);

  int64_t first = 0;
  for (int p = 0; p < num_phases_; ++p) {
    const Phase& phase = phases[p];
    const int64_t begin = first, end = first + phase.epochs;
    first = end;
    if (phase.epochs == 0 || done_epochs >= end) continue;
    PhaseState ps;
    ps.phase = &phase;
    // The phase's optimizer updates only its trainable parameters: one flat buffer of them.
    ps.flat = std::make_unique<nn::FlatParameters>(*phase.trainable);
    ps.optimizer = make_optimizer(phase.optimizer, *ps.flat);
    if (task_.skips_parameters()) ps.optimizer->track_entry_steps();
    ps.schedule = make_schedule(phase.schedule, phase.optimizer, steps_per_epoch, phase.epochs);
    const int64_t start = std::max(begin, done_epochs);
    if (start > begin) {
      load_optimizer_state(
          opt_.out, *ps.optimizer,
          task_.local_optimizer_state(*ps.optimizer, read_optimizer_checkpoint(opt_.out, resumed)));
    }
    ps.step = (start - begin) * steps_per_epoch;
    for (int64_t epoch = start; epoch < end; ++epoch) {
      EpochStats stats = run_epoch(ps, p, epoch, total_epochs);
      finish_epoch(stats, p, epoch, total_epochs, ps.step, *ps.optimizer);
      if (opt_.stop_after && epoch + 1 == *opt_.stop_after && epoch + 1 < total_epochs) {
        if (writes_) {
          fmt::print("stopped after epoch {} as asked; continue with: mel train --resume {}\n",
                     epoch + 1, opt_.out);
        }
        return Json{{"stopped_after", epoch + 1}, {"run", opt_.out}};
      }
    }
  }
  if (last_.names.empty()) last_ = task_.evaluate();
  return report(total_epochs);
}

Json Trainer::report(int64_t total_epochs) {
  if (!writes_) return Json::object();
  // Totals over every epoch of the run, resumed ones included.
  double train_seconds = 0.0, samples = 0.0;
  std::istringstream in(metrics_);
  std::string line;
  while (std::getline(in, line)) {
    const Json j = Json::parse(line);
    train_seconds += j.value("epoch_seconds", 0.0);
    samples += j.value("epoch_seconds", 0.0) * j.value("samples_per_second", 0.0);
  }
  RunSummary summary{opt_.out, total_epochs, train_seconds,
                     train_seconds > 0 ? samples / train_seconds : 0.0, last_};
  Json accuracy = Json::object();
  for (size_t k = 0; k < last_.names.size(); ++k) accuracy[last_.names[k]] = last_.accuracy[k];
  Json report = {{"config", Json::parse(opt_.config_json)},
                 {"device", opt_.device.str()},
                 {"epochs", total_epochs},
                 {"train_samples", task_.train_data().num_samples()},
                 {"test_samples", last_.samples},
                 {"params", {{"total", task_.model().num_parameters()}}},
                 {"accuracy", accuracy},
                 {"test_loss", last_.loss},
                 {"train_seconds", train_seconds},
                 {"samples_per_second", summary.samples_per_second},
                 {"threads", omp_get_max_threads()}};
  if (hooks_.report) hooks_.report(report, last_);
  if (opt_.device.is_cuda()) report["peak_gpu_memory_bytes"] = memory_stats(opt_.device).peak_bytes;
  write_file_atomic(opt_.out + "/report.json", report.dump(2) + "\n");
  if (hooks_.finish) {
    hooks_.finish(summary);
  } else {
    fmt::print(
        "test accuracy {:.2f}% after {} epochs ({} training, {:.0f} samples/s); run folder {}\n",
        100.0 * last_.accuracy.back(), total_epochs, format_duration(train_seconds),
        summary.samples_per_second, opt_.out);
  }
  return report;
}

}  // namespace mel::train
