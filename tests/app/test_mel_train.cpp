// The MEL ensemble end to end: reference parameter counts, config errors, joint training on a
// Fashion-MNIST subset, resume equals an uninterrupted run, export, eval, baselines, and a
// hierarchical CIFAR-100 run on small synthetic files in the CIFAR binary format.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "app/cli.h"
#include "app/ensemble_run.h"
#include "app/single.h"
#include "core/autograd.h"
#include "core/factory.h"
#include "core/ops_nn.h"
#include "core/safetensors.h"
#include "data/npy.h"
#include "data/tensor_loader.h"
#include "mel/failure.h"
#include "mel/joint_loss.h"
#include "mel/task.h"
#include "tests/app/app_testing.h"
#include "tests/gradcheck.h"
#include "train/checkpoint.h"
#include "train/files.h"

namespace mel::app {
namespace {

using method::joint_loss;
using method::JointLossOptions;
using train::load_model_checkpoint;
using train::read_checkpoint_info;
using train::save_checkpoint;

namespace fs = std::filesystem;
using namespace testing;

// A small two-model ensemble (different backbones) for quick runs.
Json small_mel() {
  return Json::parse(R"({
    "name": "small_mel", "kind": "mel",
    "data": {"dataset": "fashion-mnist", "mean": [0.2860], "std": [0.3530]},
    "ensemble": {
      "upstream": [
        {"input": [1, 28, 28],
         "backbone": [{"type": "conv2d", "out": 8, "kernel": 3, "padding": 1, "bias": false},
                      {"type": "batchnorm2d"}, {"type": "relu"}, {"type": "maxpool2d", "kernel": 4},
                      {"type": "flatten"}, {"type": "dropout", "p": 0.0}],
         "cut": 5,
         "exit": [{"type": "linear", "out": 10}]},
        {"input": [1, 28, 28],
         "backbone": [{"type": "conv2d", "out": 6, "kernel": 5, "padding": 2},
                      {"type": "relu"}, {"type": "maxpool2d", "kernel": 4}, {"type": "flatten"}],
         "exit": [{"type": "linear", "out": 10}]}
      ],
      "heads": {"type": "mlp", "hidden": 32},
      "loss": {"size_weights": {"1": 1.0, "2": 1.0}, "diversity": {"weight": 0.01, "margin": 1.0}}
    },
    "train": {"epochs": 2, "batch_size": 64, "seed": 5, "train_limit": 4000, "test_limit": 1000,
              "optimizer": {"type": "adam", "lr": 0.003},
              "schedule": {"type": "onecycle", "pct_start": 0.2}}
  })");
}

TEST(Mel, ReferenceConfigsHaveTheReferenceParameterCounts) {
  for (auto [file, total, upstream, heads] :
       {std::tuple{"configs/fmnist_mel2.json", 440750, 218770, 3210},
        std::tuple{"configs/fmnist_mel3.json", 670750, 218770, 14440}}) {
    MelConfig c =
        parse_mel_config(read_json_file(source_path(file)), source_path(file), RunOverrides{});
    auto m = build_ensemble_model(c);
    EXPECT_EQ(m->num_parameters(), total) << file;
    EXPECT_EQ(m->upstream_parameters(0), upstream);
    EXPECT_EQ(m->head_parameters(), heads);
    EXPECT_EQ(c.original_params, 1147722);
    // the stored config stands alone: it parses again from anywhere
    EXPECT_EQ(parse_mel_config(c.json, "/elsewhere/stored.json", RunOverrides{}).original_params,
              1147722);
  }
  // every shipped config parses
  for (auto& e : fs::directory_iterator(source_path("configs"))) {
    Json j = read_json_file(e.path().string());
    if (is_mel_config(j)) {
      EXPECT_NO_THROW(parse_mel_config(j, e.path().string(), RunOverrides{})) << e.path();
    } else {
      EXPECT_NO_THROW(parse_single_config(j, e.path().string(), RunOverrides{})) << e.path();
    }
  }
  MelConfig c3 = parse_mel_config(read_json_file(source_path("configs/fmnist_mel3.json")),
                                  source_path("configs/fmnist_mel3.json"), RunOverrides{});
  auto m3 = build_ensemble_model(c3);
  EXPECT_EQ(m3->predictor_names(),
            (std::vector<std::string>{"1", "2", "3", "1+2", "1+3", "2+3", "1+2+3"}));
  EXPECT_EQ(m3->state_dict()[0].first, "upstream.0.backbone.0.weight");
  EXPECT_EQ(m3->state_dict().back().first, "heads.1+2+3.layers.0.bias");
}

TEST(Mel, ConfigErrorsNameTheProblemAndWriteNothing) {
  TempDir d;
  auto expect_error = [&](Json cfg, std::vector<std::string> fragments) {
    const std::string p = write_json(d, cfg);
    std::string err;
    EXPECT_EQ(run_mel({"train", p, "--out", d / "out"}, &err), 1);
    for (const auto& f : fragments) EXPECT_NE(err.find(f), std::string::npos) << err;
    EXPECT_FALSE(fs::exists(d / "out"));
  };
  Json c = small_mel();
  c["ensemble"]["upstream"].erase(1);
  expect_error(c, {"ensemble.upstream", "2 to 16 models, got 1"});
  c = small_mel();
  c["ensemble"]["heads"]["subsets"] = Json::parse("[[1, 3]]");
  expect_error(c, {"subset [1,3] names model 3", "models 1..2"});
  c = small_mel();
  c["ensemble"]["upstream"][0]["cut"] = 9;
  expect_error(c, {"cut point 9 is beyond the backbone of upstream 1 (6 layers"});
  c = small_mel();
  c["ensemble"]["upstream"][0]["cut"] = 4;  // maps, not flat features
  c["ensemble"]["upstream"][0]["exit"] =
      Json::parse(R"([{"type": "global_avg_pool"}, {"type": "linear", "out": 10}])");
  expect_error(c, {"needs flat features", "upstream 1 gives [8, 7, 7]"});
  c = small_mel();
  c["ensemble"]["heads"]["type"] = "conv";  // conv heads need maps
  expect_error(c, {"a conv head needs feature maps [C, H, W]"});
  c = small_mel();
  c["ensemble"]["loss"]["hierarchical"] = true;
  c["ensemble"]["loss"]["coarse_map"] = Json::parse("[0, 0, 1, 1, 2, 2, 3, 3, 4]");
  expect_error(c, {"coarse_map", "maps 9 classes but the dataset has 10; class 9 has no coarse"});
  c = small_mel();
  c["ensemble"]["heads"]["hiden"] = 3;
  expect_error(c, {"ensemble.heads.hiden", "did you mean 'hidden'"});
  c = small_mel();
  c["baseline"] = "independant";
  expect_error(c, {"did you mean 'independent'"});
  c = small_mel();
  c["ensemble"]["loss"]["diversty"] = Json::object();
  expect_error(c, {"unknown key 'diversty'", "did you mean 'diversity'"});
  std::string err;
  EXPECT_EQ(run_mel({"eval", d / "no-run-here"}, &err), 1);
  EXPECT_NE(err.find("no-run-here"), std::string::npos) << err;
  EXPECT_EQ(run_mel({"train", "--resume", d / "no-run-here"}, &err), 1);
  EXPECT_NE(err.find("not a run folder"), std::string::npos) << err;
}

TEST(Mel, TrainsEvaluatesExportsAndReportsFailures) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir d;
  RunOverrides ov;
  ov.out = d / "run";
  ov.progress = false;
  MelConfig c = parse_mel_config(small_mel(), "small_mel.json", ov);
  Json r = train_mel(c, ov, "");
  // every exit and head learned something real
  for (const char* k : {"1", "2", "1+2"}) EXPECT_GT(r["accuracy"][k].get<double>(), 0.70) << k;
  EXPECT_EQ(r["params"]["servers"]["C"].get<int64_t>(), (8 * 49 + 6 * 49) * 32 + 32 + 32 * 10 + 10);
  EXPECT_EQ(r["params"]["total"].get<int64_t>(), r["params"]["servers"]["1"].get<int64_t>() +
                                                     r["params"]["servers"]["2"].get<int64_t>() +
                                                     r["params"]["servers"]["C"].get<int64_t>());
  ASSERT_EQ(r["failures"].size(), 8u);
  EXPECT_EQ(r["failures"][0]["answer"], "1+2");
  // C down: the client averages the two exits' probabilities; the best exit and the mean beside it
  const Json& c_down = r["failures"][3];
  EXPECT_EQ(c_down["failed"], Json::parse(R"(["C"])"));
  EXPECT_EQ(c_down["answer"], "1,2");
  EXPECT_EQ(c_down["answered_by"], "exits 1,2 (averaged)");
  const double a1 = r["accuracy"]["1"].get<double>(), a2 = r["accuracy"]["2"].get<double>();
  EXPECT_NEAR(c_down["mean_exit_accuracy"].get<double>(), (a1 + a2) / 2, 1e-12);
  EXPECT_EQ(c_down["best_exit"], a2 > a1 ? "2" : "1");
  EXPECT_DOUBLE_EQ(c_down["best_exit_accuracy"].get<double>(), std::max(a1, a2));
  EXPECT_GT(c_down["accuracy"].get<double>(), 0.70);
  EXPECT_TRUE(r.contains("preserved_mean") && r.contains("preserved_worst"));
  EXPECT_TRUE(fs::exists(ov.out + "/failures.svg"));
  EXPECT_EQ(Json::parse(read_file(ov.out + "/report.json")), r);
  // eval from the run folder gives the same accuracies
  Json e = eval_mel(c, ov.out + "/model.safetensors", ov);
  EXPECT_EQ(e["accuracy"], r["accuracy"]);
  EXPECT_EQ(run_mel({"eval", ov.out}), 0);
  // export: each server's file holds exactly its part
  EXPECT_EQ(run_mel({"export", ov.out, "--out", d / "export"}), 0);
  auto u1 = load_safetensors(d / "export/upstream_1.safetensors");
  auto comb = load_safetensors(d / "export/combination.safetensors");
  EXPECT_NE(u1.find("backbone.0.weight"), nullptr);
  EXPECT_NE(u1.find("exit.0.weight"), nullptr);
  EXPECT_EQ(u1.metadata.at("server"), "1");
  EXPECT_NE(comb.find("heads.1+2.layers.0.weight"), nullptr);
  EXPECT_EQ(comb.metadata.at("server"), "C");
  EXPECT_EQ(u1.tensors.size() +
                load_safetensors(d / "export/upstream_2.safetensors").tensors.size() +
                comb.tensors.size(),
            load_safetensors(ov.out + "/model.safetensors").tensors.size());
  // predict: every predictor's classes give the report's accuracies, and the exits' averaged
  // probabilities give its answer with C down
  EXPECT_EQ(run_mel({"predict", ov.out, "--out", d / "pred", "--logits"}), 0);
  const Tensor classes = data::load_npy(d / "pred/classes.npy");
  const Tensor labels = data::load_npy(d / "pred/labels.npy");
  const std::vector<double> lv = labels.to_vector();
  ASSERT_EQ(classes.shape(), (Shape{1000, 3}));
  const std::vector<std::string> names = {"exit_1", "exit_2", "head_1+2"};
  const std::vector<std::string> keys = {"1", "2", "1+2"};
  std::vector<std::vector<double>> probs;
  for (size_t k = 0; k < names.size(); ++k) {
    const Tensor pk = data::load_npy(d / ("pred/" + names[k] + ".probabilities.npy"));
    ASSERT_EQ(pk.shape(), (Shape{1000, 10}));
    probs.push_back(pk.to(DType::f64).to_vector());
    EXPECT_TRUE(fs::exists(d / ("pred/" + names[k] + ".logits.npy")));
    const std::vector<double> ck = classes.select(1, static_cast<int64_t>(k)).to_vector();
    int64_t correct = 0;
    for (size_t i = 0; i < ck.size(); ++i) correct += ck[i] == lv[i];
    EXPECT_DOUBLE_EQ(static_cast<double>(correct) / 1000, r["accuracy"][keys[k]].get<double>())
        << names[k];
  }
  int64_t averaged = 0;
  for (int64_t i = 0; i < 1000; ++i) {
    int64_t best = 0;
    for (int64_t j = 1; j < 10; ++j) {
      const auto at = [&](int64_t c) { return probs[0][i * 10 + c] + probs[1][i * 10 + c]; };
      if (at(j) > at(best)) best = j;
    }
    averaged += best == static_cast<int64_t>(lv[static_cast<size_t>(i)]);
  }
  EXPECT_DOUBLE_EQ(static_cast<double>(averaged) / 1000, c_down["accuracy"].get<double>());
  // CSV: a header and a row per sample; a .npy of images gives the test split's predictions
  EXPECT_EQ(
      run_mel({"predict", ov.out, "--out", d / "csv", "--format", "csv", "--test-limit", "7"}), 0);
  const std::string csv = read_file(d / "csv/predictions.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 8);
  EXPECT_EQ(csv.rfind("sample,label,exit_1.class,exit_1.p0,", 0), 0u) << csv.substr(0, 80);
  const data::ImageDataset test_ds = data::load_dataset("fashion-mnist", "", data::Split::test);
  train::write_file_atomic(d / "images.npy",
                           data::npy_bytes(test_ds.images.narrow(0, 0, 5).squeeze(1).contiguous()));
  EXPECT_EQ(run_mel({"predict", ov.out, "--input", d / "images.npy", "--out", d / "img"}), 0);
  const std::vector<double> from_file =
      data::load_npy(d / "img/head_1+2.probabilities.npy").to(DType::f64).to_vector();
  ASSERT_EQ(from_file.size(), 50u);
  for (size_t i = 0; i < 50; ++i) EXPECT_NEAR(from_file[i], probs[2][i], 1e-5) << i;
  EXPECT_FALSE(fs::exists(d / "img/labels.npy"));
  std::string err;
  train::write_file_atomic(d / "floats.npy", data::npy_bytes(zeros({2, 1, 28, 28})));
  EXPECT_EQ(run_mel({"predict", ov.out, "--input", d / "floats.npy", "--out", d / "x"}, &err), 1);
  EXPECT_NE(err.find("floats.npy: the images are f32, expected u8"), std::string::npos) << err;
  train::write_file_atomic(d / "small.npy", data::npy_bytes(zeros({2, 1, 14, 14}, DType::u8)));
  EXPECT_EQ(run_mel({"predict", ov.out, "--input", d / "small.npy", "--out", d / "x"}, &err), 1);
  EXPECT_NE(err.find("images of shape [2, 1, 14, 14], expected [N, 1, 28, 28]"), std::string::npos)
      << err;
  // a checkpoint from another config does not load
  Json other = small_mel();
  other["ensemble"]["heads"]["hidden"] = 16;
  MelConfig oc = parse_mel_config(other, "other.json", ov);
  auto om = build_ensemble_model(oc);
  EXPECT_MEL_ERROR(load_model_checkpoint(ov.out, *om), "wrong shape: heads.1+2.layers.0.weight");
}

// The failure report's averaged answers are the argmax of the alive exits' mean probabilities,
// sample by sample: the evaluation's counts equal ones computed here from forward_all on the
// whole test set, for every set of exits of a 3-model ensemble (no data files needed).
TEST(Mel, AveragedExitAnswersArePerSampleProbabilityMeans) {
  Json cfg = small_mel();
  Json up = cfg["ensemble"]["upstream"][1];
  cfg["ensemble"]["upstream"].push_back(up);
  cfg["ensemble"]["loss"] = Json::object();
  RunOverrides ov;
  MelConfig c = parse_mel_config(cfg, "three.json", ov);
  auto model = build_ensemble_model(c);
  Generator gen(3);
  model->reset_parameters(gen);
  const int64_t n = 90;
  const Tensor x = randn({n, 1, 28, 28}, gen);
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < n; ++i) labels.push_back((i * 7) % 10);
  const Tensor y = tensor_i64(labels, {n});
  data::TensorLoader test(x, y, n, false);  // one batch: the same bits as forward_all below
  const train::Evaluation e =
      method::MelTask(model, mel_spec(c, Device::cpu()), test, test).evaluate();
  std::vector<Tensor> logits;
  {
    autograd::NoGradGuard ng;
    model->eval();
    logits = model->forward_all(x);
  }
  ASSERT_EQ(e.combined.size(), 4u);
  for (const auto& set : method::all_subsets(3, 2)) {
    int64_t correct = 0;
    std::vector<std::vector<double>> p;
    for (int i : set) p.push_back(softmax(logits[static_cast<size_t>(i)], 1).to_vector());
    for (int64_t r = 0; r < n; ++r) {
      int64_t best = 0;
      double best_sum = -1;
      for (int64_t k = 0; k < 10; ++k) {
        double sum = 0;
        for (const auto& pi : p) sum += pi[static_cast<size_t>(r * 10 + k)];
        if (sum > best_sum) best_sum = sum, best = k;
      }
      correct += best == labels[static_cast<size_t>(r)];
    }
    const std::string name = method::exits_name(set);
    ASSERT_TRUE(e.combined.count(name)) << name;
    EXPECT_DOUBLE_EQ(e.combined.at(name), static_cast<double>(correct) / n) << name;
  }
  // and the failure report answers with them when C is down
  const method::FailureReport fr = failures_of(*model, e);
  for (const auto& p : fr.patterns) {
    if (p.failed == std::vector<std::string>{"C"}) {
      EXPECT_EQ(p.answer, "1,2,3");
      EXPECT_TRUE(p.averaged);
      EXPECT_DOUBLE_EQ(p.accuracy, e.combined.at("1,2,3"));
    }
  }
}

