#include "app/text_run.h"

#include <fmt/format.h>

#include <cmath>
#include <numbers>

namespace mel::app {

int64_t text_context(const RunConfigBase& c) {
  std::vector<std::pair<std::string, Json>> inputs;
  if (c.json.contains("model")) {
    inputs.emplace_back("model.input", c.json["model"].value("input", Json()));
  } else if (c.json.contains("ensemble")) {
    const Json& up = c.json["ensemble"].value("upstream", Json());
    if (up.is_array()) {
      for (size_t i = 0; i < up.size(); ++i) {
        inputs.emplace_back(fmt::format("ensemble.upstream[{}].input", i),
                            up[i].value("input", Json()));
      }
    } else {
      inputs.emplace_back("ensemble.upstream.input", up.value("input", Json()));
    }
  }
  int64_t context = 0;
  for (const auto& [key, in] : inputs) {
    MEL_CHECK(in.is_array() && in.size() == 1 && in[0].is_number_integer() && in[0].get<int64_t>() >= 1,
              "{}: {} must be [T] (the context length in characters) for text, got {}", c.path,
              key, in.dump());
    const auto t = in[0].get<int64_t>();
    MEL_CHECK(context == 0 || context == t,
              "{}: {} is [{}], but another model's context is {}; the upstream models of a text "
              "ensemble read the same windows",
              c.path, key, t, context);
    context = t;
  }
  MEL_CHECK(context > 0, "{}: a text config needs a model with an \"input\": [T]", c.path);
  return context;
}

TextLoaders make_text_loaders(const RunConfigBase& c) {
  TextLoaders out;
  const std::string dir = text_dir(c.data);
  out.data = std::make_unique<data::TextData>(data::load_text_data(dir, c.data.text));
  const TrainConfig& tc = c.train;
  if (tc.train_limit > 0 && tc.train_limit < static_cast<int64_t>(out.data->train.size())) {
    out.data->train.resize(static_cast<size_t>(tc.train_limit));
  }
  const int64_t context = text_context(c);
  data::TextWindowOptions to;
  to.context = context;
  to.batch_size = tc.batch_size;
  to.seed = tc.seed;
  to.random = true;
  to.batches_per_epoch = c.data.text_batches_per_epoch;
  out.train = std::make_unique<data::TextWindowLoader>(out.data->train, to,
                                                       fmt::format("training ({})", dir));
  data::TextWindowOptions vo;
  vo.context = context;
  vo.batch_size = tc.eval_batch_size;
  vo.random = false;
  vo.limit = tc.test_limit;
  out.test = std::make_unique<data::TextWindowLoader>(out.data->validation, vo,
                                                      fmt::format("validation ({})", dir));
  return out;
}

Json text_metrics_json(const train::Evaluation& e) {
  Json nats = Json::object(), bits = Json::object(), acc = Json::object();
  for (size_t k = 0; k < e.names.size(); ++k) {
    if (k < e.losses.size()) {
      nats[e.names[k]] = e.losses[k];
      bits[e.names[k]] = e.losses[k] / std::numbers::ln2;
    }
    acc[e.names[k]] = e.accuracy[k];
  }
  return {{"split", "validation"},
          {"characters", e.samples},
          {"nats_per_char", nats},
          {"bits_per_char", bits},
          {"next_char_accuracy", acc}};
}

std::string text_metrics_table(const train::Evaluation& e) {
  std::string out = fmt::format("{:<10} {:>12} {:>10} {:>14}\n", "predictor", "nats/char",
                                "bits/char", "next-char acc");
  for (size_t k = 0; k < e.names.size(); ++k) {
    const double nats = k < e.losses.size() ? e.losses[k] : std::nan("");
    out += fmt::format("{:<10} {:>12.4f} {:>10.4f} {:>13.2f}%\n", e.names[k], nats,
                       nats / std::numbers::ln2, 100.0 * e.accuracy[k]);
  }
  return out + fmt::format("({} validation characters)\n", e.samples);
}

}  // namespace mel::app
