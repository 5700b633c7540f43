#include "nn/layers.h"

#include <fmt/format.h>

#include <cmath>
#include <new>

#include "core/factory.h"
#include "core/ops_index.h"
#include "core/ops_linalg.h"
#include "core/ops_norm.h"
#include "core/ops_norm_fused.h"

namespace mel::nn {

namespace {

// PyTorch's default for Linear and Conv weights, kaiming_uniform_(a = sqrt(5)), reduces to
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)); biases use the same bound.
void uniform_fan_in(Tensor& t, int64_t fan_in, Generator& gen) {
  const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
  t.copy_(rand(t.shape(), gen, DType::f32, -bound, bound));
}

std::string pair_str(const std::array<int64_t, 2>& a) {
  return fmt::format("({}, {})", a[0], a[1]);
}

}  // namespace

// ---- Sequential --------------------------------------------------------------------------------

Sequential::Sequential(std::vector<std::shared_ptr<Module>> layers) : Module("Sequential") {
  for (auto& l : layers) push_back(std::move(l));
}

void Sequential::push_back(std::shared_ptr<Module> layer) {
  register_module(std::to_string(children().size()), std::move(layer));
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (const auto& c : children()) {
    // Running out of memory names the layer that asked (once: the innermost Sequential).
    try {
      h = c.second->forward(h);
    } catch (const std::bad_alloc&) {
      fail("out of memory in layer {} ({}) on input {}", c.first, c.second->type(),
           shape_str(h.shape()));
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.find("out of memory") == std::string::npos ||
          what.find(" in layer ") != std::string::npos)
        throw;
      fail("{} (in layer {} ({}) on input {})", what, c.first, c.second->type(),
           shape_str(h.shape()));
    }
  }
  return h;
}

// ---- Linear ------------------------------------------------------------------------------------

Linear::Linear(int64_t in, int64_t out, bool has_bias)
    : Module("Linear"), in_features(in), out_features(out) {
  MEL_CHECK(in > 0 && out > 0, "Linear: in_features and out_features must be positive, got {}, {}",
            in, out);
  weight = register_parameter("weight", zeros({out, in}));
  if (has_bias) bias = register_parameter("bias", zeros({out}));
}

void Linear::init_parameters(Generator& gen) {
  autograd::NoGradGuard ng;
  uniform_fan_in(weight, in_features, gen);
  if (bias.defined()) uniform_fan_in(bias, in_features, gen);
}

Tensor Linear::forward(const Tensor& x) {
  MEL_CHECK(x.dim() >= 1 && x.size(-1) == in_features,
            "Linear({}, {}): expected input [..., {}], got {}", in_features, out_features,
            in_features, shape_str(x.shape()));
  Tensor y = matmul(x, weight.t());
  if (bias.defined()) y = add(y, bias);
  return y;
}

std::string Linear::extra_repr() const {
  return fmt::format("in_features={}, out_features={}, bias={}", in_features, out_features,
                     bias.defined() ? "True" : "False");
}

// ---- Conv2d / Conv1d ---------------------------------------------------------------------------

Conv2d::Conv2d(int64_t in, int64_t out, std::array<int64_t, 2> k, Conv2dOptions opt, bool has_bias)
    : Module("Conv2d"), in_channels(in), out_channels(out), kernel(k), options(opt) {
  MEL_CHECK(in > 0 && out > 0 && k[0] > 0 && k[1] > 0,
            "Conv2d: channels and kernel size must be positive, got in {}, out {}, kernel {}", in,
            out, pair_str(k));
  MEL_CHECK(opt.groups > 0 && in % opt.groups == 0 && out % opt.groups == 0,
            "Conv2d: groups {} must divide in_channels {} and out_channels {}", opt.groups, in,
            out);
  weight = register_parameter("weight", zeros({out, in / opt.groups, k[0], k[1]}));
  if (has_bias) bias = register_parameter("bias", zeros({out}));
}

void Conv2d::init_parameters(Generator& gen) {
  autograd::NoGradGuard ng;
  const int64_t fan_in = in_channels / options.groups * kernel[0] * kernel[1];
  uniform_fan_in(weight, fan_in, gen);
  if (bias.defined()) uniform_fan_in(bias, fan_in, gen);
}

Tensor Conv2d::forward(const Tensor& x) {
  return conv2d(x, weight, bias, options);
}

std::string Conv2d::extra_repr() const {
  std::string s = fmt::format("{}, {}, kernel_size={}, stride={}", in_channels, out_channels,
                              pair_str(kernel), pair_str(options.stride));
  if (options.padding != std::array<int64_t, 2>{0, 0}) {
    s += fmt::format(", padding={}", pair_str(options.padding));
  }
  if (options.dilation != std::array<int64_t, 2>{1, 1}) {
    s += fmt::format(", dilation={}", pair_str(options.dilation));
  }
  if (options.groups != 1) s += fmt::format(", groups={}", options.groups);
  if (!bias.defined()) s += ", bias=False";
  return s;
}

