// `mel train` end to end on a Fashion-MNIST subset: accuracy, determinism, checkpoints, the run
// folder's files, and clear errors (with nothing written) for bad configs and data.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "app/cli.h"
#include "app/single.h"
#include "core/safetensors.h"
#include "data/npy.h"
#include "tests/app/app_testing.h"
#include "tests/gradcheck.h"
#include "train/checkpoint.h"

namespace mel::app {
namespace {

using train::load_model_checkpoint;
using train::read_checkpoint_info;
using train::save_checkpoint;

namespace fs = std::filesystem;
using namespace testing;

// A small CNN that reaches > 80% on Fashion-MNIST in a few seconds.
Json small_config() {
  return Json::parse(R"({
    "name": "small",
    "data": {"dataset": "fashion-mnist", "mean": [0.2860], "std": [0.3530]},
    "model": {
      "input": [1, 28, 28],
      "trunk": [
        {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1, "bias": false},
        {"type": "batchnorm2d"}, {"type": "relu"},
        {"type": "maxpool2d", "kernel": 2},
        {"type": "conv2d", "out": 16, "kernel": 3, "padding": 1, "bias": false},
        {"type": "batchnorm2d"}, {"type": "relu"},
        {"type": "maxpool2d", "kernel": 2},
        {"type": "flatten"}
      ],
      "head": [{"type": "linear", "out": 10}]
    },
    "train": {"epochs": 2, "batch_size": 64, "seed": 3, "train_limit": 6000, "test_limit": 2000,
              "optimizer": {"type": "adam", "lr": 0.003},
              "schedule": {"type": "onecycle", "pct_start": 0.2}}
  })");
}

TEST(Train, ReferenceConfigHasTheReferenceParameterCount) {
  SingleConfig c = load_single_config(source_path("configs/fmnist_original.json"), RunOverrides{});
  auto m = build_model(c);
  EXPECT_EQ(m->num_parameters(), 1147722);
  // PyTorch's names for the same tree
  auto sd = m->state_dict();
  EXPECT_EQ(sd[0].first, "trunk.0.weight");
  EXPECT_EQ(sd[3].first, "trunk.1.running_mean");
  EXPECT_EQ(sd.back().first, "head.0.bias");
}

TEST(Train, SmallCnnLearnsFashionMnistSubsetAndWritesTheRunFolder) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir dir;
  RunOverrides ov;
  ov.out = dir / "run";
  ov.progress = false;
  SingleConfig c = parse_single_config(small_config(), "small.json", ov);
  Json report = train_single(c, ov);
  const double acc = report["accuracy"]["1"].get<double>();
  EXPECT_GT(acc, 0.80) << "2 epochs on 6000 samples";
  EXPECT_EQ(report["params"]["total"].get<int64_t>(), 8 * 9 + 16 + 16 * 8 * 9 + 32 + 784 * 10 + 10);
  EXPECT_EQ(report["train_samples"].get<int64_t>(), 6000);
  EXPECT_EQ(report["test_samples"].get<int64_t>(), 2000);
  EXPECT_EQ(report["epochs"].get<int64_t>(), 2);
  EXPECT_EQ(report["device"].get<std::string>(), "cpu");
  EXPECT_GT(report["samples_per_second"].get<double>(), 0.0);
  // files: report.json equals the returned report; one metrics line per epoch; no temporaries
  EXPECT_EQ(Json::parse(read_file(ov.out + "/report.json")), report);
  std::istringstream metrics(read_file(ov.out + "/metrics.jsonl"));
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    Json m = Json::parse(line);
    EXPECT_EQ(m["epoch"].get<int>(), ++lines);
  }
  EXPECT_EQ(lines, 2);
  for (auto& e : fs::directory_iterator(ov.out)) {
    EXPECT_NE(e.path().extension(), ".tmp") << e.path();
  }
  // the checkpoint reloads into a fresh model with the same accuracy
  auto model = build_model(c);
  load_model_checkpoint(ov.out, *model);
  data::ImageDataset test = data::load_dataset("fashion-mnist", "", data::Split::test);
  EXPECT_EQ(evaluate(*model, test, c.data, 500, 2000).accuracy[0], acc);
  EXPECT_EQ(read_checkpoint_info(ov.out).epoch, 2);
  // `mel eval` on the run folder
  EXPECT_EQ(run_mel({"eval", ov.out}), 0);
  // `mel predict`: the model's classes give the report's accuracy
  EXPECT_EQ(run_mel({"predict", ov.out, "--out", dir / "pred"}), 0);
  const std::vector<double> classes = data::load_npy(dir / "pred/classes.npy").to_vector();
  const std::vector<double> labels = data::load_npy(dir / "pred/labels.npy").to_vector();
  ASSERT_EQ(classes.size(), 2000u);
  int64_t correct = 0;
  for (size_t i = 0; i < classes.size(); ++i) correct += classes[i] == labels[i];
  EXPECT_DOUBLE_EQ(static_cast<double>(correct) / 2000, acc);
  EXPECT_EQ(data::load_npy(dir / "pred/model.probabilities.npy").shape(), (Shape{2000, 10}));
  EXPECT_EQ(Json::parse(read_file(dir / "pred/predictions.json"))["predictors"],
            Json::parse(R"(["model"])"));
}

