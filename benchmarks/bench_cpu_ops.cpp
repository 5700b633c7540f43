// CPU op benchmarks: f32 matmul (the mel::matmul op and the built-in blocked GEMM) in GFLOP/s, and
// memory-bound elementwise ops and a sum reduction in GB/s. Every result is checked once against a
// naive reference before timing; a wrong result aborts the run.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/mel.h"
#include "kernels/cpu/gemm.h"

namespace {

using mel::DType;
using mel::Tensor;

[[noreturn]] void die(const char* what, double got, double want) {
  std::fprintf(stderr, "bench_cpu_ops: %s: got %.9g, expected %.9g\n", what, got, want);
  std::abort();
}

Tensor random_f32(const mel::Shape& shape, uint64_t seed) {
  mel::Generator gen(seed);
  return mel::randn(shape, gen, DType::f32);
}

// c = a @ b (all n x n, row-major) on 64 sampled entries, against double-precision dot products
// with a bound of n * eps on the magnitude sum.
void check_matmul(const float* a, const float* b, const float* c, int64_t n, const char* what) {
  std::srand(7);
  for (int s = 0; s < 64; ++s) {
    const int64_t i = std::rand() % n, j = std::rand() % n;
    double ref = 0, mag = 0;
    for (int64_t k = 0; k < n; ++k) {
      ref += static_cast<double>(a[i * n + k]) * b[k * n + j];
      mag += std::abs(static_cast<double>(a[i * n + k]) * b[k * n + j]);
    }
    if (std::abs(c[i * n + j] - ref) > 2.0 * n * 1.2e-7 * mag + 1e-6) die(what, c[i * n + j], ref);
  }
}

void set_gflops(benchmark::State& state, int64_t n) {
  const double flops = 2.0 * n * n * n * static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
  state.counters["threads"] = omp_get_max_threads();
}

void BM_MatmulOp(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = random_f32({n, n}, 1), b = random_f32({n, n}, 2);
  check_matmul(a.data<float>(), b.data<float>(), mel::matmul(a, b).data<float>(), n, "matmul");
  for (auto _ : state) {
    Tensor c = mel::matmul(a, b);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  set_gflops(state, n);
}
BENCHMARK(BM_MatmulOp)
    ->Arg(128)
    ->Arg(256)
    ->Arg(512)
    ->Arg(1024)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

void BM_GemmBlocked(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = random_f32({n, n}, 1), b = random_f32({n, n}, 2);
  std::vector<float> c(n * n);
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  mel::kernels::cpu::gemm_blocked<float>(false, false, n, n, n, 1.f, pa, n, pb, n, 0.f, c.data(),
                                         n);
  check_matmul(pa, pb, c.data(), n, "gemm_blocked");
  for (auto _ : state) {
    mel::kernels::cpu::gemm_blocked<float>(false, false, n, n, n, 1.f, pa, n, pb, n, 0.f, c.data(),
                                           n);
    benchmark::ClobberMemory();
  }
  set_gflops(state, n);
}
BENCHMARK(BM_GemmBlocked)
    ->Arg(128)
    ->Arg(256)
    ->Arg(512)
    ->Arg(1024)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// Elementwise and reduction ops over n f32 elements; `bytes` is what each call must move.
template <class Ref>
void check_all(const Tensor& got, Ref&& ref, double rtol, const char* what) {
  const float* g = got.data<float>();
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double want = ref(i);
    if (!(std::abs(g[i] - want) <= rtol * std::abs(want) + 1e-30)) die(what, g[i], want);
  }
}

void set_bytes(benchmark::State& state, int64_t bytes_per_call) {
  state.SetBytesProcessed(state.iterations() * bytes_per_call);
}

void BM_Add(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = random_f32({n}, 3), b = random_f32({n}, 4);
  const float *pa = a.data<float>(), *pb = b.data<float>();
  check_all(
      mel::add(a, b), [&](int64_t i) { return pa[i] + pb[i]; }, 0, "add");
  for (auto _ : state) benchmark::DoNotOptimize(mel::add(a, b).data_ptr());
  set_bytes(state, 3 * n * 4);
}

// Rows of 1024 plus one bias row: the broadcast operand stays in cache, so 2 streams.
void BM_AddBroadcast(benchmark::State& state) {
  const int64_t n = state.range(0), cols = 1024;
  Tensor a = random_f32({n / cols, cols}, 5), b = random_f32({cols}, 6);
  const float *pa = a.data<float>(), *pb = b.data<float>();
  check_all(
      mel::add(a, b), [&](int64_t i) { return pa[i] + pb[i % cols]; }, 0, "add broadcast");
  for (auto _ : state) benchmark::DoNotOptimize(mel::add(a, b).data_ptr());
  set_bytes(state, 2 * n * 4);
}

void BM_Relu(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor x = random_f32({n}, 7);
  const float* px = x.data<float>();
  check_all(
      mel::relu(x), [&](int64_t i) { return px[i] > 0 ? px[i] : 0.f; }, 0, "relu");
  for (auto _ : state) benchmark::DoNotOptimize(mel::relu(x).data_ptr());
  set_bytes(state, 2 * n * 4);
}

void BM_Exp(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor x = random_f32({n}, 8);
  const float* px = x.data<float>();
  check_all(
      mel::exp(x), [&](int64_t i) { return std::exp(static_cast<double>(px[i])); }, 1e-6, "exp");
  for (auto _ : state) benchmark::DoNotOptimize(mel::exp(x).data_ptr());
  set_bytes(state, 2 * n * 4);
}

void BM_Sum(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor x = random_f32({n}, 9);
  const float* px = x.data<float>();
  double ref = 0, mag = 0;
  for (int64_t i = 0; i < n; ++i) {
    ref += px[i];
    mag += std::abs(px[i]);
  }
  const double got = mel::sum(x).item();
  if (std::abs(got - ref) > 1e-6 * mag) die("sum", got, ref);
  for (auto _ : state) benchmark::DoNotOptimize(mel::sum(x).data_ptr());
  set_bytes(state, n * 4);
}

constexpr int64_t k1M = int64_t(1) << 20, k16M = int64_t(1) << 24;
BENCHMARK(BM_Add)->Arg(k1M)->Arg(k16M)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AddBroadcast)->Arg(k1M)->Arg(k16M)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Relu)->Arg(k1M)->Arg(k16M)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Exp)->Arg(k1M)->Arg(k16M)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Sum)->Arg(k1M)->Arg(k16M)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::AddCustomContext("cpu_gemm", mel::kernels::cpu::gemm_backend());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
