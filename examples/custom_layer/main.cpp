// The custom layer from outside mel: (1) its gradient matches finite differences (mel's checker),
// (2) on a machine with a GPU its CUDA kernels match its CPU kernels, (3) a model built from a JSON
// layer list that uses "prelu" trains through mel's engine on three concentric rings, which no
// linear model separates. Exits non-zero when any of them fails.
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numbers>

#include "core/mel.h"
#include "data/tensor_loader.h"
#include "nn/registry.h"
#include "prelu.h"
#include "train/classification.h"
#include "train/trainer.h"

namespace {

using mel::Tensor;

bool check_gradients() {
  mel::Generator gen(1);
  for (const mel::Shape& shape : {mel::Shape{3, 4, 5}, mel::Shape{6, 2}}) {
    Tensor x = mel::rand(shape, gen, mel::DType::f64, -1.0, 1.0).requires_grad_();
    Tensor w = mel::rand({shape[1]}, gen, mel::DType::f64, 0.05, 0.5).requires_grad_();
    const mel::GradcheckResult r = mel::check_gradients(
        [](const std::vector<Tensor>& in) { return custom::prelu(in[0], in[1]); }, {x, w});
    fmt::print("gradient check {}: {}\n", mel::shape_str(shape), r.ok ? "ok" : r.message);
    if (!r.ok) return false;
  }
  return true;
}

// Forward and both gradients on the GPU against the CPU kernels (skipped without a GPU).
bool check_gpu() {
  if (!mel::cuda_built() || mel::cuda_device_count() == 0) {
    fmt::print("GPU check: skipped (no CUDA build or no GPU)\n");
    return true;
  }
  mel::Generator gen(2);
  Tensor x = mel::rand({8, 16, 7}, gen, mel::DType::f32, -1.0, 1.0);
  Tensor w = mel::rand({16}, gen, mel::DType::f32, 0.05, 0.5);
  Tensor r = mel::rand({8, 16, 7}, gen, mel::DType::f32, -1.0, 1.0);
  double worst = 0;
  std::vector<std::vector<double>> results[2];
  for (int gpu = 0; gpu < 2; ++gpu) {
    const mel::Device d = gpu ? mel::Device::cuda(0) : mel::Device::cpu();
    Tensor xd = x.to(d).requires_grad_(), wd = w.to(d).requires_grad_();
    Tensor y = custom::prelu(xd, wd);
    mel::sum(mel::mul(y, r.to(d))).backward();
    results[gpu] = {y.to_vector(), xd.grad().to_vector(), wd.grad().to_vector()};
  }
  for (size_t k = 0; k < 3; ++k) {
    for (size_t i = 0; i < results[0][k].size(); ++i) {
      const double a = results[0][k][i], b = results[1][k][i];
      worst = std::max(worst, std::abs(a - b) / (1e-6 + std::abs(a)));
    }
  }
  fmt::print("GPU check: largest relative difference from the CPU {:.2e}\n", worst);
  return worst < 1e-4;
}

// Three rings of radius 1, 2 and 3 (with noise): class = ring.
std::pair<Tensor, Tensor> rings(int64_t n, uint64_t seed) {
  mel::Generator gen(seed);
  const Tensor label = mel::randint(0, 3, {n}, gen);
  const std::vector<double> cls = label.to_vector();
  const std::vector<double> angle =
      mel::rand({n}, gen, mel::DType::f64, 0.0, 2 * std::numbers::pi).to_vector();
  const std::vector<double> noise = mel::randn({n}, gen, mel::DType::f64).to_vector();
  std::vector<double> xy;
  for (int64_t i = 0; i < n; ++i) {
    const double r = cls[i] + 1.0 + 0.15 * noise[i];
    xy.push_back(r * std::cos(angle[i]));
    xy.push_back(r * std::sin(angle[i]));
  }
  return {mel::tensor(xy, {n, 2}), label};
}

bool train_rings(const std::string& out) {
  const mel::Json config = mel::Json::parse(R"({
    "input": [2],
    "trunk": [{"type": "linear", "out": 32}, {"type": "prelu"},
              {"type": "linear", "out": 32}, {"type": "prelu", "init": 0.1}],
    "head": [{"type": "linear", "out": 3}]})");
  const mel::JsonReader reader(config, "rings model", "");
  mel::Shape shape{2};
  auto trunk = mel::nn::build_layers(reader, "trunk", shape);
  auto head = mel::nn::build_layers(reader, "head", shape);
  auto model = std::make_shared<mel::train::Classifier>(trunk, head);
  mel::Generator gen(7);
  model->reset_parameters(gen);
  fmt::print("{}\n", model->repr(true));

  auto [xtr, ytr] = rings(3000, 1);
  auto [xte, yte] = rings(1000, 2);
  mel::data::TensorLoader train(xtr, ytr, 64, true, 3);
  mel::data::TensorLoader test(xte, yte, 500, false);
  mel::train::ClassificationSpec spec;
  spec.epochs = 6;
  spec.optimizer.lr = 0.01;
  spec.batch_size = 64;
  mel::train::ClassificationTask task(model, spec, train, test);
  mel::train::RunOptions run;
  run.name = "rings";
  run.out = out;
  run.config_json = config.dump();
  run.progress = false;
  const mel::Json report = mel::train::Trainer(task, run).run();
  const double acc = report["accuracy"]["1"].get<double>();
  fmt::print("rings: test accuracy {:.2f}% (a linear model gets about 33%)\n", 100 * acc);
  return acc > 0.9;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    custom::register_prelu();
    const std::string out = argc > 1 ? argv[1] : "runs/custom_layer";
    const bool ok = check_gradients() && check_gpu() && train_rings(out);
    fmt::print("{}\n", ok ? "custom layer: all checks passed" : "custom layer: FAILED");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "custom_layer: error: {}\n", e.what());
    return 1;
  }
}
