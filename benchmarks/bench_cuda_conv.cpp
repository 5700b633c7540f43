// GPU convolution benchmarks (cuDNN through mel's launchers) on the reference CNN's six layers
// at batch 256 (3x3, stride 1, padding 1, no bias): forward, and backward as data + filter
// gradient, for f32 with TF32 off and on and for bf16. Reports TFLOP/s of a direct convolution's
// 2 N C_out C_in 9 H W flops (backward twice that) and the fraction of the clock-rate peak
// (sm_90). Each layer's GPU results are checked once against mel's CPU convolution before timing.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "cuda_bench.h"
#include "kernels/cuda/conv.h"

namespace {

using mel::DType;
using mel::Tensor;
using mel::bench::gpu;
using mel::kernels::cuda::Conv2dGeometry;

constexpr int64_t kBatch = 256;

struct Layer {
  int64_t c_in, c_out, hw;
};
// configs/fmnist_original.json: two 3x3 convolutions at each of 28x28, 14x14 and 7x7.
constexpr Layer kLayers[] = {{1, 64, 28},    {64, 64, 28},  {64, 128, 14},
                             {128, 128, 14}, {128, 256, 7}, {256, 256, 7}};

enum class Mode { kF32, kTf32, kBf16 };
const char* mode_name(Mode m) {
  return m == Mode::kF32 ? "f32" : m == Mode::kTf32 ? "tf32" : "bf16";
}

Conv2dGeometry geometry(const Layer& l) {
  Conv2dGeometry g;
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

// See bench_cuda_gemm.cpp: sm_90 per-SM, per-clock dense FLOP.
double peak_flops(Mode m) {
  int major = 0, sms = 0, khz = 0;
  MEL_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  MEL_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  MEL_CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0));
  if (major != 9) return 0;
  const double per_sm_clock = m == Mode::kF32 ? 256 : m == Mode::kTf32 ? 2048 : 4096;
  return per_sm_clock * sms * khz * 1e3;
}

mel::kernels::cuda::CudnnConv cudnn_conv(bool tf32) {
  mel::CudaContext& ctx = mel::cuda_context(0);
  return {ctx.cudnn(), &ctx.cache<mel::kernels::cuda::ConvCache>("conv"), tf32,
          [&ctx](size_t bytes) { return ctx.workspace(bytes); }};
}

// One layer's operands on the CPU (the reference) and the GPU, and the GPU outputs.
struct Data {
  Conv2dGeometry g;
  Tensor x_cpu, w_cpu, dy_cpu;
  Tensor x, w, dy, y, dx, dw;
  Data(const Layer& l, DType dt) : g(geometry(l)) {
    mel::Generator gen(3);
    const double bound = 1.0 / std::sqrt(double(g.c_in * 9));
    x_cpu = mel::rand({g.n, g.c_in, g.h, g.w}, gen, DType::f32, -1, 1).to(dt);
    w_cpu = mel::rand({g.c_out, g.c_in, 3, 3}, gen, DType::f32, -bound, bound).to(dt);
    dy_cpu = mel::rand({g.n, g.c_out, g.h, g.w}, gen, DType::f32, -1, 1).to(dt);
    x = x_cpu.to(gpu());
    w = w_cpu.to(gpu());
    dy = dy_cpu.to(gpu());
    y = mel::empty(dy.shape(), dt, gpu());
    dx = mel::empty(x.shape(), dt, gpu());
    dw = mel::empty(w.shape(), dt, gpu());
  }
};

template <class T>
void forward(Data& d, bool tf32) {
  mel::kernels::cuda::conv2d_forward<T>(d.g, d.x.data<T>(), d.w.data<T>(), nullptr, d.y.data<T>(),
                                        cudnn_conv(tf32), mel::cuda_stream(gpu()));
}

template <class T>
void backward(Data& d, bool tf32) {
  mel::kernels::cuda::conv2d_backward<T>(d.g, d.dy.data<T>(), d.x.data<T>(), d.w.data<T>(),
                                         d.dx.data<T>(), d.dw.data<T>(), nullptr, cudnn_conv(tf32),
                                         mel::cuda_stream(gpu()));
}

