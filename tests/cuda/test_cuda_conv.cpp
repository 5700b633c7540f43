// GPU convolution (cuDNN) against the CPU: strides, padding, dilation, groups and depthwise, 1x1
// to 5x5 kernels, odd sizes, batch 1 and 3, every float dtype, forward and the input, weight and
// bias gradients, conv1d, TF32, and the algorithm cache.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cuda_testing.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/conv.h"
#endif

namespace mel::testing {
namespace {

struct Case {
  int64_t n, c_in, h, w, c_out, kh, kw;
  int64_t stride = 1, pad = 0, dil = 1, groups = 1;
  bool bias = true;
  Conv2dOptions options() const {
    Conv2dOptions o;
    o.stride = {stride, stride};
    o.padding = {pad, pad};
    o.dilation = {dil, dil};
    o.groups = groups;
    return o;
  }
  std::string str() const {
    return "x [" + std::to_string(n) + ", " + std::to_string(c_in) + ", " + std::to_string(h) +
           ", " + std::to_string(w) + "] -> " + std::to_string(c_out) + " k" + std::to_string(kh) +
           "x" + std::to_string(kw) + " s" + std::to_string(stride) + " p" + std::to_string(pad) +
           " d" + std::to_string(dil) + " g" + std::to_string(groups) + (bias ? " bias" : "");
  }
};

// The layers' own initialisation scale (uniform within 1 / sqrt(fan_in)), so outputs stay near 1
// and the 16-bit roundings compare at the tolerances of tol_for.
struct Inputs {
  Tensor x, w, b;
};
Inputs make_inputs(const Case& c, DType dt, uint64_t seed) {
  const double bound = 1.0 / std::sqrt(double(c.c_in / c.groups * c.kh * c.kw));
  Inputs in;
  in.x = random_cpu({c.n, c.c_in, c.h, c.w}, seed, dt);
  in.w = random_cpu({c.c_out, c.c_in / c.groups, c.kh, c.kw}, seed + 1, dt, -bound, bound);
  if (c.bias) in.b = random_cpu({c.c_out}, seed + 2, dt, -bound, bound);
  return in;
}

// A CPU leaf and a GPU leaf holding the values of `t` (undefined stays undefined).
std::pair<Tensor, Tensor> leaves(const Tensor& t) {
  if (!t.defined()) return {Tensor(), Tensor()};
  Tensor g = t.to(gpu()).requires_grad_();
  Tensor c = t.clone().requires_grad_();
  return {c, g};
}

// Forward and the input, weight and bias gradients, GPU vs CPU.
void check_conv(const Case& c, DType dt, uint64_t seed = 1) {
  SCOPED_TRACE(c.str() + " " + dtype_name(dt));
  const Tol tol = tol_for(dt, true);
  const Inputs in = make_inputs(c, dt, seed);
  auto [xc, xg] = leaves(in.x);
  auto [wc, wg] = leaves(in.w);
  auto [bc, bg] = leaves(in.b);
  Tensor yc = conv2d(xc, wc, bc, c.options());
  Tensor yg = conv2d(xg, wg, bg, c.options());
  EXPECT_EQ(yg.dtype(), dt);
  ASSERT_TRUE(gpu_close(yg, yc, tol)) << "forward";
  Tensor gy = random_cpu(yc.shape(), seed + 3, dt);
  yc.backward(gy);
  yg.backward(gy.to(gpu()));
  EXPECT_TRUE(gpu_close(xg.grad(), xc.grad(), tol)) << "input grad";
  EXPECT_TRUE(gpu_close(wg.grad(), wc.grad(), tol)) << "weight grad";
  if (c.bias) {
    EXPECT_TRUE(gpu_close(bg.grad(), bc.grad(), tol)) << "bias grad";
  }
}

// {n, c_in, h, w, c_out, kh, kw, stride, pad, dilation, groups, bias}
std::vector<Case> cases() {
  return {
      {3, 3, 7, 9, 4, 3, 3, 1, 1},                   // 3x3 same padding, odd sizes
      {1, 4, 13, 11, 6, 3, 3, 2, 1},                 // stride 2, batch 1
      {3, 2, 9, 8, 3, 3, 3, 1, 2, 2},                // dilation 2, padding 2
      {3, 4, 7, 7, 6, 3, 3, 1, 1, 1, 2},             // groups 2
      {3, 6, 9, 7, 6, 3, 3, 1, 1, 1, 6},             // depthwise
      {1, 3, 8, 9, 6, 3, 3, 2, 1, 1, 3, false},      // depthwise x2, stride 2, no bias
      {3, 5, 7, 6, 7, 1, 1},                         // 1x1
      {3, 4, 9, 7, 6, 1, 1, 2, 0, 1, 2},             // 1x1, stride 2, groups 2
      {3, 2, 11, 9, 3, 5, 5, 1, 2},                  // 5x5, padding 2
      {1, 3, 15, 13, 5, 5, 5, 2, 0, 1, 1, false},    // 5x5, stride 2, no padding
      {1, 2, 3, 4, 2, 2, 2, 1, 3},                   // padding wider than the kernel
      {3, 3, 4, 5, 2, 4, 5},                         // kernel = image: 1x1 output
      {3, 16, 14, 14, 32, 3, 3, 1, 1, 1, 1, false},  // a CNN layer
  };
}

TEST(CudaConv2d, MatchesCpuF32) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  for (const Case& c : cases()) check_conv(c, DType::f32);
}

TEST(CudaConv2d, MatchesCpuF64) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  for (const Case& c : cases()) check_conv(c, DType::f64);
}

