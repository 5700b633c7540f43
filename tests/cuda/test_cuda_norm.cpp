// GPU parity of batch norm (training and eval, [N, C] and [N, C, H, W], both reduction paths, the
// fused ReLU, running statistics), layer norm (with and without affine parameters) and dropout
// (the same mask as the CPU for the same generator state). Tolerances: tol_for(dtype, true).
#include <gtest/gtest.h>

#include "core/ops_norm.h"
#include "core/ops_norm_fused.h"
#include "nn_parity.h"

namespace mel::testing {
namespace {

using V = std::vector<Tensor>;

// [N, C] and [N, C, H, W] with odd sizes; s = H * W below 64 takes the column path, above it the
// per-channel plane path; the last one splits every channel over many blocks.
const Shape kBnShapes[] = {{8, 5},       {2, 3},         {257, 33},
                           {4, 3, 5, 7}, {2, 16, 9, 9},  {1, 7, 1, 2},
                           {3, 2, 1, 1}, {33, 4, 17, 1}, {16, 8, 32, 32}};

TEST(CudaBatchNorm, TrainingForwardBackwardAndRunningStats) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 1;
  for (DType dt : {DType::f32, DType::f64}) {
    for (const Shape& s : kBnShapes) {
      const int64_t C = s[1];
      for (bool relu : {false, true}) {
        for (bool affine : {true, false}) {
          Tensor x = random_cpu(s, seed++, dt, -2.0, 3.0);
          Tensor w = random_cpu({C}, seed++, dt, 0.5, 1.5), b = random_cpu({C}, seed++, dt);
          Tensor rm_c = random_cpu({C}, seed++, dt), rv_c = random_cpu({C}, seed++, dt, 0.5, 2.0);
          Tensor rm_g = rm_c.to(gpu()), rv_g = rv_c.to(gpu());
          // running statistics of the device the input is on, updated in place by each call
          auto f = [&](const V& in) {
            const bool gpu_in = in[0].device().is_cuda();
            const Tensor& rm = gpu_in ? rm_g : rm_c;
            const Tensor& rv = gpu_in ? rv_g : rv_c;
            return relu ? batch_norm_relu(in[0], in[1], in[2], rm, rv, true, 0.1)
                        : batch_norm(in[0], in[1], in[2], rm, rv, true, 0.1);
          };
          const V ins = affine ? V{x, w, b} : V{x, Tensor(), Tensor()};
          EXPECT_TRUE(parity(f, ins, {true, affine, affine}, tol_for(dt, true)))
              << dtype_name(dt) << " " << shape_str(s) << " relu " << relu << " affine " << affine;
          EXPECT_TRUE(gpu_close(rm_g, rm_c, tol_for(dt, true))) << "running_mean";
          EXPECT_TRUE(gpu_close(rv_g, rv_c, tol_for(dt, true))) << "running_var";
        }
      }
    }
  }
}

TEST(CudaBatchNorm, EvalUsesRunningStatistics) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 1000;
  for (DType dt : {DType::f32, DType::f64}) {
    // N * H * W = 1 is allowed in eval mode
    for (const Shape& s : {Shape{1, 6}, Shape{1, 4, 1, 1}, Shape{9, 5}, Shape{3, 4, 9, 11}}) {
      const int64_t C = s[1];
      Tensor x = random_cpu(s, seed++, dt, -2.0, 3.0);
      Tensor w = random_cpu({C}, seed++, dt, 0.5, 1.5), b = random_cpu({C}, seed++, dt);
      Tensor rm = random_cpu({C}, seed++, dt), rv = random_cpu({C}, seed++, dt, 0.5, 2.0);
      for (bool relu : {false, true}) {
        auto f = [&](const V& in) {
          const Tensor m = in[0].device().is_cuda() ? rm.to(gpu()) : rm;
          const Tensor v = in[0].device().is_cuda() ? rv.to(gpu()) : rv;
          return relu ? batch_norm_relu(in[0], in[1], in[2], m, v, false)
                      : batch_norm(in[0], in[1], in[2], m, v, false);
        };
        EXPECT_TRUE(parity(f, {x, w, b}, {true, true, true}, tol_for(dt, true)))
            << dtype_name(dt) << " " << shape_str(s) << " relu " << relu;
      }
    }
  }  // training needs more than one value per channel, on the GPU as on the CPU
  EXPECT_MEL_ERROR(batch_norm(zeros({1, 4, 1, 1}, DType::f32, gpu()), {}, {}, {}, {}, true),
                   "batch_norm", "more than 1 value per channel");
}

