// The parts of a run config shared by every model kind, read strictly from JSON into typed specs:
// data, optimizer, schedule and training settings, and the command-line overrides.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <memory>
#include <optional>

#include "core/json_reader.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/text.h"
#include "train/config.h"
#include "train/trainer.h"

namespace mel::app {

struct DataConfig {
  // fashion-mnist, mnist, cifar10, cifar100, spoken-words, text
  std::string dataset = "fashion-mnist";
  std::string dir;               // empty: the dataset's default folder
  std::vector<float> mean, std;  // per channel, applied after scaling u8 to [0, 1]
  int64_t crop_padding = 0;
  bool hflip = false;
  // Spoken words: the log-mel front end ("features") and SpecAugment masking ("spec_augment").
  data::SpeechOptions speech;
  data::SpecAugment spec_augment;
  // Text corpora ("dataset": "text"): the split and the vocabulary's stored form (filled in from
  // the corpus when the config has none, and stored with the run) and the random windows per
  // epoch.
  data::TextDataOptions text;
  int64_t text_batches_per_epoch = 200;
  bool is_text() const { return dataset == "text"; }
  // The classes: the vocabulary's size for text.
  int64_t num_classes() const;
  // The options load_dataset takes for this config.
  data::DatasetOptions dataset_options() const { return {speech}; }
};

// One split of a config's dataset (its folder, or the default one; its feature options).
data::ImageDataset load_split(const DataConfig& dc, data::Split split);

using train::OptimizerConfig;
using train::ScheduleConfig;
using train::TrainConfig;

// What every run config has: where it came from, its name, the JSON as stored with the run (the
// overrides applied), and its data and training sections.
struct RunConfigBase {
  std::string path, name;
  Json json;
  DataConfig data;
  TrainConfig train;
};
// Reads `name` (default: the file's stem), `data` and `train` of the config's top level (and allows
// `description`) into c.
void read_common_sections(const JsonReader& top, RunConfigBase& c);

struct RunOverrides;
// Text configs: the vocabulary (from the corpus in --data, the config's dir or the default folder
// when the config has none) written into the config, with the split options spelled out, and
// every layer option "vocab": "data" replaced by its size. Nothing for other datasets.
void resolve_text_config(RunConfigBase& c, const RunOverrides& overrides);
// The corpus folder of a text config (its dir, else the default).
std::string text_dir(const DataConfig& dc);

// Command-line overrides applied on top of the config file.
// Upper bounds for epochs and batch sizes, from the command line or a config.
inline constexpr int64_t kMaxEpochs = 1000000;
inline constexpr int64_t kMaxBatch = int64_t{1} << 20;

struct RunOverrides {
  std::string device = "cpu";
  std::optional<int64_t> epochs, batch_size, train_limit, test_limit;
  std::optional<uint64_t> seed;
  std::string data_dir;
  std::string out;                    // empty: runs/<config name>
  std::optional<int64_t> stop_after;  // stop (checkpointed) after this epoch
  bool progress = true;
  data::Split eval_split = data::Split::test;  // what `mel eval` evaluates on
};

// Applies command-line overrides to the parsed sections and records them in `json`, the config
// stored with the run.
void apply_overrides(const RunOverrides& overrides, TrainConfig& train, DataConfig& data,
                     Json& json);

// A run's datasets, loaded before the run folder is touched (a missing folder is an error naming
// the package or option that provides it).
struct RunData {
  data::ImageDataset train, test;
};
RunData load_run_data(const DataConfig& dc);
// The same, checking before any training that the images fit the config's model: every model
// input (`model.input`, or each upstream's `input`) must be the images' [C, H, W].
RunData load_run_data(const RunConfigBase& c);
// Every model input of a config, with its key's path: `model.input`, or each upstream's
// (`ensemble.upstream.input`, or `ensemble.upstream[i].input` for a list); null where missing.
std::vector<std::pair<std::string, Json>> model_inputs(const Json& config);

// The training and test loaders of a run (test: eval_batch_size, no augmentation, test_limit).
struct RunLoaders {
  std::unique_ptr<data::DataLoader> train, test;
};
RunLoaders make_loaders(const RunData& ds, const DataConfig& dc, const TrainConfig& tc);

// The engine's options for a run named `name`: its folder (resume_dir, else --out, else
// runs/<name>), the config stored in its checkpoints, the device and the overrides' switches.
train::RunOptions run_options(const std::string& name, const Json& config, Device device,
                              const TrainConfig& tc, const RunOverrides& overrides,
                              const std::string& resume_dir);

// The loader options a config asks for (normalisation; augmentation only when `train`).
data::LoaderOptions loader_options(const DataConfig& dc, int64_t batch, uint64_t seed, bool train,
                                   int64_t limit);

DataConfig read_data_config(const JsonReader& r);
TrainConfig read_train_config(const JsonReader& r);

}  // namespace mel::app
