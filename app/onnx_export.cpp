#include "app/onnx_export.h"

#include <fmt/format.h>

#include "core/autograd.h"
#include "core/error.h"
#include "core/factory.h"

#ifdef MEL_WITH_ONNX
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <numbers>

#include "mel/failure.h"
#include "nn/layers.h"
#include "train/files.h"
#endif

namespace mel::app {

#ifndef MEL_WITH_ONNX

bool onnx_export_available() {
  return false;
}

namespace {
[[noreturn]] void no_onnx() {
  fail("this mel was built without ONNX export (install libonnx-dev libprotobuf-dev)");
}
}  // namespace

void write_upstream_onnx(method::Upstream&, const Shape&, const OnnxMetadata&, const std::string&) {
  no_onnx();
}
void write_combination_onnx(method::Ensemble&, const OnnxMetadata&, const std::string&) {
  no_onnx();
}

#else

bool onnx_export_available() {
  return true;
}

namespace {

// The layer types with a conversion, for the error about one without.
const char* kExportable =
    "conv2d, conv1d, batchnorm2d, batchnorm1d, layernorm, relu, gelu, gelu_tanh, silu, tanh, "
    "sigmoid, maxpool2d, avgpool2d, adaptive_avg_pool2d, global_avg_pool, flatten, linear, "
    "dropout, identity";

void attr(onnx::NodeProto& n, const std::string& name, int64_t v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

void attr(onnx::NodeProto& n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

void attr(onnx::NodeProto& n, const std::string& name, double v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(static_cast<float>(v));
}

// A float32 value [N, ...per_sample] with a symbolic batch dimension.
void value_info(onnx::ValueInfoProto& v, const std::string& name, const Shape& per_sample) {
  v.set_name(name);
  auto* t = v.mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  auto* s = t->mutable_shape();
  s->add_dim()->set_dim_param("N");
  for (int64_t d : per_sample) s->add_dim()->set_dim_value(d);
}

// A graph under construction: initializers, nodes, and the names of its values.
class Graph {
 public:
  explicit Graph(onnx::GraphProto& g) : g_(g) {}

  // An f32 initializer holding `t` (converted from any floating dtype and device).
  std::string tensor(const std::string& name, const Tensor& t) {
    const Tensor c = t.detach().to(Device::cpu()).to(DType::f32).contiguous();
    std::vector<int64_t> dims(c.shape().begin(), c.shape().end());
    return floats(name, dims, c.data<float>(), static_cast<size_t>(c.numel()));
  }
  std::string floats(const std::string& name, const std::vector<int64_t>& dims, const float* v,
                     size_t n) {
    auto* p = g_.add_initializer();
    p->set_name(name);
    p->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) p->add_dims(d);
    p->set_raw_data(v, n * sizeof(float));  // little-endian, as ONNX's raw_data
    return name;
  }
  std::string scalar(const std::string& name, double v) {
    const float f = static_cast<float>(v);
    return floats(name, {}, &f, 1);
  }
  std::string ints(const std::string& name, const std::vector<int64_t>& v) {
    auto* p = g_.add_initializer();
    p->set_name(name);
    p->set_data_type(onnx::TensorProto::INT64);
    p->add_dims(static_cast<int64_t>(v.size()));
    for (int64_t x : v) p->add_int64_data(x);
    return name;
  }

  onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::string& output) {
    auto* n = g_.add_node();
    n->set_op_type(op);
    n->set_name(output);
    for (const auto& i : inputs) n->add_input(i);
    n->add_output(output);
    return *n;
  }

  // Makes the value `v` available under the name `name` (a graph output or an interface value):
  // the node that produced `v` is renamed, or an Identity is added when `v` is a graph input or
  // an initializer.
  std::string rename(const std::string& v, const std::string& name) {
    if (v == name) return name;
    for (int k = g_.node_size() - 1; k >= 0; --k) {
      auto* n = g_.mutable_node(k);
      for (const auto& in : n->input()) {
        MEL_CHECK(in != v, "ONNX export: value '{}' is already in use", v);
      }
      if (n->output_size() == 1 && n->output(0) == v) {
        n->set_output(0, name);
        n->set_name(name);
        return name;
      }
    }
    node("Identity", {v}, name);
    return name;
  }

  // A unique name for internal values of the layer `prefix`.
  std::string sub(const std::string& prefix, const std::string& what) const {
    return prefix + "/" + what;
  }

 private:
  onnx::GraphProto& g_;
};

// Converts one module applied to value `v` (whose full shape, batch of one, is `in.shape()`) and
// returns the output value. `path` names the layer's parameters ("backbone.3"), `where` and
// `index` name it in errors.
class Converter {
 public:
  Converter(Graph& g, std::string where) : g_(g), where_(std::move(where)) {}

