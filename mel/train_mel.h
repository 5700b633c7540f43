// `mel train` / `mel eval` / `mel export` for MEL ensembles: config, joint training with the
// fused loss, optional head fine-tuning with frozen upstreams, resume, failure evaluation.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "mel/ensemble.h"
#include "mel/run_config.h"
#include "mel/train_single.h"

namespace mel::app {

struct LossConfig {
  std::vector<double> size_weights;  // lambda by subset size, index 1..M (index 0 unused)
  double diversity_weight = 0.0, diversity_margin = 0.0;
  bool hierarchical = false;
  std::vector<int64_t> coarse_map;  // fine class -> coarse class (empty: the dataset's own)
};

struct PhaseConfig {
  int64_t epochs = 0;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
};

struct MelConfig {
  std::string path, name;
  Json json;  // overrides applied
  DataConfig data;
  TrainConfig train;
  LossConfig loss;
  PhaseConfig phase2;              // heads only, upstreams frozen (epochs 0: none)
  std::string baseline = "joint";  // joint, independent, combination_only
  int64_t original_params = 0;
  int64_t exit_classes = 10;
};

// True when the config file (or stored config) describes an ensemble ("kind": "mel").
bool is_mel_config(const Json& json);
MelConfig parse_mel_config(Json json, const std::string& source, const RunOverrides& overrides);
std::shared_ptr<Ensemble> build_ensemble_model(const MelConfig& c);

struct EnsembleEval {
  std::vector<std::string> names;  // predictors: exits then heads
  std::vector<double> accuracy;    // per predictor
  double loss = 0.0;               // joint loss (mean over batches)
  int64_t samples = 0;
};
EnsembleEval evaluate_ensemble(Ensemble& model, const MelConfig& c, const data::ImageDataset& ds,
                               int64_t limit);

// Trains (or resumes when `resume_dir` is set) and writes the run folder; returns report.json.
Json train_mel(const MelConfig& c, const RunOverrides& overrides, const std::string& resume_dir);
// The failure report etc. recomputed from a checkpoint.
Json eval_mel(const MelConfig& c, const std::string& checkpoint, const RunOverrides& overrides);
// One safetensors file per server: upstream_<i>.safetensors (backbone.*, exit.*) and
// combination.safetensors (heads.<subset>.*).
void export_servers(const std::string& run_dir, const std::string& out_dir);

}  // namespace mel::app
