#include "gradcheck.h"

namespace mel {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;
using testing::strided_leaf;
using V = std::vector<Tensor>;
using Vals = std::vector<double>;

// ---- values --------------------------------------------------------------------------------

TEST(IndexOpsValues, Concat) {
  Tensor a = tensor({1, 2, 3, 4}, {2, 2});
  Tensor b = tensor({5, 6}, {2, 1});
  Tensor c = tensor({7, 8}, {1, 2});
  Tensor ab = concat({a, b}, 1);
  EXPECT_EQ(ab.shape(), (Shape{2, 3}));
  EXPECT_EQ(ab.to_vector(), (Vals{1, 2, 5, 3, 4, 6}));
  EXPECT_EQ(concat({a, b}, -1).to_vector(), (Vals{1, 2, 5, 3, 4, 6}));
  EXPECT_EQ(concat({a, c}, 0).to_vector(), (Vals{1, 2, 3, 4, 7, 8}));
  // a transposed (non-contiguous) input and an empty piece
  Tensor e = zeros({2, 0});
  EXPECT_EQ(concat({a.t(), e, b}, 1).to_vector(), (Vals{1, 3, 5, 2, 4, 6}));
  Tensor h = concat({a.to(DType::bf16), b.to(DType::bf16)}, 1);
  EXPECT_EQ(h.dtype(), DType::bf16);
  EXPECT_EQ(h.to_vector(), (Vals{1, 2, 5, 3, 4, 6}));
  Tensor i = concat({tensor_i64({1, 2}, {2}), tensor_i64({3}, {1})}, 0);
  EXPECT_EQ(i.dtype(), DType::i64);
  EXPECT_EQ(i.to_vector(), (Vals{1, 2, 3}));
}

TEST(IndexOpsValues, Stack) {
  Tensor a = tensor({1, 2}, {2}), b = tensor({3, 4}, {2});
  Tensor s0 = stack({a, b}, 0);
  EXPECT_EQ(s0.shape(), (Shape{2, 2}));
  EXPECT_EQ(s0.to_vector(), (Vals{1, 2, 3, 4}));
  Tensor s1 = stack({a, b}, 1);  // dim == rank
  EXPECT_EQ(s1.shape(), (Shape{2, 2}));
  EXPECT_EQ(s1.to_vector(), (Vals{1, 3, 2, 4}));
  EXPECT_EQ(stack({a, b, a}, -1).to_vector(), (Vals{1, 3, 1, 2, 4, 2}));
  Tensor sc = stack({full({}, 5.0), full({}, 6.0)}, 0);  // scalars
  EXPECT_EQ(sc.shape(), (Shape{2}));
  EXPECT_EQ(sc.to_vector(), (Vals{5, 6}));
}

TEST(IndexOpsValues, IndexSelect) {
  Tensor x = arange(12, DType::f32).reshape({3, 4});
  Tensor r = index_select(x, 0, tensor_i64({2, 0, 2}, {3}));
  EXPECT_EQ(r.shape(), (Shape{3, 4}));
  EXPECT_EQ(r.to_vector(), (Vals{8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11}));
  Tensor c = index_select(x, 1, tensor({3, 1}, {2}, DType::i32));
  EXPECT_EQ(c.shape(), (Shape{3, 2}));
  EXPECT_EQ(c.to_vector(), (Vals{3, 1, 7, 5, 11, 9}));
  // non-contiguous input, integer and half dtypes, an empty index
  EXPECT_EQ(index_select(x.t(), -1, tensor_i64({1}, {1})).to_vector(), (Vals{4, 5, 6, 7}));
  EXPECT_EQ(index_select(x.to(DType::i32), 1, tensor_i64({0}, {1})).to_vector(), (Vals{0, 4, 8}));
  Tensor h = index_select(x.to(DType::f16), 0, tensor_i64({1}, {1}));
  EXPECT_EQ(h.dtype(), DType::f16);
  EXPECT_EQ(h.to_vector(), (Vals{4, 5, 6, 7}));
  EXPECT_EQ(index_select(x, 0, tensor_i64({}, {0})).shape(), (Shape{0, 4}));
}

TEST(IndexOpsValues, Gather) {
  Tensor x = tensor({1, 2, 3, 4}, {2, 2});
  EXPECT_EQ(gather(x, 1, tensor_i64({0, 0, 1, 0}, {2, 2})).to_vector(), (Vals{1, 1, 4, 3}));
  EXPECT_EQ(gather(x, 0, tensor_i64({0, 1, 1, 0}, {2, 2})).to_vector(), (Vals{1, 4, 3, 2}));
  // index smaller than x outside dim, larger along dim
  Tensor y = arange(12, DType::f64).reshape({3, 4});
  Tensor g = gather(y, 1, tensor_i64({3, 0, 0, 2, 2, 2}, {2, 3}));
  EXPECT_EQ(g.shape(), (Shape{2, 3}));
  EXPECT_EQ(g.to_vector(), (Vals{3, 0, 0, 6, 6, 6}));
  Tensor g0 = gather(y, 0, tensor({2, 1, 0, 2, 0, 1, 1, 1}, {4, 2}, DType::i32));
  EXPECT_EQ(g0.to_vector(), (Vals{8, 5, 0, 9, 0, 5, 4, 5}));
  // picking the target logit of each row: [N, C] -> [N, 1]
  EXPECT_EQ(gather(y.t(), 1, tensor_i64({0, 2, 1, 0}, {4, 1})).to_vector(), (Vals{0, 9, 6, 3}));
  EXPECT_EQ(gather(full({}, 3.0), 0, tensor_i64({0}, {})).item(), 3.0);
}

TEST(IndexOpsValues, OneHot) {
  Tensor o = one_hot(tensor_i64({2, 0, 1}, {3}), 3);
  EXPECT_EQ(o.dtype(), DType::i64);
  EXPECT_EQ(o.shape(), (Shape{3, 3}));
  EXPECT_EQ(o.to_vector(), (Vals{0, 0, 1, 1, 0, 0, 0, 1, 0}));
  Tensor o2 = one_hot(tensor({1, 0, 3, 1}, {2, 2}, DType::i32), 4, DType::f32);
  EXPECT_EQ(o2.dtype(), DType::f32);
  EXPECT_EQ(o2.shape(), (Shape{2, 2, 4}));
  EXPECT_EQ(o2.to_vector(), (Vals{0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0}));
  for (DType dt : {DType::u8, DType::bf16, DType::f64}) {
    Tensor t = one_hot(tensor_i64({1}, {1}), 2, dt);
    EXPECT_EQ(t.dtype(), dt);
    EXPECT_EQ(t.to_vector(), (Vals{0, 1}));
  }
}

TEST(IndexOpsValues, Embedding) {
  Tensor w = arange(8, DType::f32).reshape({4, 2});
  Tensor e = embedding(w, tensor_i64({1, 3, 1, 0}, {2, 2}));
  EXPECT_EQ(e.shape(), (Shape{2, 2, 2}));
  EXPECT_EQ(e.to_vector(), (Vals{2, 3, 6, 7, 2, 3, 0, 1}));
  EXPECT_EQ(embedding(w, tensor({2}, {}, DType::i32)).to_vector(), (Vals{4, 5}));
  EXPECT_EQ(embedding(w, tensor({2}, {}, DType::i32)).shape(), (Shape{2}));
  // repeated indices add up in the weight gradient
  Tensor wl = w.to(DType::f64).detach();
  wl.requires_grad_();
  sum(embedding(wl, tensor_i64({1, 3, 1, 0, 1}, {5}))).backward();
  EXPECT_EQ(wl.grad().to_vector(), (Vals{1, 1, 3, 3, 0, 0, 1, 1}));
}

TEST(IndexOpsValues, IndicesNeverNeedGradAndConstantsAreSkipped) {
  Tensor a = leaf({2, 3}, 1);
  Tensor k = ones({2, 2}, DType::f64);
  sum(concat({a, k}, 1)).backward();
  EXPECT_EQ(a.grad().to_vector(), (Vals(6, 1.0)));
  EXPECT_FALSE(k.grad().defined());
  Tensor out = index_select(a, 1, tensor_i64({0}, {1}));
  EXPECT_TRUE(out.requires_grad());
  EXPECT_FALSE(one_hot(tensor_i64({0}, {1}), 2, DType::f64).requires_grad());
}

// Large enough that the kernels split work across threads: compares the forward and backward of
// index_select and gather (with many repeated indices) against naive loops.
TEST(IndexOpsValues, ParallelPathsMatchNaiveLoops) {
  Generator gen(7);
  const int64_t A = 3, D = 40, B = 1500, K = 90;
  Tensor x = rand({A, D, B}, gen, DType::f64);
  x.requires_grad_();
  Tensor idx = randint(0, 5, {K}, gen);  // heavy repetition
  Tensor r = randn({A, K, B}, gen, DType::f64);
  sum(mul(index_select(x, 1, idx), r)).backward();
  std::vector<double> rv = r.to_vector(), gv = x.grad().to_vector();
  std::vector<double> want(A * D * B, 0.0);
  std::vector<double> iv = idx.to_vector();
  for (int64_t a = 0; a < A; ++a)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t b = 0; b < B; ++b)
        want[(a * D + static_cast<int64_t>(iv[k])) * B + b] += rv[(a * K + k) * B + b];
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(gv[i], want[i], 1e-9) << i;

