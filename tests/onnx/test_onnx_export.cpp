// ONNX export of ensembles (app/onnx_export.h, `mel export --format onnx`). Each case builds a
// small ensemble whose layers cover every built-in layer type (random weights, batch norms with
// non-trivial running statistics), runs mel on a batch and writes, into $MEL_ONNX_TEST_DIR/<case>,
// the ONNX files with the input and mel's outputs as .npy beside them; tests/onnx/check_onnx.py
// (ctest onnx_check) then runs the files and compares. Without the variable the files go to a
// temporary folder and only the C++ side is checked.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "app/app_testing.h"
#include "app/ensemble_config.h"
#include "app/ensemble_run.h"
#include "app/onnx_export.h"
#include "core/autograd.h"
#include "core/factory.h"
#include "core/random.h"
#include "data/npy.h"
#include "data/transforms.h"
#include "gradcheck.h"
#include "mel/failure.h"
#include "nn/layers.h"
#include "train/checkpoint.h"

namespace mel::app {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// Where the cases go: $MEL_ONNX_TEST_DIR (kept for check_onnx.py), else a temporary folder.
struct OutDir {
  std::unique_ptr<TempDir> temp;
  fs::path root;
  OutDir() {
    if (const char* d = std::getenv("MEL_ONNX_TEST_DIR"); d && *d) {
      root = d;
      fs::create_directories(root);
    } else {
      temp = std::make_unique<TempDir>();
      root = temp->path;
    }
  }
  std::string fresh(const std::string& name) const {
    const fs::path p = root / name;
    fs::remove_all(p);
    fs::create_directories(p);
    return p.string();
  }
};

// $MEL_ONNX_TEST_DIR starts empty, so check_onnx.py sees only this run's cases.
class EmptyOutDir : public ::testing::Environment {
 public:
  void SetUp() override {
    if (const char* d = std::getenv("MEL_ONNX_TEST_DIR"); d && *d) fs::remove_all(d);
  }
};
const auto* const empty_out_dir = ::testing::AddGlobalTestEnvironment(new EmptyOutDir);

void write_npy(const std::string& path, const Tensor& t) {
  std::ofstream(path, std::ios::binary) << data::npy_bytes(t.contiguous());
}

// Every norm gets scales and shifts away from 1 and 0 and running statistics away from 0 and 1.
void randomise_norms(nn::Module& m, Generator& gen) {
  autograd::NoGradGuard ng;
  for (auto& [name, t] : m.state_dict()) {
    const auto ends = [&](const std::string& s) {
      return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    if (ends("running_mean")) {
      t.copy_(randn(t.shape(), gen, DType::f32, 0.0, 0.5));
    } else if (ends("running_var")) {
      t.copy_(rand(t.shape(), gen, DType::f32, 0.3, 2.0));
    } else if (t.dim() == 1 && ends("weight")) {
      t.copy_(rand(t.shape(), gen, DType::f32, 0.5, 1.5));
    } else if (t.dim() == 1 && ends("bias")) {
      t.copy_(randn(t.shape(), gen, DType::f32, 0.0, 0.3));
    }
  }
}

// Runs mel on x and writes x, every upstream's exit logits and features and every head's logits.
void write_reference(method::Ensemble& model, const Tensor& x, const std::string& dir) {
  autograd::NoGradGuard ng;
  model.eval();
  write_npy(dir + "/x.npy", x);
  std::vector<Tensor> features;
  for (size_t i = 0; i < model.upstreams.size(); ++i) {
    auto& up = *model.upstreams[i];
    features.push_back(up.backbone->forward(x));
    write_npy(fmt::format("{}/upstream_{}.features.npy", dir, i + 1), features.back());
    write_npy(fmt::format("{}/upstream_{}.exit_logits.npy", dir, i + 1),
              up.exit->forward(features.back()));
  }
  const std::vector<Tensor> heads = model.heads_forward(features);
  for (size_t k = 0; k < heads.size(); ++k) {
    write_npy(fmt::format("{}/combination.head_{}.npy", dir,
                          method::subset_name(model.spec.head_subsets[k])),
              heads[k]);
  }
}

// A case: `model` with random weights, its reference outputs on a random batch and its ONNX files.
void export_model(const std::string& name, std::shared_ptr<method::Ensemble> model,
                  const Shape& input, const Json& config) {
  OutDir out;
  const std::string dir = out.fresh(name);
  Generator gen(17);
  model->reset_parameters(gen);
  randomise_norms(*model, gen);
  Shape xs = input;
  xs.insert(xs.begin(), 5);
  write_reference(*model, randn(xs, gen), dir);
  const OnnxMetadata common = {
      {"format", "mel-onnx-1"}, {"run_name", name}, {"config", config.dump()}};
  for (size_t i = 0; i < model->upstreams.size(); ++i) {
    OnnxMetadata meta = common;
    meta.emplace_back("server", std::to_string(i + 1));
    write_upstream_onnx(*model->upstreams[i], input, meta,
                        fmt::format("{}/upstream_{}.onnx", dir, i + 1));
    EXPECT_TRUE(fs::file_size(fmt::format("{}/upstream_{}.onnx", dir, i + 1)) > 0);
  }
  OnnxMetadata meta = common;
  meta.emplace_back("server", "C");
  write_combination_onnx(*model, meta, dir + "/combination.onnx");
  EXPECT_TRUE(fs::exists(dir + "/combination.onnx"));
  // the export leaves the model's mode alone
  model->train();
  write_upstream_onnx(*model->upstreams[0], input, meta, dir + "/again.onnx.tmp");
  EXPECT_TRUE(model->upstreams[0]->is_training());
  fs::remove(dir + "/again.onnx.tmp");
}

// The same for the ensemble of `ensemble` (a config's "ensemble" object).
void export_case(const std::string& name, const Json& ensemble, const Shape& input,
                 int64_t classes) {
  const JsonReader r(ensemble, name, "ensemble");
  export_model(name, build_ensemble(r, classes, classes), input, ensemble);
}

class OnnxExport : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!onnx_export_available()) {
      OutDir out;
      std::ofstream(out.root / "SKIPPED") << "this mel was built without ONNX export";
      GTEST_SKIP() << "this mel was built without ONNX export";
    }
  }
};