TEST(CudaConv2d, MatchesCpuHalfTypes) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  for (DType dt : {DType::f16, DType::bf16}) {
    for (const Case& c : cases()) check_conv(c, dt);
  }
}

TEST(CudaConv2d, NonContiguousInput) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  // [N, C, W, H] storage seen as [N, C, H, W]: the op convolves a contiguous copy
  Tensor xc = random_cpu({3, 4, 9, 7}, 1).transpose(2, 3);
  Tensor xg = to_gpu_keep_strides(xc);
  ASSERT_FALSE(xg.is_contiguous());
  Tensor w = random_cpu({5, 4, 3, 3}, 2, DType::f32, -0.15, 0.15);
  Conv2dOptions o;
  o.padding = {1, 1};
  EXPECT_TRUE(gpu_close(conv2d(xg, w.to(gpu()), Tensor(), o), conv2d(xc, w, Tensor(), o),
                        tol_for(DType::f32, true)));
}

TEST(CudaConv2d, OnlyRequestedGradients) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  // a first layer: the input needs no gradient, so backward runs only the filter gradient
  Tensor x = random_cpu({3, 1, 12, 12}, 2).to(gpu());
  auto [wc, wg] = leaves(random_cpu({8, 1, 3, 3}, 3, DType::f32, -0.3, 0.3));
  Conv2dOptions o;
  o.padding = {1, 1};
  Tensor gy = random_cpu({3, 8, 12, 12}, 4);
  conv2d(x, wg, Tensor(), o).backward(gy.to(gpu()));
  conv2d(x.to(Device::cpu()), wc, Tensor(), o).backward(gy);
  EXPECT_FALSE(x.grad().defined());
  EXPECT_TRUE(gpu_close(wg.grad(), wc.grad(), tol_for(DType::f32, true)));
}