  // The layers of `seq` in order, from value `v`; `probe` (a zero batch of one) tracks shapes.
  std::string sequential(nn::Sequential& seq, const std::string& prefix, std::string v,
                         Tensor& probe) {
    for (size_t i = 0; i < seq.size(); ++i) {
      const std::string path = prefix + "." + std::to_string(i);
      nn::Module& m = *seq[i];
      // Before the shape probe runs it: a layer without a conversion may not run on it either.
      if (const std::string why = why_not(m); !why.empty()) unsupported(m, path, i, why);
      const Shape in = probe.shape();
      probe = m.forward(probe);
      v = layer(m, path, i, v, in, probe.shape(), probe);
    }
    return v;
  }

 private:
  [[noreturn]] void unsupported(const nn::Module& m, const std::string& path, size_t index,
                                const std::string& why) {
    fail(
        "ONNX export: layer {} of the {} ('{}', type {}) {}; exportable layer types: {} (use "
        "--format safetensors for this model)",
        index, where_, path, m.type(), why, kExportable);
  }

  // Why `m` cannot be converted; empty when it can.
  static std::string why_not(nn::Module& m) {
    if (auto* b = dynamic_cast<nn::BatchNorm*>(&m)) {
      return b->running_mean.defined() && b->running_var.defined()
                 ? ""
                 : "keeps no running statistics (it normalises with the batch's own in eval mode)";
    }
    if (auto* a = dynamic_cast<nn::ActivationLayer*>(&m)) {
      if (a->fused_away) return "";
      for (const char* name : {"relu", "tanh", "sigmoid", "silu", "gelu", "gelu_tanh"}) {
        if (a->activation == name) return "";
      }
      return fmt::format("is the activation '{}', which has no ONNX conversion", a->activation);
    }
    const bool known = dynamic_cast<nn::Sequential*>(&m) || dynamic_cast<nn::Identity*>(&m) ||
                       dynamic_cast<nn::Dropout*>(&m) || dynamic_cast<nn::Conv2d*>(&m) ||
                       dynamic_cast<nn::Conv1d*>(&m) || dynamic_cast<nn::LayerNorm*>(&m) ||
                       dynamic_cast<nn::MaxPool2d*>(&m) || dynamic_cast<nn::AvgPool2d*>(&m) ||
                       dynamic_cast<nn::AdaptiveAvgPool2d*>(&m) ||
                       dynamic_cast<nn::GlobalAvgPool*>(&m) || dynamic_cast<nn::Flatten*>(&m) ||
                       dynamic_cast<nn::Linear*>(&m);
    return known ? "" : "has no ONNX conversion";
  }

