// CPU benchmarks of the CNN-layer ops at training shapes: batch norm (training mode, alone and
// fused with ReLU) and 2x2 max pooling, forward and forward + backward, in GB/s of compulsory
// traffic (each tensor read or written once). Results are checked against naive loops before
// timing.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/mel.h"
#include "core/ops_conv.h"
#include "core/ops_norm.h"
#include "core/ops_norm_fused.h"

namespace {

using mel::DType;
using mel::Shape;
using mel::Tensor;

[[noreturn]] void die(const char* what, double got, double want) {
  std::fprintf(stderr, "bench_norm: %s: got %.9g, expected %.9g\n", what, got, want);
  std::abort();
}

// The two CNN shapes of the brief: early (many pixels, few channels) and late layers.
Shape shape_of(int64_t i) {
  return i == 0 ? Shape{256, 64, 28, 28} : Shape{256, 256, 7, 7};
}

Tensor random_f32(const Shape& shape, uint64_t seed) {
  mel::Generator gen(seed);
  return mel::randn(shape, gen, DType::f32, 0.5, 2.0);
}

void set_rate(benchmark::State& state, double bytes_per_iter, const Shape& s) {
  state.counters["GB/s"] = benchmark::Counter(
      bytes_per_iter * static_cast<double>(state.iterations()) * 1e-9, benchmark::Counter::kIsRate);
  state.counters["threads"] = omp_get_max_threads();
  state.SetLabel(mel::shape_str(s));
}

// Channel c of y = batch_norm(x) against statistics computed in double from x.
void check_batch_norm(const Tensor& x, const Tensor& y, const Tensor& w, const Tensor& b, int64_t c,
                      bool relu) {
  const Shape& s = x.shape();
  const int64_t N = s[0], C = s[1], S = s[2] * s[3];
  const float* px = x.data<float>();
  const float* py = y.data<float>();
  double m = 0, v = 0;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t i = 0; i < S; ++i) m += px[(n * C + c) * S + i];
  }
  m /= static_cast<double>(N * S);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t i = 0; i < S; ++i) v += std::pow(px[(n * C + c) * S + i] - m, 2);
  }
  v /= static_cast<double>(N * S);
  for (int64_t n = 0; n < N; n += 37) {
    for (int64_t i = 0; i < S; i += 5) {
      const int64_t at = (n * C + c) * S + i;
      double want = (px[at] - m) / std::sqrt(v + 1e-5) * w.at({c}) + b.at({c});
      if (relu) want = std::max(want, 0.0);
      if (std::abs(py[at] - want) > 1e-4 * (1 + std::abs(want))) die("batch_norm", py[at], want);
    }
  }
}

struct BnSetup {
  Tensor x, w, b, rm, rv, g;
};
BnSetup bn_setup(const Shape& s) {
  BnSetup u;
  const int64_t C = s[1];
  u.x = random_f32(s, 1);
  u.x.requires_grad_();
  u.w = random_f32({C}, 2);
  u.w.requires_grad_();
  u.b = random_f32({C}, 3);
  u.b.requires_grad_();
  u.rm = mel::zeros({C});
  u.rv = mel::ones({C});
  u.g = random_f32(s, 4);
  return u;
}

