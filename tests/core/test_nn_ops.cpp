#include <cmath>
#include <limits>

#include "gradcheck.h"

namespace mel {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;
using testing::strided_leaf;
using V = std::vector<Tensor>;

// Naive softmax / log_softmax over `dim` computed from the element values in double.
Tensor naive_softmax(const Tensor& x, int64_t dim, bool log) {
  const Shape& s = x.shape();
  int64_t A = 1, C = s[dim], B = 1;
  for (int64_t i = 0; i < dim; ++i) A *= s[i];
  for (int64_t i = dim + 1; i < x.dim(); ++i) B *= s[i];
  std::vector<double> v = x.to_vector(), out(v.size());
  for (int64_t a = 0; a < A; ++a) {
    for (int64_t b = 0; b < B; ++b) {
      auto at = [&](int64_t c) { return (a * C + c) * B + b; };
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t c = 0; c < C; ++c) m = std::max(m, v[at(c)]);
      double z = 0;
      for (int64_t c = 0; c < C; ++c) z += std::exp(v[at(c)] - m);
      for (int64_t c = 0; c < C; ++c) {
        out[at(c)] = log ? v[at(c)] - m - std::log(z) : std::exp(v[at(c)] - m) / z;
      }
    }
  }
  return tensor(out, s, DType::f64);
}

// Per-row cross-entropy with PyTorch's label smoothing, in double.
std::vector<double> naive_ce_rows(const Tensor& logits, const std::vector<int64_t>& labels,
                                  double eps, int64_t ignore_index) {
  const int64_t N = logits.shape()[0], C = logits.shape()[1];
  std::vector<double> v = logits.to_vector(), rows(N, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    if (labels[n] == ignore_index) continue;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < C; ++c) m = std::max(m, v[n * C + c]);
    double z = 0;
    for (int64_t c = 0; c < C; ++c) z += std::exp(v[n * C + c] - m);
    const double lse = m + std::log(z);
    double smooth = 0;
    for (int64_t c = 0; c < C; ++c) smooth -= v[n * C + c] - lse;
    rows[n] = -(1 - eps) * (v[n * C + labels[n]] - lse) + eps / C * smooth;
  }
  return rows;
}

TEST(SoftmaxValues, MatchesNaiveReferenceOverEachDim) {
  Generator gen(11);
  // [2, 3, 70]: dim 0 and 1 take the strided kernel path with more columns than one strip.
  for (const Shape& shape : {Shape{2, 3, 70}, Shape{4, 1, 5}, Shape{7}}) {
    for (DType dt : {DType::f32, DType::f64}) {
      Tensor x = randn(shape, gen, dt, 0.0, 3.0);
      for (int64_t d = 0; d < x.dim(); ++d) {
        Tensor y = softmax(x, d), ly = log_softmax(x, d);
        EXPECT_EQ(y.dtype(), dt);
        EXPECT_TRUE(all_close(y, naive_softmax(x, d, false), 1e-6, 1e-5)) << "dim " << d;
        EXPECT_TRUE(all_close(ly, naive_softmax(x, d, true), 1e-5, 1e-5)) << "dim " << d;
        EXPECT_TRUE(
            all_close(sum(y.to(DType::f64), {d}), ones(sum(y, {d}).shape(), DType::f64), 1e-5, 0));
      }
      EXPECT_TRUE(all_close(softmax(x, -1), softmax(x, x.dim() - 1), 0, 0));
    }
  }
}

TEST(SoftmaxValues, ExtremeLogitsStayFinite) {
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = tensor({1000, -1000, 0, -1000, -1000, -1000}, {2, 3}, dt);
    EXPECT_TRUE(all_close(softmax(x, 1), tensor({1, 0, 0, 1.0 / 3, 1.0 / 3, 1.0 / 3}, {2, 3}, dt)));
    EXPECT_TRUE(all_close(
        log_softmax(x, 1),
        tensor({0, -2000, -1000, -std::log(3.0), -std::log(3.0), -std::log(3.0)}, {2, 3}, dt)));
    for (double v : log_softmax(x, 0).to_vector()) EXPECT_TRUE(std::isfinite(v));
  }
}

