// Ensemble run configs ("kind": "mel"): the JSON read strictly into the MEL method's typed specs
// (upstream models through the layer registry, heads, loss, baseline, phase 2).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "app/run_config.h"
#include "core/json_reader.h"
#include "mel/ensemble.h"
#include "mel/task.h"

namespace mel::app {

// The JSON (`json`) is self-contained: the original model's file becomes its parameter count.
struct MelConfig : RunConfigBase {
  method::LossSpec loss;
  method::PhaseSpec phase2;  // heads only, upstreams frozen (epochs 0: none)
  method::Baseline baseline = method::Baseline::joint;
  int64_t original_params = 0;
  int64_t exit_classes = 10;
};

// True when the config file (or stored config) describes an ensemble ("kind": "mel").
bool is_mel_config(const Json& json);
MelConfig parse_mel_config(Json json, const std::string& source, const RunOverrides& overrides);
std::shared_ptr<method::Ensemble> build_ensemble_model(const MelConfig& c);
// The method's spec for a run of `c` on `device`.
method::MelSpec mel_spec(const MelConfig& c, Device device);

// From the config's "ensemble" object. `num_classes` is the dataset's; `exit_classes` the
// exits' (== num_classes unless labels are hierarchical).
std::shared_ptr<method::Ensemble> build_ensemble(const JsonReader& ensemble, int64_t num_classes,
                                                 int64_t exit_classes);

}  // namespace mel::app