// Forward only: read x, write y.
void BM_BatchNormForward(benchmark::State& state) {
  const Shape s = shape_of(state.range(0));
  BnSetup u = bn_setup(s);
  mel::autograd::NoGradGuard ng;
  Tensor y = mel::batch_norm(u.x, u.w, u.b, u.rm, u.rv, true);
  check_batch_norm(u.x, y, u.w, u.b, 3, false);
  for (auto _ : state) {
    Tensor out = mel::batch_norm(u.x, u.w, u.b, u.rm, u.rv, true);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  set_rate(state, 2.0 * static_cast<double>(u.x.nbytes()), s);
}

// Forward + the node's backward (no gradient accumulation into leaves): x, y, then x, gy, gx.
void bn_forward_backward(benchmark::State& state, int mode) {
  const Shape s = shape_of(state.range(0));
  BnSetup u = bn_setup(s);
  auto step = [&]() {
    Tensor y = mode == 1   ? mel::batch_norm_relu(u.x, u.w, u.b, u.rm, u.rv, true)
               : mode == 2 ? mel::relu(mel::batch_norm(u.x, u.w, u.b, u.rm, u.rv, true))
                           : mel::batch_norm(u.x, u.w, u.b, u.rm, u.rv, true);
    if (mode == 2) {  // through both nodes, as the engine would
      std::vector<Tensor> gr = y.grad_fn()->apply(u.g);
      return y.grad_fn()->next[0]->apply(gr[0]);
    }
    return y.grad_fn()->apply(u.g);
  };
  {
    mel::autograd::NoGradGuard ng;
    check_batch_norm(u.x, mel::batch_norm(u.x, u.w, u.b, u.rm, u.rv, true), u.w, u.b, 5, false);
    check_batch_norm(u.x, mel::batch_norm_relu(u.x, u.w, u.b, u.rm, u.rv, true), u.w, u.b, 6, true);
  }
  for (auto _ : state) {
    std::vector<Tensor> grads = step();
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
  set_rate(state, 5.0 * static_cast<double>(u.x.nbytes()), s);
}
void BM_BatchNormForwardBackward(benchmark::State& state) {
  bn_forward_backward(state, 0);
}
void BM_BatchNormReluFusedForwardBackward(benchmark::State& state) {
  bn_forward_backward(state, 1);
}
void BM_BatchNormThenReluForwardBackward(benchmark::State& state) {
  bn_forward_backward(state, 2);
}

void check_max_pool(const Tensor& x, const Tensor& y) {
  const Shape& s = x.shape();
  const int64_t H = s[2], W = s[3], OH = H / 2, OW = W / 2;
  const int64_t planes = s[0] * s[1];
  const float* px = x.data<float>();
  const float* py = y.data<float>();
  for (int64_t p = 0; p < planes; p += 101) {
    for (int64_t i = 0; i < OH; ++i) {
      for (int64_t j = 0; j < OW; ++j) {
        const float* q = px + (p * H + 2 * i) * W + 2 * j;
        const float want = std::max(std::max(q[0], q[1]), std::max(q[W], q[W + 1]));
        if (py[(p * OH + i) * OW + j] != want) die("max_pool2d", py[(p * OH + i) * OW + j], want);
      }
    }
  }
}

mel::Pool2dOptions pool2x2() {
  mel::Pool2dOptions o;
  o.kernel = {2, 2};
  return o;
}

// Forward: read x, write y and the i32 argmax (a quarter of x each).
void BM_MaxPool2x2Forward(benchmark::State& state) {
  const Shape s = shape_of(state.range(0));
  Tensor x = random_f32(s, 5);
  x.requires_grad_();
  check_max_pool(x, mel::max_pool2d(x, pool2x2()));
  for (auto _ : state) {
    Tensor y = mel::max_pool2d(x, pool2x2());
    benchmark::DoNotOptimize(y.data_ptr());
  }
  set_rate(state, 1.5 * static_cast<double>(x.nbytes()), s);
}

// Forward + backward: the above, then read gy and argmax, write gx.
void BM_MaxPool2x2ForwardBackward(benchmark::State& state) {
  const Shape s = shape_of(state.range(0));
  Tensor x = random_f32(s, 6);
  x.requires_grad_();
  Shape os = s;
  os[2] /= 2;
  os[3] /= 2;
  Tensor g = random_f32(os, 7);
  for (auto _ : state) {
    Tensor y = mel::max_pool2d(x, pool2x2());
    std::vector<Tensor> grads = y.grad_fn()->apply(g);
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
  set_rate(state, 3.0 * static_cast<double>(x.nbytes()), s);
}

#define MEL_BENCH_SHAPES(fn) \
  BENCHMARK(fn)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond)
MEL_BENCH_SHAPES(BM_BatchNormForward);
MEL_BENCH_SHAPES(BM_BatchNormForwardBackward);
MEL_BENCH_SHAPES(BM_BatchNormReluFusedForwardBackward);
MEL_BENCH_SHAPES(BM_BatchNormThenReluForwardBackward);
MEL_BENCH_SHAPES(BM_MaxPool2x2Forward);
MEL_BENCH_SHAPES(BM_MaxPool2x2ForwardBackward);

}  // namespace

BENCHMARK_MAIN();
