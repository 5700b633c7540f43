// One training step of the reference "original" CNN (configs/fmnist_original.json) on the CPU:
// forward, cross-entropy, backward and the Adam step on a random batch. Reports samples/s
// (items_per_second); run with --benchmark_format=json for JSON. Also times each phase.
#include <benchmark/benchmark.h>

#include <chrono>

#include "app/single.h"
#include "core/factory.h"
#include "core/ops_nn.h"

namespace {

using namespace mel;

struct Setup {
  std::shared_ptr<app::Classifier> model;
  std::unique_ptr<nn::FlatParameters> flat;
  std::unique_ptr<nn::Optimizer> opt;
  Tensor x, y;
};

Setup make(int64_t batch) {
  Setup s;
  app::SingleConfig c = app::load_single_config(
      std::string(MEL_SOURCE_DIR) + "/configs/fmnist_original.json", app::RunOverrides{});
  s.model = app::build_model(c);
  Generator g(0);
  s.model->reset_parameters(g);
  s.flat = std::make_unique<nn::FlatParameters>(*s.model);
  s.opt = train::make_optimizer(c.train.optimizer, *s.flat);
  s.x = randn({batch, 1, 28, 28}, g);
  s.y = randint(0, 10, {batch}, g);
  return s;
}

void BM_train_step_original(benchmark::State& state) {
  const int64_t batch = state.range(0);
  Setup s = make(batch);
  double fwd = 0, bwd = 0, opt = 0;
  using Clock = std::chrono::steady_clock;
  for (auto _ : state) {
    auto t0 = Clock::now();
    Tensor loss = cross_entropy(s.model->forward(s.x), s.y);
    auto t1 = Clock::now();
    s.opt->zero_grad();
    loss.backward();
    auto t2 = Clock::now();
    s.opt->step(1e-3);
    auto t3 = Clock::now();
    fwd += std::chrono::duration<double>(t1 - t0).count();
    bwd += std::chrono::duration<double>(t2 - t1).count();
    opt += std::chrono::duration<double>(t3 - t2).count();
    benchmark::DoNotOptimize(loss);
  }
  const double n = static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["forward_ms"] = 1e3 * fwd / n;
  state.counters["backward_ms"] = 1e3 * bwd / n;
  state.counters["optimizer_ms"] = 1e3 * opt / n;
}
BENCHMARK(BM_train_step_original)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_eval_forward_original(benchmark::State& state) {
  const int64_t batch = state.range(0);
  Setup s = make(batch);
  s.model->eval();
  autograd::NoGradGuard ng;
  for (auto _ : state) benchmark::DoNotOptimize(s.model->forward(s.x));
  state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(BM_eval_forward_original)->Arg(1000)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
