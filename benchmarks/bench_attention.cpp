// CPU causal multi-head self-attention, f32: the fused op (core/ops_attention.h) against the same
// attention composed from mel ops (matmul, causal mask, softmax, matmul), forward and forward +
// backward through autograd. GFLOP/s count the products the causal mask keeps: forward
// 2 * B * T^2 * D (half of q k^T and of P v), backward 2.5 times that (five products), the same
// nominal count for both versions, so their ratio is the speed-up. Every shape is checked once
// (fused against composed, output and gradient) before timing; a mismatch aborts the run.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

#include "core/mel.h"
#include "kernels/cpu/gemm.h"

namespace {

using mel::DType;
using mel::Shape;
using mel::Tensor;

// The attention composed from primitive ops, as a model would write it without the fused op.
Tensor composed_attention(const Tensor& qkv, int64_t H) {
  const int64_t B = qkv.shape()[0], T = qkv.shape()[1], D = qkv.shape()[2] / 3, Dh = D / H;
  auto heads = [&](int64_t part) {
    return qkv.narrow(2, part * D, D).reshape({B, T, H, Dh}).permute({0, 2, 1, 3});
  };
  static Tensor mask;
  if (!mask.defined() || mask.shape()[0] != T) {
    std::vector<double> m(static_cast<size_t>(T * T), 0.0);
    for (int64_t i = 0; i < T; ++i) {
      for (int64_t j = i + 1; j < T; ++j) m[i * T + j] = -std::numeric_limits<double>::infinity();
    }
    mask = mel::tensor(m, {T, T}, DType::f32);
  }
  Tensor s = mel::matmul(heads(0), heads(1).transpose(2, 3));
  Tensor p = mel::softmax(mel::add(mel::mul(s, 1.0 / std::sqrt(double(Dh))), mask), 3);
  return mel::matmul(p, heads(2)).permute({0, 2, 1, 3}).reshape({B, T, D});
}

Tensor fused_attention(const Tensor& qkv, int64_t H) {
  return mel::causal_self_attention(qkv, H);
}

void check_close(const Tensor& got, const Tensor& want, const char* what) {
  const std::vector<double> a = got.to_vector(), b = want.to_vector();
  for (size_t i = 0; i < a.size(); ++i) {
    if (!(std::abs(a[i] - b[i]) <= 1e-4 + 1e-3 * std::abs(b[i]))) {
      std::fprintf(stderr, "bench_attention: %s element %zu: fused %.9g, composed %.9g\n", what, i,
                   a[i], b[i]);
      std::abort();
    }
  }
}

struct Problem {
  int64_t B, T, D, H;
  Tensor x, gy;
};

Problem make_problem(const benchmark::State& state) {
  Problem p{state.range(0), state.range(1), state.range(2), state.range(3), {}, {}};
  mel::Generator gen(1);
  p.x = mel::randn({p.B, p.T, 3 * p.D}, gen, DType::f32);
  p.gy = mel::randn({p.B, p.T, p.D}, gen, DType::f32);
  return p;
}

// Fused against composed once per shape: outputs and input gradients.
void check_shape(const Problem& p) {
  static std::vector<std::vector<int64_t>> done;
  const std::vector<int64_t> key{p.B, p.T, p.D, p.H};
  for (const auto& k : done) {
    if (k == key) return;
  }
  done.push_back(key);
  Tensor xf = p.x.detach().requires_grad_(), xc = p.x.detach().requires_grad_();
  Tensor yf = fused_attention(xf, p.H), yc = composed_attention(xc, p.H);
  check_close(yf, yc, "output");
  yf.backward(p.gy);
  yc.backward(p.gy);
  check_close(xf.grad(), xc.grad(), "gradient");
}

void report(benchmark::State& state, const Problem& p, double factor) {
  const double flops = factor * 2.0 * p.B * static_cast<double>(p.T * p.T) * p.D;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = omp_get_max_threads();
  state.SetLabel(mel::kernels::cpu::gemm_backend());
}

template <Tensor (*F)(const Tensor&, int64_t)>
void BM_Forward(benchmark::State& state) {
  Problem p = make_problem(state);
  check_shape(p);
  mel::autograd::NoGradGuard no_grad;
  for (auto _ : state) {
    Tensor y = F(p.x, p.H);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  report(state, p, 1.0);
}

template <Tensor (*F)(const Tensor&, int64_t)>
void BM_ForwardBackward(benchmark::State& state) {
  Problem p = make_problem(state);
  check_shape(p);
  for (auto _ : state) {
    Tensor x = p.x.detach().requires_grad_();
    F(x, p.H).backward(p.gy);
    benchmark::DoNotOptimize(x.grad().data_ptr());
  }
  report(state, p, 3.5);
}

// {B, T, D, H}: GPT-small-like blocks (Dh = 64 and 32) and one long sequence.
void shapes(benchmark::internal::Benchmark* b) {
  b->Args({64, 128, 256, 4})->Args({32, 128, 128, 4})->Args({4, 1024, 256, 4});
  b->ArgNames({"B", "T", "D", "H"})->UseRealTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Forward<fused_attention>)->Name("Fused/Forward")->Apply(shapes);
BENCHMARK(BM_Forward<composed_attention>)->Name("Composed/Forward")->Apply(shapes);
BENCHMARK(BM_ForwardBackward<fused_attention>)->Name("Fused/ForwardBackward")->Apply(shapes);
BENCHMARK(BM_ForwardBackward<composed_attention>)->Name("Composed/ForwardBackward")->Apply(shapes);

}  // namespace

BENCHMARK_MAIN();
