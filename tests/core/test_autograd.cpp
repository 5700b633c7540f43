#include "gradcheck.h"

namespace mel {
namespace {

Tensor param(std::vector<double> v, Shape s) {
  Tensor t = tensor(v, s, DType::f64);
  t.requires_grad_();
  return t;
}

TEST(Autograd, ChainRuleAndLeafGrad) {
  Tensor x = param({1, 2, 3}, {3});
  Tensor y = sum(mul(x, x));  // dy/dx = 2x
  EXPECT_TRUE(y.requires_grad());
  EXPECT_FALSE(y.is_leaf());
  y.backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2, 4, 6}));
}

TEST(Autograd, AccumulatesWhenATensorIsUsedSeveralTimes) {
  Tensor x = param({2}, {1});
  Tensor a = mul(x, 3.0);
  Tensor y = add(mul(a, x), a);  // 3x^2 + 3x -> 6x + 3
  y.backward();
  EXPECT_EQ(x.grad().item(), 15.0);
  // a second backward over a new graph adds into .grad
  sum(mul(x, 2.0)).backward();
  EXPECT_EQ(x.grad().item(), 17.0);
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, BackwardWithGivenGradient) {
  Tensor x = param({1, 2, 3, 4}, {2, 2});
  Tensor y = mul(x, x);
  y.backward(tensor({1, 0, 0, 2}, {2, 2}, DType::f64));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2, 0, 0, 16}));
  Tensor z = mul(x, 2.0);
  EXPECT_MEL_ERROR(z.backward(), "backward", "non-scalar", "[2, 2]");
  EXPECT_MEL_ERROR(z.backward(ones({3}, DType::f64)), "backward", "[3]", "[2, 2]");
}

TEST(Autograd, DetachAndNoGradStopRecording) {
  Tensor x = param({1, 2}, {2});
  Tensor d = x.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_EQ(d.impl()->storage, x.impl()->storage);
  {
    autograd::NoGradGuard ng;
    Tensor y = mul(x, x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_FALSE(y.grad_fn());
  }
  EXPECT_TRUE(mul(x, x).requires_grad());
  Tensor plain = ones({2}, DType::f64);
  EXPECT_FALSE(mul(plain, plain).requires_grad());
  EXPECT_TRUE(add(plain, x).requires_grad());  // propagates from any input
  EXPECT_MEL_ERROR(sum(mul(plain, plain)).backward(), "does not require grad");
}

TEST(Autograd, GraphIsReleasedAfterBackward) {
  Tensor x = param({1, 2}, {2});
  Tensor y = sum(exp(x));
  y.backward();
  EXPECT_MEL_ERROR(y.backward(), "already freed", "retain_graph");
  Tensor z = sum(exp(x));
  x.zero_grad();
  z.backward(Tensor(), /*retain_graph=*/true);
  z.backward();
  EXPECT_NEAR(x.grad().at({0}), 2 * std::exp(1.0), 1e-12);
}

TEST(Autograd, SavedTensorsDoNotKeepTheGraphAliveAfterBackward) {
  std::weak_ptr<TensorImpl> inner;
  Tensor x = param({1, 2, 3}, {3});
  {
    Tensor h = exp(x);
    inner = h.impl_ptr();
    Tensor y = sum(mul(h, h));
    y.backward();
  }
  EXPECT_TRUE(inner.expired());
}

TEST(Autograd, RequiresGradRules) {
  Tensor i = zeros({2}, DType::i64);
  EXPECT_MEL_ERROR(i.requires_grad_(), "floating-point");
  Tensor x = param({1}, {1});
  Tensor y = mul(x, 2.0);
  EXPECT_MEL_ERROR(y.requires_grad_(), "leaf");
}

TEST(Autograd, HalfPrecisionGradientsFlowThroughConversions) {
  Tensor x = param({0.5, 1.5}, {2});
  Tensor h = x.to(DType::bf16);
  Tensor y = sum(mul(h, h).to(DType::f32));
  y.backward();
  EXPECT_EQ(x.grad().dtype(), DType::f64);
  EXPECT_NEAR(x.grad().at({1}), 3.0, 1e-2);
}

TEST(Autograd, DiamondGraphUsesEachPathOnce) {
  Tensor x = param({0.3}, {1});
  Tensor a = tanh(x);
  Tensor y = add(mul(sigmoid(a), exp(a)), a);
  y.backward();
  // d/dx [s(t) e^t + t] with t = tanh(x): (s'(t) e^t + s(t) e^t + 1) (1 - t^2)
  const double t = std::tanh(0.3), s = 1 / (1 + std::exp(-t));
  EXPECT_NEAR(x.grad().item(), (s * (1 - s) * std::exp(t) + s * std::exp(t) + 1) * (1 - t * t),
              1e-12);
  x.zero_grad();
  EXPECT_TRUE(testing::gradcheck(
      [](const std::vector<Tensor>& in) {
        Tensor a = tanh(in[0]);
        return add(mul(sigmoid(a), exp(a)), a);
      },
      {x}));
}

}  // namespace
}  // namespace mel

namespace mel {
namespace {

TEST(Autograd, InPlaceWriteToASavedTensorIsCaught) {
  Tensor x = tensor({1, 2}, {2}, DType::f64);
  x.requires_grad_();
  Tensor h = exp(x);  // exp saves its output
  Tensor y = sum(mul(h, h));
  h.detach().fill_(0.0);  // same storage as h
  EXPECT_MEL_ERROR(y.backward(), "modified in place", "mul");
  // indices saved by gather are watched as well
  Tensor w = tensor({1, 2, 3}, {3}, DType::f64);
  w.requires_grad_();
  Tensor idx = tensor_i64({0, 2}, {2});
  Tensor z = sum(index_select(w, 0, idx));
  idx.set({0}, 1.0);
  EXPECT_MEL_ERROR(z.backward(), "modified in place", "index_select");
  // writes before the forward pass are fine
  Tensor v = tensor({1, 2}, {2}, DType::f64);
  v.set({0}, 3.0);
  v.requires_grad_();
  sum(mul(v, v)).backward();
  EXPECT_EQ(v.grad().at({0}), 6.0);
}

}  // namespace
}  // namespace mel
