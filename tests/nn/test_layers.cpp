// Every layer: output against the functional op or a hand computation, and an f64
// finite-difference gradient check of the input and all parameters through the module.
#include <gtest/gtest.h>

#include "core/ops_norm.h"
#include "nn/layers.h"
#include "tests/gradcheck.h"

namespace mel::nn {
namespace {

using testing::gradcheck;

// Gradient-checks module(x) with respect to x (when it is floating) and every parameter.
::testing::AssertionResult check_module(Module& m, const Tensor& x, bool x_grad = true) {
  m.to(DType::f64);
  Generator g(99);
  m.reset_parameters(g);
  m.to(DType::f64);
  std::vector<Tensor> inputs;
  if (x_grad) {
    inputs.push_back(x);
  }
  for (auto& [name, p] : m.named_parameters()) inputs.push_back(p);
  return gradcheck([&](const std::vector<Tensor>&) { return m.forward(x); }, inputs);
}

Tensor input(const Shape& s, uint64_t seed = 5) {
  Generator g(seed);
  return randn(s, g, DType::f64).requires_grad_();
}

TEST(Layers, LinearMatchesFormulaAndGradchecks) {
  Linear lin(3, 2);
  Generator g(1);
  lin.reset_parameters(g);
  Tensor x = tensor({1, 2, 3, -1, 0, 0.5}, {2, 3});
  Tensor y = lin(x);
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t o = 0; o < 2; ++o) {
      double e = lin.bias.at({o});
      for (int64_t k = 0; k < 3; ++k) e += x.at({i, k}) * lin.weight.at({o, k});
      EXPECT_NEAR(y.at({i, o}), e, 1e-5);
    }
  }
  Linear l2(4, 3);
  EXPECT_TRUE(check_module(l2, input({2, 5, 4})));  // leading batch dims
  Linear l3(4, 3, false);
  EXPECT_TRUE(check_module(l3, input({3, 4})));
  EXPECT_MEL_ERROR(lin(zeros({2, 4})), "Linear(3, 2)", "[..., 3]", "[2, 4]");
}

TEST(Layers, Conv2dGradchecks) {
  Conv2dOptions o;
  o.padding = {1, 0};
  o.stride = {2, 1};
  Conv2d c(2, 3, {3, 2}, o);
  EXPECT_TRUE(check_module(c, input({2, 2, 5, 4})));
  Conv2dOptions og;
  og.groups = 2;
  og.dilation = {2, 1};
  Conv2d cg(4, 2, {2, 2}, og, false);
  EXPECT_TRUE(check_module(cg, input({1, 4, 5, 3})));
}

TEST(Layers, Conv1dGradchecks) {
  Conv1d c(2, 3, 3, 1, 1);
  EXPECT_TRUE(check_module(c, input({2, 2, 6})));
  EXPECT_EQ(c(input({2, 2, 6})).shape(), (Shape{2, 3, 6}));
}

TEST(Layers, BatchNormTrainEvalAndGradcheck) {
  BatchNorm bn(2, 3);
  Tensor x = input({4, 3, 2, 2});
  EXPECT_TRUE(check_module(bn, x));
  // eval uses the running statistics
  BatchNorm e(2, 3);
  e.running_mean.copy_(tensor({1, 2, 3}, {3}));
  e.running_var.copy_(tensor({4, 4, 4}, {3}));
  e.eval();
  Tensor y = e(ones({1, 3, 1, 1}));
  EXPECT_NEAR(y.at({0, 0, 0, 0}), 0.0, 1e-4);
  EXPECT_NEAR(y.at({0, 1, 0, 0}), -0.5, 1e-4);
  EXPECT_NEAR(y.at({0, 2, 0, 0}), -1.0, 1e-4);
  // training updates running stats and counts batches
  BatchNorm t(1, 2);
  t(tensor({0, 10, 2, 14}, {2, 2}));
  EXPECT_EQ(t.num_batches_tracked.item(), 1.0);
  EXPECT_NEAR(t.running_mean.at({0}), 0.1, 1e-6);             // 0.9 * 0 + 0.1 * 1
  EXPECT_NEAR(t.running_var.at({1}), 0.9 + 0.1 * 8.0, 1e-5);  // unbiased var of {10, 14} = 8
  BatchNorm b1(1, 3);
  EXPECT_TRUE(check_module(b1, input({5, 3})));
  BatchNorm b1l(1, 3);
  EXPECT_TRUE(check_module(b1l, input({2, 3, 4})));
  EXPECT_MEL_ERROR(bn(zeros({2, 4, 2, 2})), "BatchNorm2d(3)", "4 channels");
}

