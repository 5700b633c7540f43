// GPU optimizer steps against the CPU: SGD (momentum, dampening, Nesterov, weight decay), Adam and
// AdamW over several steps of a small model's FlatParameters, global-norm clipping, and the raw
// kernels on unaligned buffers (the scalar path).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "cuda_testing.h"
#include "nn/layers.h"
#include "nn/optim.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cpu/optim.h"
#include "kernels/cuda/optim.h"
#endif

namespace mel::testing {
namespace {

// Parameters and state after several steps agree to 1e-6 relative (they are expected to agree
// bitwise: the GPU kernels use the CPU build's fused multiply-adds; the largest difference is
// printed).
constexpr Tol kStepTol{1e-7, 1e-6};

std::shared_ptr<nn::Sequential> make_model(uint64_t seed) {
  auto m = std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{
      std::make_shared<nn::Linear>(7, 33), nn::make_relu(), std::make_shared<nn::Linear>(33, 5)});
  Generator gen(seed);
  m->reset_parameters(gen);
  return m;
}

// The same model on the CPU and on the GPU, each with its FlatParameters (built after the move).
struct Pair {
  std::shared_ptr<nn::Sequential> cpu_model, gpu_model;
  std::unique_ptr<nn::FlatParameters> cpu, gpu;
  Pair() : cpu_model(make_model(7)), gpu_model(make_model(7)) {
    gpu_model->to(testing::gpu());
    cpu = std::make_unique<nn::FlatParameters>(*cpu_model);
    gpu = std::make_unique<nn::FlatParameters>(*gpu_model);
  }
  void set_grads(uint64_t seed) {
    Tensor g = random_cpu({cpu->numel()}, seed);
    Tensor gc = cpu->grad(), gg = gpu->grad();
    gc.copy_(g);
    gg.copy_(g.to(testing::gpu()));
  }
};

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> va = a.to_vector(), vb = b.to_vector();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::abs(va[i] - vb[i]));
  return m;
}

void expect_state_close(const nn::Optimizer& g, const nn::Optimizer& c, const std::string& what) {
  auto gs = g.state(), cs = c.state();
  ASSERT_EQ(gs.size(), cs.size());
  for (size_t i = 0; i < gs.size(); ++i) {
    if (gs[i].first == "step") {
      EXPECT_EQ(gs[i].second.item(), cs[i].second.item()) << what;
      continue;
    }
    EXPECT_TRUE(gpu_close(gs[i].second, cs[i].second, kStepTol)) << what << " " << gs[i].first;
  }
}

TEST(CudaOptim, SgdMatchesCpu) {
  MEL_REQUIRE_GPU();
  const nn::SgdOptions configs[] = {{0.0, 0.0, 0.0, false},
                                    {0.9, 0.1, 0.01, false},
                                    {0.9, 0.0, 0.001, true},
                                    {0.5, 0.0, 0.0, false}};
  int c = 0;
  for (const nn::SgdOptions& o : configs) {
    Pair p;
    ASSERT_TRUE(p.gpu->data().device().is_cuda());
    nn::Sgd oc(*p.cpu, o), og(*p.gpu, o);
    for (int step = 0; step < 6; ++step) {
      p.set_grads(100 * c + step);
      const double lr = 0.1 / (1 + step);
      const double mom = step == 3 && o.momentum > 0 ? 0.8 : -1.0;  // a one-cycle override
      oc.step(lr, mom);
      og.step(lr, mom);
    }
    const std::string what = "config " + std::to_string(c++);
    EXPECT_TRUE(gpu_close(p.gpu->data(), p.cpu->data(), kStepTol)) << what;
    expect_state_close(og, oc, what);
    std::printf("sgd %s: max |gpu - cpu| = %g\n", what.c_str(),
                max_abs_diff(p.gpu->data(), p.cpu->data()));
    // the parameters seen through the model are the flat buffer's
    auto params = p.gpu_model->named_parameters();
    EXPECT_TRUE(gpu_close(params[0].second.reshape({-1}),
                          p.cpu_model->named_parameters()[0].second.reshape({-1}), kStepTol));
  }
}

TEST(CudaOptim, AdamAndAdamWMatchCpu) {
  MEL_REQUIRE_GPU();
  const nn::AdamOptions configs[] = {{0.9, 0.999, 1e-8, 0.0, false},
                                     {0.9, 0.999, 1e-8, 0.1, false},
                                     {0.9, 0.99, 1e-6, 0.05, true}};
  int c = 0;
  for (const nn::AdamOptions& o : configs) {
    Pair p;
    nn::Adam oc(*p.cpu, o), og(*p.gpu, o);
    for (int step = 0; step < 6; ++step) {
      p.set_grads(200 * c + step);
      const double beta1 = step % 2 ? 0.95 - 0.01 * step : -1.0;
      oc.step(1e-2, beta1);
      og.step(1e-2, beta1);
    }
    const std::string what = std::string(og.name()) + " config " + std::to_string(c++);
    EXPECT_TRUE(gpu_close(p.gpu->data(), p.cpu->data(), kStepTol)) << what;
    expect_state_close(og, oc, what);
    EXPECT_EQ(og.steps(), 6);
    std::printf("%s: max |gpu - cpu| = %g\n", what.c_str(),
                max_abs_diff(p.gpu->data(), p.cpu->data()));
  }
}