  const int64_t N = 20000, C = 8, J = 5;
  Tensor y = rand({C, N}, gen, DType::f64).t().detach();  // non-contiguous [N, C]
  y.requires_grad_();
  Tensor gi = randint(0, C, {N, J}, gen);
  Tensor out = gather(y, 1, gi);
  std::vector<double> yv = y.to_vector(), giv = gi.to_vector(), ov = out.to_vector();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < J; ++j)
      ASSERT_EQ(ov[n * J + j], yv[n * C + static_cast<int64_t>(giv[n * J + j])]);
  Tensor rg = randn({N, J}, gen, DType::f64);
  sum(mul(out, rg)).backward();
  std::vector<double> rgv = rg.to_vector(), ygv = y.grad().to_vector();
  std::vector<double> ywant(N * C, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < J; ++j)
      ywant[n * C + static_cast<int64_t>(giv[n * J + j])] += rgv[n * J + j];
  for (size_t i = 0; i < ywant.size(); ++i) ASSERT_NEAR(ygv[i], ywant[i], 1e-12) << i;
}

// ---- gradients -----------------------------------------------------------------------------

TEST(IndexOpsGrad, Concat) {
  Tensor a = leaf({2, 3, 4}, 1), b = strided_leaf({2, 1, 4}, 2), c = leaf({2, 2, 4}, 3);
  EXPECT_FALSE(b.is_contiguous());
  EXPECT_TRUE(gradcheck([](const V& in) { return concat(in, 1); }, {a, b, c}));
  Tensor p = leaf({1, 5}, 4), q = strided_leaf({3, 5}, 5);
  EXPECT_TRUE(gradcheck([](const V& in) { return concat({in[0], in[1], in[0]}, 0); }, {p, q}));
}

