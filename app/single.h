// Single-classifier runs: the config (model from its layer list, data, training settings), and
// `mel train` / `mel eval` for it through the generic engine's classification task.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "app/run_config.h"
#include "core/json_reader.h"
#include "data/dataset.h"
#include "train/classification.h"

namespace mel::app {

using train::Classifier;

struct SingleConfig : RunConfigBase {};

// Reads and validates the whole config (the model is built once to check it).
SingleConfig load_single_config(const std::string& path, const RunOverrides& overrides);
SingleConfig parse_single_config(Json json, const std::string& source,
                                 const RunOverrides& overrides);
std::shared_ptr<Classifier> build_model(const SingleConfig& c);

// From a "model" object: {"input": [C, H, W], "trunk": [...], "head": [...]}; checks that the
// head ends in `num_classes` outputs.
std::shared_ptr<Classifier> build_classifier(const JsonReader& model, int64_t num_classes);

// Accuracy and mean cross-entropy over the first `limit` samples (0: all), in eval mode.
train::Evaluation evaluate(nn::Module& model, const data::ImageDataset& ds, const DataConfig& dc,
                           int64_t batch_size, int64_t limit);

// Trains (or resumes the run in `resume_dir`) and writes the run folder; returns report.json.
Json train_single(const SingleConfig& c, const RunOverrides& overrides,
                  const std::string& resume_dir = "");

// Recomputes the test accuracy of a run folder or model checkpoint (config from its metadata).
Json eval_single(const std::string& run_or_checkpoint, const RunOverrides& overrides);

}  // namespace mel::app
