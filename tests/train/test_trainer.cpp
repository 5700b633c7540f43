// The generic engine over a task that knows nothing of images or MEL: a small classifier on
// synthetic data through the stock classification task. Run folder, resume after stop equals an
// uninterrupted run, divergence, resume checks, metrics read back every N steps.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/mel.h"
#include "data/tensor_loader.h"
#include "nn/layers.h"
#include "tests/gradcheck.h"
#include "tests/temp_dir.h"
#include "train/checkpoint.h"
#include "train/classification.h"
#include "train/metrics.h"
#include "train/trainer.h"

namespace mel::train {
namespace {

namespace fs = std::filesystem;

struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("mel_trainer_") {}
};

// Three Gaussian blobs in 4-D: a linear classifier separates them.
std::pair<Tensor, Tensor> blobs(int64_t n, uint64_t seed) {
  Generator g(seed);
  Tensor y = randint(0, 3, {n}, g);
  Tensor centers = tensor({2, 0, 0, 1, -2, 1, 0, 0, 0, -2, 2, -1}, {3, 4});
  Tensor x = add(index_select(centers, 0, y), mul(randn({n, 4}, g), 0.5));
  return {x, y};
}

// A task, its data and its run options, built the same way every time from `lr` and `epochs`.
struct BlobsRun {
  data::TensorLoader train, test;
  std::shared_ptr<nn::Module> model;
  std::unique_ptr<ClassificationTask> task;
  RunOptions run;

