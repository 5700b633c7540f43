// The MEL ensemble: M upstream models (a backbone cut at a chosen layer, plus an exit) and
// combination heads over subsets of their features, built from a strict JSON "ensemble" spec.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "mel/json_reader.h"
#include "nn/layers.h"

namespace mel::app {

// Upstream model i: features f_i = backbone(x), its own prediction e_i(f_i).
class Upstream : public nn::Module {
 public:
  Upstream(std::shared_ptr<nn::Sequential> backbone, std::shared_ptr<nn::Sequential> exit);
  std::shared_ptr<nn::Sequential> backbone, exit;
  Shape feature_shape;  // per sample
};

enum class HeadKind { linear, mlp, conv };

// h_S: the features of the models in S concatenated (in index order) along dim 1.
class Head : public nn::Module {
 public:
  Head(HeadKind kind, std::shared_ptr<nn::Sequential> layers)
      : Module("Head"), kind(kind), layers(std::move(layers)) {
    register_module("layers", this->layers);
  }
  Tensor forward(const Tensor& concatenated) override { return layers->forward(concatenated); }
  HeadKind kind;
  std::shared_ptr<nn::Sequential> layers;
};

struct EnsembleSpec {
  int M = 0;
  std::vector<std::vector<int>> head_subsets;  // sorted 0-based indices, |S| >= 2
  HeadKind head_kind = HeadKind::linear;
  int64_t num_classes = 10;   // heads' outputs
  int64_t exit_classes = 10;  // exits' outputs (the coarse count with hierarchical labels)
};

class Ensemble : public nn::Module {
 public:
  Ensemble(EnsembleSpec spec, std::vector<std::shared_ptr<Upstream>> upstreams,
           std::vector<std::shared_ptr<Head>> heads);
  // Logits of every predictor: the M exits, then the heads in spec.head_subsets order.
  std::vector<Tensor> forward_all(const Tensor& x);
  // Same, with the upstream models run without gradients (phase 2: frozen upstreams).
  std::vector<Tensor> forward_all_frozen_upstream(const Tensor& x);
  // Predictor names: "1".."M", then the subset names ("1+2", ...).
  std::vector<std::string> predictor_names() const;
  int64_t upstream_parameters(int i) const {
    return upstreams[static_cast<size_t>(i)]->num_parameters();
  }
  int64_t head_parameters() const;

  EnsembleSpec spec;
  std::vector<std::shared_ptr<Upstream>> upstreams;
  std::vector<std::shared_ptr<Head>> heads;

 private:
  std::vector<Tensor> heads_from(const std::vector<Tensor>& features, std::vector<Tensor> out);
};

// From the config's "ensemble" object. `num_classes` is the dataset's; `exit_classes` the
// exits' (== num_classes unless labels are hierarchical).
std::shared_ptr<Ensemble> build_ensemble(const JsonReader& ensemble, int64_t num_classes,
                                         int64_t exit_classes);

}  // namespace mel::app
