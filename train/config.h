// The typed settings of a training run the engine understands (optimizer, schedule, epochs,
// batches, clipping, metrics), and the factories that turn them into nn optimizers and schedules.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/optim.h"
#include "nn/schedule.h"

namespace mel::train {

struct OptimizerConfig {
  std::string type = "adam";  // sgd, adam, adamw
  double lr = 1e-3;
  double momentum = 0.0, dampening = 0.0;
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
  // Parameters without weight decay: "none", or "norms_and_biases" (every parameter of fewer
  // than two dimensions: biases and norm scales, nanoGPT's groups; matrices and embeddings decay).
  std::string exclude_from_decay = "none";
};

struct ScheduleConfig {
  std::string type = "constant";  // constant, step, cosine, onecycle
  double max_lr = 0.0;            // onecycle (0: the optimizer's lr)
  double pct_start = 0.3, div_factor = 25.0, final_div_factor = 1e4;
  bool cycle_momentum = true;
  std::string anneal = "cos";
  double base_momentum = 0.85, max_momentum = 0.95;
  double step_epochs = 0.0, gamma = 0.1;     // step
  double warmup_epochs = 0.0, min_lr = 0.0;  // cosine
};

struct TrainConfig {
  int64_t epochs = 10;
  int64_t batch_size = 256;
  int64_t eval_batch_size = 1000;
  uint64_t seed = 0;
  int64_t train_limit = 0, test_limit = 0;  // 0: the whole split
  double clip_grad_norm = 0.0;              // 0: off
  double label_smoothing = 0.0;
  int64_t log_every = 20;  // steps between read-backs of the training metrics from the device
  // A loss above this factor times max(lowest loss so far, 1) stops the run as diverged (0: off).
  double divergence_factor = 1000.0;
  // MEL only: the probability that each upstream server is down in a step (one value for all, or
  // one per server); empty: no failures in training.
  std::vector<double> failout;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
};

std::unique_ptr<nn::Optimizer> make_optimizer(const OptimizerConfig& c, nn::FlatParameters& p);
std::unique_ptr<nn::LrSchedule> make_schedule(const ScheduleConfig& s, const OptimizerConfig& o,
                                              int64_t steps_per_epoch, int64_t epochs);

}  // namespace mel::train