TEST(IndexOpsGrad, Stack) {
  Tensor a = leaf({3, 2}, 6), b = strided_leaf({3, 2}, 7), c = leaf({3, 2}, 8);
  EXPECT_TRUE(gradcheck([](const V& in) { return stack(in, 0); }, {a, b, c}));
  EXPECT_TRUE(gradcheck([](const V& in) { return stack(in, 2); }, {a, b, c}));
  EXPECT_TRUE(gradcheck([](const V& in) { return stack(in, -1); }, {a, b}));
}

TEST(IndexOpsGrad, IndexSelect) {
  Tensor x = leaf({4, 3, 2}, 9), xs = strided_leaf({3, 5}, 10);
  Tensor rep = tensor_i64({2, 0, 2, 2}, {4});
  EXPECT_TRUE(gradcheck([rep](const V& in) { return index_select(in[0], 1, rep); }, {x}));
  EXPECT_TRUE(gradcheck([rep](const V& in) { return index_select(in[0], 0, rep); }, {x}));
  Tensor rep1 = tensor({1, 1, 0}, {3}, DType::i32);
  EXPECT_TRUE(gradcheck([rep1](const V& in) { return index_select(in[0], -1, rep1); }, {x}));
  Tensor r2 = tensor_i64({4, 0, 4, 1, 4}, {5});
  EXPECT_TRUE(gradcheck([r2](const V& in) { return index_select(in[0], 1, r2); }, {xs}));
}

