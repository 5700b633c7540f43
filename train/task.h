// The Task interface between a training method and the generic Trainer: the task owns the model,
// its data, its loss and metrics; the trainer owns the loop, optimizers, checkpoints and files.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "data/batch.h"
#include "nn/module.h"
#include "nn/optim.h"
#include "train/config.h"

namespace mel::train {

// A stretch of epochs with its own trainable parameters, optimizer and schedule. Parameters of
// `trainable` get the phase's optimizer (one flat buffer); everything else is frozen.
struct Phase {
  std::string label;  // shown in progress titles ("heads"); empty for the main phase
  int64_t epochs = 0;
  nn::Module* trainable = nullptr;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
};

// What one training step hands back. Everything stays where the model runs: the trainer reads
// `loss` and `correct` back every few steps, not every step.
struct StepOutput {
  Tensor loss;                       // 0-d, differentiable: the trainer runs backward on it
  std::optional<double> loss_value;  // the loss on the host, when the step already has it
  Tensor correct;                    // i64 [P]: correct predictions per predictor in this batch
  int64_t samples = 0;               // the batch size
  // Server failures simulated in training (MEL's failout): the predictors that had no input this
  // step (left out of their training accuracy; empty: none), and the parameters not trained (name
  // prefixes relative to the phase's trainable module; "" is all of them) whose values,
  // optimizer state and step counts stay as they are.
  std::vector<bool> absent;
  std::vector<std::string> untrained;
};

// Test-split results: one accuracy per predictor (names in predictor_names() order).
struct Evaluation {
  std::vector<std::string> names;
  std::vector<double> accuracy;
  // Each predictor's mean cross-entropy per sample, in nats (per character for text); empty when
  // a task does not measure it.
  std::vector<double> losses;
  double loss = 0.0;
  int64_t samples = 0;
  // Accuracies of answers combined from several predictors per sample, by name (a MEL task: the
  // alive exits' averaged probabilities, "1,2"); empty when a task has none.
  std::map<std::string, double> combined;
  // The mean cross-entropy of those combined answers (-log of the averaged probability of the
  // label), by the same names.
  std::map<std::string, double> combined_loss;
};

class Task {
 public:
  virtual ~Task() = default;
  virtual nn::Module& model() = 0;
  // The training phases, in order; a phase may have 0 epochs.
  virtual std::vector<Phase> phases() = 0;
  // Predictor names: what `correct` counts and Evaluation reports ("1" for a single model).
  virtual std::vector<std::string> predictor_names() const = 0;
  // The predictor whose running accuracy the progress line shows.
  virtual size_t progress_predictor() const { return predictor_names().size() - 1; }
  virtual data::BatchSource& train_data() = 0;
  // Puts the model in training mode for `phase` (frozen parts may stay in eval mode).
  virtual void begin_epoch(int phase) {
    (void)phase;
    model().train();
  }
  // Called before each train_step with the step's index within its phase (counted from the start
  // of the phase, the same after a resume).
  virtual void begin_step(int phase, int64_t step) {
    (void)phase;
    (void)step;
  }
  // Whether train_step may leave parameters untrained (StepOutput::untrained): the optimizers
  // then keep a step count per parameter.
  virtual bool skips_parameters() const { return false; }
  // Forward and loss for one batch; the trainer does backward (unless the returned loss needs no
  // gradient: a task that ran backward itself, or has nothing to train on this rank), clipping
  // and the update. Gradients were zeroed before the call.
  virtual StepOutput train_step(const data::Batch& batch, int phase) = 0;
  // Evaluates the model (in eval mode, without gradients) on the test split.
  virtual Evaluation evaluate() = 0;
  // The header line's description after "mel train NAME" (sizes, samples, epochs).
  virtual std::string describe() const = 0;

  // ---- for tasks that span several ranks (placed training); the defaults are one process's ----
  virtual bool spans_ranks() const { return false; }
  // Whether this rank prints and writes the run folder (exactly one rank of a run does).
  virtual bool writes_run_folder() const { return true; }
  // Collective, after backward and before clipping: combines the gradients of data-parallel
  // replicas (an all-reduce).
  virtual void reduce_gradients(nn::FlatParameters& flat) { (void)flat; }
  // Collective: the squared gradient norm over every rank, from this rank's part (for global
  // clipping).
  virtual double reduce_squared_norm(double local) { return local; }
  // Collective, before a checkpoint: the writing rank's model() then holds every rank's weights.
  virtual void gather_model() {}
  // Collective: the optimizer state to checkpoint (on the writing rank, in the single-process
  // format), from this rank's optimizer.
  virtual nn::NamedTensors gather_optimizer_state(const nn::Optimizer& local) {
    return local.state();
  }
  // Collective: this rank's part of a checkpointed optimizer state (the inverse of
  // gather_optimizer_state), for the optimizer `local` of the phase being resumed.
  virtual nn::NamedTensors local_optimizer_state(const nn::Optimizer& local,
                                                 const nn::NamedTensors& stored) {
    (void)local;
    return stored;
  }
};

}  // namespace mel::train