TEST(Mel, ResumedRunEndsWithTheSameWeights) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir d;
  Json cfg = small_mel();
  cfg["train"]["epochs"] = 2;
  cfg["train"]["train_limit"] = 640;
  cfg["train"]["test_limit"] = 200;
  cfg["phase2"] = Json::parse(R"({"epochs": 1, "optimizer": {"type": "sgd", "lr": 0.01}})");
  RunOverrides ov;
  ov.progress = false;
  ov.out = d / "straight";
  train_mel(parse_mel_config(cfg, "c.json", ov), ov, "");
  const auto straight = load_safetensors(d / "straight/model.safetensors");
  // Interrupted inside phase 1, and at the phase boundary, then resumed from the folder.
  for (int64_t stop : {1, 2}) {
    const std::string dir = d / ("stopped" + std::to_string(stop));
    ov.out = dir;
    ov.stop_after = stop;
    Json partial = train_mel(parse_mel_config(cfg, "c.json", ov), ov, "");
    EXPECT_EQ(partial["stopped_after"].get<int64_t>(), stop);
    EXPECT_EQ(read_checkpoint_info(dir).epoch, stop);
    EXPECT_FALSE(fs::exists(dir + "/report.json"));
    EXPECT_EQ(run_mel({"train", "--resume", dir, "--no-progress"}), 0);
    const auto resumed = load_safetensors(dir + "/model.safetensors");
    ASSERT_EQ(straight.tensors.size(), resumed.tensors.size());
    for (size_t i = 0; i < straight.tensors.size(); ++i) {
      EXPECT_EQ(straight.tensors[i].second.to_vector(), resumed.tensors[i].second.to_vector())
          << "stopped after " << stop << ": " << straight.tensors[i].first;
    }
    // the metrics file has one line per epoch, none repeated
    std::istringstream m(read_file(dir + "/metrics.jsonl"));
    std::string line;
    int n = 0;
    while (std::getline(m, line)) EXPECT_EQ(Json::parse(line)["epoch"].get<int>(), ++n);
    EXPECT_EQ(n, 3);
  }
}