  std::string layer(nn::Module& m, const std::string& path, size_t index, const std::string& v,
                    const Shape& in, const Shape& out, Tensor& probe) {
    if (auto* s = dynamic_cast<nn::Sequential*>(&m)) {
      Tensor p = zeros(in, DType::f32, probe.device());
      return sequential(*s, path, v, p);
    }
    if (dynamic_cast<nn::Identity*>(&m) || dynamic_cast<nn::Dropout*>(&m)) return v;  // eval
    if (auto* c = dynamic_cast<nn::Conv2d*>(&m)) {
      const auto& o = c->options;
      return conv(path, v, c->weight, c->bias, {c->kernel[0], c->kernel[1]},
                  {o.stride[0], o.stride[1]}, {o.padding[0], o.padding[1]},
                  {o.dilation[0], o.dilation[1]}, o.groups);
    }
    if (auto* c = dynamic_cast<nn::Conv1d*>(&m)) {
      return conv(path, v, c->weight, c->bias, {c->kernel}, {c->stride}, {c->padding},
                  {c->dilation}, c->groups);
    }
    if (auto* b = dynamic_cast<nn::BatchNorm*>(&m)) return batch_norm(*b, path, v);
    if (auto* l = dynamic_cast<nn::LayerNorm*>(&m)) return layer_norm(*l, path, v, in);
    if (auto* a = dynamic_cast<nn::ActivationLayer*>(&m)) {
      if (a->fused_away) return v;  // the batch norm before it applies it
      return activation(m, a->activation, path, index, v);
    }
    if (auto* p = dynamic_cast<nn::MaxPool2d*>(&m)) return pool("MaxPool", p->options, path, v);
    if (auto* p = dynamic_cast<nn::AvgPool2d*>(&m)) return pool("AveragePool", p->options, path, v);
    if (auto* p = dynamic_cast<nn::AdaptiveAvgPool2d*>(&m)) {
      return adaptive_pool(p->output_size, path, v, in);
    }
    if (dynamic_cast<nn::GlobalAvgPool*>(&m)) {
      const std::string pooled = g_.sub(path, "pool");
      g_.node("GlobalAveragePool", {v}, pooled);
      attr(g_.node("Flatten", {pooled}, path), "axis", int64_t{1});
      return path;
    }
    if (auto* f = dynamic_cast<nn::Flatten*>(&m)) {
      const int64_t rank = static_cast<int64_t>(in.size());
      const int64_t start = f->start_dim < 0 ? f->start_dim + rank : f->start_dim;
      const int64_t end = f->end_dim < 0 ? f->end_dim + rank : f->end_dim;
      if (start == 0 && end > 0) {
        unsupported(m, path, index, "flattens the batch dimension into the features");
      }
      if (start == 1 && end == rank - 1) {
        attr(g_.node("Flatten", {v}, path), "axis", int64_t{1});
        return path;
      }
      std::vector<int64_t> target(out.begin(), out.end());
      target[0] = 0;  // keep N
      g_.node("Reshape", {v, g_.ints(g_.sub(path, "shape"), target)}, path);
      return path;
    }
    if (auto* l = dynamic_cast<nn::Linear*>(&m)) return linear(*l, path, v, in);
    unsupported(m, path, index, "has no ONNX conversion");
  }

  std::string conv(const std::string& path, const std::string& v, const Tensor& w, const Tensor& b,
                   std::vector<int64_t> kernel, std::vector<int64_t> stride,
                   std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups) {
    std::vector<std::string> inputs = {v, g_.tensor(path + ".weight", w)};
    if (b.defined()) inputs.push_back(g_.tensor(path + ".bias", b));
    auto& n = g_.node("Conv", inputs, path);
    std::vector<int64_t> pads = padding;
    pads.insert(pads.end(), padding.begin(), padding.end());  // begins, then ends
    attr(n, "kernel_shape", kernel);
    attr(n, "strides", stride);
    attr(n, "pads", pads);
    attr(n, "dilations", dilation);
    attr(n, "group", groups);
    return path;
  }

  std::string batch_norm(nn::BatchNorm& b, const std::string& path, const std::string& v) {
    const int64_t c = b.num_features;
    const std::string scale = b.weight.defined() ? g_.tensor(path + ".weight", b.weight)
                                                 : g_.tensor(path + ".weight", ones({c}));
    const std::string shift = b.bias.defined() ? g_.tensor(path + ".bias", b.bias)
                                               : g_.tensor(path + ".bias", zeros({c}));
    const std::string out = b.fuse_relu ? g_.sub(path, "bn") : path;
    auto& n = g_.node("BatchNormalization",
                      {v, scale, shift, g_.tensor(path + ".running_mean", b.running_mean),
                       g_.tensor(path + ".running_var", b.running_var)},
                      out);
    attr(n, "epsilon", b.eps);
    if (b.fuse_relu) g_.node("Relu", {out}, path);
    return path;
  }

