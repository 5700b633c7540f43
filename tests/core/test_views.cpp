#include "gradcheck.h"

namespace mel {
namespace {

using testing::gradcheck;
using testing::leaf;
using V = std::vector<Tensor>;

Tensor iota(const Shape& s, DType dt = DType::f32) {
  return arange(0.0, static_cast<double>(numel_of(s)), 1.0, dt).view(s);
}

TEST(Views, ShareStorageAndDoNotCopy) {
  Tensor x = iota({2, 3, 4});
  Tensor v = x.view({6, 4});
  Tensor p = x.permute({2, 0, 1});
  Tensor n = x.narrow(2, 1, 2);
  Tensor e = x.narrow(0, 0, 1).expand({5, 3, 4});
  for (const Tensor& t : {v, p, n, e}) {
    EXPECT_EQ(t.impl()->storage, x.impl()->storage);
  }
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.strides(), (Shape{1, 12, 4}));
  EXPECT_FALSE(p.is_contiguous());
  EXPECT_EQ(n.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(n.offset(), 1);
  EXPECT_EQ(e.strides()[0], 0);
  x.set({0, 1, 2}, 100.0);  // writes are visible through every view
  EXPECT_EQ(v.at({1, 2}), 100.0);
  EXPECT_EQ(p.at({2, 0, 1}), 100.0);
  EXPECT_EQ(n.at({0, 1, 1}), 100.0);
  EXPECT_EQ(e.at({4, 1, 2}), 100.0);
}

TEST(Views, ValuesOfPermuteSliceSelectSqueeze) {
  Tensor x = iota({2, 3, 4});
  EXPECT_EQ(x.transpose(0, 2).at({3, 1, 0}), x.at({0, 1, 3}));
  Tensor s = x.slice(2, 0, 4, 2);  // columns 0 and 2
  EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(s.at({1, 2, 1}), 22.0);
  EXPECT_EQ(x.slice(1, -2, 3).shape(), (Shape{2, 2, 4}));
  EXPECT_EQ(x.select(1, -1).shape(), (Shape{2, 4}));
  EXPECT_EQ(x.select(1, -1).at({1, 3}), 23.0);
  Tensor u = x.unsqueeze(1).unsqueeze(-1);
  EXPECT_EQ(u.shape(), (Shape{2, 1, 3, 4, 1}));
  EXPECT_EQ(u.squeeze().shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(u.squeeze(1).shape(), (Shape{2, 3, 4, 1}));
  EXPECT_EQ(u.squeeze(0).shape(), u.shape());
  EXPECT_EQ(x.flatten(1).shape(), (Shape{2, 12}));
  EXPECT_EQ(x.view({-1, 4}).shape(), (Shape{6, 4}));
}

TEST(Views, ContiguousReshapeAndViewRules) {
  Tensor x = iota({3, 4});
  Tensor t = x.t();
  EXPECT_MEL_ERROR(t.view({12}), "view", "[4, 3]", "reshape");
  Tensor r = t.reshape({12});  // falls back to a copy
  EXPECT_NE(r.impl()->storage, x.impl()->storage);
  EXPECT_EQ(r.to_vector(), (std::vector<double>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  Tensor c = t.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.to_vector(), r.to_vector());
  EXPECT_EQ(x.contiguous().impl(), x.impl());  // no copy when already contiguous
  // a non-contiguous view that still admits some views without copying
  Tensor n = iota({4, 6}).narrow(1, 0, 4);  // strides [6, 1]
  EXPECT_EQ(n.view({4, 2, 2}).strides(), (Shape{6, 2, 1}));
  EXPECT_MEL_ERROR(n.view({16}), "view");
}

TEST(Views, Broadcasting) {
  Tensor a = iota({3, 1});
  Tensor b = iota({1, 4});
  Tensor c = add(a, b);
  EXPECT_EQ(c.shape(), (Shape{3, 4}));
  EXPECT_EQ(c.at({2, 3}), 5.0);
  Tensor d = mul(iota({2, 1, 3}), iota({4, 1}));
  EXPECT_EQ(d.shape(), (Shape{2, 4, 3}));
  EXPECT_EQ(d.at({1, 3, 2}), 5.0 * 3.0);
  Tensor s = add(iota({2, 3}), full({}, 10.0));
  EXPECT_EQ(s.at({1, 2}), 15.0);
  EXPECT_MEL_ERROR(add(iota({2, 3}), iota({4})), "add", "[2, 3]", "[4]", "broadcast");
  Tensor e = iota({3}).expand({2, 3});
  EXPECT_EQ(e.to_vector(), (std::vector<double>{0, 1, 2, 0, 1, 2}));
  EXPECT_MEL_ERROR(iota({2, 3}).expand({4, 3}), "expand", "size 2", "4");
}

TEST(Views, InvalidDimensionsAndRanges) {
  Tensor x = iota({2, 3});
  EXPECT_MEL_ERROR(x.permute({0, 0}), "permute", "repeated");
  EXPECT_MEL_ERROR(x.permute({0}), "permute");
  EXPECT_MEL_ERROR(x.transpose(0, 2), "transpose", "out of range", "2 dimensions");
  EXPECT_MEL_ERROR(x.narrow(1, 2, 2), "narrow", "[2, 4)", "size 3");
  EXPECT_MEL_ERROR(x.select(0, 2), "select", "index 2");
  EXPECT_MEL_ERROR(x.view({4, 2}), "view", "6 elements");
  EXPECT_MEL_ERROR(x.view({-1, -1}), "view", "-1");
  EXPECT_MEL_ERROR(x.at({0, 3}), "index 3", "size 3");
  EXPECT_MEL_ERROR(x.item(), "item", "6 elements");
}

TEST(ViewsGrad, EveryViewOp) {
  Tensor x = leaf({2, 3, 4}, 21);
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].view({6, 4}) * 2.0; }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].permute({2, 0, 1}).contiguous(); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].transpose(0, 2).reshape({4, 6}); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].narrow(1, 1, 2); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].slice(2, 0, 4, 3); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].select(0, 1); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].unsqueeze(1).squeeze(); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].flatten(); }, {x}));
  Tensor y = leaf({3, 1}, 22);
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].expand({2, 3, 5}); }, {y}));
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].to(DType::f32).to(DType::f64); }, {y}, 1e-3,
                        1e-4, 1e-3));
}

TEST(Views, ConversionsBetweenDtypes) {
  Tensor x = tensor({-1.5, 0.25, 3.0, 70000.0}, {4}, DType::f64);
  EXPECT_EQ(x.to(DType::f32).to_vector(), x.to_vector());
  EXPECT_EQ(x.to(DType::bf16).to(DType::f64).at({1}), 0.25);
  EXPECT_TRUE(std::isinf(x.to(DType::f16).at({3})));  // beyond f16's range
  EXPECT_EQ(x.to(DType::i32).to_vector(), (std::vector<double>{-1, 0, 3, 70000}));
  EXPECT_EQ(x.to(DType::i64).dtype(), DType::i64);
  EXPECT_EQ(tensor({255, 1}, {2}, DType::u8).to(DType::f32).at({0}), 255.0);
  Tensor t = iota({2, 3}).t().to(DType::f64);  // converts non-contiguous input
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.at({2, 1}), 5.0);
}

}  // namespace
}  // namespace mel
