#include "mel/model_builder.h"

#include <fmt/format.h>

namespace mel::app {

const std::vector<std::string>& layer_types() {
  static const std::vector<std::string> types = {"conv2d",
                                                 "conv1d",
                                                 "batchnorm2d",
                                                 "batchnorm1d",
                                                 "layernorm",
                                                 "relu",
                                                 "gelu",
                                                 "gelu_tanh",
                                                 "silu",
                                                 "tanh",
                                                 "sigmoid",
                                                 "maxpool2d",
                                                 "avgpool2d",
                                                 "adaptive_avg_pool2d",
                                                 "global_avg_pool",
                                                 "flatten",
                                                 "linear",
                                                 "dropout",
                                                 "identity"};
  return types;
}

namespace {

int64_t positive(const JsonReader& r, const std::string& key, int64_t v) {
  if (v <= 0) r.error(key, fmt::format("must be positive, got {}", v));
  return v;
}

void need_dims(const JsonReader& r, const std::string& type, const Shape& shape, size_t dims,
               const char* what) {
  if (shape.size() != dims) {
    r.error("type", fmt::format("a {} layer needs {} input per sample, but the shape reaching it "
                                "is {}",
                                type, what, shape_str(shape)));
  }
}

int64_t conv_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

std::shared_ptr<nn::Module> build_one(const JsonReader& r, Shape& shape) {
  const std::string type = r.get_string("type");
  if (type == "conv2d") {
    need_dims(r, type, shape, 3, "a [C, H, W]");
    const int64_t out = positive(r, "out", r.get_int("out"));
    const auto k = r.get_pair("kernel", {3, 3});
    Conv2dOptions o;
    o.stride = r.get_pair("stride", {1, 1});
    o.padding = r.get_pair("padding", {0, 0});
    o.dilation = r.get_pair("dilation", {1, 1});
    o.groups = positive(r, "groups", r.get_int("groups", 1));
    const bool bias = r.get_bool("bias", true);
    if (shape[0] % o.groups != 0 || out % o.groups != 0) {
      r.error("groups", fmt::format("{} must divide the input channels {} and out {}", o.groups,
                                    shape[0], out));
    }
    const int64_t h = conv_out(shape[1], k[0], o.stride[0], o.padding[0], o.dilation[0]);
    const int64_t w = conv_out(shape[2], k[1], o.stride[1], o.padding[1], o.dilation[1]);
    if (h < 1 || w < 1) {
      r.error("kernel", fmt::format("the output would be empty for input {}", shape_str(shape)));
    }
    auto m = std::make_shared<nn::Conv2d>(shape[0], out, k, o, bias);
    shape = {out, h, w};
    return m;
  }
  if (type == "conv1d") {
    need_dims(r, type, shape, 2, "a [C, L]");
    const int64_t out = positive(r, "out", r.get_int("out"));
    const int64_t k = positive(r, "kernel", r.get_int("kernel", 3));
    const int64_t s = positive(r, "stride", r.get_int("stride", 1));
    const int64_t p = r.get_int("padding", 0);
    const int64_t d = positive(r, "dilation", r.get_int("dilation", 1));
    const int64_t g = positive(r, "groups", r.get_int("groups", 1));
    const bool bias = r.get_bool("bias", true);
    const int64_t l = conv_out(shape[1], k, s, p, d);
    if (l < 1) r.error("kernel", fmt::format("the output would be empty for {}", shape_str(shape)));
    auto m = std::make_shared<nn::Conv1d>(shape[0], out, k, s, p, d, g, bias);
    shape = {out, l};
    return m;
  }
  if (type == "batchnorm2d" || type == "batchnorm1d") {
    const int dims = type == "batchnorm2d" ? 2 : 1;
    if (dims == 2) need_dims(r, type, shape, 3, "a [C, H, W]");
    if (dims == 1 && shape.size() != 1 && shape.size() != 2) {
      r.error("type", fmt::format("batchnorm1d needs a [C] or [C, L] input per sample, got {}",
                                  shape_str(shape)));
    }
    return std::make_shared<nn::BatchNorm>(dims, shape[0], r.get_number("eps", 1e-5),
                                           r.get_number("momentum", 0.1),
                                           r.get_bool("affine", true));
  }
  if (type == "layernorm") {
    return std::make_shared<nn::LayerNorm>(Shape{shape.back()}, r.get_number("eps", 1e-5),
                                           r.get_bool("affine", true));
  }
  if (type == "relu" || type == "gelu" || type == "gelu_tanh" || type == "silu" || type == "tanh" ||
      type == "sigmoid") {
    return std::make_shared<nn::ActivationLayer>(nn::parse_activation(type));
  }
  if (type == "maxpool2d" || type == "avgpool2d") {
    need_dims(r, type, shape, 3, "a [C, H, W]");
    Pool2dOptions o;
    o.kernel = r.get_pair("kernel", {2, 2});
    o.stride = r.get_pair("stride", o.kernel);
    o.padding = r.get_pair("padding", {0, 0});
    if (type == "avgpool2d") o.count_include_pad = r.get_bool("count_include_pad", true);
    const int64_t h = conv_out(shape[1], o.kernel[0], o.stride[0], o.padding[0], 1);
    const int64_t w = conv_out(shape[2], o.kernel[1], o.stride[1], o.padding[1], 1);
    if (h < 1 || w < 1) {
      r.error("kernel", fmt::format("the output would be empty for input {}", shape_str(shape)));
    }
    shape = {shape[0], h, w};
    if (type == "maxpool2d") return std::make_shared<nn::MaxPool2d>(o);
    return std::make_shared<nn::AvgPool2d>(o);
  }
  if (type == "adaptive_avg_pool2d") {
    need_dims(r, type, shape, 3, "a [C, H, W]");
    const auto size = r.get_pair("size", {1, 1});
    shape = {shape[0], size[0], size[1]};
    return std::make_shared<nn::AdaptiveAvgPool2d>(size);
  }
  if (type == "global_avg_pool") {
    need_dims(r, type, shape, 3, "a [C, H, W]");
    shape = {shape[0]};
    return std::make_shared<nn::GlobalAvgPool>();
  }
  if (type == "flatten") {
    shape = {numel_of(shape)};
    return std::make_shared<nn::Flatten>(1, -1);
  }
  if (type == "linear") {
    if (shape.size() != 1) {
      r.error("type", fmt::format("linear needs a flat [F] input per sample, got {} (add a "
                                  "flatten or global_avg_pool layer before it)",
                                  shape_str(shape)));
    }
    const int64_t out = positive(r, "out", r.get_int("out"));
    auto m = std::make_shared<nn::Linear>(shape[0], out, r.get_bool("bias", true));
    shape = {out};
    return m;
  }
  if (type == "dropout") {
    const double p = r.get_number("p", 0.5);
    if (p < 0.0 || p >= 1.0) r.error("p", fmt::format("must be in [0, 1), got {}", p));
    return std::make_shared<nn::Dropout>(p);
  }
  if (type == "identity") return std::make_shared<nn::Identity>();
  const std::string close = closest_match(type, layer_types());
  r.error("type", close.empty()
                      ? fmt::format("unknown layer type '{}' (known: {})", type,
                                    fmt::join(layer_types(), ", "))
                      : fmt::format("unknown layer type '{}' (did you mean '{}'?)", type, close));
}

}  // namespace

std::shared_ptr<nn::Sequential> build_layers(const JsonReader& reader, const std::string& key,
                                             Shape& shape) {
  auto seq = std::make_shared<nn::Sequential>();
  std::shared_ptr<nn::BatchNorm> last_bn;
  for (const JsonReader& r : reader.objects(key)) {
    auto m = build_one(r, shape);
    r.finish();
    // BatchNorm then ReLU: the BatchNorm applies the ReLU and the ReLU layer passes through
    // (it keeps its index, so parameter names stay those of the unfused PyTorch model).
    auto act = std::dynamic_pointer_cast<nn::ActivationLayer>(m);
    if (act && last_bn && act->activation == nn::Activation::relu) {
      last_bn->fuse_relu = true;
      act->fused_away = true;
    }
    last_bn = std::dynamic_pointer_cast<nn::BatchNorm>(m);
    seq->push_back(std::move(m));
  }
  return seq;
}

Classifier::Classifier(std::shared_ptr<nn::Sequential> t, std::shared_ptr<nn::Sequential> h)
    : Module("Classifier"), trunk(std::move(t)), head(std::move(h)) {
  register_module("trunk", trunk);
  register_module("head", head);
}

Tensor Classifier::forward(const Tensor& x) {
  return head->forward(trunk->forward(x));
}

std::shared_ptr<Classifier> build_classifier(const JsonReader& model, int64_t num_classes) {
  const std::vector<int64_t> input = model.get_ints("input");
  if (input.empty() || input.size() > 3) {
    model.error("input",
                fmt::format("expected [C, H, W], [C, L] or [F], got {} dims", input.size()));
  }
  for (int64_t v : input) {
    if (v <= 0) model.error("input", "sizes must be positive");
  }
  Shape shape(input.begin(), input.end());
  auto trunk = build_layers(model, "trunk", shape);
  auto head = build_layers(model, "head", shape);
  model.finish();
  if (shape.size() != 1 || shape[0] != num_classes) {
    model.error("head", fmt::format("the model must end in {} outputs (one per class), but it "
                                    "produces {} per sample",
                                    num_classes, shape_str(shape)));
  }
  return std::make_shared<Classifier>(std::move(trunk), std::move(head));
}

}  // namespace mel::app
