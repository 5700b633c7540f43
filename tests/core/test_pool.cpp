#include <cmath>
#include <limits>

#include "core/ops_conv.h"
#include "gradcheck.h"

namespace mel {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;
using testing::strided_leaf;
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

enum class Kind { max, avg };

// Windowed pooling of [N, C, H, W] written as explicit loops over the padded input, in double.
// For max pooling, *argmax receives (if non-null) the flat input index of the first maximum.
Tensor naive_pool(const Tensor& x, const Pool2dOptions& o, Kind kind,
                  std::vector<int64_t>* argmax = nullptr) {
  const Shape& s = x.shape();
  const int64_t N = s[0], C = s[1], H = s[2], W = s[3];
  const int64_t sh = o.stride[0] ? o.stride[0] : o.kernel[0];
  const int64_t sw = o.stride[1] ? o.stride[1] : o.kernel[1];
  const int64_t OH = (H + 2 * o.padding[0] - o.kernel[0]) / sh + 1;
  const int64_t OW = (W + 2 * o.padding[1] - o.kernel[1]) / sw + 1;
  std::vector<double> v = x.to_vector(), out;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t i = 0; i < OH; ++i) {
        for (int64_t j = 0; j < OW; ++j) {
          double best = -std::numeric_limits<double>::infinity(), sum = 0;
          int64_t best_at = -1, real = 0, padded = 0;
          for (int64_t a = 0; a < o.kernel[0]; ++a) {
            for (int64_t b = 0; b < o.kernel[1]; ++b) {
              const int64_t h = i * sh - o.padding[0] + a, w = j * sw - o.padding[1] + b;
              // positions inside the padded input count for count_include_pad
              if (h < H + o.padding[0] && w < W + o.padding[1]) ++padded;
              if (h < 0 || h >= H || w < 0 || w >= W) continue;
              const int64_t at = ((n * C + c) * H + h) * W + w;
              ++real;
              sum += v[at];
              if (v[at] > best || best_at < 0) best = v[at], best_at = at;
            }
          }
          if (kind == Kind::max) {
            out.push_back(best);
            if (argmax) argmax->push_back(best_at);
          } else {
            out.push_back(sum / static_cast<double>(o.count_include_pad ? padded : real));
          }
        }
      }
    }
  }
  return tensor(out, {N, C, OH, OW}, DType::f64);
}

Tensor naive_adaptive(const Tensor& x, int64_t OH, int64_t OW) {
  const Shape& s = x.shape();
  const int64_t N = s[0], C = s[1], H = s[2], W = s[3];
  std::vector<double> v = x.to_vector(), out;
  for (int64_t p = 0; p < N * C; ++p) {
    for (int64_t i = 0; i < OH; ++i) {
      const auto h0 = static_cast<int64_t>(std::floor(double(i * H) / OH));
      const auto h1 = static_cast<int64_t>(std::ceil(double((i + 1) * H) / OH));
      for (int64_t j = 0; j < OW; ++j) {
        const auto w0 = static_cast<int64_t>(std::floor(double(j * W) / OW));
        const auto w1 = static_cast<int64_t>(std::ceil(double((j + 1) * W) / OW));
        double sum = 0;
        for (int64_t h = h0; h < h1; ++h) {
          for (int64_t w = w0; w < w1; ++w) sum += v[(p * H + h) * W + w];
        }
        out.push_back(sum / static_cast<double>((h1 - h0) * (w1 - w0)));
      }
    }
  }
  return tensor(out, {N, C, OH, OW}, DType::f64);
}

const std::vector<Pool2dOptions>& cases() {
  static const std::vector<Pool2dOptions> c = {
      opts({2, 2}),                         // the CNN default: stride = kernel
      opts({3, 3}, {2, 2}, {1, 1}),         // ResNet stem style, overlapping, padded
      opts({3, 2}, {1, 2}, {1, 0}),         // rectangular, stride != kernel
      opts({2, 3}, {3, 1}, {1, 1}),         // stride > kernel along h (skips rows)
      opts({4, 4}, {2, 3}, {2, 2}, false),  // padding at the k / 2 limit
      opts({1, 1}, {2, 2}),                 // subsampling
  };
  return c;
}