TEST(Layers, BatchNormFusedReluMatchesUnfused) {
  BatchNorm a(2, 3), b(2, 3);
  b.fuse_relu = true;
  a.to(DType::f64);
  b.to(DType::f64);
  Tensor x = input({3, 3, 2, 2}, 11);
  Tensor ya = relu(a(x)), yb = b(x);
  EXPECT_TRUE(testing::all_close(ya, yb, 1e-6, 1e-6));
  BatchNorm c(2, 3);
  c.fuse_relu = true;
  EXPECT_TRUE(check_module(c, input({3, 3, 2, 2}, 12)));
}

TEST(Layers, LayerNormGradchecks) {
  LayerNorm ln({4});
  EXPECT_TRUE(check_module(ln, input({3, 4})));
  LayerNorm ln2({2, 3});
  EXPECT_TRUE(check_module(ln2, input({2, 2, 3})));
}

TEST(Layers, PoolingGradchecks) {
  Pool2dOptions o;
  o.kernel = {2, 2};
  MaxPool2d mp(o);
  EXPECT_TRUE(check_module(mp, input({2, 2, 4, 5})));
  Pool2dOptions oa;
  oa.kernel = {3, 3};
  oa.stride = {2, 2};
  oa.padding = {1, 1};
  AvgPool2d ap(oa);
  EXPECT_TRUE(check_module(ap, input({1, 2, 5, 5})));
  AdaptiveAvgPool2d ad({2, 3});
  EXPECT_TRUE(check_module(ad, input({1, 2, 5, 7})));
  GlobalAvgPool gp;
  Tensor x = input({2, 3, 2, 2});
  EXPECT_TRUE(check_module(gp, x));
  EXPECT_EQ(gp(x).shape(), (Shape{2, 3}));
  EXPECT_NEAR(
      gp(x).at({1, 2}),
      (x.at({1, 2, 0, 0}) + x.at({1, 2, 0, 1}) + x.at({1, 2, 1, 0}) + x.at({1, 2, 1, 1})) / 4,
      1e-12);
}

TEST(Layers, ActivationsFlattenIdentityGradcheck) {
  // Every entry of the activation table, so a new activation is checked with no new test code.
  for (const ActivationInfo& a : activations()) {
    ActivationLayer l(a.name);
    EXPECT_EQ(l.type(), a.module_type);
    EXPECT_TRUE(check_module(l, input({3, 4}, 21))) << a.name;
  }
  Flatten f;
  EXPECT_EQ(f(zeros({2, 3, 4})).shape(), (Shape{2, 12}));
  Identity id;
  EXPECT_TRUE(check_module(id, input({2, 2})));
  EXPECT_MEL_ERROR(find_activation("rleu"), "unknown activation 'rleu'", "relu, gelu");
}

TEST(Layers, DropoutScalesKeepsAndRoutesGradient) {
  Dropout d(0.25);
  Generator g(3);
  d.reset_parameters(g);
  Tensor x = ones({4000}, DType::f64).requires_grad_();
  Tensor y = d(x);
  int64_t kept = 0;
  for (double v : y.to_vector()) {
    EXPECT_TRUE(v == 0.0 || std::abs(v - 1.0 / 0.75) < 1e-12);
    kept += v != 0.0;
  }
  EXPECT_NEAR(static_cast<double>(kept) / 4000, 0.75, 0.03);
  sum(y).backward();
  EXPECT_EQ(x.grad().to_vector(), y.detach().to_vector());  // d y / d x = mask * scale
  d.eval();
  EXPECT_EQ(d(x).to_vector(), x.to_vector());
  EXPECT_MEL_ERROR(Dropout(1.0), "p must be in [0, 1)");
}

TEST(Layers, EmbeddingLooksUpAndGradchecks) {
  Embedding e(5, 3);
  Generator g(2);
  e.reset_parameters(g);
  Tensor idx = tensor_i64({4, 0, 4}, {3});
  Tensor y = e(idx);
  EXPECT_EQ(y.shape(), (Shape{3, 3}));
  EXPECT_EQ(y.at({0, 1}), e.weight.at({4, 1}));
  e.to(DType::f64);
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>&) { return e(idx); }, {e.weight}));
}

TEST(Layers, SequentialChainsAndNamesChildren) {
  Sequential s({std::make_shared<Linear>(3, 4), make_relu(), std::make_shared<Linear>(4, 2)});
  EXPECT_EQ(s.size(), 3u);
  EXPECT_EQ(s.children()[2].first, "2");
  EXPECT_TRUE(check_module(s, input({2, 3})));
}

}  // namespace
}  // namespace mel::nn
