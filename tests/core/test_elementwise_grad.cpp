#include "gradcheck.h"

namespace mel {
namespace {

using testing::gradcheck;
using testing::leaf;
using testing::strided_leaf;
using V = std::vector<Tensor>;

// Every table op's gradient (broadcasting, strided inputs) is checked by the op catalogue
// (tests/op_catalogue.h, test_op_catalogue.cpp); these cover compositions and special values.

TEST(ElementwiseGrad, NonContiguousInputs) {
  Tensor a = strided_leaf({3, 5}, 4), b = strided_leaf({3, 5}, 5, 0.5, 2.0);
  EXPECT_FALSE(a.is_contiguous());
  EXPECT_TRUE(gradcheck([](const V& in) { return mul(in[0], in[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](const V& in) { return div(exp(in[0]), in[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](const V& in) { return tanh(in[0].t()); }, {a}));
}

TEST(ElementwiseGrad, WhereAndScalars) {
  Tensor a = leaf({2, 5}, 8), b = leaf({5}, 9);
  Tensor cond = gt(a.detach(), zeros({}, DType::f64));
  EXPECT_TRUE(gradcheck([cond](const V& in) { return where(cond, in[0], in[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](const V& in) { return (2.0 - in[0] * 3.0) / 4.0 + 1.0; }, {a}));
}

TEST(ElementwiseValues, KnownResults) {
  Tensor x = tensor({-1.0, 0.0, 2.0}, {3});
  EXPECT_TRUE(testing::all_close(relu(x), tensor({0, 0, 2}, {3})));
  EXPECT_NEAR(gelu(x).at({2}), 1.9544997361036416, 1e-6);
  EXPECT_NEAR(gelu(x, GeluApprox::tanh).at({2}), 1.9545976940871754, 1e-6);
  EXPECT_NEAR(silu(x).at({0}), -0.2689414213699951, 1e-6);
  EXPECT_NEAR(sigmoid(tensor({-800.0}, {1}, DType::f64)).item(), 0.0, 1e-300);
  Tensor i = tensor({7, -7}, {2}, DType::i64);
  EXPECT_EQ(div(i, tensor({2, 2}, {2}, DType::i64)).to_vector(), (std::vector<double>{3, -3}));
  Tensor h = tensor({1.5, 2.25}, {2}, DType::bf16);
  Tensor hs = add(h, h);
  EXPECT_EQ(hs.dtype(), DType::bf16);
  EXPECT_EQ(hs.to_vector(), (std::vector<double>{3.0, 4.5}));
}

}  // namespace
}  // namespace mel
