// GPU GEMM benchmarks: mel's matmul (cuBLASLt through the op layer, output allocated per call)
// beside a direct cublasGemmEx call on the same operands, for f32 with TF32 off and on and for
// bf16, on square products and on the reference CNN's linear layer (batch 256: forward, input
// gradient, weight gradient) and a MEL combination head. Reports TFLOP/s and the fraction of the
// device's clock-rate peak (sm_90 only). Every result is checked on sampled entries against
// double-precision dot products of the same operands before timing.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>

#include "cuda_bench.h"

namespace {

using mel::DType;
using mel::Tensor;
using mel::bench::gpu;

enum class Mode { kF32, kTf32, kBf16 };
const char* mode_name(Mode m) {
  return m == Mode::kF32 ? "f32" : m == Mode::kTf32 ? "tf32" : "bf16";
}

// Row-major C [M, N] = op(A) op(B); A is stored [K, M] when ta, B [N, K] when tb.
struct GemmShape {
  const char* name;
  bool ta, tb;
  int64_t M, N, K;
};

const GemmShape kShapes[] = {
    {"square_1024", false, false, 1024, 1024, 1024},
    {"square_4096", false, false, 4096, 4096, 4096},
    {"square_8192", false, false, 8192, 8192, 8192},
    // nn::Linear(256, 10) at batch 256: y = x W^T, dx = dy W, dW = dy^T x
    {"cnn_linear_fwd_256x10x256", false, true, 256, 10, 256},
    {"cnn_linear_dx_256x256x10", false, false, 256, 256, 10},
    {"cnn_linear_dw_10x256x256", true, false, 10, 256, 256},
    // a combination head over four concatenated 256-feature upstream outputs
    {"mel_head_fwd_256x10x1024", false, true, 256, 10, 1024},
};

// Peak dense FLOP/s of cuda:0 at its maximum clock (sm_90: 128 FP32 FMA per SM per clock, tensor
// cores 2048 TF32 or 4096 bf16 FLOP); 0 where unknown.
double peak_flops(Mode m) {
  int major = 0, sms = 0, khz = 0;
  MEL_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  MEL_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  MEL_CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0));
  if (major != 9) return 0;
  const double per_sm_clock = m == Mode::kF32 ? 256 : m == Mode::kTf32 ? 2048 : 4096;
  return per_sm_clock * sms * khz * 1e3;
}

#define BENCH_CUBLAS_CHECK(expr)                                                 \
  do {                                                                           \
    cublasStatus_t s_ = (expr);                                                  \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                           \
      std::fprintf(stderr, "%s failed: %s\n", #expr, cublasGetStatusString(s_)); \
      std::abort();                                                              \
    }                                                                            \
  } while (0)

// A cuBLAS handle on mel's stream of cuda:0, for the reference timings.
cublasHandle_t cublas() {
  static cublasHandle_t h = [] {
    cublasHandle_t handle = nullptr;
    BENCH_CUBLAS_CHECK(cublasCreate(&handle));
    BENCH_CUBLAS_CHECK(cublasSetStream(handle, mel::cuda_stream(gpu())));
    return handle;
  }();
  return h;
}

struct Operands {
  Tensor a, b;  // stored layouts, on the GPU
  Tensor c;     // output of the direct call
};

Operands make_operands(const GemmShape& s, Mode m) {
  mel::Generator gen(11);
  const DType dt = m == Mode::kBf16 ? DType::bf16 : DType::f32;
  Operands o;
  o.a = mel::rand(s.ta ? mel::Shape{s.K, s.M} : mel::Shape{s.M, s.K}, gen, DType::f32, -1, 1)
            .to(dt)
            .to(gpu());
  o.b = mel::rand(s.tb ? mel::Shape{s.N, s.K} : mel::Shape{s.K, s.N}, gen, DType::f32, -1, 1)
            .to(dt)
            .to(gpu());
  o.c = mel::empty({s.M, s.N}, dt, gpu());
  return o;
}

Tensor mel_matmul(const GemmShape& s, const Operands& o) {
  return mel::matmul(s.ta ? o.a.t() : o.a, s.tb ? o.b.t() : o.b);
}