TEST(Mel, HierarchicalCifar100OnSyntheticFiles) {
  TempDir d;
  // 3074-byte records: coarse label, fine label, 3072 pixels; fine class f belongs to coarse f/5.
  auto write = [&](const std::string& name, int n, uint32_t seed) {
    std::string bytes;
    for (int i = 0; i < n; ++i) {
      const int fine = static_cast<int>((i * 37 + seed) % 100);
      bytes.push_back(static_cast<char>(fine / 5));
      bytes.push_back(static_cast<char>(fine));
      for (int p = 0; p < 3072; ++p)
        bytes.push_back(static_cast<char>((p * 7 + fine * 13 + i) % 256));
    }
    std::ofstream(d / name, std::ios::binary) << bytes;
  };
  write("train.bin", 96, 1);
  write("test.bin", 40, 2);
  Json cfg = read_json_file(source_path("configs/cifar100_mel3_hierarchical.json"));
  // A narrow variant of the shipped config, so the test stays fast.
  for (auto& layer : cfg["ensemble"]["upstream"]["backbone"]) {
    if (layer["type"] == "conv2d") layer["out"] = 8;
  }
  cfg["ensemble"]["heads"]["hidden"] = 16;
  cfg["data"]["dir"] = d.path.string();
  cfg["train"]["epochs"] = 1;
  cfg["train"]["batch_size"] = 32;
  RunOverrides ov;
  ov.progress = false;
  ov.out = d / "run";
  Json r = train_mel(parse_mel_config(cfg, "cifar100.json", ov), ov, "");
  EXPECT_EQ(r["exit_labels"], "coarse");
  EXPECT_EQ(r["test_samples"].get<int64_t>(), 40);
  EXPECT_EQ(r["accuracy"].size(), 7u);
  EXPECT_EQ(r["failures"].size(), 16u);
  // exits answer 20 super-classes, heads 100 classes
  MelConfig c = parse_mel_config(cfg, "cifar100.json", ov);
  auto m = build_ensemble_model(c);
  EXPECT_EQ(m->upstreams[0]->exit->forward(zeros({1, 8})).size(1), 20);
  EXPECT_EQ(c.exit_classes, 20);
  // a hierarchical run on a dataset without coarse labels and no map is a config error
  Json f = cfg;
  f["data"] = Json::parse(R"({"dataset": "fashion-mnist"})");
  EXPECT_MEL_ERROR(parse_mel_config(f, "f.json", ov), "hierarchical labels need a \"coarse_map\"");
}

