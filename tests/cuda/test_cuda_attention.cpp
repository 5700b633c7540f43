// GPU parity of the fused causal self-attention (core/ops_attention.h): forward and the gradient
// through autograd against the CPU kernels, on odd shapes covering every head-dim tile of the CUDA
// kernels (32, 64, 128), more query rows and keys than one tile, strided inputs and an explicit
// scale; bitwise repeatability; the head-dim limit. Tolerances: tol_for(dtype, true).
#include <gtest/gtest.h>

#include "core/ops_attention.h"
#include "nn_parity.h"

namespace mel::testing {
namespace {

struct AttnCase {
  int64_t B, T, H, Dh;
  double scale;
};

// T = 1, T across the 32-row tiles (33, 40), Dh 1, 5, 40 (tile 64), 100 and 128 (tile 128), H = 1
// and 3.
const AttnCase kCases[] = {{2, 33, 3, 5, 0.0},  {1, 1, 2, 4, 0.0},    {1, 40, 1, 40, 0.0},
                           {2, 9, 2, 100, 0.0}, {1, 18, 1, 128, 0.5}, {3, 5, 3, 1, 0.0}};

TEST(CudaAttention, ForwardAndBackwardMatchCpu) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 1;
  for (DType dt : {DType::f32, DType::f64}) {
    for (const AttnCase& c : kCases) {
      const Shape s{c.B, c.T, 3 * c.H * c.Dh};
      Tensor x = random_cpu(s, seed++, dt, -2.0, 2.0);
      auto f = [&](const std::vector<Tensor>& in) {
        return causal_self_attention(in[0], c.H, c.scale);
      };
      EXPECT_TRUE(parity(f, {x}, {true}, tol_for(dt, true), seed++))
          << dtype_name(dt) << " " << shape_str(s) << " heads " << c.H;
    }
  }
}

TEST(CudaAttention, StridedInputAndEmptyBatch) {
  MEL_REQUIRE_GPU();
  auto f = [](const std::vector<Tensor>& in) { return causal_self_attention(in[0], 2); };
  Tensor x = random_strided_cpu({2, 35, 24}, 50, DType::f32);
  ASSERT_FALSE(x.is_contiguous());
  EXPECT_TRUE(parity(f, {x}, {true}, tol_for(DType::f32, true)));
  Tensor e = zeros({0, 4, 24}, DType::f32, gpu()).requires_grad_();
  Tensor y = causal_self_attention(e, 2);
  EXPECT_EQ(y.shape(), (Shape{0, 4, 8}));
  sum(y).backward();
  EXPECT_EQ(e.grad().shape(), e.shape());
}

TEST(CudaAttention, RepeatsBitwise) {
  MEL_REQUIRE_GPU();
  Tensor x0 = random_cpu({2, 37, 3 * 2 * 16}, 60, DType::f32).to(gpu());
  Tensor gy = random_cpu({2, 37, 2 * 16}, 61, DType::f32).to(gpu());
  auto run = [&] {
    Tensor x = x0.detach().requires_grad_();
    Tensor y = causal_self_attention(x, 2);
    y.backward(gy);
    return std::vector<std::vector<double>>{y.to_vector(), x.grad().to_vector()};
  };
  EXPECT_EQ(run(), run());
}

TEST(CudaAttention, HeadDimLimit) {
  MEL_REQUIRE_GPU();
  EXPECT_MEL_ERROR(causal_self_attention(zeros({1, 3, 3 * 129}, DType::f32, gpu()), 1),
                   "causal_self_attention", "head dim 129", "128");
  // the CPU has no limit
  EXPECT_EQ(causal_self_attention(zeros({1, 3, 3 * 129}), 1).shape(), (Shape{1, 3, 129}));
}

}  // namespace
}  // namespace mel::testing
