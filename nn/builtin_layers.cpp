// The built-in layer types of the registry (nn/registry.h): each one's options, factory, shape
// rule and fusion rule. Activation layers come from the activation table (nn/layers.cpp).
#include <fmt/format.h>

#include <array>

#include "nn/registry.h"

namespace mel::nn {

namespace {

// Upper bounds that keep every size computation far from overflow: a layer's width and a
// kernel, stride, padding or dilation.
constexpr int64_t kMaxWidth = int64_t{1} << 24;
constexpr int64_t kMaxSpatial = int64_t{1} << 16;

int64_t in_range(const JsonReader& r, const std::string& key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) r.error(key, fmt::format("must be in [{}, {}], got {}", lo, hi, v));
  return v;
}

int64_t positive(const JsonReader& r, const std::string& key, int64_t v) {
  return in_range(r, key, v, 1, key == "out" ? kMaxWidth : kMaxSpatial);
}

// A per-dimension option ("kernel": 3 or [3, 5]), each value in [lo, kMaxSpatial].
std::array<int64_t, 2> pair_in_range(const JsonReader& r, const std::string& key,
                                     std::array<int64_t, 2> fallback, int64_t lo) {
  const auto v = r.get_pair(key, fallback);
  for (int64_t x : v) {
    if (x < lo || x > kMaxSpatial) {
      r.error(key, fmt::format("must be in [{}, {}], got {}", lo, kMaxSpatial, x));
    }
  }
  return v;
}

// Batch / layer norm epsilon and momentum.
double norm_number(const JsonReader& r, const std::string& key, double fallback, double lo,
                   double hi, bool open_low) {
  const double v = r.get_number(key, fallback);
  if (!(open_low ? v > lo : v >= lo) || !(v <= hi)) {
    r.error(key, fmt::format("must be in {}{}, {}], got {}", open_low ? "(" : "[", lo, hi, v));
  }
  return v;
}

int64_t conv_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

const char* kImage = "a [C, H, W] input per sample";

std::shared_ptr<Module> make_conv2d(const JsonReader& r, const Shape& in) {
  require_dims(in, 3, kImage);
  const int64_t out = positive(r, "out", r.get_int("out"));
  const auto k = pair_in_range(r, "kernel", {3, 3}, 1);
  Conv2dOptions o;
  o.stride = pair_in_range(r, "stride", {1, 1}, 1);
  o.padding = pair_in_range(r, "padding", {0, 0}, 0);
  o.dilation = pair_in_range(r, "dilation", {1, 1}, 1);
  o.groups = in_range(r, "groups", r.get_int("groups", 1), 1, out);
  const bool bias = r.get_bool("bias", true);
  if (in[0] % o.groups != 0 || out % o.groups != 0) {
    r.error("groups",
            fmt::format("{} must divide the input channels {} and out {}", o.groups, in[0], out));
  }
  const int64_t h = conv_out(in[1], k[0], o.stride[0], o.padding[0], o.dilation[0]);
  const int64_t w = conv_out(in[2], k[1], o.stride[1], o.padding[1], o.dilation[1]);
  if (h < 1 || w < 1) {
    r.error("kernel", fmt::format("the output would be empty for input {}", shape_str(in)));
  }
  return std::make_shared<Conv2d>(in[0], out, k, o, bias);
}

Shape conv2d_shape(const Module& m, const Shape& in) {
  const auto& c = dynamic_cast<const Conv2d&>(m);
  const Conv2dOptions& o = c.options;
  return {c.out_channels, conv_out(in[1], c.kernel[0], o.stride[0], o.padding[0], o.dilation[0]),
          conv_out(in[2], c.kernel[1], o.stride[1], o.padding[1], o.dilation[1])};
}

std::shared_ptr<Module> make_conv1d(const JsonReader& r, const Shape& in) {
  require_dims(in, 2, "a [C, L] input per sample");
  const int64_t out = positive(r, "out", r.get_int("out"));
  const int64_t k = positive(r, "kernel", r.get_int("kernel", 3));
  const int64_t s = positive(r, "stride", r.get_int("stride", 1));
  const int64_t p = in_range(r, "padding", r.get_int("padding", 0), 0, kMaxSpatial);
  const int64_t d = positive(r, "dilation", r.get_int("dilation", 1));
  const int64_t g = in_range(r, "groups", r.get_int("groups", 1), 1, out);
  const bool bias = r.get_bool("bias", true);
  if (in[0] % g != 0 || out % g != 0) {
    r.error("groups",
            fmt::format("{} must divide the input channels {} and out {}", g, in[0], out));
  }
  if (conv_out(in[1], k, s, p, d) < 1) {
    r.error("kernel", fmt::format("the output would be empty for {}", shape_str(in)));
  }
  return std::make_shared<Conv1d>(in[0], out, k, s, p, d, g, bias);
}

Shape conv1d_shape(const Module& m, const Shape& in) {
  const auto& c = dynamic_cast<const Conv1d&>(m);
  return {c.out_channels, conv_out(in[1], c.kernel, c.stride, c.padding, c.dilation)};
}

std::shared_ptr<Module> make_batchnorm(const JsonReader& r, const Shape& in, int dims) {
  if (dims == 2) require_dims(in, 3, kImage);
  if (dims == 1 && in.size() != 1 && in.size() != 2) {
    throw ShapeError("a [C] or [C, L] input per sample");
  }
  return std::make_shared<BatchNorm>(dims, in[0], norm_number(r, "eps", 1e-5, 0.0, 1.0, true),
                                     norm_number(r, "momentum", 0.1, 0.0, 1.0, false),
                                     r.get_bool("affine", true));
}

Pool2dOptions pool_options(const JsonReader& r, const Shape& in, bool avg) {
  require_dims(in, 3, kImage);
  Pool2dOptions o;
  o.kernel = pair_in_range(r, "kernel", {2, 2}, 1);
  o.stride = pair_in_range(r, "stride", o.kernel, 1);
  o.padding = pair_in_range(r, "padding", {0, 0}, 0);
  if (avg) o.count_include_pad = r.get_bool("count_include_pad", true);
  for (int i = 0; i < 2; ++i) {
    if (2 * o.padding[i] > o.kernel[i]) {
      r.error("padding", fmt::format("must be at most half the kernel ({}), got {}", o.kernel[i],
                                     o.padding[i]));
    }
  }
  const int64_t h = conv_out(in[1], o.kernel[0], o.stride[0], o.padding[0], 1);
  const int64_t w = conv_out(in[2], o.kernel[1], o.stride[1], o.padding[1], 1);
  if (h < 1 || w < 1) {
    r.error("kernel", fmt::format("the output would be empty for input {}", shape_str(in)));
  }
  return o;
}

Shape pool_shape(const Pool2dOptions& o, const Shape& in) {
  return {in[0], conv_out(in[1], o.kernel[0], o.stride[0], o.padding[0], 1),
          conv_out(in[2], o.kernel[1], o.stride[1], o.padding[1], 1)};
}

std::shared_ptr<Module> make_linear(const JsonReader& r, const Shape& in) {
  require_dims(in, 1, "a flat [F] input per sample",
               "add a flatten or global_avg_pool layer before it");
  const int64_t out = positive(r, "out", r.get_int("out"));
  return std::make_shared<Linear>(in[0], out, r.get_bool("bias", true));
}

std::shared_ptr<Module> make_dropout(const JsonReader& r, const Shape&) {
  const double p = r.get_number("p", 0.5);
  if (p < 0.0 || p >= 1.0) r.error("p", fmt::format("must be in [0, 1), got {}", p));
  return std::make_shared<Dropout>(p);
}

}  // namespace