// C^T = op(B)^T op(A)^T in cuBLAS's column-major terms, as mel's launcher does it.
void direct_gemm(const GemmShape& s, Operands& o, Mode m) {
  const float one = 1.f, zero = 0.f;
  const cudaDataType_t t = m == Mode::kBf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t ct =
      m == Mode::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
  BENCH_CUBLAS_CHECK(cublasGemmEx(cublas(), s.tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  s.ta ? CUBLAS_OP_T : CUBLAS_OP_N, int(s.N), int(s.M), int(s.K),
                                  &one, o.b.data_ptr(), t, int(ldb), o.a.data_ptr(), t, int(lda),
                                  &zero, o.c.data_ptr(), t, int(s.N), ct, CUBLAS_GEMM_DEFAULT));
}

double value(const Tensor& t, int64_t i, int64_t j) {
  return t.slice(0, i, i + 1).slice(1, j, j + 1).to(mel::Device::cpu()).item();
}

// 32 sampled entries of c against double dot products of the stored operands; the bound covers
// the operands' rounding to TF32 and the output's rounding to bf16.
bool check(const GemmShape& s, const Operands& o, const Tensor& c, Mode m, std::string& why) {
  std::mt19937 gen(5);
  const double rel = m == Mode::kF32    ? 2e-6 * std::sqrt(double(s.K)) + 1e-6
                     : m == Mode::kTf32 ? 2e-3
                                        : 1e-2;
  for (int t = 0; t < 32; ++t) {
    const int64_t i = gen() % s.M, j = gen() % s.N;
    const Tensor row = s.ta ? o.a.slice(1, i, i + 1) : o.a.slice(0, i, i + 1);
    const Tensor col = s.tb ? o.b.slice(0, j, j + 1) : o.b.slice(1, j, j + 1);
    const std::vector<double> ra = row.to(mel::Device::cpu()).to_vector();
    const std::vector<double> cb = col.to(mel::Device::cpu()).to_vector();
    double ref = 0, mag = 0;
    for (int64_t k = 0; k < s.K; ++k) {
      ref += ra[k] * cb[k];
      mag += std::abs(ra[k] * cb[k]);
    }
    const double got = value(c, i, j);
    if (!(std::abs(got - ref) <= rel * mag + 1e-6)) {
      why = "C[" + std::to_string(i) + ", " + std::to_string(j) + "] = " + std::to_string(got) +
            ", expected " + std::to_string(ref);
      return false;
    }
  }
  return true;
}

void BM_gemm(benchmark::State& state, GemmShape s, Mode m, bool direct) {
  if (!mel::bench::require_gpu(state)) return;
  const bool prev_tf32 = mel::allow_tf32();
  mel::set_allow_tf32(m == Mode::kTf32);
  Operands o = make_operands(s, m);
  Tensor c;
  auto run = [&] {
    if (direct) {
      direct_gemm(s, o, m);
    } else {
      c = mel_matmul(s, o);
    }
  };
  run();
  std::string why;
  if (!check(s, o, direct ? o.c : c, m, why)) {
    state.SkipWithError(("wrong result: " + why).c_str());
    mel::set_allow_tf32(prev_tf32);
    return;
  }
  mel::bench::time_gpu(state, run);
  const double flops = 2.0 * s.M * s.N * s.K;
  state.counters["TFLOP/s"] =
      benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  if (const double peak = peak_flops(m); peak > 0) {
    state.counters["peak_frac"] =
        benchmark::Counter(flops / peak, benchmark::Counter::kIsIterationInvariantRate);
  }
  mel::set_allow_tf32(prev_tf32);
}

}  // namespace

int main(int argc, char** argv) {
  if (mel::cuda_device_count() > 0) {
    benchmark::AddCustomContext("gpu", mel::bench::device_name());
  }
  for (const GemmShape& s : kShapes) {
    for (Mode m : {Mode::kF32, Mode::kTf32, Mode::kBf16}) {
      for (bool direct : {false, true}) {
        const std::string name = std::string("gemm/") + s.name + "/" + mode_name(m) +
                                 (direct ? "/cublasGemmEx" : "/mel_matmul");
        benchmark::RegisterBenchmark(name.c_str(), BM_gemm, s, m, direct)
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