Conv1d::Conv1d(int64_t in, int64_t out, int64_t k, int64_t stride_, int64_t padding_,
               int64_t dilation_, int64_t groups_, bool has_bias)
    : Module("Conv1d"),
      in_channels(in),
      out_channels(out),
      kernel(k),
      stride(stride_),
      padding(padding_),
      dilation(dilation_),
      groups(groups_) {
  MEL_CHECK(in > 0 && out > 0 && k > 0,
            "Conv1d: channels and kernel size must be positive, got in {}, out {}, kernel {}", in,
            out, k);
  MEL_CHECK(groups > 0 && in % groups == 0 && out % groups == 0,
            "Conv1d: groups {} must divide in_channels {} and out_channels {}", groups, in, out);
  weight = register_parameter("weight", zeros({out, in / groups, k}));
  if (has_bias) bias = register_parameter("bias", zeros({out}));
}

void Conv1d::init_parameters(Generator& gen) {
  autograd::NoGradGuard ng;
  uniform_fan_in(weight, in_channels / groups * kernel, gen);
  if (bias.defined()) uniform_fan_in(bias, in_channels / groups * kernel, gen);
}

Tensor Conv1d::forward(const Tensor& x) {
  return conv1d(x, weight, bias, stride, padding, dilation, groups);
}

std::string Conv1d::extra_repr() const {
  std::string s = fmt::format("{}, {}, kernel_size=({},), stride=({},)", in_channels, out_channels,
                              kernel, stride);
  if (padding != 0) s += fmt::format(", padding=({},)", padding);
  if (dilation != 1) s += fmt::format(", dilation=({},)", dilation);
  if (groups != 1) s += fmt::format(", groups={}", groups);
  if (!bias.defined()) s += ", bias=False";
  return s;
}

// ---- normalisation -----------------------------------------------------------------------------

BatchNorm::BatchNorm(int dims_, int64_t n, double eps_, double momentum_, bool affine, bool track)
    : Module(dims_ == 1 ? "BatchNorm1d" : "BatchNorm2d"),
      dims(dims_),
      num_features(n),
      eps(eps_),
      momentum(momentum_) {
  MEL_CHECK(dims == 1 || dims == 2, "BatchNorm: dims must be 1 or 2, got {}", dims);
  MEL_CHECK(n > 0, "{}: num_features must be positive, got {}", type(), n);
  if (affine) {
    weight = register_parameter("weight", ones({n}));
    bias = register_parameter("bias", zeros({n}));
  }
  if (track) {
    running_mean = register_buffer("running_mean", zeros({n}));
    running_var = register_buffer("running_var", ones({n}));
    num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, DType::i64));
  }
}

void BatchNorm::init_parameters(Generator&) {
  autograd::NoGradGuard ng;
  if (weight.defined()) weight.fill_(1.0);
  if (bias.defined()) bias.fill_(0.0);
  if (running_mean.defined()) {
    running_mean.fill_(0.0);
    running_var.fill_(1.0);
    num_batches_tracked.fill_(0.0);
  }
}

Tensor BatchNorm::forward(const Tensor& x) {
  const bool ok = dims == 2 ? x.dim() == 4 : (x.dim() == 2 || x.dim() == 3);
  MEL_CHECK(ok, "{}: expected a {} input, got shape {}", type(),
            dims == 2 ? "4-D [N, C, H, W]" : "2-D [N, C] or 3-D [N, C, L]", shape_str(x.shape()));
  MEL_CHECK(x.size(1) == num_features, "{}({}): input has {} channels (shape {})", type(),
            num_features, x.size(1), shape_str(x.shape()));
  const bool use_batch = is_training() || !running_mean.defined();
  if (is_training() && running_mean.defined()) {
    num_batches_tracked.fill_(num_batches_tracked.item() + 1);
  }
  if (fuse_relu) {
    return batch_norm_relu(x, weight, bias, running_mean, running_var, use_batch, momentum, eps);
  }
  return batch_norm(x, weight, bias, running_mean, running_var, use_batch, momentum, eps);
}

std::string BatchNorm::extra_repr() const {
  return fmt::format("{}, eps={}, momentum={}, affine={}, track_running_stats={}", num_features,
                     eps, momentum, weight.defined() ? "True" : "False",
                     running_mean.defined() ? "True" : "False");
}

LayerNorm::LayerNorm(Shape shape, double eps_, bool affine)
    : Module("LayerNorm"), normalized_shape(std::move(shape)), eps(eps_) {
  MEL_CHECK(!normalized_shape.empty() && numel_of(normalized_shape) > 0,
            "LayerNorm: normalized_shape must be non-empty with positive sizes, got {}",
            shape_str(normalized_shape));
  if (affine) {
    weight = register_parameter("weight", ones(normalized_shape));
    bias = register_parameter("bias", zeros(normalized_shape));
  }
}

