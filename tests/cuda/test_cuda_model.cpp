// Whole models on the GPU against the CPU: the reference CNN's forward and every gradient from the
// same weights and batch, an MEL ensemble's joint-loss step, optimizer steps, and short training
// runs through the trainer and the `mel` command with --device cuda.
#include <gtest/gtest.h>

#include <filesystem>

#include "app/ensemble_run.h"
#include "app/single.h"
#include "cuda_testing.h"
#include "mel/joint_loss.h"
#include "nn/optim.h"
#include "tests/app/app_testing.h"
#include "train/checkpoint.h"

namespace mel::testing {
namespace {

using mel::Json;

app::SingleConfig reference_config() {
  app::RunOverrides ov;
  return app::load_single_config(std::string(MEL_SOURCE_DIR) + "/configs/fmnist_original.json", ov);
}

// Copies every parameter and buffer of `from` into `to` (any devices).
void copy_weights(const nn::Module& from, nn::Module& to) {
  to.load_state_dict(from.state_dict());
}

// Compares the named tensors of two modules (parameters' gradients when `grads`).
void expect_modules_close(const nn::Module& gpu_m, const nn::Module& cpu_m, bool grads, Tol tol) {
  nn::NamedTensors g = grads ? gpu_m.named_parameters() : gpu_m.state_dict();
  nn::NamedTensors c = grads ? cpu_m.named_parameters() : cpu_m.state_dict();
  ASSERT_EQ(g.size(), c.size());
  for (size_t i = 0; i < g.size(); ++i) {
    ASSERT_EQ(g[i].first, c[i].first);
    const Tensor a = grads ? g[i].second.grad() : g[i].second;
    const Tensor b = grads ? c[i].second.grad() : c[i].second;
    ASSERT_EQ(a.defined(), b.defined()) << g[i].first;
    if (!a.defined()) continue;
    EXPECT_TRUE(gpu_close(a, b, tol)) << (grads ? "grad of " : "") << g[i].first;
  }
}

TEST(CudaModel, ReferenceCnnForwardAndEveryGradientMatchTheCpu) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  app::SingleConfig c = reference_config();
  auto cpu_model = app::build_model(c);
  Generator gen(7);
  cpu_model->reset_parameters(gen);
  auto gpu_model = app::build_model(c);
  copy_weights(*cpu_model, *gpu_model);
  gpu_model->to(gpu());

  Tensor x = random_cpu({16, 1, 28, 28}, 11, DType::f32, -1.5, 1.5);
  Tensor y = randint(0, 10, {16}, gen);
  Tensor cpu_logits = cpu_model->forward(x);
  Tensor gpu_logits = gpu_model->forward(x.to(gpu()));
  EXPECT_TRUE(gpu_close(gpu_logits, cpu_logits, {1e-4, 1e-3}));
  Tensor cpu_loss = cross_entropy(cpu_logits, y);
  Tensor gpu_loss = cross_entropy(gpu_logits, y.to(gpu()));
  EXPECT_NEAR(gpu_loss.item(), cpu_loss.item(), 1e-5);
  cpu_loss.backward();
  gpu_loss.backward();
  // Gradients pass through four convolutions and batch norms whose sums run in a different order
  // on the GPU: f32 agreement to about 1e-4 relative is expected.
  expect_modules_close(*gpu_model, *cpu_model, true, {5e-5, 2e-3});
  // running statistics of the batch norms were updated the same way
  expect_modules_close(*gpu_model, *cpu_model, false, {1e-5, 1e-4});
}

TEST(CudaModel, AdamStepsOnFlatParametersMatchTheCpu) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  app::SingleConfig c = reference_config();
  auto cpu_model = app::build_model(c);
  Generator gen(8);
  cpu_model->reset_parameters(gen);
  auto gpu_model = app::build_model(c);
  copy_weights(*cpu_model, *gpu_model);
  gpu_model->to(gpu());
  nn::FlatParameters cpu_flat(*cpu_model), gpu_flat(*gpu_model);
  nn::Adam cpu_opt(cpu_flat, nn::AdamOptions{}), gpu_opt(gpu_flat, nn::AdamOptions{});
  for (int step = 0; step < 3; ++step) {
    Tensor x = random_cpu({8, 1, 28, 28}, 20 + step);
    Tensor y = randint(0, 10, {8}, gen);
    cpu_opt.zero_grad();
    gpu_opt.zero_grad();
    cross_entropy(cpu_model->forward(x), y).backward();
    cross_entropy(gpu_model->forward(x.to(gpu())), y.to(gpu())).backward();
    cpu_opt.step(1e-3, 0.9);
    gpu_opt.step(1e-3, 0.9);
  }
  expect_modules_close(*gpu_model, *cpu_model, false, {1e-5, 1e-3});
}