TEST(Mel, ConvHeadsOverFeatureMaps) {
  // Cut before the global pooling: the features are maps, the exits pool them, and the conv head
  // concatenates channels (8 + 8), then 1x1 conv, BN, ReLU, pool, linear.
  Json cfg = small_mel();
  for (auto& u : cfg["ensemble"]["upstream"]) {
    u["backbone"] = Json::parse(R"([{"type": "conv2d", "out": 8, "kernel": 3, "padding": 1},
                                    {"type": "relu"}, {"type": "maxpool2d", "kernel": 4}])");
    u.erase("cut");
    u["exit"] = Json::parse(R"([{"type": "global_avg_pool"}, {"type": "linear", "out": 10}])");
  }
  cfg["ensemble"]["heads"] = Json::parse(R"({"type": "conv", "channels": 12})");
  MelConfig c = parse_mel_config(cfg, "conv.json", RunOverrides{});
  auto m = build_ensemble_model(c);
  Generator g(4);
  m->reset_parameters(g);
  EXPECT_EQ(m->head_parameters(), 16 * 12 + 2 * 12 + 12 * 10 + 10);
  Tensor x = randn({3, 1, 28, 28}, g);
  std::vector<Tensor> out = m->forward_all(x);
  ASSERT_EQ(out.size(), 3u);
  for (const Tensor& t : out) EXPECT_EQ(t.shape(), (Shape{3, 10}));
  // every parameter receives a gradient from the joint loss
  JointLossOptions lo;
  lo.weights = {1.0, 1.0, 1.0};
  joint_loss(out, tensor_i64({1, 2, 3}, {3}), Tensor(), lo).total.backward();
  for (auto& [name, p] : m->named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    double s = 0;
    for (double v : p.grad().to_vector()) s += std::abs(v);
    EXPECT_GT(s, 0.0) << name;
  }
}

