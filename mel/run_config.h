// The parts of a run config shared by every model kind: data, optimizer, schedule and training
// settings, read strictly from JSON, and the factories that turn them into nn objects.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "mel/json_reader.h"
#include "nn/optim.h"
#include "nn/schedule.h"

namespace mel::app {

struct DataConfig {
  std::string dataset = "fashion-mnist";  // fashion-mnist, mnist, cifar10, cifar100
  std::string dir;                        // empty: the dataset's default folder
  std::vector<float> mean, std;           // per channel, applied after scaling to [0, 1]
  int64_t crop_padding = 0;
  bool hflip = false;
  int64_t num_classes() const;
};

struct OptimizerConfig {
  std::string type = "adam";  // sgd, adam, adamw
  double lr = 1e-3;
  double momentum = 0.0, dampening = 0.0;
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
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
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
};

// The device a command runs on: parsed, checked to exist, and one the trainers support (the CPU
// until the CUDA backend lands); `command` names the command in the error.
Device run_device(const std::string& spec, const char* command);

DataConfig read_data_config(const JsonReader& r);
TrainConfig read_train_config(const JsonReader& r);

std::unique_ptr<nn::Optimizer> make_optimizer(const OptimizerConfig& c, nn::FlatParameters& p);
std::unique_ptr<nn::LrSchedule> make_schedule(const ScheduleConfig& s, const OptimizerConfig& o,
                                              int64_t steps_per_epoch, int64_t epochs);

}  // namespace mel::app
