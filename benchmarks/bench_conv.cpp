// CPU convolution benchmarks on the layers of the reference CNN (batch 256, f32, 3x3, stride 1,
// padding 1, no bias): forward, backward-data and backward-weight per layer in GFLOP/s, and the
// whole model's forward + backward convolution time per batch. GFLOP/s counts a direct
// convolution's 2 N C_out C_in 9 H W flops, so Winograd layers show an effective rate above the
// machine's peak. Each kernel's result is checked on sampled elements against a direct
// double-precision sum before timing; a mismatch aborts the run.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/mel.h"
#include "core/ops_conv.h"
#include "kernels/cpu/conv.h"
#include "kernels/cpu/gemm.h"

namespace {

using mel::DType;
using mel::Tensor;
using mel::kernels::cpu::Conv2dGeometry;

constexpr int64_t kBatch = 256;

struct Layer {
  int64_t c_in, c_out, hw;
};
// The reference CNN's six convolutions (pooling halves the image between pairs).
constexpr Layer kLayers[] = {{1, 64, 28},    {64, 64, 28},  {64, 128, 14},
                             {128, 128, 14}, {128, 256, 7}, {256, 256, 7}};

Conv2dGeometry geometry(const Layer& l, bool winograd) {
  Conv2dGeometry g;
  g.allow_winograd = winograd;
  g.n = kBatch;
  g.c_in = l.c_in;
  g.c_out = l.c_out;
  g.h = g.w = g.h_out = g.w_out = l.hw;
  g.kh = g.kw = 3;
  g.pad_h = g.pad_w = 1;
  return g;
}

double flops(const Conv2dGeometry& g) {
  return 2.0 * g.n * g.c_out * g.c_in * g.kh * g.kw * g.h_out * g.w_out;
}

// Tensors of one layer: input, weight, output gradient, and outputs of each kernel.
struct Data {
  Conv2dGeometry g;
  Tensor x, w, dy, y, dx, dw, work;
  Data(const Layer& l, bool winograd) : g(geometry(l, winograd)) {
    mel::Generator gen(7);
    x = mel::randn({g.n, g.c_in, g.h, g.w}, gen);
    w = mel::randn({g.c_out, g.c_in, g.kh, g.kw}, gen, DType::f32, 0.0, 0.1);
    dy = mel::randn({g.n, g.c_out, g.h_out, g.w_out}, gen);
    y = mel::empty(dy.shape());
    dx = mel::empty(x.shape());
    dw = mel::empty(w.shape());
    using namespace mel::kernels::cpu;
    const int64_t ws =
        std::max(conv2d_forward_workspace(g), conv2d_backward_workspace(g, true, true));
    work = mel::empty({std::max<int64_t>(1, ws)});
  }
  float xv(int64_t n, int64_t c, int64_t i, int64_t j) const {
    if (i < 0 || i >= g.h || j < 0 || j >= g.w) return 0.f;
    return x.data<float>()[((n * g.c_in + c) * g.h + i) * g.w + j];
  }
  float dyv(int64_t n, int64_t c, int64_t i, int64_t j) const {
    if (i < 0 || i >= g.h_out || j < 0 || j >= g.w_out) return 0.f;
    return dy.data<float>()[((n * g.c_out + c) * g.h_out + i) * g.w_out + j];
  }
  float wv(int64_t co, int64_t ci, int64_t ki, int64_t kj) const {
    return w.data<float>()[((co * g.c_in + ci) * g.kh + ki) * g.kw + kj];
  }
};

[[noreturn]] void die(const char* what, double got, double want) {
  std::fprintf(stderr, "bench_conv: %s: got %.9g, expected %.9g\n", what, got, want);
  std::abort();
}

// Compares against a double sum with a bound of (terms * eps) on the sum of magnitudes.
void expect_near(const char* what, float got, double ref, double mag, int64_t terms) {
  if (std::abs(got - ref) > 2.0 * terms * 1.2e-7 * mag + 1e-5) die(what, got, ref);
}

void check_forward(const Data& d) {
  std::srand(1);
  const auto& g = d.g;
  for (int s = 0; s < 64; ++s) {
    const int64_t n = std::rand() % g.n, co = std::rand() % g.c_out;
    const int64_t i = std::rand() % g.h_out, j = std::rand() % g.w_out;
    double ref = 0, mag = 0;
    for (int64_t ci = 0; ci < g.c_in; ++ci) {
      for (int64_t ki = 0; ki < 3; ++ki) {
        for (int64_t kj = 0; kj < 3; ++kj) {
          const double t = double(d.xv(n, ci, i + ki - 1, j + kj - 1)) * d.wv(co, ci, ki, kj);
          ref += t;
          mag += std::abs(t);
        }
      }
    }
    const float got = d.y.data<float>()[((n * g.c_out + co) * g.h_out + i) * g.w_out + j];
    expect_near("forward", got, ref, mag, g.c_in * 9);
  }
}

void check_backward_data(const Data& d) {
  std::srand(2);
  const auto& g = d.g;
  for (int s = 0; s < 64; ++s) {
    const int64_t n = std::rand() % g.n, ci = std::rand() % g.c_in;
    const int64_t i = std::rand() % g.h, j = std::rand() % g.w;
    double ref = 0, mag = 0;
    for (int64_t co = 0; co < g.c_out; ++co) {
      for (int64_t ki = 0; ki < 3; ++ki) {
        for (int64_t kj = 0; kj < 3; ++kj) {
          const double t = double(d.dyv(n, co, i + 1 - ki, j + 1 - kj)) * d.wv(co, ci, ki, kj);
          ref += t;
          mag += std::abs(t);
        }
      }
    }
    const float got = d.dx.data<float>()[((n * g.c_in + ci) * g.h + i) * g.w + j];
    expect_near("backward-data", got, ref, mag, g.c_out * 9);
  }
}

void check_backward_weight(const Data& d) {
  std::srand(3);
  const auto& g = d.g;
  for (int s = 0; s < 16; ++s) {
    const int64_t co = std::rand() % g.c_out, ci = std::rand() % g.c_in;
    const int64_t ki = std::rand() % 3, kj = std::rand() % 3;
    double ref = 0, mag = 0;
    for (int64_t n = 0; n < g.n; ++n) {
      for (int64_t i = 0; i < g.h_out; ++i) {
        for (int64_t j = 0; j < g.w_out; ++j) {
          const double t = double(d.xv(n, ci, i + ki - 1, j + kj - 1)) * d.dyv(n, co, i, j);
          ref += t;
          mag += std::abs(t);
        }
      }
    }
    const float got = d.dw.data<float>()[((co * g.c_in + ci) * 3 + ki) * 3 + kj];
    expect_near("backward-weight", got, ref, mag, g.n * g.h_out * g.w_out);
  }
}

enum class Pass { forward, backward_data, backward_weight };

void run_pass(Data& d, Pass pass) {
  using namespace mel::kernels::cpu;
  switch (pass) {
    case Pass::forward:
      conv2d_forward<float>(d.g, d.x.data<float>(), d.w.data<float>(), nullptr, d.y.data<float>(),
                            d.work.data<float>());
      break;
    case Pass::backward_data:
      conv2d_backward<float>(d.g, d.dy.data<float>(), nullptr, d.w.data<float>(),
                             d.dx.data<float>(), nullptr, nullptr, d.work.data<float>());
      break;
    case Pass::backward_weight:
      conv2d_backward<float>(d.g, d.dy.data<float>(), d.x.data<float>(), nullptr, nullptr,
                             d.dw.data<float>(), nullptr, d.work.data<float>());
      break;
  }
}

void BM_ConvLayer(benchmark::State& state) {
  const Layer& l = kLayers[state.range(0)];
  const auto pass = static_cast<Pass>(state.range(1));
  Data d(l, state.range(2) == 0);
  run_pass(d, pass);
  switch (pass) {
    case Pass::forward:
      check_forward(d);
      break;
    case Pass::backward_data:
      check_backward_data(d);
      break;
    case Pass::backward_weight:
      check_backward_weight(d);
      break;
  }
  for (auto _ : state) {
    run_pass(d, pass);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops(d.g) * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["threads"] = omp_get_max_threads();
  static const char* kPass[] = {"fwd", "bwd_data", "bwd_weight"};
  state.SetLabel(std::to_string(l.c_in) + "->" + std::to_string(l.c_out) + " @" +
                 std::to_string(l.hw) + "x" + std::to_string(l.hw) + " " + kPass[state.range(1)] +
                 (state.range(2) == 0 ? " auto" : " im2col"));
}
// Arguments: layer, pass (0 forward, 1 backward-data, 2 backward-weight), algorithm (0: the
// default choice, Winograd for all but the first layer; 1: im2col forced).
BENCHMARK(BM_ConvLayer)
    ->ArgsProduct({{0, 1, 2, 3, 4, 5}, {0, 1, 2}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One training step's convolutions: forward through all six layers, then backward with the
// weight gradients of all and the input gradients of all but the first (one call per layer, as
// autograd makes it).
void BM_ModelConvs(benchmark::State& state) {
  using namespace mel::kernels::cpu;
  std::vector<Data> ds;
  double total = 0;
  for (size_t i = 0; i < std::size(kLayers); ++i) {
    ds.emplace_back(kLayers[i], state.range(0) == 0);
    total += flops(ds.back().g) * (i > 0 ? 3 : 2);
  }
  for (auto _ : state) {
    for (Data& d : ds) {
      conv2d_forward<float>(d.g, d.x.data<float>(), d.w.data<float>(), nullptr, d.y.data<float>(),
                            d.work.data<float>());
    }
    for (size_t i = ds.size(); i-- > 0;) {
      Data& d = ds[i];
      conv2d_backward<float>(d.g, d.dy.data<float>(), d.x.data<float>(), d.w.data<float>(),
                             i > 0 ? d.dx.data<float>() : nullptr, d.dw.data<float>(), nullptr,
                             d.work.data<float>());
    }
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(total * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["threads"] = omp_get_max_threads();
}
BENCHMARK(BM_ModelConvs)
    ->Arg(0)
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(5.0);

// The same step through the op layer and autograd (output allocation, graph recording).
void BM_ModelConvsOps(benchmark::State& state) {
  std::vector<Tensor> xs, ws, gys;
  double total = 0;
  mel::Generator gen(11);
  for (size_t i = 0; i < std::size(kLayers); ++i) {
    const Conv2dGeometry g = geometry(kLayers[i], true);
    Tensor x = mel::randn({g.n, g.c_in, g.h, g.w}, gen);
    if (i > 0) x.requires_grad_();
    Tensor w = mel::randn({g.c_out, g.c_in, 3, 3}, gen, DType::f32, 0.0, 0.1);
    w.requires_grad_();
    xs.push_back(x);
    ws.push_back(w);
    gys.push_back(mel::randn({g.n, g.c_out, g.h_out, g.w_out}, gen));
    total += flops(g) * (i > 0 ? 3 : 2);
  }
  const mel::Conv2dOptions o{{1, 1}, {1, 1}, {1, 1}, 1};
  for (auto _ : state) {
    std::vector<Tensor> ys;
    for (size_t i = 0; i < xs.size(); ++i) ys.push_back(mel::conv2d(xs[i], ws[i], Tensor(), o));
    for (size_t i = xs.size(); i-- > 0;) {
      ys[i].backward(gys[i]);
      xs[i].zero_grad();  // a fresh gradient each step, as an optimizer's zero_grad gives
      ws[i].zero_grad();
    }
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(total * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["threads"] = omp_get_max_threads();
}
BENCHMARK(BM_ModelConvsOps)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(5.0);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("cpu_gemm", mel::kernels::cpu::gemm_backend());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