TEST(CudaConv1d, MatchesCpu) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  for (DType dt : {DType::f32, DType::f64, DType::f16}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tol tol = tol_for(dt, true);
    auto [xc, xg] = leaves(random_cpu({3, 4, 33}, 5, dt));
    auto [wc, wg] = leaves(random_cpu({6, 2, 5}, 6, dt, -0.3, 0.3));
    auto [bc, bg] = leaves(random_cpu({6}, 7, dt, -0.3, 0.3));
    // stride 2, padding 3, dilation 2, groups 2
    Tensor yc = conv1d(xc, wc, bc, 2, 3, 2, 2);
    Tensor yg = conv1d(xg, wg, bg, 2, 3, 2, 2);
    ASSERT_TRUE(gpu_close(yg, yc, tol));
    Tensor gy = random_cpu(yc.shape(), 8, dt);
    yc.backward(gy);
    yg.backward(gy.to(gpu()));
    EXPECT_TRUE(gpu_close(xg.grad(), xc.grad(), tol)) << "input grad";
    EXPECT_TRUE(gpu_close(wg.grad(), wc.grad(), tol)) << "weight grad";
    EXPECT_TRUE(gpu_close(bg.grad(), bc.grad(), tol)) << "bias grad";
  }
}

// The second call of a shape reuses the chosen algorithms (no new cache entry) and, as they are
// deterministic, reproduces the first result bit for bit; TF32 is a separate entry.
TEST(CudaConv2d, AlgorithmCacheAndTf32) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  Tf32Guard guard;
  set_allow_tf32(false);
  const Case c{3, 24, 15, 13, 40, 3, 3, 1, 1};
  const Inputs in = make_inputs(c, DType::f32, 21);
  Tensor xg = in.x.to(gpu()), wg = in.w.to(gpu()), bg = in.b.to(gpu());
  Tensor gy = random_cpu({3, 40, 15, 13}, 22).to(gpu());
  auto run = [&](Tensor& dx, Tensor& dw, Tensor& db) {
    Tensor x = xg.detach().requires_grad_(), w = wg.detach().requires_grad_();
    Tensor b = bg.detach().requires_grad_();
    Tensor y = conv2d(x, w, b, c.options());
    y.backward(gy);
    dx = x.grad();
    dw = w.grad();
    db = b.grad();
    return y;
  };
  Tensor dx1, dw1, db1, dx2, dw2, db2;
  Tensor y1 = run(dx1, dw1, db1);
#ifdef MEL_HAVE_CUDA
  auto& cache = cuda_context(0).cache<kernels::cuda::ConvCache>("conv");
  const size_t entries = cache.size(), algos = cache.algorithms();
  EXPECT_GE(algos, 3u);
#endif
  Tensor y2 = run(dx2, dw2, db2);
#ifdef MEL_HAVE_CUDA
  EXPECT_EQ(cache.size(), entries);
  EXPECT_EQ(cache.algorithms(), algos);
#endif
  EXPECT_TRUE(all_close(y2, y1, 0, 0));
  EXPECT_TRUE(all_close(dx2, dx1, 0, 0));
  EXPECT_TRUE(all_close(dw2, dw1, 0, 0));
  EXPECT_TRUE(all_close(db2, db1, 0, 0));
  Tensor ref = conv2d(in.x, in.w, in.b, c.options());
  EXPECT_TRUE(gpu_close(y1, ref, tol_for(DType::f32, true)));

  set_allow_tf32(true);
  Tensor y_tf32 = conv2d(xg, wg, bg, c.options());
#ifdef MEL_HAVE_CUDA
  EXPECT_EQ(cache.size(), entries + 1);
#endif
  EXPECT_LE(max_rel_error(y_tf32, ref), 2e-3);
}

TEST(CudaConv2d, EmptyBatch) {
  MEL_REQUIRE_GPU();
  Tensor x = zeros({0, 3, 5, 5}, DType::f32, gpu());
  auto [wc, wg] = leaves(random_cpu({4, 3, 3, 3}, 9));
  Tensor y = conv2d(x, wg);
  EXPECT_EQ(y.shape(), (Shape{0, 4, 3, 3}));
  y.backward(zeros({0, 4, 3, 3}, DType::f32, gpu()));
  ASSERT_TRUE(wg.grad().defined());
  EXPECT_TRUE(gpu_close(wg.grad(), zeros({4, 3, 3, 3}), Tol{0, 0}));
}

}  // namespace
}  // namespace mel::testing