TEST(Mel, BaselinesTrainOnlyTheirParts) {
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (package dataset-fashion-mnist)";
  TempDir d;
  Json cfg = small_mel();
  cfg["train"]["epochs"] = 1;
  cfg["train"]["train_limit"] = 512;
  cfg["train"]["test_limit"] = 200;
  cfg["ensemble"]["loss"].erase("diversity");
  auto initial = [&](const Json& j) {
    MelConfig c = parse_mel_config(j, "c.json", RunOverrides{});
    auto m = build_ensemble_model(c);
    Generator g(c.train.seed);
    m->reset_parameters(g);
    return m->state_dict();
  };
  auto trained = [&](const Json& j, const std::string& name) {
    RunOverrides ov;
    ov.progress = false;
    ov.out = d / name;
    Json r = train_mel(parse_mel_config(j, "c.json", ov), ov, "");
    return std::make_pair(r, load_safetensors(ov.out + "/model.safetensors"));
  };
  auto same = [](const Tensor& a, const Tensor& b) { return a.to_vector() == b.to_vector(); };
  // combination_only: the exits keep their initial weights, backbones and the head learn
  Json co = cfg;
  co["baseline"] = "combination_only";
  const auto init = initial(co);
  auto [rc, fc] = trained(co, "co");
  for (auto& [name, t] : init) {
    const Tensor* after = fc.find(name);
    ASSERT_NE(after, nullptr) << name;
    if (name.find(".exit.") != std::string::npos) {
      EXPECT_TRUE(same(t, *after)) << name;
    } else if (name.find("weight") != std::string::npos) {
      EXPECT_FALSE(same(t, *after)) << name;
    }
  }
  // independent: phase 1 trains each upstream with its exit (head untouched), phase 2 only the
  // head, with the upstream models frozen (running statistics included)
  Json ind = cfg;
  ind["baseline"] = "independent";
  RunOverrides ov;
  ov.progress = false;
  ov.out = d / "ind";
  ov.stop_after = 1;
  train_mel(parse_mel_config(ind, "c.json", ov), ov, "");
  const auto phase1 = load_safetensors(ov.out + "/model.safetensors");
  for (auto& [name, t] : initial(ind)) {
    const Tensor* after = phase1.find(name);
    if (name.rfind("heads.", 0) == 0) {
      EXPECT_TRUE(same(t, *after)) << name;
    }
  }
  EXPECT_EQ(run_mel({"train", "--resume", ov.out, "--no-progress"}), 0);
  const auto phase2 = load_safetensors(ov.out + "/model.safetensors");
  for (auto& [name, t] : phase1.tensors) {
    const Tensor* after = phase2.find(name);
    if (name.rfind("heads.", 0) == 0) {
      if (name.find("weight") != std::string::npos) {
        EXPECT_FALSE(same(t, *after)) << name;
      }
    } else {
      EXPECT_TRUE(same(t, *after)) << name;
    }
  }
  Json report = Json::parse(read_file(ov.out + "/report.json"));
  EXPECT_EQ(report["baseline"], "independent");
  EXPECT_EQ(report["epochs"].get<int>(), 2);
}

}  // namespace
}  // namespace mel::app