void LayerNorm::init_parameters(Generator&) {
  autograd::NoGradGuard ng;
  if (weight.defined()) weight.fill_(1.0);
  if (bias.defined()) bias.fill_(0.0);
}

Tensor LayerNorm::forward(const Tensor& x) {
  return layer_norm(x, normalized_shape, weight, bias, eps);
}

std::string LayerNorm::extra_repr() const {
  return fmt::format("{}, eps={}, elementwise_affine={}", shape_str(normalized_shape), eps,
                     weight.defined() ? "True" : "False");
}

// ---- pooling, dropout, activations, flatten, embedding -----------------------------------------

std::string MaxPool2d::extra_repr() const {
  return fmt::format("kernel_size={}, stride={}, padding={}", pair_str(options.kernel),
                     pair_str(options.stride[0] ? options.stride : options.kernel),
                     pair_str(options.padding));
}

std::string AvgPool2d::extra_repr() const {
  return fmt::format("kernel_size={}, stride={}, padding={}", pair_str(options.kernel),
                     pair_str(options.stride[0] ? options.stride : options.kernel),
                     pair_str(options.padding));
}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x) {
  return adaptive_avg_pool2d(x, output_size);
}

std::string AdaptiveAvgPool2d::extra_repr() const {
  return fmt::format("output_size={}", pair_str(output_size));
}

Tensor GlobalAvgPool::forward(const Tensor& x) {
  MEL_CHECK(x.dim() == 4, "GlobalAvgPool: expected a 4-D [N, C, H, W] input, got {}",
            shape_str(x.shape()));
  return adaptive_avg_pool2d(x, {1, 1}).flatten(1);
}

Dropout::Dropout(double p_) : Module("Dropout"), p(p_), gen_(0) {
  MEL_CHECK(p >= 0.0 && p < 1.0, "Dropout: p must be in [0, 1), got {}", p);
}

void Dropout::init_parameters(Generator& gen) {
  Tensor s = randint(0, int64_t{1} << 31, {1}, gen);
  gen_ = Generator(static_cast<uint64_t>(s.item()));
}

Tensor Dropout::forward(const Tensor& x) {
  return dropout(x, p, is_training(), gen_);
}

std::string Dropout::extra_repr() const {
  return fmt::format("p={}", p);
}

const std::vector<ActivationInfo>& activations() {
  // One line per activation layer: config name, PyTorch module name, op.
  // clang-format off
  static const std::vector<ActivationInfo> table = {
      {"relu",      "ReLU",    &relu},
      {"gelu",      "GELU",    &gelu_erf},
      {"gelu_tanh", "GELU",    &gelu_tanh},
      {"silu",      "SiLU",    &silu},
      {"tanh",      "Tanh",    &tanh},
      {"sigmoid",   "Sigmoid", &sigmoid},
  };
  // clang-format on

  return table;
}

const ActivationInfo& find_activation(const std::string& name) {
  std::vector<std::string> names;
  for (const ActivationInfo& a : activations()) {
    if (name == a.name) return a;
    names.push_back(a.name);
  }
  fail("unknown activation '{}' (expected one of: {})", name, fmt::join(names, ", "));
}

ActivationLayer::ActivationLayer(const std::string& name)
    : Module(find_activation(name).module_type), activation(name), fn_(find_activation(name).fn) {}

Tensor ActivationLayer::forward(const Tensor& x) {
  return fused_away ? x : fn_(x);
}

bool fuse_batch_norm_relu(Module& previous, Module& layer) {
  auto* bn = dynamic_cast<BatchNorm*>(&previous);
  auto* act = dynamic_cast<ActivationLayer*>(&layer);
  if (!bn || !act || act->activation != "relu" || bn->fuse_relu) return false;
  bn->fuse_relu = true;
  act->fused_away = true;
  return true;
}

std::string Flatten::extra_repr() const {
  return fmt::format("start_dim={}, end_dim={}", start_dim, end_dim);
}

Embedding::Embedding(int64_t num, int64_t dim)
    : Module("Embedding"), num_embeddings(num), embedding_dim(dim) {
  MEL_CHECK(num > 0 && dim > 0, "Embedding: sizes must be positive, got {}, {}", num, dim);
  weight = register_parameter("weight", zeros({num, dim}));
}

void Embedding::init_parameters(Generator& gen) {
  autograd::NoGradGuard ng;
  weight.copy_(randn(weight.shape(), gen));
}

Tensor Embedding::forward(const Tensor& indices) {
  return embedding(weight, indices);
}

std::string Embedding::extra_repr() const {
  return fmt::format("{}, {}", num_embeddings, embedding_dim);
}

}  // namespace mel::nn