  // (x - mean) / sqrt(var + eps) * weight + bias over the trailing normalized_shape dims, with
  // the biased variance; decomposed (LayerNormalization needs opset 17).
  std::string layer_norm(nn::LayerNorm& l, const std::string& path, const std::string& v,
                         const Shape& in) {
    const int64_t rank = static_cast<int64_t>(in.size());
    const int64_t k = static_cast<int64_t>(l.normalized_shape.size());
    std::vector<int64_t> axes;
    for (int64_t a = rank - k; a < rank; ++a) axes.push_back(a);
    auto reduce_mean = [&](const std::string& x, const std::string& out) {
      auto& n = g_.node("ReduceMean", {x}, out);
      attr(n, "axes", axes);
      attr(n, "keepdims", int64_t{1});
    };
    const std::string mean = g_.sub(path, "mean"), d = g_.sub(path, "centred"),
                      sq = g_.sub(path, "squared"), var = g_.sub(path, "var"),
                      ve = g_.sub(path, "var_eps"), sd = g_.sub(path, "std");
    reduce_mean(v, mean);
    g_.node("Sub", {v, mean}, d);
    g_.node("Mul", {d, d}, sq);
    reduce_mean(sq, var);
    g_.node("Add", {var, g_.scalar(g_.sub(path, "eps"), l.eps)}, ve);
    g_.node("Sqrt", {ve}, sd);
    if (!l.weight.defined()) {
      g_.node("Div", {d, sd}, path);
      return path;
    }
    const std::string normed = g_.sub(path, "normalised"), scaled = g_.sub(path, "scaled");
    g_.node("Div", {d, sd}, normed);
    g_.node("Mul", {normed, g_.tensor(path + ".weight", l.weight)},
            l.bias.defined() ? scaled : path);
    if (l.bias.defined()) g_.node("Add", {scaled, g_.tensor(path + ".bias", l.bias)}, path);
    return path;
  }

  std::string activation(nn::Module& m, const std::string& name, const std::string& path,
                         size_t index, const std::string& v) {
    if (name == "relu" || name == "tanh" || name == "sigmoid") {
      g_.node(name == "relu" ? "Relu" : name == "tanh" ? "Tanh" : "Sigmoid", {v}, path);
      return path;
    }
    if (name == "silu") {  // x * sigmoid(x)
      const std::string s = g_.sub(path, "sigmoid");
      g_.node("Sigmoid", {v}, s);
      g_.node("Mul", {v, s}, path);
      return path;
    }
    if (name == "gelu" || name == "gelu_tanh") {
      // 0.5 x (1 + erf(x / sqrt 2)), or 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
      const std::string inner = g_.sub(path, "inner"), t = g_.sub(path, "t"),
                        one_plus = g_.sub(path, "one_plus"), half_x = g_.sub(path, "half_x");
      if (name == "gelu") {
        g_.node("Mul", {v, g_.scalar(g_.sub(path, "rsqrt2"), 1.0 / std::numbers::sqrt2)}, inner);
        g_.node("Erf", {inner}, t);
      } else {
        const std::string x2 = g_.sub(path, "x2"), x3 = g_.sub(path, "x3"),
                          cx3 = g_.sub(path, "cx3"), sum = g_.sub(path, "sum");
        g_.node("Mul", {v, v}, x2);
        g_.node("Mul", {x2, v}, x3);
        g_.node("Mul", {x3, g_.scalar(g_.sub(path, "c"), 0.044715)}, cx3);
        g_.node("Add", {v, cx3}, sum);
        g_.node("Mul",
                {sum, g_.scalar(g_.sub(path, "sqrt_2_over_pi"), std::sqrt(2.0 / std::numbers::pi))},
                inner);
        g_.node("Tanh", {inner}, t);
      }
      g_.node("Add", {t, g_.scalar(g_.sub(path, "one"), 1.0)}, one_plus);
      g_.node("Mul", {v, g_.scalar(g_.sub(path, "half"), 0.5)}, half_x);
      g_.node("Mul", {half_x, one_plus}, path);
      return path;
    }
    unsupported(m, path, index,
                fmt::format("is the activation '{}', which has no ONNX conversion", name));
  }

