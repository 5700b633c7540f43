// The layer registry: config type name -> factory, shape rule and optional fusion rule. Layer
// lists from configs are built through it, so adding a layer type is one registration.
#pragma once
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/json_reader.h"
#include "core/tensor.h"
#include "nn/layers.h"

namespace mel::nn {

// Thrown by a factory or shape rule that cannot take the per-sample input shape it was given;
// `expected` says what it needs ("a [C, H, W] input per sample"), `hint` how to get there. The
// builder turns it into an error naming the layer's position and type and both shapes.
class ShapeError : public std::runtime_error {
 public:
  explicit ShapeError(std::string expected, std::string hint = "")
      : std::runtime_error(expected), expected(std::move(expected)), hint(std::move(hint)) {}
  std::string expected, hint;
};

// Throws ShapeError unless the per-sample shape has `dims` dimensions.
void require_dims(const Shape& shape, size_t dims, const std::string& expected,
                  const std::string& hint = "");

struct LayerType {
  std::string name;  // the config's "type"
  // Builds the layer for a per-sample input shape, reading its options from `args` (a strict
  // reader: options it does not read are rejected as unknown keys). Bad option values are reported
  // through args.error; an input it cannot take through ShapeError.
  std::function<std::shared_ptr<Module>(const JsonReader& args, const Shape& input)> make;
  // The per-sample output shape of the built layer for `input` (ShapeError when it cannot take
  // it, e.g. a kernel larger than the padded input). Null: the shape passes through unchanged.
  std::function<Shape(const Module& layer, const Shape& input)> shape;
  // Optional: folds the layer into the one before it when the pair has a fused kernel (batch norm
  // + relu); returns whether it did.
  std::function<bool(Module& previous, Module& layer)> fuse;
};

// Adds a layer type; a name that is already registered is an error.
void register_layer(LayerType type);
// The registered type `name`; an unknown name is an error listing the registered ones (and the
// closest, when the name looks like a typo).
const LayerType& layer_type(const std::string& name);
bool has_layer_type(const std::string& name);
// Registered names in registration order (the built-in ones first).
std::vector<std::string> layer_types();

// Builds a Sequential from the list `key` of `reader` (objects with a "type" and that type's
// options). `shape` is the per-sample input shape ([C, H, W], [C, L] or [F]) and becomes the
// output shape. Each layer's fusion rule is offered the layer before it.
std::shared_ptr<Sequential> build_layers(const JsonReader& reader, const std::string& key,
                                         Shape& shape);

// A registration made at static-initialisation time in an executable or shared library:
// `static mel::nn::LayerRegistration prelu_registration{{"prelu", make, shape}};`. (Static
// libraries drop unreferenced objects, so a library should call register_layer from a function
// its users call instead.)
struct LayerRegistration {
  explicit LayerRegistration(LayerType type) { register_layer(std::move(type)); }
};

}  // namespace mel::nn