TEST(CudaBatchNorm, NonContiguousHalfAndStridedRunningStats) {
  MEL_REQUIRE_GPU();
  Tensor x = random_strided_cpu({6, 5, 4, 3}, 2000, DType::f32);
  ASSERT_FALSE(x.is_contiguous());
  Tensor w = random_cpu({5}, 2001, DType::f32, 0.5, 1.5), b = random_cpu({5}, 2002);
  EXPECT_TRUE(parity([](const V& in) { return batch_norm(in[0], in[1], in[2], {}, {}, true); },
                     {x, w, b}, {true, true, true}, tol_for(DType::f32, true)));
  // bf16 / f16 input with f32 parameters and 16-bit running statistics (the mixed-precision case)
  for (DType dt : {DType::bf16, DType::f16}) {
    Tensor xh = random_cpu({8, 5, 3, 3}, 2003, dt);
    Tensor rm_c = zeros({5}, dt), rv_c = ones({5}, dt);
    Tensor rm_g = rm_c.to(gpu()), rv_g = rv_c.to(gpu());
    auto f = [&](const V& in) {
      const bool g = in[0].device().is_cuda();
      return batch_norm_relu(in[0], in[1], in[2], g ? rm_g : rm_c, g ? rv_g : rv_c, true);
    };
    EXPECT_TRUE(parity(f, {xh, w, b}, {true, true, true}, tol_for(dt, true))) << dtype_name(dt);
    EXPECT_TRUE(gpu_close(rm_g, rm_c, tol_for(dt, true)));
    EXPECT_TRUE(gpu_close(rv_g, rv_c, tol_for(dt, true)));
  }
  // running statistics that are strided views (every other element of a buffer)
  Tensor buf_c = ones({10}), buf_g = ones({10}, DType::f32, gpu());
  Tensor x2 = random_cpu({7, 5}, 2004);
  batch_norm(x2, w, b, buf_c.slice(0, 0, 10, 2), buf_c.slice(0, 1, 10, 2), true);
  batch_norm(x2.to(gpu()), w.to(gpu()), b.to(gpu()), buf_g.slice(0, 0, 10, 2),
             buf_g.slice(0, 1, 10, 2), true);
  EXPECT_TRUE(gpu_close(buf_g, buf_c, tol_for(DType::f32, true)));
  EXPECT_MEL_ERROR(batch_norm(x2.to(gpu()), w.to(gpu()), b.to(gpu()), zeros({5}), ones({5}), true),
                   "batch_norm", "running_mean", "cpu");
}

