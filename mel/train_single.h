// `mel train` for a single classifier: config loading, the training loop, evaluation, metrics,
// checkpoints and the run report.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "data/dataset.h"
#include "data/loader.h"
#include "mel/json_reader.h"
#include "mel/model_builder.h"
#include "mel/run_config.h"

namespace mel::app {

// Command-line overrides applied on top of the config file.
struct RunOverrides {
  std::string device = "cpu";
  std::optional<int64_t> epochs, batch_size, train_limit, test_limit;
  std::optional<uint64_t> seed;
  std::string data_dir;
  std::string out;                    // empty: runs/<config name>
  std::optional<int64_t> stop_after;  // ensembles: stop (checkpointed) after this epoch
  bool progress = true;
};

struct SingleConfig {
  std::string path, name;
  Json json;  // the file as read, overrides applied
  DataConfig data;
  TrainConfig train;
};

// Applies command-line overrides to the parsed sections and records them in `json`.
void apply_overrides(const RunOverrides& overrides, TrainConfig& train, DataConfig& data,
                     Json& json);

// Reads and validates the whole config (the model is built once to check it).
SingleConfig load_single_config(const std::string& path, const RunOverrides& overrides);
SingleConfig parse_single_config(Json json, const std::string& source,
                                 const RunOverrides& overrides);
std::shared_ptr<Classifier> build_model(const SingleConfig& c);

struct EvalResult {
  double loss = 0.0, accuracy = 0.0;
  int64_t samples = 0;
};
// Accuracy and mean cross-entropy over the first `limit` samples (0: all), in eval mode.
EvalResult evaluate(nn::Module& model, const data::ImageDataset& ds, const DataConfig& dc,
                    int64_t batch_size, int64_t limit);

// Trains, evaluates and writes the run folder; returns report.json's content.
Json train_single(const SingleConfig& c, const RunOverrides& overrides);

// Recomputes the test accuracy of a run folder or model checkpoint (config from its metadata).
Json eval_single(const std::string& run_or_checkpoint, const RunOverrides& overrides);

// How many rows of `logits` (any device) have their argmax equal to `labels` (i64, CPU): the
// predictions are read back to the host.
int64_t count_correct(const Tensor& logits, const Tensor& labels);

// The device of a module's first parameter (the CPU for a module without parameters).
Device module_device(const nn::Module& m);

// Where the run's work happens: the GPU's name, or the CPU threads and GEMM backend.
std::string compute_description(Device d);

// The loader options a config asks for (normalisation; augmentation only when `train`).
data::LoaderOptions loader_options(const DataConfig& dc, int64_t batch, uint64_t seed, bool train,
                                   int64_t limit);

}  // namespace mel::app
