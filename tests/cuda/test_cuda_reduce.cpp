// GPU parity of the reductions: sum, mean, var over chosen dims (keepdim or not, all dims,
// permuted and strided inputs, odd sizes and the long rows/columns that are split across
// blocks), max/argmax with first-index ties and NaN, and the gradients of sum, mean and max.
// Tolerances: tol_for(dtype, true) (f32 1e-4 abs + rel, f64 1e-12 + 1e-10, integers exact);
// indices must match exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuda_testing.h"

namespace mel::testing {
namespace {

struct ReduceCase {
  Shape shape;
  Shape dims;  // empty: all
};

// Rows (B == 1), columns (B > 1), permuted (non-adjacent dims), tiny and long axes; the long ones
// go through the split-and-combine path.
const std::vector<ReduceCase> kCases = {
    {{33, 7}, {0}},
    {{33, 7}, {1}},
    {{33, 7}, {}},
    {{1, 257, 3}, {1}},
    {{1, 257, 3}, {0, 2}},
    {{1, 257, 3}, {2}},
    {{1, 257, 3}, {}},
    {{4, 5, 6, 7}, {1, 3}},
    {{4, 5, 6, 7}, {0, 1}},
    {{4, 5, 6, 7}, {-1}},
    {{4, 5, 6, 7}, {0, 2, 3}},
    {{7}, {0}},
    {{1}, {}},
    {{3, 1, 4}, {1}},
    {{50, 100}, {1}},
    {{64, 2000}, {1}},
    {{3, 200003}, {1}},
    {{200003, 3}, {0}},
    {{4096, 300}, {0}},
    {{(1 << 20) + 7}, {}},
};

Tensor int_valued(const Shape& shape, uint64_t seed, DType dt, double lo, double hi) {
  return random_cpu(shape, seed, DType::f64, lo, hi).to(DType::i64).to(dt);
}

TEST(CudaReduce, SumMatchesCpu) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64}) {
    const Tol tol = tol_for(dt, true);
    for (size_t k = 0; k < kCases.size(); ++k) {
      const ReduceCase& rc = kCases[k];
      Tensor x = is_floating(dt) ? random_cpu(rc.shape, 40 + k, dt)
                                 : int_valued(rc.shape, 40 + k, dt, -1000, 1000);
      Tensor xg = x.to(gpu());
      for (bool keep : {false, true}) {
        Tensor r = sum(xg, rc.dims, keep);
        Tensor c = sum(x, rc.dims, keep);
        EXPECT_EQ(r.dtype(), c.dtype());
        EXPECT_TRUE(gpu_close(r, c, tol)) << dtype_name(dt) << " " << shape_str(rc.shape)
                                          << " dims " << shape_str(rc.dims) << " keep " << keep;
      }
    }
  }
}

TEST(CudaReduce, SumOfStridedAndSpecialInputs) {
  MEL_REQUIRE_GPU();
  const Tol tol = tol_for(DType::f32, true);
  Tensor x = random_strided_cpu({33, 65, 3}, 7);
  Tensor xg = to_gpu_keep_strides(x);
  ASSERT_FALSE(xg.is_contiguous());
  for (const Shape& dims : {Shape{0}, Shape{1}, Shape{2}, Shape{0, 2}, Shape{}}) {
    EXPECT_TRUE(gpu_close(sum(xg, dims, true), sum(x, dims, true), tol)) << shape_str(dims);
  }
  // u8 sums count in i64
  Tensor m = gt(random_cpu({129, 5}, 8), zeros({}));
  Tensor mg = m.to(gpu());
  EXPECT_EQ(sum(mg).dtype(), DType::i64);
  EXPECT_TRUE(gpu_close(sum(mg, {0}), sum(m, {0}), tol_for(DType::i64)));
  // i32 sums accumulate in i64 and wrap to i32 like the CPU's
  Tensor big = int_valued({3, 5000}, 9, DType::i32, 1e9, 2e9);
  EXPECT_TRUE(gpu_close(sum(big.to(gpu()), {1}), sum(big, {1}), tol_for(DType::i32)));
  // empty reduced axis: zeros
  Tensor e = zeros({4, 0}, DType::f32, gpu());
  EXPECT_TRUE(gpu_close(sum(e, {1}), zeros({4}), tol));
  // half types upcast
  for (DType dt : {DType::bf16, DType::f16}) {
    Tensor h = random_cpu({37, 19}, 10, dt);
    EXPECT_TRUE(gpu_close(sum(h.to(gpu()), {1}), sum(h, {1}), tol_for(dt, true))) << dtype_name(dt);
    EXPECT_TRUE(gpu_close(mean(h.to(gpu()), {0}), mean(h, {0}), tol_for(dt, true)))
        << dtype_name(dt);
  }
}

