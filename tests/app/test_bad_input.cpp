// The bad-input catalogue: configs, command lines, data folders and checkpoints a careless or
// hostile user gives `mel`. Every case must end with a non-zero exit status and a message holding
// the listed words (the file, the key, the value, the allowed range), never a crash, a hang or a
// silent fallback.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "app_testing.h"

namespace mel::app {
namespace {

namespace fs = std::filesystem;
using testing::read_file;
using testing::run_mel;
using testing::source_path;

Json single_config() {
  return Json::parse(R"({
    "name": "bad_input",
    "data": {"dataset": "fashion-mnist", "mean": [0.2860], "std": [0.3530]},
    "model": {
      "input": [1, 28, 28],
      "trunk": [
        {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1, "bias": false},
        {"type": "batchnorm2d"}, {"type": "relu"},
        {"type": "maxpool2d", "kernel": 2},
        {"type": "adaptive_avg_pool2d", "size": 2},
        {"type": "flatten"},
        {"type": "layernorm"},
        {"type": "dropout", "p": 0.1}
      ],
      "head": [{"type": "linear", "out": 10}]
    },
    "train": {"epochs": 1, "batch_size": 64, "seed": 3,
              "optimizer": {"type": "adam", "lr": 0.003},
              "schedule": {"type": "onecycle", "pct_start": 0.2}}
  })");
}

Json mel_config() {
  Json c = Json::parse(read_file(source_path("configs/fmnist_mel2.json")));
  c.erase("original");
  return c;
}

// A case: what to write into the case's folder and which command to run there.
struct Case {
  std::string name;
  std::function<std::vector<std::string>(const std::string& dir)> setup;
  std::vector<std::string> words;  // all must appear in the error output
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

std::string write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// `mel info` on `base` with `edit` applied at a JSON pointer.
Case config_case(std::string name, Json base, const std::string& pointer, Json value,
                 std::vector<std::string> words) {
  return {
      name,
      [base, pointer, value](const std::string& dir) {
        Json c = base;
        if (value.is_discarded()) {
          c[Json::json_pointer(pointer).parent_pointer()].erase(Json::json_pointer(pointer).back());
        } else {
          c[Json::json_pointer(pointer)] = value;
        }
        return std::vector<std::string>{"info", write(dir + "/c.json", c.dump(2))};
      },
      std::move(words)};
}

// `mel train` on the small config with extra command-line options.
Case cli_case(std::string name, std::vector<std::string> extra, std::vector<std::string> words) {
  return {name,
          [extra](const std::string& dir) {
            std::vector<std::string> args = {
                "train", write(dir + "/c.json", single_config().dump(2)), "--out", dir + "/run"};
            args.insert(args.end(), extra.begin(), extra.end());
            return args;
          },
          std::move(words)};
}

std::vector<Case> catalogue() {
  const Json s = single_config();
  const Json m = mel_config();
  const std::string big = std::to_string(int64_t{1} << 62);
  std::vector<Case> c = {
      // ---- layers
      config_case("conv_out_huge", s, "/model/trunk/0/out", int64_t{1} << 62,
                  {"c.json", "model.trunk[0].out", "must be in [1, 16777216]", big}),
      config_case("conv_out_zero", s, "/model/trunk/0/out", 0, {"model.trunk[0].out", "got 0"}),
      config_case("conv_stride_zero", s, "/model/trunk/0/stride", 0,
                  {"model.trunk[0].stride", "must be in [1, 65536], got 0"}),
      config_case("conv_stride_pair_zero", s, "/model/trunk/0/stride", Json::array({1, 0}),
                  {"model.trunk[0].stride", "got 0"}),
      config_case("conv_dilation_zero", s, "/model/trunk/0/dilation", 0,
                  {"model.trunk[0].dilation", "got 0"}),
      config_case("conv_padding_negative", s, "/model/trunk/0/padding", -1,
                  {"model.trunk[0].padding", "must be in [0, 65536], got -1"}),
      config_case("conv_kernel_zero", s, "/model/trunk/0/kernel", 0,
                  {"model.trunk[0].kernel", "got 0"}),
      config_case("conv_kernel_larger_than_input", s, "/model/trunk/0/kernel", 1000,
                  {"model.trunk[0].kernel", "the output would be empty"}),
      config_case("conv_groups_not_dividing", s, "/model/trunk/0/groups", 3,
                  {"model.trunk[0].groups", "must divide"}),
      config_case("conv_groups_zero", s, "/model/trunk/0/groups", 0,
                  {"model.trunk[0].groups", "got 0"}),
      config_case("conv_out_not_a_number", s, "/model/trunk/0/out", "wide",
                  {"model.trunk[0].out", "expected an integer"}),
      config_case("pool_kernel_zero", s, "/model/trunk/3/kernel", 0,
                  {"model.trunk[3].kernel", "got 0"}),
      config_case("pool_stride_zero", s, "/model/trunk/3/stride", 0,
                  {"model.trunk[3].stride", "got 0"}),
      config_case("pool_padding_over_half_kernel", s, "/model/trunk/3/padding", 2,
                  {"model.trunk[3].padding", "at most half the kernel"}),
      config_case("adaptive_pool_size_zero", s, "/model/trunk/4/size", 0,
                  {"model.trunk[4].size", "got 0"}),
      config_case("batchnorm_eps_zero", s, "/model/trunk/1/eps", 0,
                  {"model.trunk[1].eps", "must be in (0, 1]"}),
      config_case("batchnorm_momentum_two", s, "/model/trunk/1/momentum", 2,
                  {"model.trunk[1].momentum", "must be in [0, 1]"}),
      config_case("layernorm_eps_negative", s, "/model/trunk/6/eps", -1,
                  {"model.trunk[6].eps", "got -1"}),
      config_case("dropout_p_one", s, "/model/trunk/7/p", 1.0, {"model.trunk[7].p", "[0, 1)"}),
      config_case("linear_out_zero", s, "/model/head/0/out", 0, {"model.head[0].out", "got 0"}),
      config_case("linear_out_huge", s, "/model/head/0/out", int64_t{1} << 40,
                  {"model.head[0].out", "must be in [1, 16777216]"}),
      config_case("unknown_layer", s, "/model/trunk/2/type", "rleu",
                  {"model.trunk[2].type", "unknown layer type 'rleu'", "relu"}),
      config_case("unknown_layer_key", s, "/model/trunk/0/strides", 2,
                  {"model.trunk[0]", "strides", "stride"}),
      config_case("input_zero", s, "/model/input", Json::array({0, 28, 28}),
                  {"model.input", "sizes must be in [1,"}),
      config_case("input_four_dims", s, "/model/input", Json::array({1, 1, 28, 28}),
                  {"model.input", "expected [C, H, W]"}),
      config_case("input_huge", s, "/model/input", Json::array({1, int64_t{1} << 40, 28}),
                  {"model.input", "sizes must be in [1,"}),
      {"layer_weights_beyond_memory",
       [](const std::string& dir) {
         Json c = single_config();
         c["model"]["input"] = {1, 4096, 4096};
         c["model"]["trunk"] = Json::array({Json{{"type", "flatten"}}});
         c["model"]["head"] = Json::array({Json{{"type", "linear"}, {"out", 1 << 24}}});
         return std::vector<std::string>{"info", write(dir + "/c.json", c.dump())};
       },
       {"c.json", "model.head[0]", "layer 0 (linear) for input [16777216]", "out of memory"}},
      // ---- training
      config_case("lr_zero", s, "/train/optimizer/lr", 0, {"train.optimizer.lr", "(0, 1000000000], got 0"}),
      config_case("lr_negative", s, "/train/optimizer/lr", -1, {"train.optimizer.lr", "got -1"}),
      config_case("betas_above_one", s, "/train/optimizer/betas", Json::array({2, 0.9}),
                  {"train.optimizer.betas", "[0, 1), got 2"}),
      config_case("betas_one_value", s, "/train/optimizer/betas", Json::array({0.9}),
                  {"train.optimizer.betas", "two numbers"}),
      config_case("adam_eps_negative", s, "/train/optimizer/eps", -1,
                  {"train.optimizer.eps", "got -1"}),
      config_case("weight_decay_negative", s, "/train/optimizer/weight_decay", -0.1,
                  {"train.optimizer.weight_decay", "got -0.1"}),
      config_case("optimizer_unknown", s, "/train/optimizer/type", "adagrad",
                  {"train.optimizer.type", "adagrad"}),
      config_case("epochs_zero", s, "/train/epochs", 0,
                  {"train.epochs", "must be in [1, 1000000], got 0"}),
      config_case("epochs_huge", s, "/train/epochs", int64_t{1} << 40,
                  {"train.epochs", "must be in [1, 1000000]"}),
      config_case("batch_zero", s, "/train/batch_size", 0, {"train.batch_size", "got 0"}),
      config_case("batch_huge", s, "/train/batch_size", int64_t{1} << 30,
                  {"train.batch_size", "must be in [1, 1048576]"}),
      config_case("seed_negative", s, "/train/seed", -1, {"train.seed", "must be >= 0"}),
      config_case("pct_start_one", s, "/train/schedule/pct_start", 1.0,
                  {"train.schedule.pct_start", "(0, 1)"}),
      config_case("schedule_unknown", s, "/train/schedule/type", "linear_warmup",
                  {"train.schedule.type", "linear_warmup"}),
      config_case("divergence_factor_half", s, "/train/divergence_factor", 0.5,
                  {"train.divergence_factor", "must be 0 (off) or in [1, 1e12]"}),
      config_case("clip_negative", s, "/train/clip_grad_norm", -1,
                  {"train.clip_grad_norm", "got -1"}),
      config_case("label_smoothing_two", s, "/train/label_smoothing", 2,
                  {"train.label_smoothing", "[0, 1]"}),
      config_case("log_every_zero", s, "/train/log_every", 0, {"train.log_every", "got 0"}),
      config_case("unknown_train_key", s, "/train/epoch", 3, {"train", "epoch", "epochs"}),
      // ---- data
      config_case("dataset_unknown", s, "/data/dataset", "imagenet", {"data.dataset", "imagenet"}),
      config_case("mean_count", s, "/data/mean", Json::array({0.1, 0.2}),
                  {"data.mean", "one value per channel"}),
      config_case("crop_padding_negative", s, "/data/crop_padding", -4,
                  {"data.crop_padding", ">= 0"}),
      // ---- ensembles
      config_case("models_one", m, "/ensemble/models", 1,
                  {"ensemble.models", "must be in [2, 16]", "got 1"}),
      config_case("models_hundred", m, "/ensemble/models", 100,
                  {"ensemble.models", "must be in [2, 16]", "got 100"}),
      config_case("models_two_million", m, "/ensemble/models", 2000000,
                  {"ensemble.models", "got 2000000"}),
      config_case("all_subsets_of_twelve", m, "/ensemble/models", 12,
                  {"ensemble.heads.subsets", "4083 heads", "list the subsets"}),
      config_case("subset_names_missing_model", m, "/ensemble/heads/subsets",
                  Json::array({Json::array({1, 3})}), {"ensemble.heads.subsets", "model"}),
      config_case("head_type_unknown", m, "/ensemble/heads/type", "transformer",
                  {"ensemble.heads.type", "transformer"}),
      config_case("cut_beyond_backbone", m, "/ensemble/upstream/cut", 99,
                  {"ensemble.upstream.cut", "99"}),
      config_case("failout_one", m, "/train/failout", 1.0, {"train.failout", "[0, 1)"}),
      config_case("name_missing_models", m, "/ensemble/models", Json::value_t::discarded,
                  {"ensemble", "models"}),
      // ---- files that are not configs
      {"config_missing",
       [](const std::string& dir) {
         return std::vector<std::string>{"info", dir + "/absent.json"};
       },
       {"absent.json"}},
      {"config_not_json",
       [](const std::string& dir) {
         return std::vector<std::string>{"info", write(dir + "/c.json", "{\"name\": 3,,}")};
       },
       {"c.json"}},
      {"config_empty",
       [](const std::string& dir) {
         return std::vector<std::string>{"info", write(dir + "/c.json", "")};
       },
       {"c.json"}},
      {"config_duplicate_key",
       [](const std::string& dir) {
         std::string text = single_config().dump();
         text.replace(text.find("\"epochs\""), 0, "\"epochs\": 7, ");
         return std::vector<std::string>{"info", write(dir + "/c.json", text)};
       },
       {"c.json", "key 'epochs' appears twice"}},
      {"config_number_overflow",
       [](const std::string& dir) {
         std::string text = single_config().dump();
         text.replace(text.find("0.003"), 5, "1e999");
         return std::vector<std::string>{"info", write(dir + "/c.json", text)};
       },
       {"c.json", "not valid JSON", "1e999"}},
      {"config_nested_too_deep",
       [](const std::string& dir) {
         return std::vector<std::string>{
             "info", write(dir + "/c.json", std::string(100000, '[') + std::string(100000, ']'))};
       },
       {"c.json", "deeper than 64 levels"}},
      {"config_huge_value_short_message",
       [](const std::string& dir) {
         Json c = single_config();
         c["model"]["trunk"][0]["out"] = std::string(5000000, 'w');
         return std::vector<std::string>{"info", write(dir + "/c.json", c.dump())};
       },
       {"c.json", "model.trunk[0].out", "expected an integer", "characters)"}},
      {"config_is_a_list",
       [](const std::string& dir) {
         return std::vector<std::string>{"info", write(dir + "/c.json", "[1, 2]")};
       },
       {"c.json"}},
      // ---- command lines
      cli_case("epochs_minus_one", {"--epochs", "-1"}, {"--epochs must be in [1, 1000000], got -1"}),
      cli_case("epochs_flag_zero", {"--epochs", "0"}, {"--epochs", "got 0"}),
      cli_case("epochs_flag_huge", {"--epochs", "99999999999"}, {"--epochs", "got 99999999999"}),
      cli_case("batch_minus_one", {"--batch", "-1"}, {"--batch must be in [1, 1048576], got -1"}),
      cli_case("batch_flag_zero", {"--batch", "0"}, {"--batch", "got 0"}),
      cli_case("train_limit_negative", {"--train-limit", "-5"}, {"--train-limit", "got -5"}),
      cli_case("test_limit_negative", {"--test-limit", "-1"}, {"--test-limit", "got -1"}),
      cli_case("seed_flag_negative", {"--seed", "-1"}, {"--seed", "got -1"}),
      cli_case("stop_after_zero", {"--stop-after", "0"}, {"--stop-after", "got 0"}),
      cli_case("epochs_not_a_number", {"--epochs", "ten"}, {"--epochs", "ten"}),
      cli_case("placement_unknown", {"--placement", "cloud"}, {"--placement", "cloud"}),
      cli_case("replicas_zero", {"--replicas", "0"}, {"replicas"}),
      cli_case("device_unknown", {"--device", "tpu"}, {"tpu"}),
      cli_case("data_folder_missing", {"--data", "/nonexistent/fmnist"}, {"/nonexistent/fmnist"}),
      {"eval_missing_run",
       [](const std::string& dir) {
         return std::vector<std::string>{"eval", dir + "/no_run"};
       },
       {"no_run"}},
      {"eval_garbage_checkpoint",
       [](const std::string& dir) {
         fs::create_directories(dir + "/run");
         write(dir + "/run/model.safetensors", "this is not a safetensors file at all");
         return std::vector<std::string>{"eval", dir + "/run"};
       },
       {"model.safetensors"}},
      {"export_of_a_single_model",
       [](const std::string& dir) {
         fs::create_directories(dir + "/run");
         write(dir + "/run/model.safetensors", std::string(8, '\0'));
         return std::vector<std::string>{"export", dir + "/run", "--out", dir + "/x"};
       },
       {"model.safetensors"}},
      {"predict_input_missing",
       [](const std::string& dir) {
         return std::vector<std::string>{"predict", dir + "/no_run", "--input", dir + "/x.npy"};
       },
       {"no_run"}},
  };
  return c;
}

class BadInput : public ::testing::TestWithParam<Case> {};

TEST_P(BadInput, ExitsNonZeroWithAClearMessage) {
  const Case& c = GetParam();
  const fs::path dir =
      fs::temp_directory_path() / ("mel_bad_input_" + std::to_string(::getpid()) + "_" + c.name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::vector<std::string> args = c.setup(dir.string());
  std::string err;
  const int rc = run_mel(args, &err);
  EXPECT_NE(rc, 0) << c.name;
  for (const std::string& w : c.words) {
    EXPECT_NE(err.find(w), std::string::npos) << c.name << ": no '" << w << "' in: " << err;
  }
  EXPECT_LT(err.size(), 2000u) << c.name << ": the message is too long";
  // Nothing half-written: a failed command leaves no run folder behind.
  EXPECT_FALSE(fs::exists(dir / "run" / "metrics.jsonl")) << c.name;
  fs::remove_all(dir);
}

// IDX files of 20x20 images given to a 28x28 model: refused before any training, naming the key.
TEST(BadInput, ImagesOfAnotherSizeAreRefusedBeforeTraining) {
  const fs::path dir = fs::temp_directory_path() / ("mel_idx20_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "data");
  auto be32 = [](uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                       static_cast<char>(v >> 8), static_cast<char>(v)};
  };
  for (const char* prefix : {"train", "t10k"}) {
    write((dir / "data" / (std::string(prefix) + "-images-idx3-ubyte")).string(),
          be32(0x803) + be32(8) + be32(20) + be32(20) + std::string(8 * 20 * 20, '\x40'));
    write((dir / "data" / (std::string(prefix) + "-labels-idx1-ubyte")).string(),
          be32(0x801) + be32(8) + std::string(8, '\x01'));
  }
  std::string err;
  EXPECT_EQ(run_mel({"train", write((dir / "c.json").string(), single_config().dump()), "--data",
                     (dir / "data").string(), "--out", (dir / "run").string()},
                    &err),
            1);
  EXPECT_NE(err.find("model.input is [1, 28, 28], but the fashion-mnist images are [1, 20, 20]"),
            std::string::npos)
      << err;
  EXPECT_FALSE(fs::exists(dir / "run" / "model.safetensors"));
  fs::remove_all(dir);
}

// lr 1e6: the loss explodes within a few steps; the run stops with an error naming the epoch and
// the step, and writes no checkpoint.
TEST(Divergence, AHugeLearningRateStopsTheRun) {
  if (!testing::have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  const fs::path dir = fs::temp_directory_path() / ("mel_diverge_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  Json c = single_config();
  c["train"]["optimizer"] = {{"type", "sgd"}, {"lr", 1e6}};
  c["train"]["schedule"] = {{"type", "constant"}};
  c["train"]["log_every"] = 1;
  std::string err;
  EXPECT_EQ(run_mel({"train", write((dir / "c.json").string(), c.dump()), "--train-limit", "640",
                     "--test-limit", "64", "--out", (dir / "run").string(), "--no-progress"},
                    &err),
            1);
  EXPECT_TRUE(err.find("the loss exploded") != std::string::npos ||
              err.find("the loss became") != std::string::npos ||
              err.find("non-finite") != std::string::npos)
      << err;
  EXPECT_NE(err.find("epoch 1"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir / "run" / "model.safetensors"));
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Catalogue, BadInput, ::testing::ValuesIn(catalogue()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

TEST(BadInput, TheCatalogueHasAtLeastSixtyCases) {
  EXPECT_GE(catalogue().size(), 60u);
}

}  // namespace
}  // namespace mel::app
