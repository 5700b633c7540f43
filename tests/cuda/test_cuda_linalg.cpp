// GPU matmul (cuBLASLt) against the CPU: odd shapes, transposed and copied operands, stacked,
// folded and broadcast batches, vector forms, empty products, every float dtype, gradients, TF32
// on and off, the plan cache, and nn::Linear with bias.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <utility>

#include "cuda_testing.h"
#include "nn/layers.h"
#ifdef MEL_HAVE_CUDA
#include "kernels/cuda/gemm.h"
#endif

namespace mel::testing {
namespace {

// The same random values as a CPU leaf and a GPU leaf, both requiring grad. With `transposed`,
// storage holds the last two dimensions swapped and view() hands out the transposed view, which
// the GEMM reads in place.
struct Leaf {
  Tensor cpu, gpu;
  bool transposed = false;
  Tensor view(bool on_gpu) const {
    const Tensor& t = on_gpu ? gpu : cpu;
    return transposed ? t.transpose(-1, -2) : t;
  }
};

Leaf make_leaf(Shape shape, uint64_t seed, DType dt, bool transposed = false) {
  const size_t n = shape.size();
  if (transposed && n >= 2) std::swap(shape[n - 1], shape[n - 2]);
  Tensor c = random_cpu(shape, seed, dt);
  Leaf l;
  l.gpu = c.to(gpu()).requires_grad_();
  l.cpu = c.requires_grad_();
  l.transposed = transposed && n >= 2;
  return l;
}

std::string label(const Shape& a, const Shape& b, DType dt, bool ta, bool tb) {
  return shape_str(a) + (ta ? "^T" : "") + " @ " + shape_str(b) + (tb ? "^T" : "") + " " +
         dtype_name(dt);
}

// Forward, and with `grads` both input gradients for a random output gradient, GPU vs CPU.
void check_matmul(const Shape& sa, const Shape& sb, DType dt, bool ta = false, bool tb = false,
                  bool grads = true, uint64_t seed = 1) {
  SCOPED_TRACE(label(sa, sb, dt, ta, tb));
  const Tol tol = tol_for(dt, true);
  Leaf a = make_leaf(sa, seed, dt, ta), b = make_leaf(sb, seed + 1, dt, tb);
  Tensor yc = matmul(a.view(false), b.view(false));
  Tensor yg = matmul(a.view(true), b.view(true));
  EXPECT_EQ(yg.dtype(), dt);
  ASSERT_TRUE(gpu_close(yg, yc, tol));
  if (!grads) return;
  Tensor gy = random_cpu(yc.shape(), seed + 2, dt);
  yc.backward(gy);
  yg.backward(gy.to(gpu()));
  ASSERT_TRUE(a.gpu.grad().defined() && b.gpu.grad().defined());
  EXPECT_TRUE(gpu_close(a.gpu.grad(), a.cpu.grad(), tol)) << "grad of a";
  EXPECT_TRUE(gpu_close(b.gpu.grad(), b.cpu.grad(), tol)) << "grad of b";
}

const DType kFloatTypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16};

TEST(CudaMatmul, OddShapesEveryDtype) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  for (DType dt : kFloatTypes) {
    for (auto [m, k, n] : {std::tuple{1, 1, 1}, {7, 33, 5}, {257, 129, 65}, {2, 300, 3}}) {
      check_matmul({m, k}, {k, n}, dt);
    }
  }
}

TEST(CudaMatmul, TransposedOperandsAreReadInPlace) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  for (DType dt : kFloatTypes) {
    for (auto [ta, tb] : {std::pair{true, false}, {false, true}, {true, true}}) {
      check_matmul({33, 17}, {17, 65}, dt, ta, tb);
      check_matmul({1, 7}, {7, 1}, dt, ta, tb);
    }
  }
}

