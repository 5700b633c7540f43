#include "app/text_run.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <optional>

#include "app/ensemble_config.h"
#include "app/single.h"
#include "core/autograd.h"
#include "core/factory.h"
#include "core/ops_nn.h"
#include "core/random.h"
#include "train/checkpoint.h"
#include "train/device.h"

namespace mel::app {

int64_t text_context(const RunConfigBase& c) {
  int64_t context = 0;
  for (const auto& [key, in] : model_inputs(c.json)) {
    MEL_CHECK(
        in.is_array() && in.size() == 1 && in[0].is_number_integer() && in[0].get<int64_t>() >= 1,
        "{}: {} must be [T] (the context length in characters) for text, got {}", c.path, key,
        in.dump());
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

data::BatchSource& RunSources::train() const {
  return text.train ? static_cast<data::BatchSource&>(*text.train) : *loaders.train;
}
data::BatchSource& RunSources::test() const {
  return text.test ? static_cast<data::BatchSource&>(*text.test) : *loaders.test;
}

std::unique_ptr<RunSources> open_run_sources(const RunConfigBase& c) {
  auto s = std::make_unique<RunSources>();
  if (c.data.is_text()) {
    s->text = make_text_loaders(c);
  } else {
    s->images = load_run_data(c);
    s->loaders = make_loaders(s->images, c.data, c.train);
  }
  return s;
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

namespace {

// The next character's id from the logits of the last position.
int64_t choose(std::vector<double> logits, const SampleOptions& o, SplitMix64& draw) {
  const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
  if (o.temperature == 0.0) return best;
  std::vector<size_t> order(logits.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (o.top_k > 0 && static_cast<size_t>(o.top_k) < order.size()) {
    // The k largest, ties by id, so the draw does not depend on the sort's implementation.
    std::partial_sort(order.begin(), order.begin() + o.top_k, order.end(), [&](size_t a, size_t b) {
      return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
    });
    order.resize(static_cast<size_t>(o.top_k));
    std::sort(order.begin(), order.end());
  }
  const double top = logits[static_cast<size_t>(best)];
  std::vector<double> p;
  double total = 0.0;
  for (size_t i : order) {
    p.push_back(std::exp((logits[i] - top) / o.temperature));
    total += p.back();
  }
  // Uniform in [0, total): 53 random bits, the same on every platform.
  double u = static_cast<double>(draw.next() >> 11) * 0x1.0p-53 * total;
  for (size_t k = 0; k < order.size(); ++k) {
    u -= p[k];
    if (u < 0.0) return static_cast<int64_t>(order[k]);
  }
  return static_cast<int64_t>(order.back());
}

}  // namespace

SampleResult sample_text(const std::string& run, const SampleOptions& o,
                         const std::string& device_name) {
  MEL_CHECK(o.length >= 0 && o.length <= (int64_t{1} << 24),
            "mel sample: --length must be in [0, 2^24], got {}", o.length);
  MEL_CHECK(std::isfinite(o.temperature) && o.temperature >= 0.0,
            "mel sample: --temperature must be >= 0, got {}", o.temperature);
  MEL_CHECK(o.top_k >= 0, "mel sample: --top-k must be >= 0, got {}", o.top_k);
  const Device device = train::run_device(device_name, "mel sample");
  const train::Checkpoint ckpt = train::read_checkpoint(run);
  Json cfg = Json::parse(ckpt.info.config_json, nullptr, false);
  MEL_CHECK(!cfg.is_discarded(), "{}: the stored config is not valid JSON", ckpt.file);
  const std::string source = ckpt.file + " (stored config)";
  // The stored config carries its vocabulary: sampling reads no corpus. (Held by value: the
  // config structs have no virtual destructor.)
  std::optional<MelConfig> mc;
  std::optional<SingleConfig> sc;
  const RunConfigBase* c = nullptr;
  std::shared_ptr<nn::Module> model;
  std::shared_ptr<method::Ensemble> ensemble;
  if (is_mel_config(cfg)) {
    mc.emplace(parse_mel_config(std::move(cfg), source, {}));
    ensemble = build_ensemble_model(*mc);
    model = ensemble;
    c = &*mc;
  } else {
    sc.emplace(parse_single_config(std::move(cfg), source, {}));
    model = build_model(*sc);
    c = &*sc;
  }
  MEL_CHECK(c->data.is_text(),
            "mel sample: {} is a run on the {} dataset; sampling generates text from a text run",
            run, c->data.dataset);
  train::load_model_checkpoint(ckpt, *model);
  model->to(device);
  model->eval();
  const data::Vocabulary vocab =
      data::Vocabulary::from_string(c->data.text.vocabulary, source + ": data.text.vocabulary");
  const int64_t context = text_context(*c);

  std::vector<std::string> names = {"1"};
  if (ensemble) names = ensemble->predictor_names();
  SampleResult out;
  out.predictor = o.predictor.empty() ? names.back() : o.predictor;
  const auto pick = std::find(names.begin(), names.end(), out.predictor);
  MEL_CHECK(pick != names.end(), "mel sample: unknown predictor '{}'; this run has {}",
            out.predictor, fmt::join(names, ", "));
  const size_t which = static_cast<size_t>(pick - names.begin());

  std::vector<int64_t> ids = vocab.encode(o.prompt.empty() ? "\n" : o.prompt, "the prompt");
  MEL_CHECK(static_cast<int64_t>(ids.size()) <= context,
            "mel sample: the prompt has {} characters, but the model reads at most {} (its "
            "context); give a shorter prompt",
            ids.size(), context);
  autograd::NoGradGuard ng;
  SplitMix64 draw(o.seed);
  std::vector<int64_t> generated;
  for (int64_t n = 0; n < o.length; ++n) {
    const auto t = std::min<int64_t>(static_cast<int64_t>(ids.size()), context);
    Tensor x = tensor_i64(std::vector<int64_t>(ids.end() - t, ids.end()), {1, t}).to(device);
    Tensor logits = ensemble ? ensemble->forward_all(x)[which] : model->forward(x);
    // Rows: [t, V]; the last row predicts the next character.
    const std::vector<double> last =
        logits.narrow(0, t - 1, 1).to(Device::cpu()).to(DType::f64).contiguous().to_vector();
    const int64_t next = choose(last, o, draw);
    ids.push_back(next);
    generated.push_back(next);
  }
  out.text = vocab.decode(generated);
  return out;
}

}  // namespace mel::app