TEST(SoftmaxValues, NonContiguousHalfAndScalarInputs) {
  Generator gen(12);
  Tensor base = randn({5, 4, 3}, gen, DType::f64);
  Tensor xt = base.permute({2, 0, 1});  // [3, 5, 4], not contiguous
  ASSERT_FALSE(xt.is_contiguous());
  for (int64_t d = 0; d < 3; ++d) {
    EXPECT_TRUE(all_close(softmax(xt, d), softmax(xt.contiguous(), d), 0, 0));
    EXPECT_TRUE(all_close(log_softmax(xt, d), naive_softmax(xt.contiguous(), d, true)));
  }
  Tensor h = tensor({1, 2, 3, 4}, {2, 2}, DType::bf16);
  Tensor hy = softmax(h, 1);
  EXPECT_EQ(hy.dtype(), DType::bf16);
  EXPECT_TRUE(all_close(hy.to(DType::f64), naive_softmax(h.to(DType::f64), 1, false), 1e-2, 1e-2));
  EXPECT_EQ(log_softmax(tensor({1, 2}, {2}, DType::f16), 0).dtype(), DType::f16);
  Tensor s = full({}, 5.0, DType::f64);
  EXPECT_DOUBLE_EQ(softmax(s, 0).item(), 1.0);
  EXPECT_DOUBLE_EQ(log_softmax(s, -1).item(), 0.0);
  EXPECT_EQ(softmax(zeros({0, 3}), 1).shape(), (Shape{0, 3}));
}

TEST(SoftmaxGrad, EachDimOf3DTensor) {
  Tensor x = leaf({2, 3, 4}, 21, -2.0, 2.0);
  Tensor odd = leaf({3, 1, 5}, 22, -2.0, 2.0);
  Tensor nc = strided_leaf({3, 2, 5}, 23, -2.0, 2.0);
  ASSERT_FALSE(nc.is_contiguous());
  for (const Tensor& t : {x, odd, nc}) {
    for (int64_t d = -1; d < 3; ++d) {
      EXPECT_TRUE(gradcheck([d](const V& in) { return softmax(in[0], d); }, {t})) << "dim " << d;
      EXPECT_TRUE(gradcheck([d](const V& in) { return log_softmax(in[0], d); }, {t}))
          << "dim " << d;
    }
  }
  // composed with other ops, so the upstream gradient is not contiguous
  EXPECT_TRUE(gradcheck([](const V& in) { return softmax(in[0], 1).transpose(0, 2); }, {x}));
}

TEST(CrossEntropyValues, HandComputedAndNaive) {
  Tensor logits = tensor({1, 2, 3, 1, 1, 1}, {2, 3}, DType::f64);
  Tensor labels = tensor_i64({2, 0}, {2});
  const double r0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0;
  const double r1 = std::log(3.0);
  EXPECT_NEAR(cross_entropy(logits, labels).item(), (r0 + r1) / 2, 1e-12);
  EXPECT_NEAR(cross_entropy(logits, labels, {Reduction::sum}).item(), r0 + r1, 1e-12);
  // smoothing 0.1: 0.9 * nll + 0.1 * (lse - mean logit)
  Tensor sm = cross_entropy(logits, labels, {Reduction::none, 0.1});
  EXPECT_NEAR(sm.at({0}), 0.9 * r0 + 0.1 * (r0 + 1.0), 1e-12);
  EXPECT_NEAR(sm.at({1}), r1, 1e-12);

  Generator gen(31);
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = randn({9, 7}, gen, dt, 0.0, 4.0);
    std::vector<int64_t> y = {0, 6, 3, -100, 2, 2, 5, -100, 1};
    for (double eps : {0.0, 0.1, 1.0}) {
      std::vector<double> ref = naive_ce_rows(x, y, eps, -100);
      Tensor none = cross_entropy(x, tensor_i64(y, {9}), {Reduction::none, eps});
      EXPECT_TRUE(all_close(none, tensor(ref, {9}, dt), 1e-5, 1e-5));
      double total = 0;
      for (double r : ref) total += r;
      EXPECT_NEAR(cross_entropy(x, tensor_i64(y, {9}), {Reduction::sum, eps}).item(), total, 1e-4);
      EXPECT_NEAR(cross_entropy(x, tensor_i64(y, {9}), {Reduction::mean, eps}).item(), total / 7,
                  1e-5);
    }
  }
}

