// GPU parity of max, average and adaptive average pooling: the CPU tests' stride / padding /
// count_include_pad cases on odd and even sizes, 3-D and non-contiguous inputs, NaN and ties, and
// the gradients. The GPU visits windows in the CPU's order, so values and gradients are expected
// to match exactly; the comparison still allows tol_for(dtype).
#include <gtest/gtest.h>

#include <cmath>

#include "core/ops_conv.h"
#include "nn_parity.h"

namespace mel::testing {
namespace {

using V = std::vector<Tensor>;

Pool2dOptions opts(std::array<int64_t, 2> k, std::array<int64_t, 2> s = {0, 0},
                   std::array<int64_t, 2> p = {0, 0}, bool include_pad = true) {
  Pool2dOptions o;
  o.kernel = k;
  o.stride = s;
  o.padding = p;
  o.count_include_pad = include_pad;
  return o;
}

const std::vector<Pool2dOptions>& cases() {
  static const std::vector<Pool2dOptions> c = {
      opts({2, 2}),                         // the CNN default: stride = kernel
      opts({3, 3}, {2, 2}, {1, 1}),         // overlapping, padded
      opts({3, 2}, {1, 2}, {1, 0}),         // rectangular, stride != kernel
      opts({2, 3}, {3, 1}, {1, 1}),         // stride > kernel along h (skips rows)
      opts({4, 4}, {2, 3}, {2, 2}, false),  // padding at the k / 2 limit
      opts({1, 1}, {2, 2}),                 // subsampling
      opts({3, 3}, {1, 1}, {1, 1}),         // every input in nine windows
  };
  return c;
}

const Shape kShapes[] = {{2, 3, 7, 9}, {1, 2, 6, 40}, {3, 5, 5}, {2, 1, 4, 4}, {5, 3, 33, 17}};

std::string describe(const Pool2dOptions& o, const Shape& s) {
  return fmt::format("kernel {}x{} stride {}x{} pad {}x{} include_pad {} input {}", o.kernel[0],
                     o.kernel[1], o.stride[0], o.stride[1], o.padding[0], o.padding[1],
                     o.count_include_pad, shape_str(s));
}

TEST(CudaPool, MaxPoolValuesAndGradients) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 1;
  for (DType dt : {DType::f32, DType::f64}) {
    for (const Shape& s : kShapes) {
      Tensor x = random_cpu(s, seed++, dt, -3.0, 3.0);
      for (const Pool2dOptions& o : cases()) {
        if (s[s.size() - 2] + 2 * o.padding[0] < o.kernel[0] ||
            s[s.size() - 1] + 2 * o.padding[1] < o.kernel[1]) {
          continue;
        }
        EXPECT_TRUE(
            parity([o](const V& in) { return max_pool2d(in[0], o); }, {x}, {true}, tol_for(dt)))
            << dtype_name(dt) << " " << describe(o, s);
      }
    }
  }
}

TEST(CudaPool, MaxPoolTiesNaNAndInfinity) {
  MEL_REQUIRE_GPU();
  // ties: the gradient goes to the first maximum of each window on both devices
  Tensor ties = zeros({1, 2, 5, 6});
  for (const Pool2dOptions& o : cases()) {
    EXPECT_TRUE(
        parity([o](const V& in) { return max_pool2d(in[0], o); }, {ties}, {true}, Tol{0, 0}))
        << describe(o, ties.shape());
  }
  // NaN wins its windows, -inf never does unless the window holds nothing else
  Tensor x = random_cpu({1, 1, 6, 6}, 77);
  x.set({0, 0, 1, 2}, NAN);
  x.set({0, 0, 4, 4}, -INFINITY);
  x.set({0, 0, 4, 5}, INFINITY);
  Tensor all_neg_inf = full({1, 1, 4, 4}, -INFINITY);
  for (const Pool2dOptions& o : cases()) {
    EXPECT_TRUE(parity([o](const V& in) { return max_pool2d(in[0], o); }, {x}, {true}, Tol{0, 0}))
        << describe(o, x.shape());
    EXPECT_TRUE(
        parity([o](const V& in) { return max_pool2d(in[0], o); }, {all_neg_inf}, {true}, Tol{0, 0}))
        << describe(o, all_neg_inf.shape());
  }
}

TEST(CudaPool, AvgPoolBothPadCounts) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 100;
  for (DType dt : {DType::f32, DType::f64}) {
    for (const Shape& s : kShapes) {
      Tensor x = random_cpu(s, seed++, dt);
      for (Pool2dOptions o : cases()) {
        if (s[s.size() - 2] + 2 * o.padding[0] < o.kernel[0] ||
            s[s.size() - 1] + 2 * o.padding[1] < o.kernel[1]) {
          continue;
        }
        for (bool include : {true, false}) {
          o.count_include_pad = include;
          EXPECT_TRUE(parity([o](const V& in) { return avg_pool2d(in[0], o); }, {x}, {true},
                             tol_for(dt, true)))
              << dtype_name(dt) << " " << describe(o, s);
        }
      }
    }
  }
}