TEST(CudaLayerNorm, TrailingDimsWithAndWithoutAffine) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 3000;
  struct Case {
    Shape x, norm;
  };
  // rows of 1..2000 elements: sub-warp, warp and block-per-row kernels; one row; many rows
  const Case cases[] = {{{7, 33}, {33}},        {{4, 5, 6}, {5, 6}}, {{257, 1000}, {1000}},
                        {{3, 2000}, {2000}},    {{1, 8}, {8}},       {{5, 3}, {3}},
                        {{2, 3, 4}, {2, 3, 4}}, {{4096, 16}, {16}}};
  for (DType dt : {DType::f32, DType::f64}) {
    for (const Case& c : cases) {
      Tensor x = random_cpu(c.x, seed++, dt, -2.0, 4.0);
      Tensor w = random_cpu(c.norm, seed++, dt, 0.5, 1.5), b = random_cpu(c.norm, seed++, dt);
      const Shape ns = c.norm;
      auto f = [ns](const V& in) { return layer_norm(in[0], ns, in[1], in[2]); };
      EXPECT_TRUE(parity(f, {x, w, b}, {true, true, true}, tol_for(dt, true)))
          << dtype_name(dt) << " " << shape_str(c.x) << " affine";
      EXPECT_TRUE(parity(f, {x, Tensor(), Tensor()}, {true, false, false}, tol_for(dt, true)))
          << dtype_name(dt) << " " << shape_str(c.x) << " plain";
      EXPECT_TRUE(parity(f, {x, w, Tensor()}, {false, true, false}, tol_for(dt, true)))
          << dtype_name(dt) << " " << shape_str(c.x) << " weight only";
    }
  }
  Tensor nc = random_strided_cpu({9, 6}, seed++, DType::f32);
  ASSERT_FALSE(nc.is_contiguous());
  EXPECT_TRUE(parity([](const V& in) { return layer_norm(in[0], {6}, in[1], in[2]); },
                     {nc, random_cpu({6}, 1), random_cpu({6}, 2)}, {true, true, true},
                     tol_for(DType::f32, true)));
  for (DType dt : {DType::bf16, DType::f16}) {
    Tensor x = random_cpu({9, 40}, seed++, dt);
    EXPECT_TRUE(parity([](const V& in) { return layer_norm(in[0], {40}, in[1], in[2]); },
                       {x, random_cpu({40}, 3), random_cpu({40}, 4)}, {true, true, true},
                       tol_for(dt, true)))
        << dtype_name(dt);
  }
}

TEST(CudaDropout, SameMaskAsTheCpuForTheSameGeneratorState) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(1001), int64_t(1) << 18}) {
      for (double p : {0.1, 0.5, 0.9}) {
        Tensor x = random_cpu({n}, static_cast<uint64_t>(n), dt, 0.5, 1.5);  // no exact zeros
        Generator gc(42), gg(42);
        gc.set_offset(5), gg.set_offset(5);
        auto f = [&](const V& in) {
          return dropout(in[0], p, true, in[0].device().is_cuda() ? gg : gc);
        };
        // exact: the same Philox values, the same single multiply
        EXPECT_TRUE(parity(f, {x}, {true}, Tol{0, 0}))
            << dtype_name(dt) << " n " << n << " p " << p;
        EXPECT_EQ(gg.offset(), gc.offset());
      }
    }
  }
  // a 4-D non-contiguous input and the half types (through f32, as on the CPU)
  Tensor nc = random_strided_cpu({3, 4, 5, 6}, 7);
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    Generator gc(9), gg(9);
    auto f = [&](const V& in) {
      return dropout(in[0], 0.3, true, in[0].device().is_cuda() ? gg : gc);
    };
    EXPECT_TRUE(parity(f, {nc.to(dt)}, {true}, Tol{0, 0})) << dtype_name(dt);
  }
}

TEST(CudaDropout, IdentityAndDropAllEdges) {
  MEL_REQUIRE_GPU();
  Generator gen(3);
  Tensor x = random_cpu({5, 7}, 11).to(gpu());
  // p = 0 or eval mode: the input itself, and the generator does not move
  EXPECT_EQ(dropout(x, 0.0, true, gen).impl(), x.impl());
  EXPECT_EQ(dropout(x, 0.5, false, gen).impl(), x.impl());
  EXPECT_EQ(gen.offset(), 0u);
  // p = 1 drops everything (scale 0, not infinity), on both devices
  Generator gc(3), gg(3);
  auto f = [&](const V& in) {
    return dropout(in[0], 1.0, true, in[0].device().is_cuda() ? gg : gc);
  };
  EXPECT_TRUE(parity(f, {random_cpu({5, 7}, 11)}, {true}, Tol{0, 0}));
  EXPECT_TRUE(gpu_close(dropout(x, 1.0, true, gen), zeros({5, 7}), Tol{0, 0}));
}

}  // namespace
}  // namespace mel::testing