TEST(Train, SameSeedGivesIdenticalLossesAndWeights) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir dir;
  Json cfg = small_config();
  cfg["train"]["epochs"] = 1;
  cfg["train"]["train_limit"] = 1024;
  cfg["train"]["test_limit"] = 256;
  std::vector<std::string> losses;
  for (const char* name : {"a", "b"}) {
    RunOverrides ov;
    ov.out = dir / name;
    ov.progress = false;
    train_single(parse_single_config(cfg, "small.json", ov), ov);
    Json m = Json::parse(read_file(ov.out + "/metrics.jsonl"));
    losses.push_back(fmt::format("{:.17g} {:.17g}", m["train_loss"].get<double>(),
                                 m["test_loss"].get<double>()));
  }
  EXPECT_EQ(losses[0], losses[1]);
  auto a = load_safetensors(dir / "a/model.safetensors");
  auto b = load_safetensors(dir / "b/model.safetensors");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].second.to_vector(), b.tensors[i].second.to_vector())
        << a.tensors[i].first;
  }
}

// Every tensor of two model checkpoints, equal bit for bit.
void expect_same_weights(const std::string& a_file, const std::string& b_file) {
  auto a = load_safetensors(a_file);
  auto b = load_safetensors(b_file);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].second.to_vector(), b.tensors[i].second.to_vector())
        << a.tensors[i].first;
  }
}

TEST(Train, ResumedAfterStopAfterEndsWithTheWeightsOfAnUninterruptedRun) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir dir;
  Json cfg = small_config();
  cfg["train"]["epochs"] = 3;
  cfg["train"]["train_limit"] = 768;
  cfg["train"]["test_limit"] = 200;
  const std::string path = write_json(dir, cfg);
  ASSERT_EQ(run_mel({"train", path, "--out", dir / "whole", "--no-progress"}), 0);
  ASSERT_EQ(run_mel({"train", path, "--out", dir / "part", "--no-progress", "--stop-after", "1"}),
            0);
  EXPECT_EQ(read_checkpoint_info(dir / "part").epoch, 1);
  EXPECT_FALSE(fs::exists(dir / "part/report.json"));
  // resumed from the folder alone, and with its own config given beside it
  ASSERT_EQ(run_mel({"train", "--resume", dir / "part", "--no-progress", "--stop-after", "2"}), 0);
  ASSERT_EQ(run_mel({"train", path, "--resume", dir / "part", "--no-progress"}), 0);
  expect_same_weights(dir / "whole/model.safetensors", dir / "part/model.safetensors");
  const Json whole = Json::parse(read_file(dir / "whole/report.json"));
  const Json part = Json::parse(read_file(dir / "part/report.json"));
  EXPECT_EQ(whole["accuracy"], part["accuracy"]);
  EXPECT_EQ(whole["test_loss"], part["test_loss"]);
}

TEST(Train, ResumeOfAnotherKindOrConfigSaysWhich) {
  TempDir dir;
  SingleConfig c = parse_single_config(small_config(), "small.json", RunOverrides{});
  auto model = build_model(c);
  Generator g(1);
  model->reset_parameters(g);
  fs::create_directories(dir / "run");
  save_checkpoint(dir / "run", *model, nullptr, {c.json.dump(), 1, 10});
  std::string err;
  // a config of another kind
  EXPECT_EQ(
      run_mel({"train", source_path("configs/fmnist_mel2.json"), "--resume", dir / "run"}, &err),
      1);
  EXPECT_NE(err.find("holds a run of kind 'single' but"), std::string::npos) << err;
  EXPECT_NE(err.find("fmnist_mel2.json has kind 'mel'"), std::string::npos) << err;
  // the same kind, another config: the keys that differ
  Json other = small_config();
  other["train"]["epochs"] = 7;
  other["model"]["head"][0]["out"] = 10;
  EXPECT_EQ(run_mel({"train", write_json(dir, other), "--resume", dir / "run"}, &err), 1);
  EXPECT_NE(err.find("belongs to another run"), std::string::npos) << err;
  EXPECT_NE(err.find("train.epochs: 2 in the run, 7 here"), std::string::npos) << err;
  // options that would change the stored config
  EXPECT_EQ(run_mel({"train", "--resume", dir / "run", "--epochs", "5"}, &err), 1);
  EXPECT_NE(err.find("cannot change a run being resumed"), std::string::npos) << err;
  EXPECT_EQ(run_mel({"train", "--resume", dir / "missing"}, &err), 1);
  EXPECT_NE(err.find("is not a run folder"), std::string::npos) << err;
}