TEST(IndexOpsGrad, Gather) {
  Tensor x = strided_leaf({3, 4, 2}, 11);
  EXPECT_FALSE(x.is_contiguous());
  Generator gen(12);
  Tensor i0 = randint(0, 3, {5, 3, 2}, gen);  // longer along dim 0, shorter in dim 1
  Tensor i1 = randint(0, 4, {2, 6, 2}, gen);  // longer along dim 1, shorter in dim 0
  Tensor i2 = randint(0, 2, {3, 4, 3}, gen);
  EXPECT_TRUE(gradcheck([i0](const V& in) { return gather(in[0], 0, i0); }, {x}));
  EXPECT_TRUE(gradcheck([i1](const V& in) { return gather(in[0], 1, i1); }, {x}));
  EXPECT_TRUE(gradcheck([i2](const V& in) { return gather(in[0], -1, i2); }, {x}));
  Tensor xc = leaf({1, 3, 1}, 13);
  Tensor ic = tensor_i64({2, 2, 0, 1}, {1, 4, 1});
  EXPECT_TRUE(gradcheck([ic](const V& in) { return gather(in[0], 1, ic); }, {xc}));
}

TEST(IndexOpsGrad, Embedding) {
  Tensor w = leaf({5, 3}, 14);
  Tensor ids = tensor_i64({1, 4, 1, 0, 1, 4}, {2, 3});
  EXPECT_TRUE(gradcheck([ids](const V& in) { return embedding(in[0], ids); }, {w}));
  Tensor ws = strided_leaf({6, 2}, 15);
  Tensor ids32 = tensor({5, 5, 2}, {3}, DType::i32);
  EXPECT_TRUE(gradcheck([ids32](const V& in) { return embedding(in[0], ids32); }, {ws}));
}

TEST(IndexOpsGrad, HalfInputsFlowThroughF32) {
  Tensor w = leaf({3, 2}, 16);
  Tensor h = w.to(DType::bf16);
  Tensor e = embedding(h, tensor_i64({2, 2}, {2}));
  EXPECT_EQ(e.dtype(), DType::bf16);
  sum(e.to(DType::f64)).backward();
  EXPECT_EQ(w.grad().to_vector(), (Vals{0, 0, 0, 0, 2, 2}));
}

// ---- errors --------------------------------------------------------------------------------

TEST(IndexOpsErrors, ConcatAndStack) {
  Tensor a = zeros({2, 3}), b = zeros({2, 4});
  EXPECT_MEL_ERROR(concat({}, 0), "concat: expected a non-empty list");
  EXPECT_MEL_ERROR(stack({}, 0), "stack: expected a non-empty list");
  EXPECT_MEL_ERROR(concat({a, b}, 0),
                   "concat: tensor 1 has shape [2, 4] but tensor 0 has [2, 3]; sizes must match "
                   "except in dimension 0");
  EXPECT_MEL_ERROR(concat({a, zeros({2, 3}, DType::f64)}, 0), "concat: tensor 1 has dtype f64",
                   "tensor 0 has f32");
  EXPECT_MEL_ERROR(concat({a, zeros({2, 3, 1})}, 0), "concat: tensor 1 has 3 dimensions",
                   "[2, 3, 1]", "tensor 0 has 2");
  EXPECT_MEL_ERROR(concat({a, b}, 2), "concat: dimension 2 is out of range");
  EXPECT_MEL_ERROR(concat({full({}, 1.0)}, 0), "concat: tensor 0 is zero-dimensional");
  EXPECT_MEL_ERROR(concat({a, Tensor()}, 0), "concat: tensor 1 is undefined");
  EXPECT_MEL_ERROR(stack({a, b}, 0), "stack: tensor 1 has shape [2, 4] but tensor 0 has [2, 3]");
  EXPECT_MEL_ERROR(stack({a, a.to(DType::i32)}, 0), "stack: tensor 1 has dtype i32");
  EXPECT_MEL_ERROR(stack({a, a}, 3), "stack: dimension 3 is out of range");
}