  std::string pool(const char* op, const Pool2dOptions& o, const std::string& path,
                   const std::string& v) {
    auto& n = g_.node(op, {v}, path);
    const std::vector<int64_t> stride = {o.stride[0] > 0 ? o.stride[0] : o.kernel[0],
                                         o.stride[1] > 0 ? o.stride[1] : o.kernel[1]};
    attr(n, "kernel_shape", std::vector<int64_t>{o.kernel[0], o.kernel[1]});
    attr(n, "strides", stride);
    attr(n, "pads", std::vector<int64_t>{o.padding[0], o.padding[1], o.padding[0], o.padding[1]});
    if (std::string(op) == "AveragePool") {
      attr(n, "count_include_pad", int64_t{o.count_include_pad ? 1 : 0});
    }
    return path;
  }

  // PyTorch's adaptive average pooling: one GlobalAveragePool or AveragePool when the sizes
  // divide, else a MatMul of the flattened maps with the (constant) averaging matrix.
  std::string adaptive_pool(const std::array<int64_t, 2>& size, const std::string& path,
                            const std::string& v, const Shape& in) {
    const int64_t H = in[2], W = in[3], oh = size[0], ow = size[1];
    if (oh == 1 && ow == 1) {
      g_.node("GlobalAveragePool", {v}, path);
      return path;
    }
    if (H % oh == 0 && W % ow == 0) {
      auto& n = g_.node("AveragePool", {v}, path);
      attr(n, "kernel_shape", std::vector<int64_t>{H / oh, W / ow});
      attr(n, "strides", std::vector<int64_t>{H / oh, W / ow});
      return path;
    }
    std::vector<float> p(static_cast<size_t>(H * W * oh * ow), 0.0f);
    for (int64_t i = 0; i < oh; ++i) {
      const int64_t h0 = i * H / oh, h1 = ((i + 1) * H + oh - 1) / oh;
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t w0 = j * W / ow, w1 = ((j + 1) * W + ow - 1) / ow;
        const float weight = 1.0f / static_cast<float>((h1 - h0) * (w1 - w0));
        for (int64_t h = h0; h < h1; ++h) {
          for (int64_t w = w0; w < w1; ++w) {
            p[static_cast<size_t>((h * W + w) * oh * ow + i * ow + j)] = weight;
          }
        }
      }
    }
    const std::string flat = g_.sub(path, "flat"), pooled = g_.sub(path, "pooled");
    g_.node("Reshape", {v, g_.ints(g_.sub(path, "flat_shape"), {0, 0, H * W})}, flat);
    g_.node("MatMul",
            {flat, g_.floats(g_.sub(path, "weights"), {H * W, oh * ow}, p.data(), p.size())},
            pooled);
    g_.node("Reshape", {pooled, g_.ints(g_.sub(path, "shape"), {0, 0, oh, ow})}, path);
    return path;
  }

  std::string linear(nn::Linear& l, const std::string& path, const std::string& v,
                     const Shape& in) {
    if (in.size() == 2) {
      std::vector<std::string> inputs = {v, g_.tensor(path + ".weight", l.weight)};
      if (l.bias.defined()) inputs.push_back(g_.tensor(path + ".bias", l.bias));
      attr(g_.node("Gemm", inputs, path), "transB", int64_t{1});
      return path;
    }
    // [N, ..., in] @ weight^T (+ bias)
    const std::string mm = l.bias.defined() ? g_.sub(path, "matmul") : path;
    g_.node("MatMul", {v, g_.tensor(path + ".weight_t", l.weight.t())}, mm);
    if (l.bias.defined()) g_.node("Add", {mm, g_.tensor(path + ".bias", l.bias)}, path);
    return path;
  }

  Graph& g_;
  std::string where_;
};

// Switches a module to eval mode for the export and back.
class EvalGuard {
 public:
  explicit EvalGuard(nn::Module& m) : m_(m), was_(m.is_training()) { m.eval(); }
  ~EvalGuard() { m_.train(was_); }
  EvalGuard(const EvalGuard&) = delete;
  EvalGuard& operator=(const EvalGuard&) = delete;

