// The layer registry: built-in types, a new type registered from a test, fusion rules, and the
// errors a config builder gets for unknown types and shapes a layer cannot take.
#include <gtest/gtest.h>

#include "nn/registry.h"
#include "tests/gradcheck.h"

namespace mel::nn {
namespace {

// A layer list from JSON through the registry; `shape` is the per-sample input shape.
std::shared_ptr<Sequential> build(const std::string& layers, Shape& shape) {
  const Json j = {{"layers", Json::parse(layers)}};
  return build_layers(JsonReader(j, "test.json", ""), "layers", shape);
}

TEST(Registry, BuiltInTypesAreRegisteredInOrder) {
  const std::vector<std::string> types = layer_types();
  ASSERT_GE(types.size(), 19u);
  EXPECT_EQ(types[0], "conv2d");
  for (const ActivationInfo& a : activations()) EXPECT_TRUE(has_layer_type(a.name)) << a.name;
  EXPECT_FALSE(has_layer_type("conv3d"));
}

TEST(Registry, BuildsWithShapeInferenceAndFusesBatchNormRelu) {
  Shape shape{1, 8, 8};
  auto seq = build(R"([{"type": "conv2d", "out": 4, "kernel": 3, "padding": 1},
                       {"type": "batchnorm2d"}, {"type": "relu"}, {"type": "maxpool2d"},
                       {"type": "flatten"}, {"type": "linear", "out": 3}])",
                   shape);
  EXPECT_EQ(shape, (Shape{3}));
  ASSERT_EQ(seq->size(), 6u);
  EXPECT_TRUE(std::dynamic_pointer_cast<BatchNorm>((*seq)[1])->fuse_relu);
  EXPECT_TRUE(std::dynamic_pointer_cast<ActivationLayer>((*seq)[2])->fused_away);
  EXPECT_EQ(seq->state_dict()[0].first, "0.weight");
}

TEST(Registry, UnknownTypeNamesTheRegisteredOnes) {
  Shape shape{4};
  EXPECT_MEL_ERROR(build(R"([{"type": "linear", "out": 3}, {"type": "conv2"}])", shape),
                   "test.json: layers[1].type: unknown layer type 'conv2'",
                   "did you mean 'conv2d'?", "registered: conv2d, conv1d, batchnorm2d");
  EXPECT_MEL_ERROR(layer_type("nope"), "unknown layer type 'nope'", "registered: conv2d");
}

TEST(Registry, ShapeRuleNamesTheLayerItsTypeAndBothShapes) {
  Shape shape{1, 8, 8};
  EXPECT_MEL_ERROR(build(R"([{"type": "conv2d", "out": 4}, {"type": "linear", "out": 3}])", shape),
                   "layers[1].type", "layer 1 (linear) needs a flat [F] input per sample",
                   "the shape reaching it is [4, 6, 6]", "add a flatten");
  shape = {10};
  EXPECT_MEL_ERROR(build(R"([{"type": "maxpool2d"}])", shape),
                   "layer 0 (maxpool2d) needs a [C, H, W] input per sample",
                   "the shape reaching it is [10]");
  shape = {1, 4, 4};
  EXPECT_MEL_ERROR(build(R"([{"type": "conv2d", "out": 2, "kernel": 5}])", shape),
                   "layers[0].kernel", "the output would be empty for input [1, 4, 4]");
  EXPECT_MEL_ERROR(build(R"([{"type": "conv2d", "out": 2, "stride": 0}])", shape),
                   "layers[0].stride", "must be in [1, 65536], got 0");
  EXPECT_MEL_ERROR(build(R"([{"type": "linear", "outt": 2}])", shape), "layers[0]");
}

// A layer defined here, as an extension would: y = x * scale, scale from the config.
class Scale : public Module {
 public:
  explicit Scale(double s) : Module("Scale"), scale(s) {}
  Tensor forward(const Tensor& x) override { return mul(x, scale); }
  double scale;
};

TEST(Registry, NewTypesAreOneRegistration) {
  if (!has_layer_type("test_scale")) {
    register_layer({"test_scale",
                    [](const JsonReader& r, const Shape&) -> std::shared_ptr<Module> {
                      return std::make_shared<Scale>(r.get_number("scale", 2.0));
                    },
                    nullptr, nullptr});
  }
  Shape shape{3};
  auto seq = build(R"([{"type": "test_scale", "scale": 3}, {"type": "linear", "out": 2}])", shape);
  EXPECT_EQ(shape, (Shape{2}));
  EXPECT_DOUBLE_EQ((*seq)[0]->forward(ones({1, 3})).at({0, 1}), 3.0);
  EXPECT_MEL_ERROR(register_layer({"test_scale", layer_type("identity").make, nullptr, nullptr}),
                   "layer type 'test_scale' is already registered");
  EXPECT_MEL_ERROR(register_layer({"no_factory", nullptr, nullptr, nullptr}), "no factory");
  const auto types = layer_types();
  EXPECT_EQ(types.back(), "test_scale");
  EXPECT_MEL_ERROR(build(R"([{"type": "test_scale", "scael": 3}])", shape), "unknown key 'scael'",
                   "did you mean 'scale'");
}

}  // namespace
}  // namespace mel::nn