TEST(IndexOpsErrors, IndexSelect) {
  Tensor x = zeros({4, 3});
  EXPECT_MEL_ERROR(index_select(x, 0, tensor_i64({0, 1, 5}, {3})),
                   "index_select: index 5 at position 2 is out of range for dimension 0 of size 4");
  EXPECT_MEL_ERROR(
      index_select(x, 1, tensor_i64({-1}, {1})),
      "index_select: index -1 at position 0 is out of range for dimension 1 of size 3");
  EXPECT_MEL_ERROR(index_select(x, 0, tensor({0, 1}, {2})),
                   "index_select: index must be an integer tensor (i32 or i64), got f32");
  EXPECT_MEL_ERROR(index_select(x, 0, tensor_i64({0, 1}, {1, 2})),
                   "index_select: index must be 1-D, got shape [1, 2]");
  EXPECT_MEL_ERROR(index_select(x, 2, tensor_i64({0}, {1})),
                   "index_select: dimension 2 is out of range");
  EXPECT_MEL_ERROR(index_select(full({}, 1.0), 0, tensor_i64({0}, {1})),
                   "index_select: the input is zero-dimensional");
}

TEST(IndexOpsErrors, Gather) {
  Tensor x = zeros({2, 3, 4});
  EXPECT_MEL_ERROR(
      gather(x, 1, tensor_i64({0, 7}, {1, 2, 1})),
      "gather: index 7 at position [0, 1, 0] is out of range for dimension 1 of size 3");
  EXPECT_MEL_ERROR(gather(x, 1, tensor_i64({0, 1}, {1, 2})),
                   "gather: index has 2 dimensions (shape [1, 2]) but the input has 3");
  EXPECT_MEL_ERROR(gather(x, 1, zeros({3, 1, 1}, DType::i64)),
                   "gather: index has shape [3, 1, 1] but the input has [2, 3, 4]",
                   "index size 3 in dimension 0 exceeds the input's 2");
  EXPECT_MEL_ERROR(gather(x, 0, zeros({1, 1, 1}, DType::f64)),
                   "gather: index must be an integer tensor (i32 or i64), got f64");
  EXPECT_MEL_ERROR(gather(x, -4, zeros({1, 1, 1}, DType::i64)),
                   "gather: dimension -4 is out of range");
}

TEST(IndexOpsErrors, OneHot) {
  EXPECT_MEL_ERROR(one_hot(tensor_i64({0, -1}, {2}), 3),
                   "one_hot: label -1 at position 1 is out of range for 3 classes");
  EXPECT_MEL_ERROR(one_hot(tensor_i64({0, 1, 2, 3}, {2, 2}), 3),
                   "one_hot: label 3 at position [1, 1] is out of range for 3 classes");
  EXPECT_MEL_ERROR(one_hot(tensor_i64({0}, {1}), 0), "one_hot: num_classes must be at least 1",
                   "got 0");
  EXPECT_MEL_ERROR(one_hot(tensor({0}, {1}), 2),
                   "one_hot: labels must be an integer tensor (i32 or i64), got f32");
}

TEST(IndexOpsErrors, Embedding) {
  Tensor w = zeros({7, 3});
  EXPECT_MEL_ERROR(embedding(w, tensor_i64({1, 2, 10, 0}, {2, 2})),
                   "embedding: index 10 at position [1, 0] is out of range for 7 embeddings");
  EXPECT_MEL_ERROR(embedding(w, tensor_i64({-2}, {1})),
                   "embedding: index -2 at position 0 is out of range for 7 embeddings");
  EXPECT_MEL_ERROR(embedding(zeros({7}), tensor_i64({0}, {1})),
                   "embedding: weight must be 2-D [num_embeddings, dim], got shape [7]");
  EXPECT_MEL_ERROR(embedding(w, tensor({0}, {1}, DType::f64)),
                   "embedding: indices must be an integer tensor (i32 or i64), got f64");
}

}  // namespace
}  // namespace mel
