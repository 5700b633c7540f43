// `mel train` / `mel eval` / `mel export` for MEL ensembles: the method's task run through the
// generic engine, with the failure report, table and chart added to the run folder.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "app/ensemble_config.h"
#include "data/dataset.h"
#include "mel/failure.h"
#include "train/task.h"
#include "train/trainer.h"

namespace mel::app {

// Every exit's and head's accuracy and the joint loss on the first `limit` test samples.
train::Evaluation evaluate_ensemble(method::Ensemble& model, const MelConfig& c,
                                    const data::ImageDataset& ds, int64_t limit);
// The failure report from an evaluation's per-predictor accuracies (and, with `losses`, each
// answer's loss beside it: text runs).
method::FailureReport failures_of(const method::Ensemble& m, const train::Evaluation& e,
                                  bool losses = false);

// The engine's hooks for an ensemble run: report.json's ensemble fields (per-server parameters,
// baseline, exits' labels, the failure report; then `extra`'s), and the closing table and chart.
train::TrainerHooks ensemble_hooks(const std::shared_ptr<method::Ensemble>& model,
                                   const MelConfig& c,
                                   const std::function<void(Json&)>& extra = {});

// Trains (or resumes the run in `resume_dir`) and writes the run folder; returns report.json.
Json train_mel(const MelConfig& c, const RunOverrides& overrides, const std::string& resume_dir);
// The failure report etc. recomputed from a checkpoint.
Json eval_mel(const MelConfig& c, const std::string& checkpoint, const RunOverrides& overrides);
// One file per server. "safetensors": upstream_<i>.safetensors (backbone.*, exit.*) and
// combination.safetensors (heads.<subset>.*). "onnx": upstream_<i>.onnx and combination.onnx
// (app/onnx_export.h), with the run's name, config and input normalisation in metadata_props.
void export_servers(const std::string& run_dir, const std::string& out_dir,
                    const std::string& format = "safetensors");

}  // namespace mel::app
