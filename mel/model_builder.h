// Builds nn layers from JSON layer lists ({"type": "conv2d", "out": 64, ...}), inferring each
// layer's input size from the shape flowing through, and the single-model Classifier.
#pragma once
#include <memory>
#include <string>

#include "mel/json_reader.h"
#include "nn/layers.h"

namespace mel::app {

// Builds a Sequential from the list `key` of `reader`; `shape` is the per-sample input shape
// ([C, H, W] or [F]) and becomes the output shape. BatchNorm followed by ReLU is fused.
std::shared_ptr<nn::Sequential> build_layers(const JsonReader& reader, const std::string& key,
                                             Shape& shape);

// The layer types build_layers understands, for messages and docs.
const std::vector<std::string>& layer_types();

// A trunk (feature extractor) followed by a head (classifier): parameters "trunk.N.*", "head.N.*".
class Classifier : public nn::Module {
 public:
  Classifier(std::shared_ptr<nn::Sequential> trunk, std::shared_ptr<nn::Sequential> head);
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<nn::Sequential> trunk, head;
};

// From a "model" object: {"input": [C, H, W], "trunk": [...], "head": [...]}; checks that the
// head ends in `num_classes` outputs.
std::shared_ptr<Classifier> build_classifier(const JsonReader& model, int64_t num_classes);

}  // namespace mel::app