// Image models with feature maps and conv heads: conv2d (groups, dilation, stride, no bias),
// batchnorm2d (fused with relu and not), maxpool2d and avgpool2d with padding (count_include_pad
// on and off), adaptive_avg_pool2d by a MatMul (7 -> 3) and by GlobalAveragePool, flatten,
// dropout, layernorm, gelu, silu, sigmoid, gelu_tanh, linear.
TEST_F(OnnxExport, ImageModelsWithConvHeads) {
  const Json e = Json::parse(R"({
    "upstream": [
      {"input": [1, 28, 28],
       "backbone": [{"type": "conv2d", "out": 4, "kernel": 3, "padding": 1, "bias": false},
                    {"type": "batchnorm2d"}, {"type": "relu"}, {"type": "maxpool2d", "kernel": 2},
                    {"type": "conv2d", "out": 6, "kernel": 3, "stride": 2, "padding": 1,
                     "groups": 2},
                    {"type": "batchnorm2d", "eps": 0.001}, {"type": "gelu"}],
       "exit": [{"type": "avgpool2d", "kernel": 3, "stride": 2, "padding": 1,
                 "count_include_pad": false},
                {"type": "adaptive_avg_pool2d", "size": [3, 3]}, {"type": "flatten"},
                {"type": "dropout", "p": 0.3}, {"type": "linear", "out": 10}]},
      {"input": [1, 28, 28],
       "backbone": [{"type": "conv2d", "out": 3, "kernel": 5, "padding": 2}, {"type": "silu"},
                    {"type": "avgpool2d", "kernel": 3, "stride": 2, "padding": 1},
                    {"type": "conv2d", "out": 4, "kernel": 3, "padding": 2, "dilation": 2},
                    {"type": "maxpool2d", "kernel": 3, "stride": 2, "padding": 1}],
       "exit": [{"type": "adaptive_avg_pool2d", "size": [1, 1]}, {"type": "flatten"},
                {"type": "layernorm"}, {"type": "sigmoid"}, {"type": "linear", "out": 10}]}
    ],
    "heads": {"type": "conv", "channels": 5, "activation": "gelu_tanh"}
  })");
  export_case("image_conv_heads", e, {1, 28, 28}, 10);
}

// Three-channel images with flat features and mlp heads over every subset: relu unfused,
// adaptive_avg_pool2d as an AveragePool (8 -> 4), batchnorm1d on [N, F], tanh, identity.
TEST_F(OnnxExport, FlatFeaturesWithMlpHeads) {
  const Json e = Json::parse(R"({
    "models": 3,
    "upstream": {"input": [3, 10, 10],
                 "backbone": [{"type": "conv2d", "out": 4, "kernel": 3}, {"type": "relu"},
                              {"type": "adaptive_avg_pool2d", "size": [4, 4]},
                              {"type": "flatten"}, {"type": "linear", "out": 16},
                              {"type": "batchnorm1d"}, {"type": "tanh"}, {"type": "identity"}],
                 "exit": [{"type": "dropout"}, {"type": "linear", "out": 7}]},
    "heads": {"type": "mlp", "hidden": 8, "activation": "silu"}
  })");
  export_case("flat_mlp_heads", e, {3, 10, 10}, 7);
}