TEST(CudaMatmul, NonContiguousOperandsAreCopied) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dt));
    // every second column: no GEMM layout fits, so the op makes a contiguous copy
    Tensor ac = random_cpu({9, 34}, 3, dt).slice(1, 0, 34, 2);
    Tensor bc = random_strided_cpu({17, 5}, 4, dt);
    Tensor ag = to_gpu_keep_strides(random_cpu({9, 34}, 3, dt)).slice(1, 0, 34, 2);
    Tensor bg = to_gpu_keep_strides(bc);
    EXPECT_FALSE(ag.is_contiguous());
    EXPECT_TRUE(gpu_close(matmul(ag, bg), matmul(ac, bc), tol_for(dt, true)));
    // a row slice of a wider matrix: row stride larger than the row (an ld > K)
    Tensor wide = random_cpu({12, 40}, 5, dt);
    Tensor wide_g = wide.to(gpu());
    EXPECT_TRUE(gpu_close(matmul(wide_g.slice(1, 3, 20), bg), matmul(wide.slice(1, 3, 20), bc),
                          tol_for(dt, true)));
  }
}

TEST(CudaMatmul, BatchedStackedAndFolded) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  for (DType dt : kFloatTypes) {
    check_matmul({3, 7, 33}, {3, 33, 5}, dt);              // bmm
    check_matmul({3, 7, 33}, {3, 33, 5}, dt, true, true);  // bmm of transposed views
    check_matmul({2, 3, 7, 9}, {9, 4}, dt);                // rows fold into one GEMM
    check_matmul({4, 9, 7}, {9, 6}, dt, true, false);      // transposed a: strided batch, b shared
    check_matmul({5, 6}, {3, 6, 4}, dt, false, false, false);  // 2-D a against a batch
  }
}

TEST(CudaMatmul, VectorForms) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  for (DType dt : {DType::f32, DType::f64, DType::f16}) {
    check_matmul({33}, {33, 5}, dt);
    check_matmul({7, 33}, {33}, dt);
    check_matmul({33}, {33}, dt);
    check_matmul({2, 7, 33}, {33}, dt);
  }
}

// Broadcast batch dimensions: the forward takes one strided-batched call per run of entries;
// the gradients reduce over the broadcast dimensions (sum_to on the GPU).
TEST(CudaMatmul, BroadcastBatch) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  for (DType dt : kFloatTypes) {
    check_matmul({2, 1, 7, 9}, {3, 9, 5}, dt, false, false, false);
    check_matmul({1, 4, 7, 9}, {3, 1, 9, 5}, dt, true, false, false);
    check_matmul({2, 1, 7, 9}, {1, 3, 9, 5}, dt, false, true, false);
  }
}

TEST(CudaMatmul, BroadcastBatchGradients) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    check_matmul({2, 1, 7, 9}, {3, 9, 5}, dt);
    check_matmul({1, 4, 7, 9}, {3, 1, 9, 5}, dt, true, false);
    check_matmul({5, 6}, {3, 6, 4}, dt);
  }
}

TEST(CudaMatmul, EmptyProducts) {
  MEL_REQUIRE_GPU();
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(dtype_name(dt));
    // K == 0: a sum of nothing, zeros (the output buffer may hold anything before)
    Tensor z = matmul(random_cpu({3, 0}, 1, dt).to(gpu()), random_cpu({0, 4}, 2, dt).to(gpu()));
    EXPECT_TRUE(gpu_close(z, zeros({3, 4}, dt), Tol{0, 0}));
    Tensor zb = matmul(zeros({2, 3, 0}, dt, gpu()), zeros({2, 0, 5}, dt, gpu()));
    EXPECT_TRUE(gpu_close(zb, zeros({2, 3, 5}, dt), Tol{0, 0}));
    EXPECT_EQ(matmul(zeros({0, 4}, dt, gpu()), zeros({4, 6}, dt, gpu())).shape(), (Shape{0, 6}));
    EXPECT_EQ(matmul(zeros({5, 4}, dt, gpu()), zeros({4, 0}, dt, gpu())).shape(), (Shape{5, 0}));
  }
}