TEST(CrossEntropyValues, IgnoreIndexExtremeLogitsAndDtypes) {
  // a custom ignore_index inside [0, C) ignores that class's rows
  Tensor x = tensor({0, 1, 2, 3, 4, 5}, {3, 2}, DType::f64);
  Tensor y = tensor_i64({1, 0, 1}, {3});
  CrossEntropyOptions o{Reduction::mean, 0.0, 0};
  EXPECT_NEAR(cross_entropy(x, y, o).item(), std::log1p(std::exp(-1.0)), 1e-12);
  o.reduction = Reduction::none;
  EXPECT_EQ(cross_entropy(x, y, o).at({1}), 0.0);
  // every row ignored: the mean is 0 / 0 (NaN), the sum 0
  Tensor all_ignored = tensor_i64({-100, -100, -100}, {3});
  EXPECT_TRUE(std::isnan(cross_entropy(x, all_ignored).item()));
  EXPECT_EQ(cross_entropy(x, all_ignored, {Reduction::sum}).item(), 0.0);

  for (DType dt : {DType::f32, DType::f64}) {
    Tensor big = tensor({1000, -1000, -1000, 1000}, {2, 2}, dt);
    Tensor rows = cross_entropy(big, tensor_i64({1, 1}, {2}), {Reduction::none});
    EXPECT_NEAR(rows.at({0}), 2000.0, 1e-3);
    EXPECT_EQ(rows.at({1}), 0.0);
    Tensor sm = cross_entropy(big, tensor_i64({0, 0}, {2}), {Reduction::none, 0.2});
    EXPECT_NEAR(sm.at({0}), 0.1 * 2000.0, 1e-3);
    EXPECT_NEAR(sm.at({1}), 0.9 * 2000.0, 1e-2);
  }

  // i32 labels and half logits
  Tensor l32 = tensor({2, 0}, {2}, DType::i32);
  Tensor logits = tensor({1, 2, 3, 1, 1, 1}, {2, 3}, DType::f32);
  EXPECT_NEAR(cross_entropy(logits, l32).item(), cross_entropy(logits, l32.to(DType::i64)).item(),
              1e-7);
  Tensor hl = cross_entropy(logits.to(DType::bf16), l32);
  EXPECT_EQ(hl.dtype(), DType::bf16);
  EXPECT_NEAR(hl.item(), cross_entropy(logits, l32).item(), 1e-2);
}

TEST(CrossEntropyValues, FusedEqualsComposition) {
  Generator gen(41);
  const int64_t N = 6, C = 5;
  Tensor x = randn({N, C}, gen, DType::f64, 0.0, 2.0);
  Tensor labels = randint(0, C, {N}, gen);
  Tensor onehot = eq(labels.unsqueeze(1), arange(C).unsqueeze(0)).to(DType::f64);
  for (double eps : {0.0, 0.1}) {
    Tensor a = x.detach().clone(), b = x.detach().clone();
    a.requires_grad_();
    b.requires_grad_();
    Tensor fused = cross_entropy(a, labels, {Reduction::mean, eps});
    Tensor target = onehot * (1.0 - eps) + eps / C;
    Tensor composed = neg(mean(sum(target * log_softmax(b, 1), {1})));
    EXPECT_NEAR(fused.item(), composed.item(), 1e-12) << "eps " << eps;
    fused.backward();
    composed.backward();
    EXPECT_TRUE(all_close(a.grad(), b.grad(), 1e-12, 1e-10)) << "eps " << eps;
  }
}

