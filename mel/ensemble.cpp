#include "mel/ensemble.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "core/ops_elementwise.h"
#include "core/ops_index.h"
#include "mel/failure.h"

namespace mel::method {

Upstream::Upstream(std::shared_ptr<nn::Sequential> b, std::shared_ptr<nn::Sequential> e,
                   Shape features)
    : Module("Upstream"),
      backbone(std::move(b)),
      exit(std::move(e)),
      feature_shape(std::move(features)) {
  register_module("backbone", backbone);
  register_module("exit", exit);
}

Ensemble::Ensemble(EnsembleSpec s, std::vector<std::shared_ptr<Upstream>> ups,
                   std::vector<std::shared_ptr<Head>> hs)
    : Module("Ensemble"), spec(std::move(s)), upstreams(std::move(ups)), heads(std::move(hs)) {
  // Children named like PyTorch's ModuleList / ModuleDict: upstream.0.backbone.0.weight,
  // heads.1+2.layers.0.weight.
  auto up = std::make_shared<nn::ModuleDict>("ModuleList");
  auto hd = std::make_shared<nn::ModuleDict>();
  for (size_t i = 0; i < upstreams.size(); ++i) up->add(std::to_string(i), upstreams[i]);
  for (size_t k = 0; k < heads.size(); ++k) hd->add(subset_name(spec.head_subsets[k]), heads[k]);
  register_module("upstream", up);
  register_module("heads", hd);
}

std::vector<std::string> Ensemble::predictor_names() const {
  std::vector<std::string> names;
  for (int i = 0; i < spec.M; ++i) names.push_back(std::to_string(i + 1));
  for (const auto& s : spec.head_subsets) names.push_back(subset_name(s));
  return names;
}

int64_t Ensemble::head_parameters() const {
  int64_t n = 0;
  for (const auto& h : heads) n += h->num_parameters();
  return n;
}

std::vector<Tensor> Ensemble::heads_from(const std::vector<Tensor>& features,
                                         std::vector<Tensor> out) {
  for (size_t k = 0; k < heads.size(); ++k) {
    std::vector<Tensor> parts;
    for (int i : spec.head_subsets[k]) parts.push_back(features[static_cast<size_t>(i)]);
    out.push_back(heads[k]->forward(concat(parts, 1)));
  }
  return out;
}

std::vector<Tensor> Ensemble::forward_all(const Tensor& x) {
  std::vector<Tensor> features, out;
  for (auto& u : upstreams) {
    features.push_back(u->backbone->forward(x));
    out.push_back(u->exit->forward(features.back()));
  }
  return heads_from(features, std::move(out));
}

std::vector<Tensor> Ensemble::forward_all_frozen_upstream(const Tensor& x) {
  std::vector<Tensor> features, out;
  {
    autograd::NoGradGuard ng;
    for (auto& u : upstreams) {
      features.push_back(u->backbone->forward(x));
      out.push_back(u->exit->forward(features.back()));
    }
  }
  return heads_from(features, std::move(out));
}

const char* head_kind_name(HeadKind k) {
  switch (k) {
    case HeadKind::linear:
      return "linear";
    case HeadKind::mlp:
      return "mlp";
    case HeadKind::conv:
      return "conv";
  }
  return "?";
}

namespace {

// Linear and mlp heads read the concatenated flat features.
int64_t flat_width(HeadKind kind, const std::vector<int>& subset,
                   const std::vector<std::shared_ptr<Upstream>>& ups) {
  int64_t width = 0;
  for (int i : subset) {
    const Shape& f = ups[static_cast<size_t>(i)]->feature_shape;
    MEL_CHECK(f.size() == 1,
              "a {} head needs flat features, but upstream {} gives {} per sample (cut after a "
              "global_avg_pool or flatten layer, or use a conv head)",
              head_kind_name(kind), i + 1, shape_str(f));
    width += f[0];
  }
  return width;
}

// Conv heads read feature maps of one size, concatenated along the channels.
int64_t map_channels(const std::vector<int>& subset,
                     const std::vector<std::shared_ptr<Upstream>>& ups) {
  int64_t channels = 0;
  Shape hw;
  for (int i : subset) {
    const Shape& f = ups[static_cast<size_t>(i)]->feature_shape;
    MEL_CHECK(f.size() == 3,
              "a conv head needs feature maps [C, H, W], but upstream {} gives {} per sample (cut "
              "before the global pooling)",
              i + 1, shape_str(f));
    MEL_CHECK(hw.empty() || (hw[0] == f[1] && hw[1] == f[2]),
              "head {}: the feature maps of its models differ in size ({}x{} vs {}x{}); a conv "
              "head concatenates channels of maps of one size",
              subset_name(subset), hw[0], hw[1], f[1], f[2]);
    hw = {f[1], f[2]};
    channels += f[0];
  }
  return channels;
}

std::shared_ptr<Head> build_head(const HeadSpec& spec, const std::vector<int>& subset,
                                 const std::vector<std::shared_ptr<Upstream>>& ups,
                                 int64_t num_classes) {
  auto seq = std::make_shared<nn::Sequential>();
  if (spec.norm) {
    MEL_CHECK(spec.kind != HeadKind::conv,
              "a conv head has its own batch norm (\"norm\" is for "
              "linear and mlp heads)");
    seq->push_back(std::make_shared<nn::LayerNorm>(Shape{flat_width(spec.kind, subset, ups)}));
  }
  if (spec.kind == HeadKind::linear) {
    seq->push_back(std::make_shared<nn::Linear>(flat_width(spec.kind, subset, ups), num_classes));
  } else if (spec.kind == HeadKind::mlp) {
    MEL_CHECK(spec.hidden >= 1, "an mlp head's hidden width must be positive, got {}", spec.hidden);
    seq->push_back(std::make_shared<nn::Linear>(flat_width(spec.kind, subset, ups), spec.hidden));
    seq->push_back(std::make_shared<nn::ActivationLayer>(spec.activation));
    seq->push_back(std::make_shared<nn::Linear>(spec.hidden, num_classes));
  } else {
    MEL_CHECK(spec.channels >= 1, "a conv head's channels must be positive, got {}", spec.channels);
    seq->push_back(std::make_shared<nn::Conv2d>(map_channels(subset, ups), spec.channels,
                                                std::array<int64_t, 2>{1, 1}, Conv2dOptions{},
                                                false));
    auto bn = std::make_shared<nn::BatchNorm>(2, spec.channels);
    auto act = std::make_shared<nn::ActivationLayer>(spec.activation);
    nn::fuse_batch_norm_relu(*bn, *act);
    seq->push_back(bn);
    seq->push_back(act);
    seq->push_back(std::make_shared<nn::GlobalAvgPool>());
    seq->push_back(std::make_shared<nn::Linear>(spec.channels, num_classes));
  }
  return std::make_shared<Head>(spec.kind, seq);
}

}  // namespace

std::shared_ptr<Ensemble> build_ensemble(std::vector<std::shared_ptr<Upstream>> ups,
                                         const HeadSpec& heads, int64_t num_classes,
                                         int64_t exit_classes) {
  MEL_CHECK(ups.size() >= 2, "an ensemble needs at least 2 models, got {}", ups.size());
  EnsembleSpec spec;
  spec.M = static_cast<int>(ups.size());
  spec.num_classes = num_classes;
  spec.exit_classes = exit_classes;
  spec.head_kind = heads.kind;
  spec.head_subsets = heads.subsets;
  std::vector<std::shared_ptr<Head>> hs;
  for (const auto& s : spec.head_subsets) {
    for (int i : s) {
      MEL_CHECK(i >= 0 && i < spec.M, "head {} names model {}, but the ensemble has models 1..{}",
                subset_name(s), i + 1, spec.M);
    }
    hs.push_back(build_head(heads, s, ups, num_classes));
  }
  return std::make_shared<Ensemble>(std::move(spec), std::move(ups), std::move(hs));
}

}  // namespace mel::method
