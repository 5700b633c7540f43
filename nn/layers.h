// Standard layers with PyTorch's layouts, defaults and parameter names: Linear, Conv1d/2d,
// BatchNorm, LayerNorm, pooling, Dropout, activations, Flatten, Embedding and Sequential.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/ops_conv.h"
#include "core/ops_elementwise.h"
#include "nn/module.h"

namespace mel::nn {

// Applies its children in order; children are named "0", "1", ...
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  explicit Sequential(std::vector<std::shared_ptr<Module>> layers);
  void push_back(std::shared_ptr<Module> layer);
  size_t size() const { return children().size(); }
  std::shared_ptr<Module> operator[](size_t i) const { return children().at(i).second; }
  Tensor forward(const Tensor& x) override;
};

// A named collection without a forward (PyTorch's ModuleList / ModuleDict).
class ModuleDict : public Module {
 public:
  explicit ModuleDict(std::string type = "ModuleDict") : Module(std::move(type)) {}
  void add(const std::string& name, std::shared_ptr<Module> m) {
    register_module(name, std::move(m));
  }
};

class Identity : public Module {
 public:
  Identity() : Module("Identity") {}
  Tensor forward(const Tensor& x) override { return x; }
};

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& x) override;  // x: [..., in] -> [..., out]
  std::string extra_repr() const override;
  Tensor weight, bias;  // [out, in], [out] (bias undefined when off)
  int64_t in_features, out_features;

 protected:
  void init_parameters(Generator& gen) override;
};

class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, std::array<int64_t, 2> kernel,
         Conv2dOptions options = {}, bool bias = true);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Tensor weight, bias;  // [out, in / groups, kh, kw], [out]
  int64_t in_channels, out_channels;
  std::array<int64_t, 2> kernel;
  Conv2dOptions options;

 protected:
  void init_parameters(Generator& gen) override;
};

class Conv1d : public Module {
 public:
  Conv1d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1,
         int64_t padding = 0, int64_t dilation = 1, int64_t groups = 1, bool bias = true);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Tensor weight, bias;  // [out, in / groups, k], [out]
  int64_t in_channels, out_channels, kernel, stride, padding, dilation, groups;

 protected:
  void init_parameters(Generator& gen) override;
};

// BatchNorm1d ([N, C] or [N, C, L]) and BatchNorm2d ([N, C, H, W]); `dims` is 1 or 2.
// With fuse_relu the layer applies ReLU after normalising (one pass instead of two); the
// builder sets it when a ReLU follows, and the ReLU layer is kept as an identity placeholder.
class BatchNorm : public Module {
 public:
  BatchNorm(int dims, int64_t num_features, double eps = 1e-5, double momentum = 0.1,
            bool affine = true, bool track_running_stats = true);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  int dims;
  int64_t num_features;
  double eps, momentum;
  bool fuse_relu = false;

 protected:
  void init_parameters(Generator& gen) override;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(Shape normalized_shape, double eps = 1e-5, bool affine = true);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Tensor weight, bias;
  Shape normalized_shape;
  double eps;

 protected:
  void init_parameters(Generator& gen) override;
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(Pool2dOptions options) : Module("MaxPool2d"), options(options) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, options); }
  std::string extra_repr() const override;
  Pool2dOptions options;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(Pool2dOptions options) : Module("AvgPool2d"), options(options) {}
  Tensor forward(const Tensor& x) override { return avg_pool2d(x, options); }
  std::string extra_repr() const override;
  Pool2dOptions options;
};

class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(std::array<int64_t, 2> size)
      : Module("AdaptiveAvgPool2d"), output_size(size) {}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  std::array<int64_t, 2> output_size;
};

// Mean over the spatial dims: [N, C, H, W] -> [N, C] (AdaptiveAvgPool2d(1) then Flatten).
class GlobalAvgPool : public Module {
 public:
  GlobalAvgPool() : Module("GlobalAvgPool") {}
  Tensor forward(const Tensor& x) override;
};

class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  double p;

 protected:
  // Seeds the layer's own mask stream from `gen`, so runs are reproducible from one seed.
  void init_parameters(Generator& gen) override;

 private:
  Generator gen_;
};

// The activation layers, one line each in nn/layers.cpp's table: config name, the PyTorch module
// name shown by repr, and the op. Every entry is also a registered layer type.
struct ActivationInfo {
  const char* name;         // "relu", "gelu", "gelu_tanh", ...
  const char* module_type;  // "ReLU", "GELU", ...
  Tensor (*fn)(const Tensor&);
};
const std::vector<ActivationInfo>& activations();
// The table entry for `name`; an unknown name is an error listing the known ones.
const ActivationInfo& find_activation(const std::string& name);

class ActivationLayer : public Module {
 public:
  explicit ActivationLayer(const std::string& name);
  Tensor forward(const Tensor& x) override;
  std::string activation;   // the table name
  bool fused_away = false;  // the preceding layer applies it (batch norm + relu)

 private:
  Tensor (*fn_)(const Tensor&);
};
inline std::shared_ptr<ActivationLayer> make_relu() {
  return std::make_shared<ActivationLayer>("relu");
}

// Folds `layer` into `previous` when the pair has a fused kernel: BatchNorm followed by ReLU
// becomes batch_norm_relu, and the ReLU stays as a placeholder so parameter names keep their
// indices (those of the unfused PyTorch model). Returns whether it fused.
bool fuse_batch_norm_relu(Module& previous, Module& layer);

class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1)
      : Module("Flatten"), start_dim(start_dim), end_dim(end_dim) {}
  Tensor forward(const Tensor& x) override { return x.flatten(start_dim, end_dim); }
  std::string extra_repr() const override;
  int64_t start_dim, end_dim;
};

class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim);
  Tensor forward(const Tensor& indices) override;
  std::string extra_repr() const override;
  Tensor weight;  // [num, dim]
  int64_t num_embeddings, embedding_dim;

 protected:
  void init_parameters(Generator& gen) override;  // N(0, 1), as PyTorch
};

}  // namespace mel::nn
