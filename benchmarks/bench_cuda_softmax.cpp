// GPU softmax, cross-entropy and batch-norm kernels, forward + backward, f32: time per call, the
// bytes the kernels move as GB/s, and that as a fraction of the device's peak DRAM bandwidth.
// Each shape is first checked against the CPU op (values and gradients).
#include <benchmark/benchmark.h>

#include <cmath>

#include "benchmarks/cuda_bench.h"
#include "core/ops_nn.h"
#include "core/ops_norm.h"
#include "kernels/cuda/norm.h"
#include "kernels/cuda/softmax.h"

namespace mel::bench {
namespace {

bool close(const Tensor& gpu_t, const Tensor& cpu_t, double atol, double rtol) {
  const std::vector<double> a = gpu_t.to_vector(), b = cpu_t.to_vector();
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!(std::abs(a[i] - b[i]) <= atol + rtol * std::abs(b[i]))) return false;
  }
  return true;
}

Tensor uniform(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Generator gen(seed);
  return rand(s, gen, DType::f32, lo, hi);
}

void report(benchmark::State& state, double bytes) {
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_frac"] =
      benchmark::Counter(bytes / peak_bandwidth(), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(device_name());
}

// Forward + backward of `f` on the GPU and on the CPU with the same upstream gradient.
template <class F>
bool check_against_cpu(F&& f, const Tensor& x_cpu, double atol, double rtol) {
  Tensor xc = x_cpu.detach().requires_grad_();
  Tensor xg = x_cpu.to(gpu()).requires_grad_();
  Tensor yc = f(xc), yg = f(xg);
  Tensor gy = uniform(yc.shape(), 7);
  yc.backward(gy);
  yg.backward(gy.to(gpu()));
  return close(yg, yc, atol, rtol) && close(xg.grad(), xc.grad(), atol, rtol);
}

// softmax over rows of [n, c] then its backward: reads x, y, gy and writes y, gx.
void BM_Softmax(benchmark::State& state) {
  if (!require_gpu(state)) return;
  const int64_t n = state.range(0), c = state.range(1);
  Tensor x_cpu = uniform({n, c}, 1, -4.0, 4.0);
  if (!check_against_cpu([](const Tensor& t) { return softmax(t, 1); }, x_cpu, 1e-5, 1e-4)) {
    state.SkipWithError("GPU softmax differs from the CPU");
    return;
  }
  Tensor x = x_cpu.to(gpu()), gy = uniform({n, c}, 2).to(gpu());
  Tensor y = empty({n, c}, DType::f32, gpu()), gx = empty({n, c}, DType::f32, gpu());
  cudaStream_t s = cuda_stream(gpu());
  time_gpu(
      state,
      [&] {
        kernels::cuda::softmax<float>(x.data<float>(), n, c, 1, y.data<float>(), s);
        kernels::cuda::softmax_backward<float>(y.data<float>(), gy.data<float>(), n, c, 1,
                                               gx.data<float>(), s);
      },
      /*flush=*/true);
  report(state, 5.0 * static_cast<double>(n * c) * sizeof(float));
}

// Mean cross-entropy with label smoothing: forward, reduction and backward.
void BM_CrossEntropy(benchmark::State& state) {
  if (!require_gpu(state)) return;
  const int64_t n = state.range(0), c = state.range(1);
  Tensor x_cpu = uniform({n, c}, 3, -4.0, 4.0);
  Generator gen(4);
  Tensor lab_cpu = randint(0, c, {n}, gen);
  CrossEntropyOptions o;
  o.label_smoothing = 0.1;
  Tensor lab = lab_cpu.to(gpu());
  auto f = [&](const Tensor& t) {
    return cross_entropy(t, t.device().is_cuda() ? lab : lab_cpu, o);
  };
  if (!check_against_cpu(f, x_cpu, 1e-5, 1e-4)) {
    state.SkipWithError("GPU cross_entropy differs from the CPU");
    return;
  }
  Tensor x = x_cpu.to(gpu());
  Tensor rows = empty({n}, DType::f32, gpu()), lse = empty({n}, DType::f32, gpu());
  Tensor out = empty({}, DType::f32, gpu()), gy = ones({}, DType::f32, gpu());
  Tensor scale = empty({1}, DType::f64, gpu()), dx = empty({n, c}, DType::f32, gpu());
  cudaStream_t s = cuda_stream(gpu());
  time_gpu(
      state,
      [&] {
        kernels::cuda::cross_entropy_forward<float>(x.data<float>(), lab.data<int64_t>(), n, c, 0.1,
                                                    -100, rows.data<float>(), lse.data<float>(), s);
        kernels::cuda::cross_entropy_reduce<float>(rows.data<float>(), lab.data<int64_t>(), n, -100,
                                                   true, out.data<float>(), scale.data<double>(),
                                                   s);
        kernels::cuda::cross_entropy_backward<float>(
            x.data<float>(), lab.data<int64_t>(), lse.data<float>(), gy.data<float>(), 0, 1.0, n, c,
            0.1, -100, dx.data<float>(), scale.data<double>(), s);
      },
      /*flush=*/true);
  // logits read twice and dlogits written; labels read three times; rows and lse out and back
  const double nc = static_cast<double>(n * c), nn = static_cast<double>(n);
  report(state, 3.0 * nc * sizeof(float) + nn * (3 * sizeof(int64_t) + 4 * sizeof(float)));
}

// Training batch norm of [n, c, h, w]: forward (statistics, then normalise) and backward (sums,
// then the input gradient). Reads x twice and writes y; reads x, gy twice and writes gx.
void BM_BatchNorm(benchmark::State& state) {
  if (!require_gpu(state)) return;
  const int64_t n = state.range(0), c = state.range(1), h = state.range(2), w = state.range(3);
  Tensor x_cpu = uniform({n, c, h, w}, 5, -2.0, 3.0);
  Tensor w_cpu = uniform({c}, 6, 0.5, 1.5), b_cpu = uniform({c}, 7);
  Tensor wg = w_cpu.to(gpu()), bg = b_cpu.to(gpu());
  auto f = [&](const Tensor& t) {
    const bool g = t.device().is_cuda();
    return batch_norm(t, g ? wg : w_cpu, g ? bg : b_cpu, Tensor(), Tensor(), true);
  };
  if (!check_against_cpu(f, x_cpu, 1e-4, 1e-4)) {
    state.SkipWithError("GPU batch_norm differs from the CPU");
    return;
  }
  const kernels::cuda::BatchNormDims d{n, c, h * w};
  Tensor x = x_cpu.to(gpu()), gy = uniform({n, c, h, w}, 8).to(gpu());
  Tensor y = empty(x.shape(), DType::f32, gpu()), gx = empty(x.shape(), DType::f32, gpu());
  Tensor mean = empty({c}, DType::f32, gpu()), var = empty({c}, DType::f32, gpu());
  Tensor rstd = empty({c}, DType::f32, gpu());
  Tensor gw = empty({c}, DType::f32, gpu()), gb = empty({c}, DType::f32, gpu());
  void* ws = cuda_context(0).workspace(kernels::cuda::batch_norm_workspace_bytes(d, sizeof(float)));
  cudaStream_t s = cuda_stream(gpu());
  time_gpu(
      state,
      [&] {
        kernels::cuda::batch_norm_forward_train<float>(
            d, x.data<float>(), wg.data<float>(), bg.data<float>(), 1e-5, false, y.data<float>(),
            mean.data<float>(), var.data<float>(), rstd.data<float>(), ws, s);
        kernels::cuda::batch_norm_backward<float>(
            d, x.data<float>(), gy.data<float>(), mean.data<float>(), rstd.data<float>(),
            wg.data<float>(), bg.data<float>(), true, false, gx.data<float>(), gw.data<float>(),
            gb.data<float>(), ws, s);
      },
      /*flush=*/true);
  report(state, 8.0 * static_cast<double>(x.numel()) * sizeof(float));
}

BENCHMARK(BM_Softmax)
    ->Args({256, 10})
    ->Args({4096, 1000})
    ->Args({32768, 128})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CrossEntropy)
    ->Args({256, 10})
    ->Args({4096, 1000})
    ->Args({32768, 128})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BatchNorm)->Args({256, 64, 28, 28})->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace mel::bench

BENCHMARK_MAIN();