TEST(CudaModel, MelEnsembleJointLossStepMatchesTheCpu) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  app::RunOverrides ov;
  const std::string path = std::string(MEL_SOURCE_DIR) + "/configs/fmnist_mel3.json";
  app::MelConfig c = app::parse_mel_config(read_json_file(path), path, ov);
  auto cpu_model = app::build_ensemble_model(c);
  Generator gen(9);
  cpu_model->reset_parameters(gen);
  auto gpu_model = app::build_ensemble_model(c);
  copy_weights(*cpu_model, *gpu_model);
  gpu_model->to(gpu());

  Tensor x = random_cpu({12, 1, 28, 28}, 12);
  Tensor y = randint(0, 10, {12}, gen);
  std::vector<Tensor> cl = cpu_model->forward_all(x);
  std::vector<Tensor> gl = gpu_model->forward_all(x.to(gpu()));
  ASSERT_EQ(cl.size(), gl.size());
  method::JointLossOptions lo;
  lo.weights.assign(cl.size(), 1.0);
  lo.label_smoothing = 0.1;
  lo.diversity_weight = 0.5;
  lo.diversity_margin = 4.0;
  lo.diversity_pairs = {{0, 1}, {0, 2}, {1, 2}};
  method::JointLossResult cr = method::joint_loss(cl, y, Tensor(), lo);
  method::JointLossResult gr = method::joint_loss(gl, y.to(gpu()), Tensor(), lo);
  EXPECT_NEAR(gr.total.item(), cr.total.item(), 1e-4);
  ASSERT_EQ(gr.terms.size(), cr.terms.size());
  for (size_t k = 0; k < cr.terms.size(); ++k) EXPECT_NEAR(gr.terms[k], cr.terms[k], 1e-4);
  EXPECT_NEAR(gr.diversity, cr.diversity, 1e-3);
  cr.total.backward();
  gr.total.backward();
  expect_modules_close(*gpu_model, *cpu_model, true, {5e-5, 2e-3});
}

TEST(CudaModel, SmallCnnTrainsOnTheGpuAndItsCheckpointLoadsOnTheCpu) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  if (!app::testing::have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  app::testing::TempDir dir;
  app::RunOverrides ov;
  ov.out = dir / "run";
  ov.progress = false;
  ov.device = "cuda";
  ov.epochs = 2;
  ov.batch_size = 64;
  ov.train_limit = 6000;
  ov.test_limit = 2000;
  app::SingleConfig c = reference_config();
  c = app::parse_single_config(c.json, c.path, ov);
  Json report = app::train_single(c, ov);
  const double acc = report["accuracy"]["1"].get<double>();
  EXPECT_GT(acc, 0.80);
  EXPECT_EQ(report["device"].get<std::string>(), "cuda:0");
  EXPECT_GT(report["peak_gpu_memory_bytes"].get<int64_t>(), 0);
  // the checkpoint holds host tensors that a CPU model evaluates to the same accuracy
  auto model = app::build_model(c);
  train::load_model_checkpoint(ov.out, *model);
  data::ImageDataset test = data::load_dataset("fashion-mnist", "", data::Split::test);
  EXPECT_NEAR(app::evaluate(*model, test, c.data, 500, 2000).accuracy[0], acc, 0.005);
}

TEST(CudaModel, MelTrainCommandRunsOnTheGpuWithTheFailureReport) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  if (!app::testing::have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  app::testing::TempDir dir;
  const std::string out = dir / "mel2";
  ASSERT_EQ(
      app::testing::run_mel({"train", std::string(MEL_SOURCE_DIR) + "/configs/fmnist_mel2.json",
                             "--device", "cuda", "--epochs", "1", "--train-limit", "4000",
                             "--test-limit", "1000", "--out", out, "--no-progress"}),
      0);
  Json report = Json::parse(app::testing::read_file(out + "/report.json"));
  EXPECT_EQ(report["device"].get<std::string>(), "cuda:0");
  EXPECT_TRUE(report.contains("failures"));
  EXPECT_GT(report["accuracy"]["1+2"].get<double>(), 0.6);
  // and the run evaluates again on the GPU
  EXPECT_EQ(app::testing::run_mel({"eval", out, "--device", "cuda"}), 0);
}

}  // namespace
}  // namespace mel::testing