// Largest |gpu - cpu| over the largest |cpu|.
double max_rel_error(const Tensor& g, const Tensor& c) {
  const std::vector<double> vg = g.to(mel::Device::cpu()).to_vector(), vc = c.to_vector();
  double err = 0, mag = 0;
  for (size_t i = 0; i < vg.size(); ++i) {
    err = std::max(err, std::abs(vg[i] - vc[i]));
    mag = std::max(mag, std::abs(vc[i]));
  }
  return mag > 0 ? err / mag : err;
}

// Forward and both gradients against the CPU op, once per layer and mode.
bool check(Data& d, Mode m, std::string& why) {
  static std::set<std::tuple<int64_t, int64_t, int64_t, int>> done;
  const auto key = std::make_tuple(d.g.c_in, d.g.c_out, d.g.h, static_cast<int>(m));
  if (done.count(key)) return true;
  const double tol = m == Mode::kF32 ? 1e-4 : m == Mode::kTf32 ? 5e-3 : 2e-2;
  Tensor x = d.x_cpu.clone().requires_grad_(), w = d.w_cpu.clone().requires_grad_();
  mel::Conv2dOptions o;
  o.padding = {1, 1};
  Tensor y = mel::conv2d(x, w, Tensor(), o);
  y.backward(d.dy_cpu);
  const std::pair<const char*, double> errs[] = {
      {"forward", max_rel_error(d.y, y)},
      {"data gradient", max_rel_error(d.dx, x.grad())},
      {"filter gradient", max_rel_error(d.dw, w.grad())}};
  for (const auto& [what, err] : errs) {
    if (!(err <= tol)) {
      why = std::string(what) + " differs from the CPU by " + std::to_string(err) +
            " of its largest value (limit " + std::to_string(tol) + ")";
      return false;
    }
  }
  done.insert(key);
  return true;
}

void BM_conv(benchmark::State& state, Layer l, Mode m, bool backward_pass) {
  if (!mel::bench::require_gpu(state)) return;
  const bool tf32 = m == Mode::kTf32;
  const bool bf16 = m == Mode::kBf16;
  Data d(l, bf16 ? DType::bf16 : DType::f32);
  auto fwd = [&] { bf16 ? forward<mel::bfloat16>(d, tf32) : forward<float>(d, tf32); };
  auto bwd = [&] { bf16 ? backward<mel::bfloat16>(d, tf32) : backward<float>(d, tf32); };
  fwd();  // chooses the algorithms (a benchmark of its own, once per shape)
  bwd();
  std::string why;
  if (!check(d, m, why)) {
    state.SkipWithError(("wrong result: " + why).c_str());
    return;
  }
  if (backward_pass) {
    mel::bench::time_gpu(state, bwd);
  } else {
    mel::bench::time_gpu(state, fwd);
  }
  const double f = flops(d.g) * (backward_pass ? 2 : 1);
  state.counters["TFLOP/s"] =
      benchmark::Counter(f * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  if (const double peak = peak_flops(m); peak > 0) {
    state.counters["peak_frac"] =
        benchmark::Counter(f / peak, benchmark::Counter::kIsIterationInvariantRate);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (mel::cuda_device_count() > 0) {
    benchmark::AddCustomContext("gpu", mel::bench::device_name());
  }
  for (const Layer& l : kLayers) {
    for (Mode m : {Mode::kF32, Mode::kTf32, Mode::kBf16}) {
      for (bool bwd : {false, true}) {
        const std::string name = "conv3x3/" + std::to_string(l.c_in) + "to" +
                                 std::to_string(l.c_out) + "_" + std::to_string(l.hw) + "x" +
                                 std::to_string(l.hw) + "/" + mode_name(m) +
                                 (bwd ? "/backward_data+filter" : "/forward");
        benchmark::RegisterBenchmark(name.c_str(), BM_conv, l, m, bwd)
            ->UseManualTime()
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