TEST(PoolValues, MaxPoolMatchesNaiveLoops) {
  Generator gen(3);
  for (DType dt : {DType::f32, DType::f64}) {
    // odd and even sizes; 40 columns give the f32 2x2 path a full vector and a masked tail
    for (const Shape& shape : {Shape{2, 3, 7, 9}, Shape{1, 2, 6, 40}}) {
      Tensor x = randn(shape, gen, dt);
      for (const Pool2dOptions& o : cases()) {
        Tensor y = max_pool2d(x, o);
        EXPECT_EQ(y.dtype(), dt);
        EXPECT_TRUE(all_close(y, naive_pool(x, o, Kind::max), 0, 0))
            << "kernel " << o.kernel[0] << "x" << o.kernel[1] << " " << shape_str(shape);
      }
    }
  }
}

TEST(PoolValues, MaxPoolGradientGoesToFirstMaximum) {
  // Constant input: every element of every window ties, so the first one in the window takes the
  // whole gradient (PyTorch's rule); windows overlap, so shared positions accumulate.
  // f32 covers the vectorised 2x2 path, f64 the scalar one.
  for (const Pool2dOptions& o : cases()) {
    for (DType dt : {DType::f32, DType::f64}) {
      Tensor x = full({1, 2, 6, 21}, 0.5, dt);
      x.requires_grad_();
      Tensor y = max_pool2d(x, o);
      std::vector<int64_t> first;
      naive_pool(x.detach(), o, Kind::max, &first);
      std::vector<double> expect(x.numel(), 0.0);
      for (int64_t at : first) expect[at] += 1.0;
      sum(y).backward();
      EXPECT_TRUE(all_close(x.grad(), tensor(expect, x.shape(), dt), 0, 0))
          << "kernel " << o.kernel[0] << "x" << o.kernel[1];
    }
  }
}

TEST(PoolValues, MaxPoolPropagatesNaNAndInfinity) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  Tensor x = tensor({1, nan, 3, 4, -inf, -inf, -inf, -inf}, {1, 2, 2, 2}, DType::f32);
  Tensor y = max_pool2d(x, opts({2, 2}));
  EXPECT_TRUE(std::isnan(y.at({0, 0, 0, 0})));
  EXPECT_EQ(y.at({0, 1, 0, 0}), -inf);
}

TEST(PoolValues, AvgPoolMatchesNaiveLoopsBothPadCounts) {
  Generator gen(4);
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = randn({2, 3, 7, 9}, gen, dt);
    for (Pool2dOptions o : cases()) {
      for (bool include : {true, false}) {
        o.count_include_pad = include;
        EXPECT_TRUE(all_close(avg_pool2d(x, o), naive_pool(x, o, Kind::avg), 1e-6, 1e-5))
            << "kernel " << o.kernel[0] << "x" << o.kernel[1] << " include_pad " << include;
      }
    }
  }
  // One window hanging over the corner: 4 real values of a 3x3 window, 9 with padding.
  Tensor x = tensor({1, 2, 3, 4}, {1, 1, 2, 2}, DType::f64);
  EXPECT_DOUBLE_EQ(avg_pool2d(x, opts({3, 3}, {1, 1}, {1, 1})).at({0, 0, 0, 0}), 10.0 / 9);
  EXPECT_DOUBLE_EQ(avg_pool2d(x, opts({3, 3}, {1, 1}, {1, 1}, false)).at({0, 0, 0, 0}), 10.0 / 4);
}

TEST(PoolValues, AdaptiveAvgMatchesNaiveLoops) {
  Generator gen(5);
  Tensor x = randn({2, 3, 7, 10}, gen, DType::f64);
  for (auto [oh, ow] :
       std::vector<std::pair<int64_t, int64_t>>{{3, 4}, {1, 1}, {7, 10}, {5, 3}, {9, 13}, {2, 7}}) {
    EXPECT_TRUE(all_close(adaptive_avg_pool2d(x, {oh, ow}), naive_adaptive(x, oh, ow), 1e-12, 0))
        << oh << "x" << ow;
  }
  // 1x1 is the global average.
  EXPECT_TRUE(all_close(adaptive_avg_pool2d(x, {1, 1}), mean(x, {2, 3}, true), 1e-12, 0));
  Tensor xf = x.to(DType::f32);
  EXPECT_TRUE(all_close(adaptive_avg_pool2d(xf, {3, 4}), naive_adaptive(x, 3, 4), 1e-6, 1e-5));
}