TEST(CudaReduce, MeanAndVarMatchCpu) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    const Tol tol = tol_for(dt, true);
    for (size_t k = 0; k < kCases.size(); ++k) {
      const ReduceCase& rc = kCases[k];
      Tensor x = random_cpu(rc.shape, 60 + k, dt);
      Tensor xg = x.to(gpu());
      EXPECT_TRUE(gpu_close(mean(xg, rc.dims), mean(x, rc.dims), tol))
          << dtype_name(dt) << " " << shape_str(rc.shape) << " dims " << shape_str(rc.dims);
      EXPECT_TRUE(gpu_close(var(xg, rc.dims, 1, true), var(x, rc.dims, 1, true), tol))
          << dtype_name(dt) << " " << shape_str(rc.shape) << " dims " << shape_str(rc.dims);
    }
  }
}

TEST(CudaReduce, MaxValuesAndIndicesMatchCpu) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64}) {
    for (size_t k = 0; k < kCases.size(); ++k) {
      const ReduceCase& rc = kCases[k];
      if (rc.dims.size() != 1) continue;
      // few distinct values: many ties, the first index must win on both devices
      Tensor x = int_valued(rc.shape, 80 + k, dt, -3, 4);
      Tensor xg = x.to(gpu());
      for (bool keep : {false, true}) {
        auto [vc, ic] = max(x, rc.dims[0], keep);
        auto [vg, ig] = max(xg, rc.dims[0], keep);
        EXPECT_TRUE(gpu_close(vg, vc, tol_for(dt))) << dtype_name(dt) << " " << shape_str(rc.shape);
        EXPECT_TRUE(gpu_close(ig, ic, tol_for(DType::i64)))
            << dtype_name(dt) << " " << shape_str(rc.shape) << " dim " << rc.dims[0];
        EXPECT_TRUE(gpu_close(argmax(xg, rc.dims[0], keep), ic, tol_for(DType::i64)));
      }
      // distinct random values
      if (is_floating(dt)) {
        Tensor y = random_cpu(rc.shape, 90 + k, dt);
        auto [vc, ic] = max(y, rc.dims[0]);
        auto [vg, ig] = max(y.to(gpu()), rc.dims[0]);
        EXPECT_TRUE(gpu_close(vg, vc, tol_for(dt)));
        EXPECT_TRUE(gpu_close(ig, ic, tol_for(DType::i64)));
      }
    }
  }
  // permuted and strided input, max over the middle and the first dim
  Tensor s = random_strided_cpu({9, 33, 5}, 11);
  Tensor sg = to_gpu_keep_strides(s);
  for (int64_t d : {0, 1, 2, -1}) {
    auto [vc, ic] = max(s, d);
    auto [vg, ig] = max(sg, d);
    EXPECT_TRUE(gpu_close(vg, vc, tol_for(DType::f32))) << d;
    EXPECT_TRUE(gpu_close(ig, ic, tol_for(DType::i64))) << d;
  }
}