std::vector<LayerType> transformer_layer_types();  // nn/transformer.cpp

std::vector<LayerType> builtin_layer_types() {
  std::vector<LayerType> t;
  t.push_back({"conv2d", make_conv2d, conv2d_shape, nullptr});
  t.push_back({"conv1d", make_conv1d, conv1d_shape, nullptr});
  t.push_back({"batchnorm2d",
               [](const JsonReader& r, const Shape& in) { return make_batchnorm(r, in, 2); },
               nullptr, nullptr});
  t.push_back({"batchnorm1d",
               [](const JsonReader& r, const Shape& in) { return make_batchnorm(r, in, 1); },
               nullptr, nullptr});
  t.push_back({"layernorm",
               [](const JsonReader& r, const Shape& in) -> std::shared_ptr<Module> {
                 if (in.empty()) throw ShapeError("an input of at least one dimension");
                 return std::make_shared<LayerNorm>(Shape{in.back()},
                                                    norm_number(r, "eps", 1e-5, 0.0, 1.0, true),
                                                    r.get_bool("affine", true));
               },
               nullptr, nullptr});
  for (const ActivationInfo& a : activations()) {
    // The activation's own fusion rule: a relu after a batch norm folds into it.
    t.push_back({a.name,
                 [name = std::string(a.name)](const JsonReader&, const Shape&) {
                   return std::make_shared<ActivationLayer>(name);
                 },
                 nullptr, fuse_batch_norm_relu});
  }
  t.push_back({"maxpool2d",
               [](const JsonReader& r, const Shape& in) -> std::shared_ptr<Module> {
                 return std::make_shared<MaxPool2d>(pool_options(r, in, false));
               },
               [](const Module& m, const Shape& in) {
                 return pool_shape(dynamic_cast<const MaxPool2d&>(m).options, in);
               },
               nullptr});
  t.push_back({"avgpool2d",
               [](const JsonReader& r, const Shape& in) -> std::shared_ptr<Module> {
                 return std::make_shared<AvgPool2d>(pool_options(r, in, true));
               },
               [](const Module& m, const Shape& in) {
                 return pool_shape(dynamic_cast<const AvgPool2d&>(m).options, in);
               },
               nullptr});
  t.push_back({"adaptive_avg_pool2d",
               [](const JsonReader& r, const Shape& in) -> std::shared_ptr<Module> {
                 require_dims(in, 3, kImage);
                 const auto size = pair_in_range(r, "size", {1, 1}, 1);
                 return std::make_shared<AdaptiveAvgPool2d>(size);
               },
               [](const Module& m, const Shape& in) {
                 const auto& size = dynamic_cast<const AdaptiveAvgPool2d&>(m).output_size;
                 return Shape{in[0], size[0], size[1]};
               },
               nullptr});
  t.push_back({"global_avg_pool",
               [](const JsonReader&, const Shape& in) -> std::shared_ptr<Module> {
                 require_dims(in, 3, kImage);
                 return std::make_shared<GlobalAvgPool>();
               },
               [](const Module&, const Shape& in) { return Shape{in[0]}; }, nullptr});
  t.push_back({"flatten",
               [](const JsonReader&, const Shape&) -> std::shared_ptr<Module> {
                 return std::make_shared<Flatten>(1, -1);
               },
               [](const Module&, const Shape& in) { return Shape{numel_of(in)}; }, nullptr});
  t.push_back({"linear", make_linear,
               [](const Module& m, const Shape&) {
                 return Shape{dynamic_cast<const Linear&>(m).out_features};
               },
               nullptr});
  t.push_back({"dropout", make_dropout, nullptr, nullptr});
  t.push_back({"identity",
               [](const JsonReader&, const Shape&) -> std::shared_ptr<Module> {
                 return std::make_shared<Identity>();
               },
               nullptr, nullptr});
  for (LayerType& x : transformer_layer_types()) t.push_back(std::move(x));
  return t;
}

}  // namespace mel::nn
