// GPU elementwise and reduction benchmarks: contiguous and broadcast add, gelu, and sums (all
// elements, rows, columns), reported as DRAM bytes moved per second and as a fraction of the
// device's peak bandwidth. Each shape's result is checked against the CPU once before timing.
#include <benchmark/benchmark.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "cuda_bench.h"

namespace mel::bench {
namespace {

Tensor random_gpu_and_cpu(const Shape& shape, uint64_t seed, Tensor& cpu_copy) {
  Generator gen(seed);
  cpu_copy = rand(shape, gen, DType::f32, -1.0, 1.0);
  return cpu_copy.to(gpu());
}

// Largest |gpu - cpu| over |cpu| + 1 (a relative error that tolerates values near zero).
bool matches_cpu(const Tensor& gpu_result, const Tensor& cpu_result, double tol, std::string& why) {
  std::vector<double> g = gpu_result.to_vector(), c = cpu_result.to_vector();
  if (g.size() != c.size()) {
    why = "size mismatch";
    return false;
  }
  for (size_t i = 0; i < g.size(); ++i) {
    if (!(std::abs(g[i] - c[i]) <= tol * (std::abs(c[i]) + 1.0))) {
      why = "element " + std::to_string(i) + ": gpu " + std::to_string(g[i]) + " vs cpu " +
            std::to_string(c[i]);
      return false;
    }
  }
  return true;
}

void report_bytes(benchmark::State& state, double bytes) {
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_frac"] =
      benchmark::Counter(bytes / peak_bandwidth(), benchmark::Counter::kIsIterationInvariantRate);
}

// Times op(inputs on the GPU) after comparing it once with op(inputs on the CPU).
void run_checked(benchmark::State& state, const std::function<Tensor(bool gpu)>& op, double tol,
                 double bytes) {
  autograd::NoGradGuard ng;
  std::string why;
  if (!matches_cpu(op(true), op(false), tol, why)) {
    state.SkipWithError(("GPU result differs from the CPU: " + why).c_str());
    return;
  }
  Tensor keep;
  time_gpu(
      state, [&] { keep = op(true); }, /*flush=*/true);
  report_bytes(state, bytes);
  state.SetLabel(device_name());
}

void BM_AddContiguous(benchmark::State& state) {
  if (!require_gpu(state)) return;
  const int64_t n = state.range(0);
  Tensor ac, bc;
  Tensor ag = random_gpu_and_cpu({n}, 1, ac), bg = random_gpu_and_cpu({n}, 2, bc);
  run_checked(
      state, [&](bool on_gpu) { return on_gpu ? add(ag, bg) : add(ac, bc); }, 1e-6,
      3.0 * n * sizeof(float));
}

// [rows, 4096] + [4096]: a bias row broadcast down the rows (the strided path).
void BM_AddBroadcast(benchmark::State& state) {
  if (!require_gpu(state)) return;
  const int64_t rows = state.range(0), cols = 4096;
  Tensor ac, bc;
  Tensor ag = random_gpu_and_cpu({rows, cols}, 3, ac), bg = random_gpu_and_cpu({cols}, 4, bc);
  run_checked(
      state, [&](bool on_gpu) { return on_gpu ? add(ag, bg) : add(ac, bc); }, 1e-6,
      (2.0 * rows * cols + cols) * sizeof(float));
}

void BM_Gelu(benchmark::State& state) {
  if (!require_gpu(state)) return;
  const int64_t n = state.range(0);
  Tensor xc;
  Tensor xg = random_gpu_and_cpu({n}, 5, xc);
  run_checked(
      state, [&](bool on_gpu) { return gelu(on_gpu ? xg : xc, GeluApprox::tanh); }, 1e-5,
      2.0 * n * sizeof(float));
}

// Sum over all n elements.
void BM_SumAll(benchmark::State& state) {
  if (!require_gpu(state)) return;
  const int64_t n = state.range(0);
  Tensor xc;
  Tensor xg = random_gpu_and_cpu({n}, 6, xc);
  run_checked(
      state, [&](bool on_gpu) { return sum(on_gpu ? xg : xc); }, 1e-4,
      static_cast<double>(n) * sizeof(float));
}

// [4096, 4096] summed along dim 1 (contiguous rows) or dim 0 (columns).
void BM_SumAxis(benchmark::State& state) {
  if (!require_gpu(state)) return;
  const int64_t n = 4096, dim = state.range(0);
  Tensor xc;
  Tensor xg = random_gpu_and_cpu({n, n}, 7, xc);
  run_checked(
      state, [&](bool on_gpu) { return sum(on_gpu ? xg : xc, {dim}); }, 1e-4,
      (static_cast<double>(n) * n + n) * sizeof(float));
}

BENCHMARK(BM_AddContiguous)
    ->Arg(int64_t(1) << 24)
    ->Arg(int64_t(1) << 26)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AddBroadcast)->Arg(4096)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Gelu)->Arg(int64_t(1) << 24)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SumAll)
    ->Arg(int64_t(1) << 24)
    ->Arg(int64_t(1) << 26)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SumAxis)
    ->ArgName("dim")
    ->Arg(1)
    ->Arg(0)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace mel::bench

BENCHMARK_MAIN();
