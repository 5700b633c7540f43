// The MEL joint loss for M = 3 (3 exits + 4 combination heads, C = 10, f32, label smoothing and a
// diversity hinge on the 3 exit pairs), forward + backward: the fused one-kernel op against the
// same loss composed from primitive ops. Prints the speed-up per batch size at the end; the two
// are checked against each other once before timing and a mismatch aborts the run.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "core/mel.h"
#include "mel/joint_loss.h"

namespace {

using mel::DType;
using mel::Tensor;
using mel::method::JointLossOptions;

constexpr int kTerms = 7;  // 3 exits, then heads {0,1}, {0,2}, {1,2}, {0,1,2}
constexpr int64_t kClasses = 10;

struct Problem {
  std::vector<Tensor> logits;
  Tensor labels;
  JointLossOptions options;
};

Problem make_problem(int64_t batch) {
  Problem p;
  mel::Generator gen(42);
  for (int k = 0; k < kTerms; ++k) {
    Tensor z = mel::randn({batch, kClasses}, gen, DType::f32);
    z.requires_grad_();
    p.logits.push_back(z);
  }
  p.labels = mel::randint(0, kClasses, {batch}, gen);
  p.options.weights.assign(kTerms, 1.0);
  p.options.label_smoothing = 0.1;
  p.options.diversity_weight = 0.1;
  p.options.diversity_margin = 50.0;  // above the ~20 mean squared distance: the hinge is active
  p.options.diversity_pairs = {{0, 1}, {0, 2}, {1, 2}};
  return p;
}

void clear_grads(Problem& p) {
  for (Tensor& z : p.logits) z.zero_grad();
}

[[noreturn]] void die(const char* what, double got, double want) {
  std::fprintf(stderr, "bench_joint_loss: %s: got %.9g, expected %.9g\n", what, got, want);
  std::abort();
}

// Fused and composed losses and gradients agree (f32 tolerances).
void check(Problem& p) {
  Tensor fused = mel::method::joint_loss(p.logits, p.labels, Tensor(), p.options).total;
  fused.backward();
  std::vector<std::vector<double>> g;
  for (const Tensor& z : p.logits) g.push_back(z.grad().to_vector());
  clear_grads(p);
  Tensor ref = mel::method::joint_loss_reference(p.logits, p.labels, Tensor(), p.options);
  ref.backward();
  if (std::abs(fused.item() - ref.item()) > 1e-5 * (1 + std::abs(ref.item()))) {
    die("loss", fused.item(), ref.item());
  }
  for (int k = 0; k < kTerms; ++k) {
    const std::vector<double> r = p.logits[k].grad().to_vector();
    for (size_t i = 0; i < r.size(); ++i) {
      if (std::abs(g[k][i] - r[i]) > 1e-7 + 1e-4 * std::abs(r[i])) die("gradient", g[k][i], r[i]);
    }
  }
  clear_grads(p);
}

void BM_JointLossFused(benchmark::State& state) {
  Problem p = make_problem(state.range(0));
  check(p);
  for (auto _ : state) {
    Tensor loss = mel::method::joint_loss(p.logits, p.labels, Tensor(), p.options).total;
    loss.backward();
    clear_grads(p);
  }
  state.counters["threads"] = omp_get_max_threads();
}

void BM_JointLossComposed(benchmark::State& state) {
  Problem p = make_problem(state.range(0));
  for (auto _ : state) {
    Tensor loss = mel::method::joint_loss_reference(p.logits, p.labels, Tensor(), p.options);
    loss.backward();
    clear_grads(p);
  }
  state.counters["threads"] = omp_get_max_threads();
}

BENCHMARK(BM_JointLossFused)->Arg(256)->Arg(4096)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_JointLossComposed)->Arg(256)->Arg(4096)->Unit(benchmark::kMicrosecond);

// Console output plus the composed / fused time ratio per batch size (medians when repeated).
class SpeedupReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.error_occurred) continue;
      // with --benchmark_repetitions the median stands for the benchmark
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (r.run_type == Run::RT_Iteration || median) {
        times_[r.run_name.str()] = r.GetAdjustedRealTime();
      }
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    for (const char* b : {"256", "4096"}) {
      auto f = times_.find(std::string("BM_JointLossFused/") + b);
      auto c = times_.find(std::string("BM_JointLossComposed/") + b);
      if (f == times_.end() || c == times_.end()) continue;
      std::printf("B=%s: fused %.1f us, composed %.1f us, speed-up %.2fx\n", b, f->second,
                  c->second, c->second / f->second);
    }
  }

 private:
  std::map<std::string, double> times_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  SpeedupReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