  BlobsRun(const std::string& out, int64_t epochs, double lr, int64_t log_every = 3)
      : train(blobs(600, 1).first, blobs(600, 1).second, 32, true, 5),
        test(blobs(300, 2).first, blobs(300, 2).second, 100, false) {
    auto trunk = std::make_shared<nn::Sequential>();
    trunk->push_back(std::make_shared<nn::Linear>(4, 16));
    trunk->push_back(std::make_shared<nn::ActivationLayer>("relu"));
    auto head = std::make_shared<nn::Sequential>();
    head->push_back(std::make_shared<nn::Linear>(16, 3));
    model = std::make_shared<Classifier>(trunk, head);
    Generator gen(3);
    model->reset_parameters(gen);
    ClassificationSpec spec;
    spec.epochs = epochs;
    spec.optimizer.lr = lr;
    spec.batch_size = 32;
    task = std::make_unique<ClassificationTask>(model, spec, train, test);
    run.name = "blobs";
    run.out = out;
    run.config_json = Json{{"epochs", epochs}, {"lr", lr}}.dump();
    run.train.log_every = log_every;
    run.progress = false;
  }
};

std::string read_text(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::vector<double>> weights(nn::Module& m) {
  std::vector<std::vector<double>> w;
  for (auto& [name, t] : m.state_dict()) w.push_back(t.to_vector());
  return w;
}

TEST(Trainer, TrainsAndWritesTheRunFolder) {
  TempDir dir;
  BlobsRun s(dir / "run", 3, 0.01);
  Json report = Trainer(*s.task, s.run).run();
  EXPECT_GT(report["accuracy"]["1"].get<double>(), 0.9);
  EXPECT_EQ(report["epochs"].get<int64_t>(), 3);
  EXPECT_EQ(report["train_samples"].get<int64_t>(), 600);
  EXPECT_EQ(report["test_samples"].get<int64_t>(), 300);
  EXPECT_EQ(Json::parse(read_text(dir / "run/report.json")), report);
  std::istringstream metrics(read_text(dir / "run/metrics.jsonl"));
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    const Json m = Json::parse(line);
    EXPECT_EQ(m["epoch"].get<int>(), ++lines);
    EXPECT_EQ(m["step"].get<int>(), 19 * lines);  // 600 samples in batches of 32
    EXPECT_FALSE(m.contains("phase")) << "one phase";
    EXPECT_TRUE(m["test_accuracy"].is_number());
  }
  EXPECT_EQ(lines, 3);
  EXPECT_EQ(read_checkpoint_info(dir / "run").epoch, 3);
  for (auto& e : fs::directory_iterator(dir / "run")) EXPECT_NE(e.path().extension(), ".tmp");
}

TEST(Trainer, ResumeAfterStopEndsWithTheWeightsOfAnUninterruptedRun) {
  TempDir dir;
  BlobsRun whole(dir / "full", 3, 0.01);
  Trainer(*whole.task, whole.run).run();
  for (int stop : {1, 2}) {
    const std::string out = dir / ("part" + std::to_string(stop));
    BlobsRun a(out, 3, 0.01);
    a.run.stop_after = stop;
    const Json stopped = Trainer(*a.task, a.run).run();
    EXPECT_EQ(stopped["stopped_after"].get<int>(), stop);
    EXPECT_FALSE(fs::exists(out + "/report.json"));
    BlobsRun b(out, 3, 0.01);  // a fresh process: new model, loaders and optimizer
    b.run.resume = true;
    Trainer(*b.task, b.run).run();
    EXPECT_EQ(weights(*b.model), weights(*whole.model)) << "stopped after " << stop;
    EXPECT_EQ(read_text(out + "/metrics.jsonl").size() > 0, true);
  }
}

TEST(Trainer, ResumeOfAnotherConfigNamesTheDifference) {
  TempDir dir;
  BlobsRun a(dir / "run", 2, 0.01);
  a.run.stop_after = 1;
  Trainer(*a.task, a.run).run();
  BlobsRun b(dir / "run", 3, 0.01);
  b.run.resume = true;
  EXPECT_MEL_ERROR(Trainer(*b.task, b.run).run(), "belongs to another run",
                   "epochs: 2 in the run, 3 here");
  EXPECT_MEL_ERROR(check_resumable(dir / "nothing", a.run.config_json), "nothing");
}

// The classification task whose loss turns NaN after `at` steps.
struct NanAfter : ClassificationTask {
  using ClassificationTask::ClassificationTask;
  int64_t calls = 0, at = 0;
  StepOutput train_step(const data::Batch& b, int phase) override {
    StepOutput o = ClassificationTask::train_step(b, phase);
    if (++calls > at) o.loss = mul(o.loss, std::nan(""));
    return o;
  }
};

TEST(Trainer, DivergenceStopsWithTheEpochAndStepAndKeepsTheLastCheckpoint) {
  TempDir dir;
  BlobsRun s(dir / "run", 3, 0.01);
  ClassificationSpec spec;
  spec.epochs = 3;
  spec.optimizer.lr = 0.01;
  NanAfter task(s.model, spec, s.train, s.test);
  task.at = 19 + 5;  // the sixth step of epoch 2
  EXPECT_MEL_ERROR(Trainer(task, s.run).run(), "the loss became nan at epoch 2 step 24",
                   "lower the learning rate");
  EXPECT_EQ(read_checkpoint_info(dir / "run").epoch, 1) << "the last good checkpoint stays";
  EXPECT_FALSE(fs::exists(dir / "run/report.json"));
}

TEST(StepMetrics, ReadsBackEveryNStepsAndChecksTheLoss) {
  StepMetrics m(2, 0, 3);
  auto step = [](double loss, int64_t c0, int64_t c1) {
    return StepOutput{full({}, loss), std::nullopt, tensor_i64({c0, c1}, {2}), 4, {}, {}};
  };
  EXPECT_FALSE(m.add(step(1.0, 1, 2), 0, 0.1));
  EXPECT_FALSE(m.add(step(2.0, 3, 4), 1, 0.1));
  EXPECT_EQ(m.steps(), 0) << "nothing read back yet";
  EXPECT_TRUE(m.add(step(3.0, 0, 4), 2, 0.1));
  EXPECT_EQ(m.steps(), 3);
  EXPECT_DOUBLE_EQ(m.mean_loss(), 2.0);
  EXPECT_DOUBLE_EQ(m.accuracy(0), 4.0 / 12.0);
  EXPECT_DOUBLE_EQ(m.accuracy(1), 10.0 / 12.0);
  m.add(StepOutput{full({}, 5.0), 7.0, tensor_i64({0, 0}, {2}), 4, {}, {}}, 3,
        0.2);  // host value wins
  m.flush();
  EXPECT_DOUBLE_EQ(m.mean_loss(), 13.0 / 4.0);
  m.add(step(std::nan(""), 0, 0), 4, 0.5);
  EXPECT_MEL_ERROR(m.flush(), "the loss became nan at epoch 1 step 4 (lr 0.5)");
}

TEST(Differences, NameTheFirstDifferingKeys) {
  const Json a = Json::parse(R"({"name": "x", "train": {"epochs": 3, "seed": 1}, "kind": "mel"})");
  const Json b = Json::parse(R"({"name": "x", "train": {"epochs": 5, "seed": 1}, "extra": 1})");
  const std::string d = describe_differences(a, b, "in A", "in B");
  EXPECT_NE(d.find("train.epochs: 3 in A, 5 in B"), std::string::npos) << d;
  EXPECT_NE(d.find("kind: \"mel\" in A, absent in B"), std::string::npos) << d;
  EXPECT_NE(d.find("extra: absent in A, 1 in B"), std::string::npos) << d;
}

}  // namespace
}  // namespace mel::train