 private:
  nn::Module& m_;
  bool was_;
};

Device device_of(const nn::Module& m) {
  const auto params = m.parameters();
  return params.empty() ? Device::cpu() : params.front().device();
}

Tensor probe_of(const Shape& per_sample, Device device) {
  Shape s = per_sample;
  s.insert(s.begin(), 1);
  return zeros(s, DType::f32, device);
}

Shape per_sample(const Tensor& probe) {
  return Shape(probe.shape().begin() + 1, probe.shape().end());
}

onnx::ModelProto new_model(const std::string& graph_name, const OnnxMetadata& metadata,
                           const std::string& doc) {
  onnx::ModelProto m;
  m.set_ir_version(onnx::IR_VERSION_2020_5_8);  // IR 7: the version of opset 13
  m.set_producer_name("mel");
  m.set_doc_string(doc);
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(kOnnxOpset);
  for (const auto& [k, v] : metadata) {
    auto* p = m.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  }
  m.mutable_graph()->set_name(graph_name);
  return m;
}

void check_and_write(const onnx::ModelProto& m, const std::string& path) {
  try {
    onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    fail("ONNX export: the ONNX checker rejects the model for {}: {}", path, e.what());
  }
  std::string bytes;
  MEL_CHECK(m.SerializeToString(&bytes), "ONNX export: could not serialise the model for {}", path);
  train::write_file_atomic(path, bytes);
}

}  // namespace

void write_upstream_onnx(method::Upstream& up, const Shape& input_shape,
                         const OnnxMetadata& metadata, const std::string& path) {
  autograd::NoGradGuard ng;
  EvalGuard eval(up);
  onnx::ModelProto m = new_model(
      "mel_upstream", metadata,
      "MEL upstream model: input x (normalised images), outputs exit_logits and features");
  auto* g = m.mutable_graph();
  Graph graph(*g);
  value_info(*g->add_input(), "x", input_shape);
  Tensor probe = probe_of(input_shape, device_of(up));
  std::string server;  // for errors: "the backbone of upstream 2"
  for (const auto& [k, v] : metadata) {
    if (k == "server") server = " of upstream " + v;
  }
  std::string f =
      Converter(graph, "backbone" + server).sequential(*up.backbone, "backbone", "x", probe);
  MEL_CHECK(per_sample(probe) == up.feature_shape,
            "ONNX export: the backbone gives {} per sample, the model says {}",
            shape_str(per_sample(probe)), shape_str(up.feature_shape));
  f = graph.rename(f, "features");
  std::string e = Converter(graph, "exit" + server).sequential(*up.exit, "exit", f, probe);
  const Shape exit_shape = per_sample(probe);
  graph.rename(e, "exit_logits");
  value_info(*g->add_output(), "exit_logits", exit_shape);
  value_info(*g->add_output(), "features", up.feature_shape);
  check_and_write(m, path);
}

void write_combination_onnx(method::Ensemble& model, const OnnxMetadata& metadata,
                            const std::string& path) {
  autograd::NoGradGuard ng;
  EvalGuard eval(model);
  onnx::ModelProto m = new_model("mel_combination", metadata,
                                 "MEL combination server: inputs features_1..features_M, one "
                                 "output head_<subset> (logits) per head");
  auto* g = m.mutable_graph();
  Graph graph(*g);
  const auto& ups = model.upstreams;
  for (size_t i = 0; i < ups.size(); ++i) {
    value_info(*g->add_input(), fmt::format("features_{}", i + 1), ups[i]->feature_shape);
  }
  const Device dev = device_of(model);
  for (size_t k = 0; k < model.heads.size(); ++k) {
    const auto& subset = model.spec.head_subsets[k];
    const std::string name = method::subset_name(subset);  // "1+2"
    std::vector<std::string> parts;
    Shape cat;
    for (int i : subset) {
      parts.push_back(fmt::format("features_{}", i + 1));
      const Shape& f = ups[static_cast<size_t>(i)]->feature_shape;
      if (cat.empty()) {
        cat = f;
      } else {
        cat[0] += f[0];
      }
    }
    const std::string prefix = "heads." + name + ".layers";
    const std::string concat = "heads." + name + "/concat";
    attr(graph.node("Concat", parts, concat), "axis", int64_t{1});
    Tensor probe = probe_of(cat, dev);
    const std::string out =
        Converter(graph, "head " + name).sequential(*model.heads[k]->layers, prefix, concat, probe);
    graph.rename(out, "head_" + name);
    value_info(*g->add_output(), "head_" + name, per_sample(probe));
  }
  check_and_write(m, path);
}

#endif  // MEL_WITH_ONNX

}  // namespace mel::app