TEST(CudaPool, AdaptiveAndGlobalAvgPool) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 200;
  const std::pair<int64_t, int64_t> outs[] = {{3, 2}, {1, 1}, {4, 7}, {7, 5}, {9, 11}, {2, 2}};
  for (DType dt : {DType::f32, DType::f64}) {
    for (const Shape& s :
         {Shape{2, 2, 7, 5}, Shape{3, 8, 8}, Shape{2, 3, 32, 32}, Shape{1, 1, 1, 1}}) {
      Tensor x = random_cpu(s, seed++, dt);
      for (auto [oh, ow] : outs) {
        EXPECT_TRUE(parity(
            [oh, ow](const V& in) {
              return adaptive_avg_pool2d(in[0], {oh, ow});
            },
            {x}, {true}, tol_for(dt, true)))
            << dtype_name(dt) << " " << shape_str(s) << " -> " << oh << "x" << ow;
      }
    }
  }
}

TEST(CudaPool, NonContiguousAndHalfInputs) {
  MEL_REQUIRE_GPU();
  Tensor nc = random_strided_cpu({2, 3, 5, 6}, 300, DType::f32);
  ASSERT_FALSE(nc.is_contiguous());
  const Pool2dOptions o = opts({3, 3}, {2, 1}, {1, 1}, false);
  EXPECT_TRUE(
      parity([o](const V& in) { return max_pool2d(in[0], o); }, {nc}, {true}, tol_for(DType::f32)));
  EXPECT_TRUE(parity([o](const V& in) { return avg_pool2d(in[0], o); }, {nc}, {true},
                     tol_for(DType::f32, true)));
  EXPECT_TRUE(parity(
      [](const V& in) {
        return adaptive_avg_pool2d(in[0], {4, 4});
      },
      {nc}, {true}, tol_for(DType::f32, true)));
  for (DType dt : {DType::bf16, DType::f16}) {
    Tensor x = random_cpu({2, 3, 8, 7}, 301, dt);
    EXPECT_TRUE(parity(
        [](const V& in) {
          return max_pool2d(in[0], opts({2, 2}));
        },
        {x}, {true}, tol_for(dt)))
        << dtype_name(dt);
    EXPECT_TRUE(parity(
        [](const V& in) {
          return avg_pool2d(in[0], opts({3, 3}, {2, 2}, {1, 1}));
        },
        {x}, {true}, tol_for(dt, true)))
        << dtype_name(dt);
  }
  EXPECT_MEL_ERROR(max_pool2d(zeros({1, 2, 4, 4}, DType::f32, gpu()), opts({5, 5})), "max_pool2d",
                   "window is larger than the padded");
}

}  // namespace
}  // namespace mel::testing