TEST(PoolValues, ThreeDimensionalAndHalfInputs) {
  Generator gen(6);
  Tensor x = randn({3, 6, 8}, gen, DType::f32);
  Tensor y = max_pool2d(x, opts({2, 2}));
  EXPECT_EQ(y.shape(), (Shape{3, 3, 4}));
  EXPECT_TRUE(all_close(y, max_pool2d(x.unsqueeze(0), opts({2, 2})).squeeze(0), 0, 0));
  Tensor xb = x.unsqueeze(0).to(DType::bf16);
  for (Tensor out : {max_pool2d(xb, opts({3, 3}, {2, 2}, {1, 1})), avg_pool2d(xb, opts({2, 2})),
                     adaptive_avg_pool2d(xb, {3, 5})}) {
    EXPECT_EQ(out.dtype(), DType::bf16);
  }
  EXPECT_TRUE(all_close(avg_pool2d(xb, opts({2, 2})).to(DType::f32),
                        avg_pool2d(xb.to(DType::f32), opts({2, 2})), 1e-2, 1e-2));
}

TEST(PoolGrad, MaxPool) {
  for (const Pool2dOptions& o : cases()) {
    Tensor x = leaf({2, 2, 6, 7}, 10);
    EXPECT_TRUE(gradcheck([o](const V& in) { return max_pool2d(in[0], o); }, {x}))
        << "kernel " << o.kernel[0] << "x" << o.kernel[1];
  }
  Tensor xs = strided_leaf({2, 3, 5, 6}, 11);
  ASSERT_FALSE(xs.is_contiguous());
  EXPECT_TRUE(gradcheck(
      [](const V& in) {
        return max_pool2d(in[0], opts({3, 3}, {2, 1}, {1, 1}));
      },
      {xs}));
  Tensor x3 = leaf({2, 5, 5}, 12);
  EXPECT_TRUE(gradcheck([](const V& in) { return max_pool2d(in[0], opts({2, 2}, {1, 1})); }, {x3}));
}

TEST(PoolGrad, AvgPool) {
  for (Pool2dOptions o : cases()) {
    for (bool include : {true, false}) {
      o.count_include_pad = include;
      Tensor x = leaf({1, 2, 6, 7}, 13);
      EXPECT_TRUE(gradcheck([o](const V& in) { return avg_pool2d(in[0], o); }, {x}))
          << "kernel " << o.kernel[0] << "x" << o.kernel[1] << " include_pad " << include;
    }
  }
  Tensor xs = strided_leaf({2, 3, 5, 6}, 14);
  EXPECT_TRUE(gradcheck(
      [](const V& in) {
        return avg_pool2d(in[0], opts({3, 2}, {2, 1}, {1, 1}, false));
      },
      {xs}));
}

TEST(PoolGrad, AdaptiveAvgPool) {
  Tensor x = leaf({2, 2, 7, 5}, 15);
  for (auto [oh, ow] : std::vector<std::pair<int64_t, int64_t>>{{3, 2}, {1, 1}, {4, 7}, {7, 5}}) {
    EXPECT_TRUE(gradcheck(
        [oh, ow](const V& in) {
          return adaptive_avg_pool2d(in[0], {oh, ow});
        },
        {x}))
        << oh << "x" << ow;
  }
  Tensor xs = strided_leaf({2, 3, 5, 6}, 16);
  EXPECT_TRUE(gradcheck([](const V& in) { return adaptive_avg_pool2d(in[0], {4, 4}); }, {xs}));
}

TEST(PoolErrors, RejectsBadShapesAndOptions) {
  Tensor x = zeros({1, 2, 4, 4});
  EXPECT_MEL_ERROR(max_pool2d(x, opts({5, 5})), "max_pool2d", "window is larger than the padded",
                   "[1, 2, 4, 4]");
  EXPECT_MEL_ERROR(avg_pool2d(x, opts({3, 8}, {1, 1}, {0, 1})), "avg_pool2d", "3x8", "4x6");
  EXPECT_MEL_ERROR(max_pool2d(x, opts({2, 2}, {0, 0}, {2, 0})), "padding [2, 0]",
                   "at most half the kernel size [2, 2]");
  EXPECT_MEL_ERROR(max_pool2d(x, opts({0, 2})), "kernel size must be positive");
  EXPECT_MEL_ERROR(max_pool2d(x, opts({2, 2}, {-1, 1})), "stride");
  EXPECT_MEL_ERROR(max_pool2d(zeros({4, 4}), opts({2, 2})), "max_pool2d", "4-D", "[4, 4]");
  EXPECT_MEL_ERROR(avg_pool2d(zeros({1, 1, 4, 4}, DType::i64), opts({2, 2})), "floating", "i64");
  EXPECT_MEL_ERROR(adaptive_avg_pool2d(x, {0, 2}), "adaptive_avg_pool2d",
                   "output size must be positive");
  EXPECT_MEL_ERROR(adaptive_avg_pool2d(zeros({1, 2, 0, 3}), {1, 1}), "empty spatial");
}

}  // namespace
}  // namespace mel
