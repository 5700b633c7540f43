// Text (language-model) runs: the corpus's token streams and window loaders for a config, and the
// text metrics (nats and bits per character, next-character accuracy) for reports and terminals.
#pragma once
#include <memory>
#include <string>

#include "app/run_config.h"
#include "data/text.h"
#include "train/task.h"

namespace mel::app {

// The context length T of a text config: its model's (or every upstream's, which must agree)
// "input": [T].
int64_t text_context(const RunConfigBase& c);

// A text run's data: the corpus read with the config's stored vocabulary and split, the training
// stream cut to train_limit characters when set, random training windows (batches_per_epoch of
// batch_size, seeded) and the validation split's sequential windows (eval_batch_size, at most
// test_limit of them).
struct TextLoaders {
  std::unique_ptr<data::TextData> data;
  std::unique_ptr<data::TextWindowLoader> train, test;
};
TextLoaders make_text_loaders(const RunConfigBase& c);

// A run's training and evaluation batches: text windows, or the loaders over the image (or
// feature) datasets it holds. Made in place (the image loaders keep references into `images`).
struct RunSources {
  RunData images;  // empty for text
  RunLoaders loaders;
  TextLoaders text;
  data::BatchSource& train() const;
  data::BatchSource& test() const;
};
std::unique_ptr<RunSources> open_run_sources(const RunConfigBase& c);

// report.json's "text" object: per predictor, nats and bits per character and next-character
// accuracy on the validation split.
Json text_metrics_json(const train::Evaluation& e);
// The same as a terminal table.
std::string text_metrics_table(const train::Evaluation& e);

struct SampleOptions {
  std::string prompt;        // empty: generation starts after a newline
  int64_t length = 200;      // characters to generate
  std::string predictor;     // an exit ("1") or head ("1+2"); empty: the last (the no-failure one)
  double temperature = 1.0;  // 0: always the most likely character
  int64_t top_k = 0;         // > 0: draw among the k most likely characters only
  uint64_t seed = 0;
};
struct SampleResult {
  std::string predictor;  // the predictor that generated
  std::string text;       // the generated characters (without the prompt)
};

// Generates `length` characters after the prompt from the model stored in `run` (a text run's
// folder or model checkpoint) on `device`, one character at a time from the chosen predictor's
// distribution at the last position, reading at most the model's context (the last T
// characters). Errors: not a text run, a prompt longer than the context or with characters
// outside the run's vocabulary (listed), an unknown predictor (the known ones listed).
SampleResult sample_text(const std::string& run, const SampleOptions& o, const std::string& device);

}  // namespace mel::app
