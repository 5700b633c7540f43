// The MEL ensemble: M upstream models (a backbone cut at a chosen layer, plus an exit) and
// combination heads over subsets of their features, built from typed specs (no JSON here).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"

namespace mel::method {

// Upstream model i: features f_i = backbone(x), its own prediction e_i(f_i).
class Upstream : public nn::Module {
 public:
  Upstream(std::shared_ptr<nn::Sequential> backbone, std::shared_ptr<nn::Sequential> exit,
           Shape feature_shape);
  std::shared_ptr<nn::Sequential> backbone, exit;
  Shape feature_shape;  // per sample
};

enum class HeadKind { linear, mlp, conv };
const char* head_kind_name(HeadKind k);

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

// How the combination heads are built: linear (one Linear over the concatenated flat features),
// mlp (Linear, activation, Linear) or conv (1x1 conv over channel-concatenated maps, BN,
// activation, global pool, Linear).
struct HeadSpec {
  HeadKind kind = HeadKind::linear;
  std::vector<std::vector<int>> subsets;  // sorted 0-based indices, |S| >= 2
  int64_t hidden = 256;                   // mlp
  int64_t channels = 128;                 // conv
  std::string activation = "relu";        // mlp, conv
  // linear, mlp: a LayerNorm over the concatenated features first (a language model's last
  // hidden states are not normalised; its exits start with their own final norm).
  bool norm = false;
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
  // The heads' logits from every upstream's features (in spec.head_subsets order): what the
  // combination server computes from the features it received.
  std::vector<Tensor> heads_forward(const std::vector<Tensor>& features) {
    return heads_from(features, {});
  }
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

// The ensemble over built upstream models: one head per subset of `heads`, whose inputs are the
// models' feature shapes (flat for linear and mlp heads, maps of one size for conv heads; a
// mismatch is an error naming the head and the shapes). Each upstream's exit must end in
// `exit_classes` outputs.
std::shared_ptr<Ensemble> build_ensemble(std::vector<std::shared_ptr<Upstream>> upstreams,
                                         const HeadSpec& heads, int64_t num_classes,
                                         int64_t exit_classes);

}  // namespace mel::method