TEST(CudaMatmul, Tf32OnAndOff) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  Tf32Guard guard;
  Tensor a = random_cpu({96, 257}, 1), b = random_cpu({257, 130}, 2);
  Tensor ref = matmul(a.to(DType::f64), b.to(DType::f64)).to(DType::f32);
  Tensor ag = a.to(gpu()), bg = b.to(gpu());
  set_allow_tf32(false);
  EXPECT_TRUE(gpu_close(matmul(ag, bg), ref, tol_for(DType::f32, true)));
  set_allow_tf32(true);
  Tensor on = matmul(ag, bg);
  EXPECT_LE(max_rel_error(on, ref), 2e-3);
  Tensor on_batched = matmul(ag.unsqueeze(0).expand({3, 96, 257}), bg);
  EXPECT_LE(max_rel_error(on_batched, ref.unsqueeze(0).expand({3, 96, 130})), 2e-3);
  set_allow_tf32(false);  // back to full FP32: the tight tolerance holds again
  EXPECT_TRUE(gpu_close(matmul(ag, bg), ref, tol_for(DType::f32, true)));
}

TEST(CudaMatmul, PlanCacheReusesPlansAndRepeatsResults) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  Tensor a = random_cpu({37, 45}, 3).to(gpu()), b = random_cpu({45, 29}, 4).to(gpu());
  Tensor first = matmul(a, b);
#ifdef MEL_HAVE_CUDA
  const size_t plans = cuda_context(0).cache<kernels::cuda::GemmCache>("gemm").size();
  EXPECT_GE(plans, 1u);
#endif
  Tensor second = matmul(a, b);
  EXPECT_TRUE(all_close(second, first, 0, 0));  // same plan, bitwise the same result
#ifdef MEL_HAVE_CUDA
  EXPECT_EQ(cuda_context(0).cache<kernels::cuda::GemmCache>("gemm").size(), plans);
#endif
}

TEST(CudaMatmul, ErrorsStayClear) {
  MEL_REQUIRE_GPU();
  Tensor a = zeros({3, 4}, DType::f32, gpu());
  EXPECT_MEL_ERROR(matmul(a, zeros({5, 2}, DType::f32, gpu())), "inner dimensions 4 and 5");
  EXPECT_MEL_ERROR(matmul(a, zeros({4, 2})), "different devices");
  EXPECT_MEL_ERROR(matmul(a, zeros({4, 2}, DType::f64, gpu())), "dtypes differ");
  EXPECT_MEL_ERROR(matmul(zeros({3, 4}, DType::i32, gpu()), zeros({4, 2}, DType::i32, gpu())),
                   "not supported");
}

TEST(CudaLinear, WithBiasMatchesCpu) {
  MEL_REQUIRE_GPU();
  MEL_REQUIRE_VENDOR_LIBS();
  for (DType dt : {DType::f32, DType::f64}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tol tol = tol_for(dt, true);
    nn::Linear lc(33, 7), lg(33, 7);
    Generator g1(9), g2(9);
    lc.reset_parameters(g1);
    lg.reset_parameters(g2);
    lc.to(dt);
    lg.to(dt);
    lg.to(gpu());
    Leaf x = make_leaf({5, 33}, 11, dt);
    Tensor yc = lc(x.cpu), yg = lg(x.gpu);
    ASSERT_TRUE(gpu_close(yg, yc, tol));
    Tensor gy = random_cpu({5, 7}, 12, dt);
    yc.backward(gy);
    yg.backward(gy.to(gpu()));
    EXPECT_TRUE(gpu_close(x.gpu.grad(), x.cpu.grad(), tol)) << "input grad";
    EXPECT_TRUE(gpu_close(lg.weight.grad(), lc.weight.grad(), tol)) << "weight grad";
    EXPECT_TRUE(gpu_close(lg.bias.grad(), lc.bias.grad(), tol)) << "bias grad";
    // a batch of sequences: [2, 5, 33] rows fold into one GEMM
    Tensor x3 = random_cpu({2, 5, 33}, 13, dt);
    autograd::NoGradGuard ng;
    EXPECT_TRUE(gpu_close(lg(x3.to(gpu())), lc(x3), tol));
  }
}

}  // namespace
}  // namespace mel::testing