TEST(CudaOptim, StateRoundTripOnGpu) {
  MEL_REQUIRE_GPU();
  Pair a, b;
  nn::Adam oa(*a.gpu, {}), ob(*b.gpu, {});
  a.set_grads(1);
  oa.step(0.1);
  ob.load_state(oa.state());
  b.gpu_model->load_state_dict(a.gpu_model->state_dict());
  a.set_grads(2);
  b.set_grads(2);
  oa.step(0.1);
  ob.step(0.1);
  EXPECT_TRUE(gpu_close(a.gpu->data(), b.gpu->data().to(Device::cpu()), {0, 0}));
}

TEST(CudaOptim, ClipGradNorm) {
  MEL_REQUIRE_GPU();
  for (double max_norm : {0.5, 1e6}) {  // clipping active, then inactive
    Pair p;
    p.set_grads(42);
    const double nc = nn::clip_grad_norm(*p.cpu, max_norm);
    const double ng = nn::clip_grad_norm(*p.gpu, max_norm);
    EXPECT_NEAR(ng, nc, 1e-12 * nc) << max_norm;
    EXPECT_TRUE(gpu_close(p.gpu->grad(), p.cpu->grad(), tol_for(DType::f32))) << max_norm;
  }
  Pair p;
  EXPECT_MEL_ERROR(nn::clip_grad_norm(*p.gpu, 0.0), "max_norm must be positive");
  p.gpu->zero_grad();
  EXPECT_EQ(nn::clip_grad_norm(*p.gpu, 1.0), 0.0);
}

TEST(CudaOptim, ModelMovedAfterFlatParametersIsAnError) {
  MEL_REQUIRE_GPU();
  auto m = make_model(3);
  nn::FlatParameters f(*m);
  nn::Sgd opt(f, {});
  m->to(gpu());  // the parameters leave the (CPU) flat buffer behind
  EXPECT_MEL_ERROR(opt.step(0.1), "no longer lives in the flat parameter buffer",
                   "build FlatParameters after moving");
}

#ifdef MEL_HAVE_CUDA
// Direct kernel calls on buffers offset by one float (no float4 accesses) and of odd lengths.
TEST(CudaOptim, UnalignedBuffersUseTheScalarPath) {
  MEL_REQUIRE_GPU();
  for (int64_t n : {1, 7, 33, 1027}) {
    Tensor host[4];
    for (int k = 0; k < 4; ++k) host[k] = random_cpu({n + 1}, 10 * n + k);
    host[3] = mul(host[3], host[3]);  // v >= 0
    Tensor dev[4];
    for (int k = 0; k < 4; ++k) dev[k] = host[k].to(gpu());
    float* hp[4];
    float* dp[4];
    for (int k = 0; k < 4; ++k) {
      hp[k] = host[k].data<float>() + 1;
      dp[k] = dev[k].data<float>() + 1;
    }
    cudaStream_t s = cuda_stream(gpu());
    kernels::cpu::adam_step(hp[0], hp[1], hp[2], hp[3], n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, true,
                            0.1, 0.001);
    kernels::cuda::adam_step(dp[0], dp[1], dp[2], dp[3], n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, true,
                             0.1, 0.001, s);
    kernels::cpu::sgd_step(hp[0], hp[1], hp[2], n, 0.1f, 0.9f, 0.0f, 0.01f, true, false);
    kernels::cuda::sgd_step(dp[0], dp[1], dp[2], n, 0.1f, 0.9f, 0.0f, 0.01f, true, false, s);
    for (int k = 0; k < 4; ++k) {
      EXPECT_TRUE(gpu_close(dev[k], host[k], kStepTol)) << "n " << n << " buffer " << k;
    }
    // the norm of the unaligned gradient, read back
    Tensor out = empty({1 + kernels::cuda::kSquaredNormPartials}, DType::f64, gpu());
    kernels::cuda::squared_norm(dp[1], n, out.data<double>(), out.data<double>() + 1, s);
    double cpu_sq = 0;
    kernels::cpu::squared_norm(hp[1], n, &cpu_sq, nullptr);
    EXPECT_NEAR(out.narrow(0, 0, 1).item(), cpu_sq, 1e-12 * cpu_sq) << n;
  }
}
#endif

}  // namespace
}  // namespace mel::testing