TEST(CrossEntropyGrad, ReductionsSmoothingAndIgnoredRows) {
  Tensor x = leaf({5, 4}, 51, -3.0, 3.0);
  Tensor nc = strided_leaf({5, 4}, 52, -3.0, 3.0);
  Tensor y = tensor_i64({3, 0, -100, 1, 3}, {5});
  Tensor y32 = tensor({2, 2, 0, 1, 3}, {5}, DType::i32);
  for (Reduction r : {Reduction::mean, Reduction::sum, Reduction::none}) {
    for (double eps : {0.0, 0.1}) {
      CrossEntropyOptions o{r, eps};
      EXPECT_TRUE(gradcheck([&](const V& in) { return cross_entropy(in[0], y, o); }, {x}));
      EXPECT_TRUE(gradcheck([&](const V& in) { return cross_entropy(in[0], y32, o); }, {nc}));
    }
  }
  CrossEntropyOptions ignore_zero{Reduction::mean, 0.1, 0};
  Tensor y0 = tensor_i64({0, 1, 0, 3, 2}, {5});
  EXPECT_TRUE(gradcheck([&](const V& in) { return cross_entropy(in[0], y0, ignore_zero); }, {x}));
  // ignored rows get exactly zero gradient
  x.zero_grad();
  cross_entropy(x, y, {Reduction::mean, 0.1}).backward();
  for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(x.grad().at({2, c}), 0.0);
}

TEST(NnOpsErrors, MessagesNameOpAndValues) {
  Tensor logits = zeros({4, 3});
  Tensor labels = tensor_i64({0, 1, 7, 2}, {4});
  EXPECT_MEL_ERROR(cross_entropy(logits, labels),
                   "cross_entropy: label 7 at row 2 is out of range for 3 classes");
  EXPECT_MEL_ERROR(cross_entropy(logits, tensor_i64({0, -1, 9, 0}, {4})), "label -1 at row 1");
  EXPECT_MEL_ERROR(cross_entropy(logits, tensor_i64({0, 1, 2, 0, 1}, {5})),
                   "cross_entropy: logits [4, 3] and labels [5]");
  EXPECT_MEL_ERROR(cross_entropy(logits, tensor_i64({0, 1, 2, 0}, {4, 1})),
                   "cross_entropy: logits [4, 3] and labels [4, 1]",
                   "expected labels of shape [4]");
  EXPECT_MEL_ERROR(cross_entropy(zeros({2, 3, 4}), tensor_i64({0, 1}, {2})), "cross_entropy", "2-D",
                   "[2, 3, 4]");
  EXPECT_MEL_ERROR(cross_entropy(logits, zeros({4})), "cross_entropy", "labels", "f32");
  EXPECT_MEL_ERROR(cross_entropy(zeros({4, 3}, DType::i64), labels), "cross_entropy",
                   "floating point", "i64");
  EXPECT_MEL_ERROR(cross_entropy(logits, tensor_i64({0, 1, 2, 0}, {4}), {Reduction::mean, 1.5}),
                   "cross_entropy", "label_smoothing", "1.5");
  EXPECT_MEL_ERROR(cross_entropy(logits, tensor_i64({0, 1, 2, 0}, {4}), {Reduction::mean, -0.1}),
                   "label_smoothing", "-0.1");
  EXPECT_MEL_ERROR(cross_entropy(Tensor(), labels), "cross_entropy");
  EXPECT_MEL_ERROR(softmax(zeros({2, 3}), 2), "softmax", "dimension 2");
  EXPECT_MEL_ERROR(log_softmax(zeros({2, 3}), -3), "log_softmax", "dimension -3");
  EXPECT_MEL_ERROR(softmax(zeros({2, 3}, DType::i32), 0), "softmax", "floating-point", "i32",
                   "[2, 3]");
}

}  // namespace
}  // namespace mel
