// Training metrics kept where the model runs and read back every few steps (one copy for the
// losses, one for the correct counts), with the divergence check; and a readable diff of two
// configs for resume errors.
#pragma once
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "core/json_reader.h"
#include "train/task.h"

namespace mel::train {

class StepMetrics {
 public:
  StepMetrics() = default;
  // `divergence_factor` (0: off) and the lowest loss of earlier epochs (infinity: none) set the
  // explosion check.
  StepMetrics(size_t predictors, int64_t epoch, int64_t read_every, double divergence_factor = 0.0,
              double lowest_loss = std::numeric_limits<double>::infinity());
  // Queues one step's results; every `read_every` steps reads the queue back (returns true then).
  bool add(StepOutput out, int64_t step, double lr);
  // Reads back whatever is queued. A non-finite loss, or one above divergence_factor times
  // max(lowest loss so far, 1), is an error naming the epoch, the step and its learning rate;
  // nothing of the epoch has been checkpointed then.
  void flush();

  int64_t steps() const { return steps_; }
  int64_t samples() const { return samples_; }
  double mean_loss() const { return samples_ ? loss_sum_ / static_cast<double>(samples_) : 0.0; }
  double accuracy(size_t predictor) const;
  double last_lr() const { return last_lr_; }
  double lowest_loss() const { return lowest_; }

 private:
  struct Pending {
    StepOutput out;
    int64_t step = 0;
    double lr = 0.0;
  };
  std::vector<Pending> pending_;
  std::vector<int64_t> correct_, seen_;  // per predictor
  int64_t epoch_ = 0, read_every_ = 1, steps_ = 0, samples_ = 0;
  double loss_sum_ = 0.0, last_lr_ = 0.0;
  double factor_ = 0.0, lowest_ = std::numeric_limits<double>::infinity();
};

// Before a checkpoint: every parameter and buffer of `model` (batch-norm statistics included) must
// be finite; otherwise an error naming the first bad tensor and the epoch (the previous
// checkpoint stays).
void check_finite_state(const nn::Module& model, int64_t epoch);

// How many rows of `logits` [N, C] have their argmax equal to `labels` (i64 [N]): on the device
// as an i64 0-d tensor (no synchronisation), or read back to the host (labels on the CPU).
Tensor correct_on_device(const Tensor& logits, const Tensor& labels);
int64_t count_correct(const Tensor& logits, const Tensor& labels);

// "train.epochs: 3 in the run, 5 here; name: ..." for the first few keys where two configs differ.
std::string describe_differences(const Json& a, const Json& b, const std::string& a_label,
                                 const std::string& b_label);

}  // namespace mel::train