// Sequences [C, L] with linear heads: conv1d (stride, dilation, groups), batchnorm1d on [N, C, L]
// fused with relu, layernorm over L and over features, gelu.
TEST_F(OnnxExport, SequenceModelsWithLinearHeads) {
  const Json e = Json::parse(R"({
    "upstream": [
      {"input": [2, 16],
       "backbone": [{"type": "conv1d", "out": 4, "kernel": 3, "stride": 2, "padding": 1},
                    {"type": "batchnorm1d"}, {"type": "relu"},
                    {"type": "conv1d", "out": 4, "kernel": 3, "padding": 2, "dilation": 2,
                     "groups": 2},
                    {"type": "layernorm"}, {"type": "gelu"}, {"type": "flatten"},
                    {"type": "linear", "out": 12}, {"type": "layernorm", "eps": 0.01}],
       "exit": [{"type": "linear", "out": 5}]},
      {"input": [2, 16],
       "backbone": [{"type": "conv1d", "out": 3, "kernel": 5, "bias": false}, {"type": "tanh"},
                    {"type": "flatten"}],
       "exit": [{"type": "linear", "out": 5, "bias": false}]}
    ],
    "heads": {"type": "linear"}
  })");
  export_case("sequence_linear_heads", e, {2, 16}, 5);
}

// Paths no config reaches but a hand-built model can: a partial flatten (Reshape) and a linear
// layer over [N, C, F] (MatMul + Add).
TEST_F(OnnxExport, HandBuiltFlattenAndLinearOverMaps) {
  std::vector<std::shared_ptr<method::Upstream>> ups;
  for (int i = 0; i < 2; ++i) {
    auto backbone = std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{
        std::make_shared<nn::Flatten>(2, -1), std::make_shared<nn::Linear>(12, 5),
        std::make_shared<nn::Flatten>()});
    auto exit = std::make_shared<nn::Sequential>(
        std::vector<std::shared_ptr<nn::Module>>{std::make_shared<nn::Linear>(10, 3)});
    ups.push_back(std::make_shared<method::Upstream>(backbone, exit, Shape{10}));
  }
  method::HeadSpec heads;
  heads.subsets = {{0, 1}};
  export_model("hand_built", method::build_ensemble(std::move(ups), heads, 3, 3), {2, 3, 4},
               Json::object());
}

// The main job's reference ensemble (configs/fmnist_mel2.json) at full size, random weights.
TEST_F(OnnxExport, ReferenceConfig) {
  const std::string path = testing::source_path("configs/fmnist_mel2.json");
  MelConfig c = parse_mel_config(read_json_file(path), path, RunOverrides{});
  export_model("reference_fmnist_mel2", build_ensemble_model(c), {1, 28, 28}, c.json);
}

// A layer type without a conversion (a user-registered one) is an error naming it and its place.
class Scale : public nn::Module {
 public:
  Scale() : Module("Scale") {}
  Tensor forward(const Tensor& x) override { return x * 2.0; }
};

TEST_F(OnnxExport, UnsupportedLayerIsAClearError) {
  TempDir d;
  auto backbone = std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{
      std::make_shared<nn::Linear>(4, 3), std::make_shared<Scale>()});
  auto exit = std::make_shared<nn::Sequential>(
      std::vector<std::shared_ptr<nn::Module>>{std::make_shared<nn::Linear>(3, 2)});
  method::Upstream up(backbone, exit, {3});
  EXPECT_MEL_ERROR(write_upstream_onnx(up, {4}, {{"server", "2"}}, d / "u.onnx"),
                   "layer 1 of the backbone of upstream 2", "type Scale", "no ONNX conversion",
                   "exportable layer types: conv2d");
  EXPECT_FALSE(fs::exists(d / "u.onnx"));
  // a batch norm without running statistics normalises with the batch's own: no static graph
  auto exit2 = std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{
      std::make_shared<nn::Linear>(4, 3),
      std::make_shared<nn::BatchNorm>(1, 3, 1e-5, 0.1, true, false)});
  method::Upstream up2(std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{
                           std::make_shared<nn::Identity>()}),
                       exit2, {4});
  EXPECT_MEL_ERROR(write_upstream_onnx(up2, {4}, {{"server", "1"}}, d / "u.onnx"),
                   "layer 1 of the exit of upstream 1", "type BatchNorm1d",
                   "keeps no running statistics");
}

