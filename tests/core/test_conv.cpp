#include <omp.h>

#include "core/ops_conv.h"
#include "gradcheck.h"

namespace mel {
namespace {

using testing::gradcheck;
using testing::leaf;
using testing::strided_leaf;
using V = std::vector<Tensor>;

struct Cfg {
  int64_t n, c_in, h, w, c_out, kh, kw;
  int64_t sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1, groups = 1;
  bool bias = true;

  Conv2dOptions options() const { return {{sh, sw}, {ph, pw}, {dh, dw}, groups}; }
  int64_t h_out() const { return (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1; }
  int64_t w_out() const { return (w + 2 * pw - dw * (kw - 1) - 1) / sw + 1; }
};

// Direct convolution in double: y, and for the output gradient gy the gradients of x, w and b.
struct Ref {
  std::vector<double> y, gx, gw, gb;
};

Ref reference(const Cfg& c, const std::vector<double>& x, const std::vector<double>& w,
              const std::vector<double>& b, const std::vector<double>& gy) {
  const int64_t ho = c.h_out(), wo = c.w_out();
  const int64_t cig = c.c_in / c.groups, cog = c.c_out / c.groups;
  Ref r;
  r.y.assign(c.n * c.c_out * ho * wo, 0.0);
  r.gx.assign(x.size(), 0.0);
  r.gw.assign(w.size(), 0.0);
  r.gb.assign(c.c_out, 0.0);
  for (int64_t n = 0; n < c.n; ++n) {
    for (int64_t co = 0; co < c.c_out; ++co) {
      const int64_t grp = co / cog;
      for (int64_t oh = 0; oh < ho; ++oh) {
        for (int64_t ow = 0; ow < wo; ++ow) {
          const int64_t yi = ((n * c.c_out + co) * ho + oh) * wo + ow;
          double acc = c.bias ? b[co] : 0.0;
          r.gb[co] += gy[yi];
          for (int64_t ci = 0; ci < cig; ++ci) {
            for (int64_t ki = 0; ki < c.kh; ++ki) {
              for (int64_t kj = 0; kj < c.kw; ++kj) {
                const int64_t ih = oh * c.sh - c.ph + ki * c.dh;
                const int64_t iw = ow * c.sw - c.pw + kj * c.dw;
                if (ih < 0 || ih >= c.h || iw < 0 || iw >= c.w) continue;
                const int64_t xi = ((n * c.c_in + grp * cig + ci) * c.h + ih) * c.w + iw;
                const int64_t wi = ((co * cig + ci) * c.kh + ki) * c.kw + kj;
                acc += x[xi] * w[wi];
                r.gx[xi] += w[wi] * gy[yi];
                r.gw[wi] += x[xi] * gy[yi];
              }
            }
          }
          r.y[yi] = acc;
        }
      }
    }
  }
  return r;
}

// Elementwise agreement to `tol` relative to the reference's largest magnitude (at least 1): the
// Winograd path's rounding error scales with the magnitude of the sums, not of each result.
::testing::AssertionResult close(const Tensor& t, const std::vector<double>& want, double tol,
                                 const char* what) {
  if (!t.defined()) return ::testing::AssertionFailure() << what << " is undefined";
  const std::vector<double> got = t.to_vector();
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << what << ": " << got.size() << " elements, expected " << want.size();
  }
  double scale = 1.0;
  for (double v : want) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::abs(got[i] - want[i]) <= tol * scale)) {
      return ::testing::AssertionFailure()
             << what << " element " << i << ": " << got[i] << " vs " << want[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// Forward and all three gradients of conv2d against the direct reference, in `dtype`.
void check_against_reference(const Cfg& c, DType dtype, double tol) {
  SCOPED_TRACE(::testing::Message()
               << "n" << c.n << " c" << c.c_in << " " << c.h << "x" << c.w << " -> " << c.c_out
               << " k" << c.kh << "x" << c.kw << " s" << c.sh << "," << c.sw << " p" << c.ph << ","
               << c.pw << " d" << c.dh << "," << c.dw << " g" << c.groups << " "
               << dtype_name(dtype));
  Generator gen(42);
  Tensor x = randn({c.n, c.c_in, c.h, c.w}, gen, dtype);
  Tensor w = randn({c.c_out, c.c_in / c.groups, c.kh, c.kw}, gen, dtype);
  Tensor b = c.bias ? randn({c.c_out}, gen, dtype) : Tensor();
  Tensor gy = randn({c.n, c.c_out, c.h_out(), c.w_out()}, gen, dtype);
  x.requires_grad_();
  w.requires_grad_();
  if (c.bias) b.requires_grad_();
  Tensor y = conv2d(x, w, b, c.options());
  ASSERT_EQ(y.shape(), (Shape{c.n, c.c_out, c.h_out(), c.w_out()}));
  sum(mul(y, gy)).backward();
  const Ref r = reference(c, x.to_vector(), w.to_vector(),
                          c.bias ? b.to_vector() : std::vector<double>(), gy.to_vector());
  EXPECT_TRUE(close(y, r.y, tol, "y"));
  EXPECT_TRUE(close(x.grad(), r.gx, tol, "dx"));
  EXPECT_TRUE(close(w.grad(), r.gw, tol, "dw"));
  if (c.bias) {
    EXPECT_TRUE(close(b.grad(), r.gb, tol, "db"));
  }
}

std::vector<Cfg> reference_configs() {
  std::vector<Cfg> cs;
  cs.push_back({2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1});                    // 3x3, same padding
  cs.push_back({2, 2, 9, 7, 3, 3, 3, 2, 2, 1, 2});                    // stride 2, pad h != w
  cs.push_back({2, 2, 8, 9, 3, 3, 2, 1, 1, 2, 1, 2, 1});              // dilation 2 in h
  cs.push_back({2, 2, 7, 7, 2, 3, 3, 1, 2, 2, 2, 2, 2});              // dilation 2 both, stride w
  cs.push_back({2, 4, 6, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2});           // groups 2
  cs.push_back({2, 3, 6, 7, 3, 3, 3, 1, 1, 1, 1, 1, 1, 3});           // depthwise
  cs.push_back({2, 3, 5, 6, 6, 3, 3, 2, 1, 1, 0, 1, 1, 3, false});    // depthwise x2, stride h
  cs.push_back({3, 5, 4, 6, 7, 1, 1});                                // 1x1
  cs.push_back({2, 4, 5, 7, 6, 1, 1, 1, 1, 0, 0, 1, 1, 2});           // 1x1, groups 2
  cs.push_back({2, 3, 7, 8, 4, 1, 1, 2, 2});                          // 1x1, stride 2
  cs.push_back({2, 2, 6, 5, 3, 5, 5, 1, 1, 2, 2});                    // 5x5 kernel
  cs.push_back({1, 3, 11, 13, 5, 4, 2, 3, 2, 1, 0, 1, 1, 1, false});  // batch 1, even kernel
  cs.push_back({2, 3, 4, 5, 2, 4, 5});                                // kernel = image: 1x1 output
  cs.push_back({1, 2, 3, 4, 2, 2, 2, 1, 1, 3, 3});                    // rows of pure padding
  cs.push_back({1, 1, 1, 9, 2, 1, 3, 1, 2, 0, 1});                    // height-1 images
  // Batches large enough for several images per GEMM and every weight-gradient slot.
  cs.push_back({21, 3, 5, 5, 5, 3, 3, 1, 1, 1, 1});
  cs.push_back({20, 4, 3, 4, 6, 1, 1, 1, 1, 0, 0, 1, 1, 2});
  cs.push_back({19, 4, 6, 6, 4, 3, 3, 2, 2, 1, 1, 1, 1, 4, false});
  // 3x3 stride-1 layers wide enough for Winograd: even and odd sizes, paddings 0 to 3, groups,
  // one image per chunk and several.
  cs.push_back({2, 16, 6, 6, 16, 3, 3, 1, 1, 1, 1});
  cs.push_back({3, 17, 7, 5, 20, 3, 3, 1, 1, 1, 1});
  cs.push_back({2, 16, 5, 8, 16, 3, 3, 1, 1, 0, 2, 1, 1, 1, false});
  cs.push_back({1, 32, 3, 3, 32, 3, 3, 1, 1, 3, 0, 1, 1, 2});
  cs.push_back({18, 16, 4, 3, 24, 3, 3, 1, 1, 1, 1});
  cs.push_back({9, 12, 9, 10, 3, 3, 3, 1, 1, 2, 1});
  return cs;
}

TEST(Conv2d, MatchesDirectReferenceF64) {
  for (const Cfg& c : reference_configs()) check_against_reference(c, DType::f64, 1e-12);
}

TEST(Conv2d, MatchesDirectReferenceF32) {
  for (const Cfg& c : reference_configs()) check_against_reference(c, DType::f32, 2e-5);
}

TEST(Conv2d, LargeImages) {
  // One image whose im2col matrix (400 x 8100, and 240 x 4880 per group) exceeds the chunk
  // budget, so output rows go in bands; and one 90x90 image on the Winograd path (529 tiles).
  check_against_reference({1, 16, 90, 90, 2, 5, 5, 1, 1, 2, 2}, DType::f64, 1e-12);
  check_against_reference({1, 32, 80, 61, 4, 5, 3, 1, 1, 2, 1, 1, 1, 2}, DType::f64, 1e-12);
  check_against_reference({1, 16, 90, 90, 2, 3, 3, 1, 1, 1, 1}, DType::f64, 1e-12);
}

TEST(Conv2d, NonContiguousInputs) {
  const Cfg c{2, 3, 5, 6, 4, 3, 3, 1, 1, 1, 1};
  Generator gen(3);
  // Channels-last storage seen as NCHW.
  Tensor x = randn({c.n, c.h, c.w, c.c_in}, gen, DType::f64).permute({0, 3, 1, 2});
  Tensor w = randn({c.c_out, c.c_in, c.kh, c.kw}, gen, DType::f64);
  Tensor b = randn({c.c_out}, gen, DType::f64);
  ASSERT_FALSE(x.is_contiguous());
  Tensor gy = zeros({c.n, c.c_out, c.h_out(), c.w_out()}, DType::f64);
  const Ref r = reference(c, x.to_vector(), w.to_vector(), b.to_vector(), gy.to_vector());
  EXPECT_TRUE(close(conv2d(x, w, b, c.options()), r.y, 1e-12, "y"));
  // A transposed weight view too.
  Tensor wt = w.permute({1, 0, 2, 3}).contiguous().permute({1, 0, 2, 3});
  ASSERT_FALSE(wt.is_contiguous());
  EXPECT_TRUE(close(conv2d(x, wt, b, c.options()), r.y, 1e-12, "y"));
}

TEST(Conv2d, GradcheckStrideAsymmetricPadding) {
  Tensor x = leaf({2, 2, 5, 4}, 1), w = leaf({3, 2, 3, 2}, 2), b = leaf({3}, 3);
  Conv2dOptions o{{2, 1}, {1, 2}, {1, 1}, 1};
  EXPECT_TRUE(gradcheck([o](const V& in) { return conv2d(in[0], in[1], in[2], o); }, {x, w, b}));
}

TEST(Conv2d, GradcheckDilationGroups) {
  Tensor x = leaf({2, 4, 6, 5}, 4), w = leaf({2, 2, 2, 3}, 5), b = leaf({2}, 6);
  Conv2dOptions o{{1, 2}, {1, 1}, {2, 1}, 2};
  EXPECT_TRUE(gradcheck([o](const V& in) { return conv2d(in[0], in[1], in[2], o); }, {x, w, b}));
}

TEST(Conv2d, GradcheckDepthwiseAndPointwise) {
  Tensor x = leaf({1, 3, 4, 5}, 7), w = leaf({3, 1, 3, 3}, 8), b = leaf({3}, 9);
  Conv2dOptions dw{{1, 1}, {1, 1}, {1, 1}, 3};
  EXPECT_TRUE(gradcheck([dw](const V& in) { return conv2d(in[0], in[1], in[2], dw); }, {x, w, b}));
  Tensor w1 = leaf({4, 3, 1, 1}, 10);
  EXPECT_TRUE(gradcheck([](const V& in) { return conv2d(in[0], in[1]); }, {x, w1}));
}

TEST(Conv2d, GradcheckNonContiguousInput) {
  Tensor x = strided_leaf({2, 2, 4, 3}, 11), w = leaf({2, 2, 3, 3}, 12), b = leaf({2}, 13);
  ASSERT_FALSE(x.is_contiguous());
  Conv2dOptions o{{1, 1}, {1, 1}, {1, 1}, 1};
  EXPECT_TRUE(gradcheck([o](const V& in) { return conv2d(in[0], in[1], in[2], o); }, {x, w, b}));
}

TEST(Conv2d, GradcheckWinograd) {
  // 3x3 stride 1 with 12 input channels takes the Winograd path; odd width, padding 2 in h.
  Tensor x = leaf({2, 12, 2, 3}, 30), w = leaf({3, 12, 3, 3}, 31), b = leaf({3}, 32);
  Conv2dOptions o{{1, 1}, {2, 1}, {1, 1}, 1};
  EXPECT_TRUE(gradcheck([o](const V& in) { return conv2d(in[0], in[1], in[2], o); }, {x, w, b}));
}

TEST(Conv2d, GradcheckBatchedChunks) {
  // 17 images of 2x2: several images share a GEMM and the weight gradient spans every slot.
  Tensor x = leaf({17, 2, 2, 2}, 14), w = leaf({2, 2, 2, 2}, 15), b = leaf({2}, 16);
  Conv2dOptions o{{1, 1}, {1, 1}, {1, 1}, 1};
  EXPECT_TRUE(gradcheck([o](const V& in) { return conv2d(in[0], in[1], in[2], o); }, {x, w, b}));
}

TEST(Conv2d, OnlyRequestedGradients) {
  // A first layer: the input needs no gradient, so backward computes only dw.
  Generator gen(17);
  Tensor x = randn({3, 2, 5, 5}, gen, DType::f64);
  Tensor w = leaf({4, 2, 3, 3}, 18);
  Tensor y = conv2d(x, w, Tensor(), {{1, 1}, {1, 1}, {1, 1}, 1});
  sum(y).backward();
  EXPECT_FALSE(x.grad().defined());
  ASSERT_TRUE(w.grad().defined());
  // With the weight frozen instead, only dx.
  Tensor x2 = leaf({3, 2, 5, 5}, 19);
  Tensor w2 = w.detach();
  sum(conv2d(x2, w2)).backward();
  EXPECT_TRUE(x2.grad().defined());
  EXPECT_FALSE(w2.grad().defined());
  const Cfg c{3, 2, 5, 5, 4, 3, 3, 1, 1, 1, 1};
  std::vector<double> ones_gy(c.n * c.c_out * 25, 1.0);
  const Ref r =
      reference(c, x.to_vector(), w.detach().to_vector(), std::vector<double>(4, 0.0), ones_gy);
  EXPECT_TRUE(close(w.grad(), r.gw, 1e-12, "dw"));
}

TEST(Conv2d, DeterministicAcrossThreadCounts) {
  // im2col (8 input channels) and Winograd (16): bitwise equal results from run to run and for
  // one thread or several.
  for (int64_t c : {8, 16}) {
    Generator gen(20);
    Tensor x = randn({64, c, 6, 6}, gen), w = randn({16, c, 3, 3}, gen), b = randn({16}, gen);
    Tensor gy = randn({64, 16, 6, 6}, gen);
    auto run = [&] {
      Tensor wl = w.detach().requires_grad_(), bl = b.detach().requires_grad_();
      Tensor xl = x.detach().requires_grad_();
      Tensor y = conv2d(xl, wl, bl, {{1, 1}, {1, 1}, {1, 1}, 1});
      sum(mul(y, gy)).backward();
      return std::vector<std::vector<double>>{y.to_vector(), xl.grad().to_vector(),
                                              wl.grad().to_vector(), bl.grad().to_vector()};
    };
    const int threads = omp_get_max_threads();
    const auto a = run();
    omp_set_num_threads(1);
    const auto single = run();
    omp_set_num_threads(threads);
    EXPECT_EQ(a, run());
    EXPECT_EQ(a, single);
  }
}

TEST(Conv2d, HalfTypesComputeInF32) {
  Generator gen(21);
  Tensor x = randn({2, 3, 5, 5}, gen), w = randn({4, 3, 3, 3}, gen), b = randn({4}, gen);
  Conv2dOptions o{{1, 1}, {1, 1}, {1, 1}, 1};
  for (DType dt : {DType::bf16, DType::f16}) {
    Tensor xh = x.to(dt), wh = w.to(dt), bh = b.to(dt);
    Tensor y = conv2d(xh, wh, bh, o);
    EXPECT_EQ(y.dtype(), dt);
    Tensor want = conv2d(xh.to(DType::f32), wh.to(DType::f32), bh.to(DType::f32), o);
    EXPECT_TRUE(testing::all_close(y.to(DType::f32), want, 0.05, 0.02));
    Tensor xl = xh.detach().requires_grad_();
    sum(conv2d(xl, wh, bh, o)).backward();
    EXPECT_EQ(xl.grad().dtype(), dt);
  }
}

TEST(Conv2d, EmptyBatch) {
  Tensor x = zeros({0, 2, 4, 4}, DType::f64), w = leaf({3, 2, 3, 3}, 22), b = leaf({3}, 23);
  Tensor y = conv2d(x, w, b, {{1, 1}, {1, 1}, {1, 1}, 1});
  EXPECT_EQ(y.shape(), (Shape{0, 3, 4, 4}));
  sum(y).backward();
  EXPECT_EQ(w.grad().to_vector(), std::vector<double>(54, 0.0));
  EXPECT_EQ(b.grad().to_vector(), std::vector<double>(3, 0.0));
}

TEST(Conv1d, MatchesConv2dOfHeightOne) {
  Generator gen(24);
  Tensor x = randn({3, 4, 11}, gen, DType::f64), w = randn({6, 2, 3}, gen, DType::f64);
  Tensor b = randn({6}, gen, DType::f64);
  Tensor y = conv1d(x, w, b, 2, 1, 2, 2);
  EXPECT_EQ(y.shape(), (Shape{3, 6, 5}));
  Tensor want = conv2d(x.unsqueeze(2), w.unsqueeze(2), b, {{1, 2}, {0, 1}, {1, 2}, 2}).squeeze(2);
  EXPECT_TRUE(testing::all_close(y, want, 1e-12, 0));
  const Cfg c{3, 4, 1, 11, 6, 1, 3, 1, 2, 0, 1, 1, 2, 2};
  std::vector<double> gy(3 * 6 * 5, 0.0);
  EXPECT_TRUE(
      close(y, reference(c, x.to_vector(), w.to_vector(), b.to_vector(), gy).y, 1e-12, "y"));
}

TEST(Conv1d, Gradcheck) {
  Tensor x = leaf({2, 4, 9}, 25), w = leaf({4, 2, 3}, 26), b = leaf({4}, 27);
  EXPECT_TRUE(
      gradcheck([](const V& in) { return conv1d(in[0], in[1], in[2], 2, 1, 2, 2); }, {x, w, b}));
  Tensor xs = strided_leaf({2, 3, 7}, 28), w1 = leaf({2, 3, 2}, 29);
  EXPECT_TRUE(
      gradcheck([](const V& in) { return conv1d(in[0], in[1], Tensor(), 1, 2); }, {xs, w1}));
}

TEST(ConvErrors, Messages) {
  Tensor x = zeros({2, 4, 5, 5}), w = zeros({6, 2, 3, 3});
  Conv2dOptions g2{{1, 1}, {0, 0}, {1, 1}, 2};
  EXPECT_MEL_ERROR(conv2d(zeros({4, 5, 5}), w), "conv2d", "4-D", "[4, 5, 5]");
  EXPECT_MEL_ERROR(conv2d(x, zeros({6, 2, 3})), "conv2d", "weight must be 4-D", "[6, 2, 3]");
  EXPECT_MEL_ERROR(conv2d(x, zeros({6, 4, 3, 3}), Tensor(), {{1, 1}, {0, 0}, {1, 1}, 3}), "conv2d",
                   "4 channels", "not divisible by groups = 3");
  EXPECT_MEL_ERROR(conv2d(x, zeros({5, 2, 3, 3}), Tensor(), g2), "conv2d", "5 output channels",
                   "not divisible by groups = 2");
  EXPECT_MEL_ERROR(conv2d(x, zeros({6, 3, 3, 3}), Tensor(), g2), "conv2d", "[6, 3, 3, 3]",
                   "expects 3 input channels per group", "2 per group");
  EXPECT_MEL_ERROR(conv2d(x, w), "conv2d", "expects 2 input channels", "[2, 4, 5, 5]");
  EXPECT_MEL_ERROR(conv2d(x, w, zeros({5}), g2), "conv2d", "bias must have shape [6]", "[5]");
  EXPECT_MEL_ERROR(conv2d(x, zeros({6, 2, 7, 3}), Tensor(), g2), "conv2d", "[2, 4, 5, 5]",
                   "[6, 2, 7, 3]", "at least 1x1");
  EXPECT_MEL_ERROR(conv2d(x, w, Tensor(), {{1, 1}, {0, 0}, {3, 1}, 2}), "conv2d", "dilation",
                   "at least 1x1");
  EXPECT_MEL_ERROR(conv2d(x, zeros({6, 2, 3, 3}, DType::f64), Tensor(), g2), "conv2d",
                   "dtypes differ", "f32", "f64");
  EXPECT_MEL_ERROR(conv2d(x, w, zeros({6}, DType::f64), g2), "conv2d", "dtypes differ");
  EXPECT_MEL_ERROR(
      conv2d(zeros({2, 4, 5, 5}, DType::i64), zeros({6, 2, 3, 3}, DType::i64), Tensor(), g2),
      "conv2d", "i64", "not supported");
  EXPECT_MEL_ERROR(conv2d(x, w, Tensor(), {{0, 1}, {0, 0}, {1, 1}, 2}), "conv2d", "stride 0");
  EXPECT_MEL_ERROR(conv2d(x, w, Tensor(), {{1, 1}, {-1, 0}, {1, 1}, 2}), "conv2d", "padding -1");
  EXPECT_MEL_ERROR(conv2d(x, w, Tensor(), {{1, 1}, {0, 0}, {1, 1}, 0}), "conv2d", "groups", ">= 1");
  EXPECT_MEL_ERROR(conv2d(Tensor(), w), "conv2d", "input", "undefined");
  EXPECT_MEL_ERROR(conv1d(zeros({2, 4, 3}), zeros({2, 4, 5})), "conv1d", "[2, 4, 3]", "[2, 4, 5]",
                   "output length would be -1");
  EXPECT_MEL_ERROR(conv1d(zeros({2, 4, 3, 3}), zeros({2, 4, 1})), "conv1d", "3-D", "[N, C_in, L]");
  EXPECT_MEL_ERROR(conv1d(zeros({2, 4, 9}), zeros({2, 4, 1}), Tensor(), 1, 0, 1, 3), "conv1d",
                   "not divisible by groups = 3");
}

}  // namespace
}  // namespace mel
