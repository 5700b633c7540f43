// GPU causal multi-head self-attention, f32: the fused kernels (kernels/cuda/attention.h) forward
// and forward + backward, against the same attention composed from mel ops (cuBLASLt matmuls, the
// causal mask, softmax) through autograd. GFLOP/s count the products the causal mask keeps
// (forward 2 * B * T^2 * D, backward 2.5 times that) for both. Each shape is first checked against
// the CPU op (output and gradient).
#include <benchmark/benchmark.h>

#include <cmath>
#include <limits>
#include <vector>

#include "benchmarks/cuda_bench.h"
#include "core/ops_attention.h"
#include "kernels/cuda/attention.h"

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

Tensor uniform(const Shape& s, uint64_t seed) {
  Generator gen(seed);
  return rand(s, gen, DType::f32, -2.0, 2.0);
}

// The causal mask: 0 on and below the diagonal, -inf above.
Tensor causal_mask(int64_t T, Device d) {
  std::vector<double> m(static_cast<size_t>(T * T), 0.0);
  for (int64_t i = 0; i < T; ++i) {
    for (int64_t j = i + 1; j < T; ++j) m[i * T + j] = -std::numeric_limits<double>::infinity();
  }
  return tensor(m, {T, T}, DType::f32).to(d);
}

Tensor composed_attention(const Tensor& qkv, int64_t H, const Tensor& mask) {
  const int64_t B = qkv.shape()[0], T = qkv.shape()[1], D = qkv.shape()[2] / 3, Dh = D / H;
  auto heads = [&](int64_t part) {
    return qkv.narrow(2, part * D, D).reshape({B, T, H, Dh}).permute({0, 2, 1, 3});
  };
  Tensor s = matmul(heads(0), heads(1).transpose(2, 3));
  Tensor p = softmax(add(mul(s, 1.0 / std::sqrt(double(Dh))), mask), 3);
  return matmul(p, heads(2)).permute({0, 2, 1, 3}).reshape({B, T, D});
}

struct Problem {
  int64_t B, T, D, H;
  Tensor x_cpu, gy_cpu;
};

Problem make_problem(const benchmark::State& state) {
  Problem p{state.range(0), state.range(1), state.range(2), state.range(3), {}, {}};
  p.x_cpu = uniform({p.B, p.T, 3 * p.D}, 1);
  p.gy_cpu = uniform({p.B, p.T, p.D}, 2);
  return p;
}

// The fused op on the GPU against the CPU op: output and input gradient.
bool check_against_cpu(const Problem& p) {
  Tensor xc = p.x_cpu.detach().requires_grad_();
  Tensor xg = p.x_cpu.to(gpu()).requires_grad_();
  Tensor yc = causal_self_attention(xc, p.H), yg = causal_self_attention(xg, p.H);
  yc.backward(p.gy_cpu);
  yg.backward(p.gy_cpu.to(gpu()));
  return close(yg, yc, 1e-4, 1e-3) && close(xg.grad(), xc.grad(), 1e-4, 1e-3);
}

void report(benchmark::State& state, const Problem& p, double factor) {
  const double flops = factor * 2.0 * p.B * static_cast<double>(p.T * p.T) * p.D;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(device_name());
}

void BM_FusedForward(benchmark::State& state) {
  if (!require_gpu(state)) return;
  Problem p = make_problem(state);
  if (!check_against_cpu(p)) {
    state.SkipWithError("GPU causal_self_attention differs from the CPU");
    return;
  }
  const int64_t Dh = p.D / p.H;
  Tensor x = p.x_cpu.to(gpu());
  Tensor out = empty({p.B, p.T, p.D}, DType::f32, gpu());
  Tensor lse = empty({p.B, p.H, p.T}, DType::f32, gpu());
  cudaStream_t s = cuda_stream(gpu());
  time_gpu(state, [&] {
    kernels::cuda::causal_attention_forward<float>(x.data<float>(), p.B, p.T, p.H, Dh,
                                                   1.0 / std::sqrt(double(Dh)), out.data<float>(),
                                                   lse.data<float>(), s);
  });
  report(state, p, 1.0);
}

void BM_FusedForwardBackward(benchmark::State& state) {
  if (!require_gpu(state)) return;
  Problem p = make_problem(state);
  const int64_t Dh = p.D / p.H;
  const double scale = 1.0 / std::sqrt(double(Dh));
  Tensor x = p.x_cpu.to(gpu()), gy = p.gy_cpu.to(gpu());
  Tensor out = empty({p.B, p.T, p.D}, DType::f32, gpu());
  Tensor lse = empty({p.B, p.H, p.T}, DType::f32, gpu());
  Tensor delta = empty({p.B, p.H, p.T}, DType::f32, gpu());
  Tensor dx = empty(x.shape(), DType::f32, gpu());
  cudaStream_t s = cuda_stream(gpu());
  time_gpu(state, [&] {
    kernels::cuda::causal_attention_forward<float>(x.data<float>(), p.B, p.T, p.H, Dh, scale,
                                                   out.data<float>(), lse.data<float>(), s);
    kernels::cuda::causal_attention_backward<float>(
        x.data<float>(), out.data<float>(), lse.data<float>(), gy.data<float>(), p.B, p.T, p.H, Dh,
        scale, delta.data<float>(), dx.data<float>(), s);
  });
  report(state, p, 3.5);
}

void BM_ComposedForwardBackward(benchmark::State& state) {
  if (!require_gpu(state)) return;
  Problem p = make_problem(state);
  Tensor x0 = p.x_cpu.to(gpu()), gy = p.gy_cpu.to(gpu());
  const Tensor mask = causal_mask(p.T, gpu());
  time_gpu(state, [&] {
    Tensor x = x0.detach().requires_grad_();
    composed_attention(x, p.H, mask).backward(gy);
  });
  report(state, p, 3.5);
}

void shapes(benchmark::internal::Benchmark* b) {
  b->Args({64, 128, 256, 4})->Args({32, 128, 128, 4})->Args({8, 1024, 768, 12});
  b->ArgNames({"B", "T", "D", "H"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_FusedForward)->Apply(shapes);
BENCHMARK(BM_FusedForwardBackward)->Apply(shapes);
BENCHMARK(BM_ComposedForwardBackward)->Apply(shapes);

}  // namespace
}  // namespace mel::bench

BENCHMARK_MAIN();