TEST(Train, ConfigErrorsNameTheKeyAndWriteNothing) {
  TempDir dir;
  auto expect_error = [&](Json cfg, std::vector<std::string> fragments) {
    const std::string path = write_json(dir, cfg);
    const std::string out = dir / "out";
    std::string err;
    EXPECT_EQ(run_mel({"train", path, "--out", out}, &err), 1);
    for (const auto& f : fragments) EXPECT_NE(err.find(f), std::string::npos) << err;
    EXPECT_FALSE(fs::exists(out)) << "a failed run must leave no output";
  };
  Json c = small_config();
  c["trian"] = c["train"];
  expect_error(c, {"unknown key 'trian'", "did you mean 'train'"});
  c = small_config();
  c["model"]["trunk"][0]["paddign"] = 1;
  expect_error(c, {"model.trunk[0].paddign", "did you mean 'padding'"});
  c = small_config();
  c["model"]["trunk"][0]["type"] = "conv2";
  expect_error(c, {"unknown layer type 'conv2'", "did you mean 'conv2d'"});
  c = small_config();
  c["train"]["optimizer"]["lr"] = -1;
  expect_error(c, {"train.optimizer.lr", "must be in (0, 1000000000], got -1"});
  c = small_config();
  c["train"]["optimizer"]["type"] = "adma";
  expect_error(c, {"unknown value 'adma'", "did you mean 'adam'"});
  c = small_config();
  c["data"]["dataset"] = "fashion_mnist";
  expect_error(c, {"did you mean 'fashion-mnist'"});
  c = small_config();
  c["model"]["head"][0]["out"] = 7;
  expect_error(c, {"must end in 10 outputs", "[7]"});
  c = small_config();
  c["model"]["head"] = Json::array();
  c["model"]["head"].push_back({{"type", "linear"}, {"out", 10}});
  c["model"]["trunk"].erase(c["model"]["trunk"].size() - 1);  // no flatten before linear
  expect_error(c, {"model.head[0]", "layer 0 (linear) needs a flat [F] input", "[16, 7, 7]"});
  c = small_config();
  c["train"]["epochs"] = "ten";
  expect_error(c, {"train.epochs", "expected an integer"});
  // not JSON at all
  const std::string bad = dir / "bad.json";
  std::ofstream(bad) << "{\"name\": ";
  {
    std::string err;
    EXPECT_EQ(run_mel({"train", bad, "--out", dir / "out"}, &err), 1);
    EXPECT_NE(err.find("not valid JSON"), std::string::npos) << err;
  }
  {
    std::string err;
    EXPECT_EQ(run_mel({"train", dir / "missing.json"}, &err), 1);
    EXPECT_NE(err.find("cannot open"), std::string::npos) << err;
  }
}

TEST(Train, MissingDataFolderNamesThePackageAndWritesNothing) {
  TempDir dir;
  Json c = small_config();
  c["data"]["dir"] = dir / "no-such-folder";
  const std::string path = write_json(dir, c);
  std::string err;
  EXPECT_EQ(run_mel({"train", path, "--out", dir / "out"}, &err), 1);
  EXPECT_NE(err.find("no-such-folder"), std::string::npos) << err;
  EXPECT_NE(err.find("dataset-fashion-mnist"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST(Train, CudaOnACpuBuildIsAClearError) {
  if (cuda_built() && cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present";
  TempDir dir;
  const std::string path = write_json(dir, small_config());
  std::string err;
  EXPECT_EQ(run_mel({"train", path, "--device", "cuda", "--out", dir / "out"}, &err), 1);
  EXPECT_NE(err.find("cuda"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST(Train, BadCheckpointsAreClearErrors) {
  TempDir dir;
  SingleConfig c = parse_single_config(small_config(), "small.json", RunOverrides{});
  auto model = build_model(c);
  Generator g(1);
  model->reset_parameters(g);
  save_checkpoint(dir.path.string(), *model, nullptr, {c.json.dump(), 1, 10});
  auto other = build_model(c);
  load_model_checkpoint(dir.path.string(), *other);  // round trip works
  // truncated file
  const std::string file = dir / "model.safetensors";
  const std::string bytes = read_file(file);
  std::ofstream(dir / "trunc.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  EXPECT_MEL_ERROR(load_model_checkpoint(dir / "trunc.safetensors", *other), "trunc.safetensors");
  // a checkpoint of another model
  Json big = small_config();
  big["model"]["trunk"][0]["out"] = 12;
  SingleConfig cb = parse_single_config(big, "big.json", RunOverrides{});
  auto wrong = build_model(cb);
  EXPECT_MEL_ERROR(load_model_checkpoint(dir.path.string(), *wrong), "model.safetensors",
                   "wrong shape: trunk.0.weight (checkpoint [8, 1, 3, 3], model [12, 1, 3, 3])");
  // a safetensors file without our metadata
  save_safetensors(dir / "plain.safetensors", model->state_dict());
  EXPECT_MEL_ERROR(load_model_checkpoint(dir / "plain.safetensors", *other),
                   "not a mel checkpoint");
  {
    std::string err;
    EXPECT_EQ(run_mel({"eval", dir / "nothing-here"}, &err), 1);
    EXPECT_NE(err.find("nothing-here"), std::string::npos) << err;
  }
}

}  // namespace
}  // namespace mel::app
