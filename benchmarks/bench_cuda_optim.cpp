// GPU optimizer steps (Adam, SGD with momentum) over flat f32 buffers of 1.1M parameters (the
// reference CNN) and 100M, in GB/s and as a fraction of peak DRAM bandwidth; and the fused MEL
// joint loss (M = 3: 7 terms, B = 256, C = 10) forward + backward against the same loss composed
// from ops on the GPU. Every result is checked against the CPU once before timing.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_bench.h"
#include "kernels/cpu/optim.h"
#include "kernels/cuda/optim.h"
#include "mel/joint_loss.h"

namespace mel::bench {
namespace {

// Cheap deterministic values in [lo, hi) (100M random draws on the host would dominate the run).
Tensor pattern(int64_t n, uint64_t salt, float lo, float hi) {
  Tensor t = empty({n}, DType::f32);
  float* p = t.data<float>();
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t h =
        (static_cast<uint64_t>(i) + salt * 0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull;
    p[i] = lo + (hi - lo) * static_cast<float>((h >> 40) & 0xffffff) / 16777216.0f;
  }
  return t;
}

// Largest |gpu - cpu| relative to |cpu| + 1e-3 stays within tol; `why` names the first failure.
bool matches(const Tensor& gpu_result, const Tensor& cpu_result, double tol, std::string& why) {
  Tensor g = gpu_result.to(Device::cpu());
  const float* a = g.data<float>();
  const float* b = cpu_result.data<float>();
  for (int64_t i = 0; i < g.numel(); ++i) {
    if (!(std::abs(double(a[i]) - b[i]) <= tol * (std::abs(double(b[i])) + 1e-3))) {
      why = "element " + std::to_string(i) + ": gpu " + std::to_string(a[i]) + " vs cpu " +
            std::to_string(b[i]);
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
  state.SetLabel(device_name());
}

constexpr float kLr = 1e-3f, kBeta1 = 0.9f, kBeta2 = 0.999f, kEps = 1e-8f, kWd = 1e-2f;
constexpr double kBc1 = 1 - 0.9 * 0.9 * 0.9, kBc2 = 1 - 0.999 * 0.999 * 0.999;

// Adam (AdamW): reads p, g, m, v and writes p, m, v: 28 bytes per parameter.
void BM_AdamStep(benchmark::State& state) {
  if (!require_gpu(state)) return;
  const int64_t n = state.range(0);
  Tensor hp = pattern(n, 1, -1, 1), hg = pattern(n, 2, -1, 1), hm = pattern(n, 3, -0.1f, 0.1f),
         hv = pattern(n, 4, 0, 0.01f);
  Tensor p = hp.to(gpu()), g = hg.to(gpu()), m = hm.to(gpu()), v = hv.to(gpu());
  cudaStream_t s = cuda_stream(gpu());
  auto step = [&] {
    kernels::cuda::adam_step(p.data<float>(), g.data<float>(), m.data<float>(), v.data<float>(), n,
                             kLr, kBeta1, kBeta2, kEps, kWd, true, kBc1, kBc2, s);
  };
  step();
  kernels::cpu::adam_step(hp.data<float>(), hg.data<float>(), hm.data<float>(), hv.data<float>(), n,
                          kLr, kBeta1, kBeta2, kEps, kWd, true, kBc1, kBc2);
  std::string why;
  for (auto [dev, host] : {std::pair{&p, &hp}, std::pair{&m, &hm}, std::pair{&v, &hv}}) {
    if (!matches(*dev, *host, 1e-6, why)) {
      state.SkipWithError(("Adam on the GPU differs from the CPU: " + why).c_str());
      return;
    }
  }
  time_gpu(state, step, /*flush=*/true);
  report_bytes(state, 28.0 * n);
}

// SGD with momentum and weight decay: reads p, g, buf and writes p, buf: 20 bytes per parameter.
void BM_SgdMomentumStep(benchmark::State& state) {
  if (!require_gpu(state)) return;
  const int64_t n = state.range(0);
  Tensor hp = pattern(n, 5, -1, 1), hg = pattern(n, 6, -1, 1), hb = pattern(n, 7, -0.1f, 0.1f);
  Tensor p = hp.to(gpu()), g = hg.to(gpu()), b = hb.to(gpu());
  cudaStream_t s = cuda_stream(gpu());
  auto step = [&] {
    kernels::cuda::sgd_step(p.data<float>(), g.data<float>(), b.data<float>(), n, 0.05f, 0.9f, 0.0f,
                            5e-4f, true, false, s);
  };
  step();
  kernels::cpu::sgd_step(hp.data<float>(), hg.data<float>(), hb.data<float>(), n, 0.05f, 0.9f, 0.0f,
                         5e-4f, true, false);
  std::string why;
  if (!matches(p, hp, 1e-6, why) || !matches(b, hb, 1e-6, why)) {
    state.SkipWithError(("SGD on the GPU differs from the CPU: " + why).c_str());
    return;
  }
  time_gpu(state, step, /*flush=*/true);
  report_bytes(state, 20.0 * n);
}

// Global-norm clipping's device part: the squared norm (reads g) and the scale (reads and writes
// g): 12 bytes per parameter.
void BM_ClipGradNorm(benchmark::State& state) {
  if (!require_gpu(state)) return;
  const int64_t n = state.range(0);
  Tensor hg = pattern(n, 8, -1, 1);
  Tensor g = hg.to(gpu());
  Tensor sq = empty({1 + kernels::cuda::kSquaredNormPartials}, DType::f64, gpu());
  cudaStream_t s = cuda_stream(gpu());
  kernels::cuda::squared_norm(g.data<float>(), n, sq.data<double>(), sq.data<double>() + 1, s);
  double want = 0;
  kernels::cpu::squared_norm(hg.data<float>(), n, &want, nullptr);
  const double got = sq.narrow(0, 0, 1).item();
  if (!(std::abs(got - want) <= 1e-10 * want)) {
    state.SkipWithError(
        ("squared norm " + std::to_string(got) + " vs the CPU's " + std::to_string(want)).c_str());
    return;
  }
  time_gpu(
      state,
      [&] {
        kernels::cuda::squared_norm(g.data<float>(), n, sq.data<double>(), sq.data<double>() + 1,
                                    s);
        // max_norm above the norm: the gradient is read but left unchanged between runs
        kernels::cuda::clip_scale(g.data<float>(), n, sq.data<double>(), 1e30, s);
      },
      /*flush=*/true);
  report_bytes(state, 8.0 * n);
}

constexpr int64_t kRefCnn = 1100000, kLarge = 100000000;
BENCHMARK(BM_AdamStep)->Arg(kRefCnn)->Arg(kLarge)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SgdMomentumStep)
    ->Arg(kRefCnn)
    ->Arg(kLarge)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ClipGradNorm)
    ->Arg(kRefCnn)
    ->Arg(kLarge)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// ---- joint loss ---------------------------------------------------------------------------------

constexpr int kTerms = 7;  // 3 exits, then heads {0,1}, {0,2}, {1,2}, {0,1,2}
constexpr int64_t kClasses = 10;

struct LossProblem {
  std::vector<Tensor> cpu, gpu;
  Tensor labels_cpu, labels_gpu;
  method::JointLossOptions options;
};

LossProblem make_loss_problem(int64_t batch) {
  LossProblem p;
  Generator gen(42);
  for (int k = 0; k < kTerms; ++k) {
    Tensor z = randn({batch, kClasses}, gen, DType::f32);
    p.cpu.push_back(z.detach().requires_grad_());
    p.gpu.push_back(z.to(gpu()).requires_grad_());
  }
  p.labels_cpu = randint(0, kClasses, {batch}, gen);
  p.labels_gpu = p.labels_cpu.to(gpu());
  p.options.weights.assign(kTerms, 1.0);
  p.options.label_smoothing = 0.1;
  p.options.diversity_weight = 0.1;
  p.options.diversity_margin = 50.0;  // above the ~20 mean squared distance: the hinge is active
  p.options.diversity_pairs = {{0, 1}, {0, 2}, {1, 2}};
  return p;
}

// loss(logits on the GPU) forward + backward against the fused loss on the CPU.
template <class F>
bool loss_matches_cpu(LossProblem& p, F&& loss, std::string& why) {
  Tensor ref = method::joint_loss(p.cpu, p.labels_cpu, Tensor(), p.options).total;
  ref.backward();
  Tensor got = loss();
  got.backward();
  if (!(std::abs(got.item() - ref.item()) <= 1e-5 * (1 + std::abs(ref.item())))) {
    why = "loss " + std::to_string(got.item()) + " vs " + std::to_string(ref.item());
    return false;
  }
  for (int k = 0; k < kTerms; ++k) {
    if (!matches(p.gpu[k].grad(), p.cpu[k].grad(), 1e-4, why)) {
      why = "gradient of term " + std::to_string(k) + ": " + why;
      return false;
    }
    p.gpu[k].zero_grad();
    p.cpu[k].zero_grad();
  }
  return true;
}

template <class F>
void run_loss(benchmark::State& state, F&& loss) {
  if (!require_gpu(state)) return;
  LossProblem p = make_loss_problem(state.range(0));
  std::string why;
  try {
    if (!loss_matches_cpu(
            p, [&] { return loss(p); }, why)) {
      state.SkipWithError(("differs from the CPU: " + why).c_str());
      return;
    }
    // Host time included: the fused op reads its per-term losses back (one synchronisation), the
    // composed one launches dozens of kernels.
    time_gpu(state, [&] {
      loss(p).backward();
      for (Tensor& z : p.gpu) z.zero_grad();
    });
  } catch (const Error& e) {
    state.SkipWithError(e.what());  // e.g. an op of the composed loss without a CUDA kernel yet
    return;
  }
  state.SetLabel(device_name());
}

void BM_JointLossFusedGpu(benchmark::State& state) {
  run_loss(state, [](LossProblem& p) {
    return method::joint_loss(p.gpu, p.labels_gpu, Tensor(), p.options).total;
  });
}

void BM_JointLossComposedGpu(benchmark::State& state) {
  run_loss(state, [](LossProblem& p) {
    return method::joint_loss_reference(p.gpu, p.labels_gpu, Tensor(), p.options);
  });
}

BENCHMARK(BM_JointLossFusedGpu)
    ->Arg(256)
    ->Arg(4096)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_JointLossComposedGpu)
    ->Arg(256)
    ->Arg(4096)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace mel::bench

BENCHMARK_MAIN();