// `mel export RUN --format onnx` on a trained run: the files, their metadata (normalisation)
// and, for check_onnx.py, the test images' pixels with mel's outputs on them.
TEST_F(OnnxExport, TrainedRunThroughTheCommand) {
  if (!testing::have_fmnist()) {
    GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  }
  TempDir d;
  const Json cfg = Json::parse(R"({
    "name": "onnx_fmnist", "kind": "mel",
    "data": {"dataset": "fashion-mnist", "mean": [0.2860], "std": [0.3530]},
    "ensemble": {
      "upstream": [
        {"input": [1, 28, 28],
         "backbone": [{"type": "conv2d", "out": 8, "kernel": 3, "padding": 1, "bias": false},
                      {"type": "batchnorm2d"}, {"type": "relu"}, {"type": "maxpool2d", "kernel": 4},
                      {"type": "flatten"}],
         "exit": [{"type": "dropout", "p": 0.2}, {"type": "linear", "out": 10}]},
        {"input": [1, 28, 28],
         "backbone": [{"type": "conv2d", "out": 6, "kernel": 5, "padding": 2},
                      {"type": "relu"}, {"type": "maxpool2d", "kernel": 4}, {"type": "flatten"}],
         "exit": [{"type": "linear", "out": 10}]}
      ],
      "heads": {"type": "mlp", "hidden": 16}
    },
    "train": {"epochs": 1, "batch_size": 64, "seed": 3, "train_limit": 512, "test_limit": 64,
              "optimizer": {"type": "adam", "lr": 0.003}}
  })");
  const std::string run = d / "run";
  std::string err;
  ASSERT_EQ(
      testing::run_mel({"train", testing::write_json(d, cfg), "--out", run, "--no-progress"}, &err),
      0)
      << err;
  OutDir out;
  const std::string dir = out.fresh("trained_fmnist");
  ASSERT_EQ(testing::run_mel({"export", run, "--out", dir, "--format", "onnx"}, &err), 0) << err;
  for (const char* f : {"upstream_1.onnx", "upstream_2.onnx", "combination.onnx"}) {
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  }
  const std::string u1 = testing::read_file(dir + "/upstream_1.onnx");
  for (const char* s : {"input_mean", "[0.286]", "input_std", "[0.353]", "onnx_fmnist",
                        "exit_logits", "features", "mel-onnx-1"}) {
    EXPECT_NE(u1.find(s), std::string::npos) << s;
  }
  const std::string comb = testing::read_file(dir + "/combination.onnx");
  for (const char* s : {"features_1", "features_2", "head_1+2"}) {
    EXPECT_NE(comb.find(s), std::string::npos) << s;
  }
  // mel's outputs on the first test images, normalised as the loader does
  const train::Checkpoint ckpt = train::read_checkpoint(run);
  MelConfig c = parse_mel_config(Json::parse(ckpt.info.config_json), "stored", RunOverrides{});
  auto model = build_ensemble_model(c);
  train::load_model_checkpoint(ckpt, *model);
  const data::ImageDataset test = data::load_dataset("fashion-mnist", "", data::Split::test);
  const Tensor pixels = test.images.narrow(0, 0, 8).contiguous();
  write_npy(dir + "/pixels.npy", pixels);
  write_reference(*model, data::normalize_images(pixels, c.data.mean, c.data.std), dir);
  // the other formats still work, and a bad one is refused
  EXPECT_EQ(testing::run_mel({"export", run, "--out", d / "st", "--format", "safetensors"}), 0);
  EXPECT_TRUE(fs::exists(d / "st/combination.safetensors"));
  EXPECT_NE(testing::run_mel({"export", run, "--out", d / "x", "--format", "tflite"}, &err), 0);
  EXPECT_NE(err.find("tflite"), std::string::npos) << err;
}

// Built without libonnx-dev: --format onnx says what to install (runs in every build: with ONNX
// it checks the export's availability flag instead).
TEST(OnnxExportAvailability, WithoutOnnxTheCommandSaysWhatToInstall) {
  if (onnx_export_available()) {
    SUCCEED();
    return;
  }
  method::Upstream up(std::make_shared<nn::Sequential>(), std::make_shared<nn::Sequential>(), {1});
  EXPECT_MEL_ERROR(write_upstream_onnx(up, {1}, {}, "/nonexistent/u.onnx"),
                   "built without ONNX export (install libonnx-dev libprotobuf-dev)");
}

}  // namespace
}  // namespace mel::app
