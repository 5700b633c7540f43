#include "mel/ensemble.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "core/ops_index.h"
#include "mel/failure.h"
#include "mel/model_builder.h"

namespace mel::app {

Upstream::Upstream(std::shared_ptr<nn::Sequential> b, std::shared_ptr<nn::Sequential> e)
    : Module("Upstream"), backbone(std::move(b)), exit(std::move(e)) {
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

namespace {

HeadKind parse_head_kind(const JsonReader& r, const std::string& s) {
  if (s == "linear") return HeadKind::linear;
  if (s == "mlp") return HeadKind::mlp;
  if (s == "conv") return HeadKind::conv;
  const std::string close = closest_match(s, {"linear", "mlp", "conv"});
  r.error("type", fmt::format("unknown head type '{}' (expected linear, mlp or conv{})", s,
                              close.empty() ? "" : fmt::format("; did you mean '{}'?", close)));
}

std::shared_ptr<Upstream> build_upstream(const JsonReader& r, int index, int64_t exit_classes) {
  const std::vector<int64_t> input = r.get_ints("input");
  if (input.empty() || input.size() > 3) {
    r.error("input", fmt::format("expected [C, H, W], [C, L] or [F], got {} dims", input.size()));
  }
  Shape shape(input.begin(), input.end());
  auto full = build_layers(r, "backbone", shape);
  const int64_t n = static_cast<int64_t>(full->size());
  const int64_t cut = r.get_int("cut", n);
  if (cut < 1 || cut > n) {
    r.error("cut", fmt::format("cut point {} is beyond the backbone of upstream {} ({} layers; "
                               "expected 1..{})",
                               cut, index + 1, n, n));
  }
  // Rebuild the kept prefix so that the feature shape is the one at the cut.
  Shape feat(input.begin(), input.end());
  Json prefix = Json::array();
  for (int64_t i = 0; i < cut; ++i) prefix.push_back(r.raw("backbone")[static_cast<size_t>(i)]);
  Json holder = {{"backbone", prefix}};
  JsonReader hr(holder, r.source(), r.path());
  auto backbone = build_layers(hr, "backbone", feat);
  Shape exit_shape = feat;
  auto exit = build_layers(r, "exit", exit_shape);
  r.finish();
  if (exit_shape.size() != 1 || exit_shape[0] != exit_classes) {
    r.error("exit", fmt::format("the exit of upstream {} must end in {} outputs, but it produces "
                                "{} per sample",
                                index + 1, exit_classes, shape_str(exit_shape)));
  }
  auto up = std::make_shared<Upstream>(backbone, exit);
  up->feature_shape = feat;
  return up;
}

std::vector<std::vector<int>> read_subsets(const JsonReader& r, int M) {
  if (!r.has("subsets") || (r.raw("subsets").is_string() && r.get_string("subsets") == "all")) {
    return all_subsets(M, 2);
  }
  const Json& j = r.raw("subsets");
  if (!j.is_array() || j.empty()) {
    r.error("subsets", "expected \"all\" or a list of subsets like [[1, 2], [1, 2, 3]]");
  }
  std::vector<std::vector<int>> out;
  std::set<std::vector<int>> seen;
  for (const auto& s : j) {
    if (!s.is_array())
      r.error("subsets", fmt::format("expected a list of model numbers, got {}", s.dump()));
    std::vector<int> sub;
    for (const auto& v : s) {
      if (!v.is_number_integer() || v.get<int>() < 1 || v.get<int>() > M) {
        r.error("subsets", fmt::format("subset {} names model {}, but the ensemble has models "
                                       "1..{}",
                                       s.dump(), v.dump(), M));
      }
      sub.push_back(v.get<int>() - 1);
    }
    std::sort(sub.begin(), sub.end());
    if (std::adjacent_find(sub.begin(), sub.end()) != sub.end() || sub.size() < 2) {
      r.error("subsets",
              fmt::format("subset {} must name at least two different models", s.dump()));
    }
    if (!seen.insert(sub).second)
      r.error("subsets", fmt::format("subset {} is listed twice", s.dump()));
    out.push_back(sub);
  }
  return out;
}

std::shared_ptr<Head> build_head(const JsonReader& r, HeadKind kind, const std::vector<int>& subset,
                                 const std::vector<std::shared_ptr<Upstream>>& ups,
                                 int64_t num_classes) {
  const std::string name = subset_name(subset);
  auto seq = std::make_shared<nn::Sequential>();
  if (kind == HeadKind::linear || kind == HeadKind::mlp) {
    int64_t width = 0;
    for (int i : subset) {
      const Shape& f = ups[static_cast<size_t>(i)]->feature_shape;
      if (f.size() != 1) {
        r.error("type",
                fmt::format("a {} head needs flat features, but upstream {} gives {} per "
                            "sample (cut after a global_avg_pool or flatten layer, or "
                            "use a conv head)",
                            kind == HeadKind::linear ? "linear" : "mlp", i + 1, shape_str(f)));
      }
      width += f[0];
    }
    if (kind == HeadKind::linear) {
      seq->push_back(std::make_shared<nn::Linear>(width, num_classes));
    } else {
      const int64_t hidden = r.get_int("hidden", 256);
      if (hidden < 1) r.error("hidden", "must be positive");
      seq->push_back(std::make_shared<nn::Linear>(width, hidden));
      seq->push_back(std::make_shared<nn::ActivationLayer>(
          nn::parse_activation(r.get_string("activation", "relu"))));
      seq->push_back(std::make_shared<nn::Linear>(hidden, num_classes));
    }
  } else {
    int64_t channels = 0;
    Shape hw;
    for (int i : subset) {
      const Shape& f = ups[static_cast<size_t>(i)]->feature_shape;
      if (f.size() != 3) {
        r.error("type", fmt::format("a conv head needs feature maps [C, H, W], but upstream {} "
                                    "gives {} per sample (cut before the global pooling)",
                                    i + 1, shape_str(f)));
      }
      if (!hw.empty() && (hw[0] != f[1] || hw[1] != f[2])) {
        r.error("type", fmt::format("head {}: the feature maps of its models differ in size "
                                    "({}x{} vs {}x{}); a conv head concatenates channels of "
                                    "maps of one size",
                                    name, hw[0], hw[1], f[1], f[2]));
      }
      hw = {f[1], f[2]};
      channels += f[0];
    }
    const int64_t out = r.get_int("channels", 128);
    if (out < 1) r.error("channels", "must be positive");
    seq->push_back(std::make_shared<nn::Conv2d>(channels, out, std::array<int64_t, 2>{1, 1},
                                                Conv2dOptions{}, false));
    auto bn = std::make_shared<nn::BatchNorm>(2, out);
    auto act = std::make_shared<nn::ActivationLayer>(
        nn::parse_activation(r.get_string("activation", "relu")));
    if (act->activation == nn::Activation::relu) {
      bn->fuse_relu = true;
      act->fused_away = true;
    }
    seq->push_back(bn);
    seq->push_back(act);
    seq->push_back(std::make_shared<nn::GlobalAvgPool>());
    seq->push_back(std::make_shared<nn::Linear>(out, num_classes));
  }
  return std::make_shared<Head>(kind, seq);
}

}  // namespace

std::shared_ptr<Ensemble> build_ensemble(const JsonReader& r, int64_t num_classes,
                                         int64_t exit_classes) {
  EnsembleSpec spec;
  spec.num_classes = num_classes;
  spec.exit_classes = exit_classes;
  std::vector<std::shared_ptr<Upstream>> ups;
  const Json& u = r.raw("upstream");
  if (u.is_object()) {
    // One spec for all M models.
    const int64_t M = r.get_int("models");
    if (M < 2) r.error("models", fmt::format("an ensemble needs at least 2 models, got {}", M));
    for (int64_t i = 0; i < M; ++i) {
      ups.push_back(build_upstream(r.object("upstream"), static_cast<int>(i), exit_classes));
    }
  } else {
    auto list = r.objects("upstream");
    if (list.size() < 2) {
      r.error("upstream", fmt::format("an ensemble needs at least 2 models, got {}", list.size()));
    }
    if (r.has("models") && r.get_int("models") != static_cast<int64_t>(list.size())) {
      r.error("models", fmt::format("says {} but 'upstream' lists {} models", r.get_int("models"),
                                    list.size()));
    }
    for (size_t i = 0; i < list.size(); ++i) {
      ups.push_back(build_upstream(list[i], static_cast<int>(i), exit_classes));
    }
  }
  spec.M = static_cast<int>(ups.size());
  std::vector<std::shared_ptr<Head>> heads;
  if (r.has("heads")) {
    JsonReader h = r.object("heads");
    spec.head_kind = parse_head_kind(h, h.get_string("type", "linear"));
    spec.head_subsets = read_subsets(h, spec.M);
    for (const auto& s : spec.head_subsets) {
      heads.push_back(build_head(h, spec.head_kind, s, ups, num_classes));
    }
    h.finish();
  } else {
    spec.head_subsets = all_subsets(spec.M, 2);
    JsonReader h(Json::object(), r.source(), r.path() + ".heads");
    for (const auto& s : spec.head_subsets) {
      heads.push_back(build_head(h, spec.head_kind, s, ups, num_classes));
    }
  }
  r.allow({"loss"});
  r.finish();
  return std::make_shared<Ensemble>(std::move(spec), std::move(ups), std::move(heads));
}

}  // namespace mel::app