TEST(CudaReduce, MaxNaNWinsAtItsFirstIndex) {
  MEL_REQUIRE_GPU();
  // rows: NaN in the middle, NaN first, two NaNs, none; also in a long split row
  Tensor x = random_cpu({4, 9}, 12);
  x.set({0, 4}, std::nan(""));
  x.set({1, 0}, std::nan(""));
  x.set({2, 3}, std::nan(""));
  x.set({2, 7}, std::nan(""));
  for (int64_t d : {0, 1}) {
    auto [vc, ic] = max(x, d);
    auto [vg, ig] = max(x.to(gpu()), d);
    EXPECT_TRUE(gpu_close(vg, vc, tol_for(DType::f32))) << d;
    EXPECT_TRUE(gpu_close(ig, ic, tol_for(DType::i64))) << d;
  }
  // rows of 17..1023 elements take the warp-per-row path
  Tensor mid = random_cpu({3, 100}, 16);
  mid.set({0, 40}, std::nan(""));
  mid.set({0, 70}, std::nan(""));
  mid.set({1, 0}, std::nan(""));
  auto [vm, im] = max(mid, 1);
  auto [vmg, img] = max(mid.to(gpu()), 1);
  EXPECT_TRUE(gpu_close(vmg, vm, tol_for(DType::f32)));
  EXPECT_TRUE(gpu_close(img, im, tol_for(DType::i64)));
  // a long column: split across blocks in the column kernel
  Tensor longcol = random_cpu({300001, 2}, 17);
  longcol.set({280000, 1}, std::nan(""));
  longcol.set({260000, 1}, std::nan(""));
  auto [vcc, icc] = max(longcol, 0);
  auto [vcg, icg] = max(longcol.to(gpu()), 0);
  EXPECT_TRUE(gpu_close(vcg, vcc, tol_for(DType::f32)));
  EXPECT_TRUE(gpu_close(icg, icc, tol_for(DType::i64)));
  EXPECT_EQ(icg.at({1}), 260000);
  Tensor longrow = random_cpu({2, 300001}, 13);
  longrow.set({0, 250000}, std::nan(""));
  longrow.set({0, 290000}, std::nan(""));
  auto [vc, ic] = max(longrow, 1);
  auto [vg, ig] = max(longrow.to(gpu()), 1);
  EXPECT_TRUE(gpu_close(vg, vc, tol_for(DType::f32)));
  EXPECT_TRUE(gpu_close(ig, ic, tol_for(DType::i64)));
  EXPECT_EQ(ig.at({0}), 250000);
  EXPECT_TRUE(std::isnan(max(longrow.to(gpu())).item()));
}

TEST(CudaReduce, MaxOverAllElements) {
  MEL_REQUIRE_GPU();
  for (const Shape& shape : {Shape{1}, Shape{33, 7}, Shape{(1 << 20) + 3}, Shape{}}) {
    Tensor x = random_cpu(shape, 14);
    EXPECT_TRUE(gpu_close(max(x.to(gpu())), max(x), tol_for(DType::f32))) << shape_str(shape);
  }
  // gradient split evenly among tied maxima
  Tensor t = tensor({1, 3, 2, 3, 0, 3}, {2, 3});
  Tensor tc = t.detach(), tg = t.to(gpu());
  tc.requires_grad_();
  tg.requires_grad_();
  max(tc).backward();
  max(tg).backward();
  EXPECT_TRUE(gpu_close(tg.grad(), tc.grad(), tol_for(DType::f32)));
}

TEST(CudaReduce, GradientsOfSumMeanMaxMatchCpu) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    const Tol tol = tol_for(dt, true);
    for (size_t k = 0; k < kCases.size(); ++k) {
      const ReduceCase& rc = kCases[k];
      if (rc.shape.size() > 0 && rc.shape[0] > 100000) continue;  // keep the CPU side quick
      Tensor base = random_strided_cpu(rc.shape, 100 + k, dt);
      Tensor xc = base.detach(), xg = to_gpu_keep_strides(base).detach();
      xc.requires_grad_();
      xg.requires_grad_();
      auto loss = [&](const Tensor& x) {
        Tensor s = sum(x, rc.dims, true);
        Tensor m = mean(x, rc.dims, false);
        Tensor total = add(sum(mul(s, s)), sum(mul(m, m)));
        if (rc.dims.size() == 1) {
          Tensor mx = max(x, rc.dims[0], false).first;
          Tensor w = random_cpu(mx.shape(), 7, dt).to(x.device());
          total = add(total, sum(mul(mx, w)));
        }
        return total;
      };
      loss(xc).backward();
      loss(xg).backward();
      EXPECT_TRUE(gpu_close(xg.grad(), xc.grad(), tol))
          << dtype_name(dt) << " " << shape_str(rc.shape) << " dims " << shape_str(rc.dims);
    }
  }
}

TEST(CudaReduce, SumToFromBroadcastGradients) {
  MEL_REQUIRE_GPU();
  Tensor g = random_cpu({6, 7, 5}, 15);
  for (const Shape& to : {Shape{7, 5}, Shape{1, 5}, Shape{6, 1, 1}, Shape{}, Shape{6, 7, 5}}) {
    EXPECT_TRUE(gpu_close(sum_to(g.to(gpu()), to), sum_to(g, to), tol_for(DType::f32, true)))
        << shape_str(to);
  }
}

}  // namespace
}  // namespace mel::testing
