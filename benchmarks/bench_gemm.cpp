// Built-in GEMM benchmarks in GFLOP/s: the AVX-512 micro-kernels ("best": AVX2 on CPUs without
// AVX-512) against the same driver held to its AVX2 kernels, on square products and on the three
// products of a 3 x 3 convolution through im2col (forward, weight gradient, data gradient), on one
// thread, on all threads, and from inside a parallel region (one product per thread, as a
// convolution runs one image per thread). Every product is checked once against f64 dot products
// before timing; a wrong result aborts the run.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/gemm.h"

namespace {

using mel::kernels::cpu::gemm_allow_avx512;
using mel::kernels::cpu::gemm_blocked;

struct Shape {
  const char* name;
  bool ta, tb;
  int64_t M, N, K;
};

// Square products, then the convolution products for C_in = C_out / 1 over 28 x 28, 14 x 14 and
// 7 x 7 maps: forward M = C_out, N = H W, K = 9 C_in (also for 4 images at once); weight gradient
// M = C_out, N = 9 C_in, K = H W with B transposed; data gradient M = 9 C_in, N = H W, K = C_out
// with A transposed.
const Shape kShapes[] = {
    {"square_256", false, false, 256, 256, 256},
    {"square_512", false, false, 512, 512, 512},
    {"square_1024", false, false, 1024, 1024, 1024},
    {"conv_fwd_64x784x576", false, false, 64, 784, 576},
    {"conv_fwd_128x196x1152", false, false, 128, 196, 1152},
    {"conv_fwd_256x49x2304", false, false, 256, 49, 2304},
    {"conv_fwd_4img_64x3136x576", false, false, 64, 4 * 784, 576},
    {"conv_wgrad_64x576x784", false, true, 64, 576, 784},
    {"conv_wgrad_128x1152x196", false, true, 128, 1152, 196},
    {"conv_wgrad_256x2304x49", false, true, 256, 2304, 49},
    {"conv_dgrad_576x784x64", true, false, 576, 784, 64},
    {"conv_dgrad_1152x196x128", true, false, 1152, 196, 128},
    {"conv_dgrad_2304x49x256", true, false, 2304, 49, 256},
};

struct Operands {
  std::vector<float> a, b, c;
};

Operands make_operands(const Shape& s, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  Operands o;
  o.a.resize(s.M * s.K);
  o.b.resize(s.K * s.N);
  o.c.resize(s.M * s.N);
  for (float& v : o.a) v = u(gen);
  for (float& v : o.b) v = u(gen);
  return o;
}

void run(const Shape& s, Operands& o) {
  gemm_blocked<float>(s.ta, s.tb, s.M, s.N, s.K, 1.f, o.a.data(), s.ta ? s.M : s.K, o.b.data(),
                      s.tb ? s.K : s.N, 0.f, o.c.data(), s.N);
}

// 64 sampled entries of C against f64 dot products, with a bound of K eps on the magnitude sum.
void check(const Shape& s, const Operands& o, const std::string& name) {
  std::mt19937 gen(7);
  for (int t = 0; t < 64; ++t) {
    const int64_t i = static_cast<int64_t>(gen() % s.M), j = static_cast<int64_t>(gen() % s.N);
    double ref = 0, mag = 0;
    for (int64_t k = 0; k < s.K; ++k) {
      const double p = static_cast<double>(s.ta ? o.a[k * s.M + i] : o.a[i * s.K + k]) *
                       (s.tb ? o.b[j * s.K + k] : o.b[k * s.N + j]);
      ref += p;
      mag += std::abs(p);
    }
    const double got = o.c[i * s.N + j];
    if (!(std::abs(got - ref) <= 2.0 * s.K * 1.2e-7 * mag + 1e-6)) {
      std::fprintf(stderr, "bench_gemm: %s: C[%lld,%lld] = %.9g, expected %.9g\n", name.c_str(),
                   static_cast<long long>(i), static_cast<long long>(j), got, ref);
      std::abort();
    }
  }
}

// `threads` OpenMP threads for one product, or with `inside` one product per thread run from a
// parallel region (GFLOP/s then counts all of them).
void BM_gemm(benchmark::State& state, Shape s, bool avx512, int threads, bool inside,
             std::string name) {
  const bool prev_avx512 = gemm_allow_avx512(avx512);
  const int prev_threads = omp_get_max_threads();
  omp_set_num_threads(threads);
  const int copies = inside ? threads : 1;
  std::vector<Operands> ops;
  for (int i = 0; i < copies; ++i) ops.push_back(make_operands(s, 1 + i));
  run(s, ops[0]);
  check(s, ops[0], name);
  for (auto _ : state) {
    if (inside) {
#pragma omp parallel num_threads(copies)
      run(s, ops[omp_get_thread_num()]);
    } else {
      run(s, ops[0]);
    }
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * static_cast<double>(s.M) * static_cast<double>(s.N) *
                       static_cast<double>(s.K) * copies * static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
  omp_set_num_threads(prev_threads);
  gemm_allow_avx512(prev_avx512);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::AddCustomContext("cpu_gemm", mel::kernels::cpu::gemm_backend());
  const int max_threads = omp_get_max_threads();
  for (const Shape& s : kShapes) {
    for (bool avx512 : {false, true}) {
      const std::string base = std::string("gemm/") + s.name + (avx512 ? "/best" : "/avx2");
      std::vector<std::pair<int, bool>> modes = {{1, false}};
      if (max_threads > 1) {
        modes.push_back({max_threads, false});
        modes.push_back({max_threads, true});
      }
      for (auto [threads, inside] : modes) {
        const std::string name =
            base + (inside ? "/per_thread_in_region:" : "/threads:") + std::to_string(threads);
        benchmark::RegisterBenchmark(name.c_str(), BM_gemm, s, avx512, threads, inside, name)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
