#include "gradcheck.h"

namespace mel {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;
using testing::strided_leaf;
using V = std::vector<Tensor>;

// Naive matmul over promoted operands a: [..., M, K], b: [..., K, N] (numpy broadcasting of the
// batch dims), computed in double through at(); returns the result with shape `out_shape`.
Tensor naive_matmul(const Tensor& a_in, const Tensor& b_in) {
  const bool va = a_in.dim() == 1, vb = b_in.dim() == 1;
  Tensor a = va ? a_in.detach().unsqueeze(0) : a_in.detach();
  Tensor b = vb ? b_in.detach().unsqueeze(1) : b_in.detach();
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  const size_t nb = std::max(ba.size(), bb.size());
  ba.insert(ba.begin(), nb - ba.size(), 1);
  bb.insert(bb.begin(), nb - bb.size(), 1);
  Shape batch(nb);
  for (size_t i = 0; i < nb; ++i) batch[i] = std::max(ba[i], bb[i]);
  Tensor a_full = a.reshape([&] {
    Shape s = ba;
    s.push_back(M);
    s.push_back(K);
    return s;
  }());
  Tensor b_full = b.reshape([&] {
    Shape s = bb;
    s.push_back(K);
    s.push_back(N);
    return s;
  }());
  const int64_t total = numel_of(batch);
  std::vector<double> out;
  for (int64_t t = 0; t < total; ++t) {
    Shape ia(nb), ib(nb);
    int64_t rem = t;
    for (int64_t d = static_cast<int64_t>(nb) - 1; d >= 0; --d) {
      const int64_t c = rem % batch[d];
      rem /= batch[d];
      ia[d] = ba[d] == 1 ? 0 : c;
      ib[d] = bb[d] == 1 ? 0 : c;
    }
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) {
          Shape xa = ia, xb = ib;
          xa.push_back(i);
          xa.push_back(k);
          xb.push_back(k);
          xb.push_back(j);
          s += a_full.at(xa) * b_full.at(xb);
        }
        out.push_back(s);
      }
    }
  }
  Shape out_shape = batch;
  if (!va) out_shape.push_back(M);
  if (!vb) out_shape.push_back(N);
  return tensor(out, out_shape, DType::f64);
}

Tensor rnd(const Shape& s, uint64_t seed, DType dt = DType::f64) {
  Generator gen(seed);
  return randn(s, gen, dt);
}

TEST(Matmul, TwoDimensionalValues) {
  Tensor a = tensor({1, 2, 3, 4, 5, 6}, {2, 3}, DType::f64);
  Tensor b = tensor({7, 8, 9, 10, 11, 12}, {3, 2}, DType::f64);
  EXPECT_TRUE(all_close(matmul(a, b), tensor({58, 64, 139, 154}, {2, 2}, DType::f64)));
  for (auto [m, k, n] : {std::tuple{1, 1, 1}, {7, 33, 65}, {65, 130, 7}, {33, 1, 33}}) {
    Tensor x = rnd({m, k}, 1), y = rnd({k, n}, 2);
    EXPECT_TRUE(all_close(matmul(x, y), naive_matmul(x, y), 1e-12, 1e-12));
    Tensor xf = x.to(DType::f32), yf = y.to(DType::f32);
    Tensor zf = matmul(xf, yf);
    EXPECT_EQ(zf.dtype(), DType::f32);
    EXPECT_TRUE(all_close(zf.to(DType::f64), naive_matmul(x, y), 1e-4, 1e-4));
  }
}

TEST(Matmul, BatchedBroadcast) {
  Tensor a = rnd({2, 1, 4, 5}, 3), b = rnd({3, 5, 6}, 4);
  Tensor c = matmul(a, b);
  EXPECT_EQ(c.shape(), (Shape{2, 3, 4, 6}));
  EXPECT_TRUE(all_close(c, naive_matmul(a, b), 1e-12, 1e-12));
  // a single matrix against a batch, and a batch against a single matrix (folded into one GEMM)
  Tensor w = rnd({5, 6}, 5);
  EXPECT_TRUE(all_close(matmul(a, w), naive_matmul(a, w), 1e-12, 1e-12));
  Tensor m = rnd({4, 5}, 6);
  EXPECT_TRUE(all_close(matmul(m, b), naive_matmul(m, b), 1e-12, 1e-12));
  // many small products (the parallel-over-batch path) in f32
  Tensor p = rnd({64, 3, 4}, 7, DType::f32), q = rnd({64, 4, 2}, 8, DType::f32);
  EXPECT_TRUE(all_close(matmul(p, q).to(DType::f64),
                        naive_matmul(p.to(DType::f64), q.to(DType::f64)), 1e-5, 1e-5));
}

TEST(Matmul, VectorForms) {
  Tensor v = rnd({5}, 9), u = rnd({5}, 10), m = rnd({5, 3}, 11), n = rnd({4, 5}, 12);
  Tensor bm = rnd({2, 5, 3}, 13), bn = rnd({2, 4, 5}, 14);
  Tensor dot = matmul(v, u);
  EXPECT_EQ(dot.dim(), 0);
  double ref = 0;
  for (int64_t i = 0; i < 5; ++i) ref += v.at({i}) * u.at({i});
  EXPECT_NEAR(dot.item(), ref, 1e-12);
  EXPECT_EQ(matmul(v, m).shape(), (Shape{3}));
  EXPECT_EQ(matmul(n, v).shape(), (Shape{4}));
  EXPECT_EQ(matmul(v, bm).shape(), (Shape{2, 3}));
  EXPECT_EQ(matmul(bn, v).shape(), (Shape{2, 4}));
  for (auto [x, y] : {std::pair{v, m}, {n, v}, {v, bm}, {bn, v}, {v, u}}) {
    EXPECT_TRUE(all_close(matmul(x, y), naive_matmul(x, y), 1e-12, 1e-12));
  }
}

TEST(Matmul, NonContiguousInputs) {
  Tensor a = rnd({6, 4}, 15), b = rnd({5, 6}, 16);
  // transposed layouts go to gemm as they are; a stepped slice has to be copied
  EXPECT_TRUE(all_close(matmul(a.t(), b.t()), naive_matmul(a.t(), b.t()), 1e-12, 1e-12));
  Tensor s = rnd({4, 12}, 17).slice(1, 0, 12, 2);  // [4, 6], column stride 2
  EXPECT_FALSE(s.is_contiguous());
  EXPECT_TRUE(all_close(matmul(s, a), naive_matmul(s, a), 1e-12, 1e-12));
  // batch dims permuted, expanded (stride 0) and transposed matrices within a batch
  Tensor p = rnd({4, 3, 2}, 18).permute({2, 0, 1});  // [2, 4, 3]
  Tensor q = rnd({3, 5}, 19).unsqueeze(0).expand({2, 3, 5});
  EXPECT_TRUE(all_close(matmul(p, q), naive_matmul(p, q), 1e-12, 1e-12));
  Tensor r = rnd({2, 5, 3}, 20).transpose(-1, -2);  // [2, 3, 5]
  EXPECT_TRUE(all_close(matmul(p, r), naive_matmul(p, r), 1e-12, 1e-12));
  // a batch against a transposed weight (the Linear pattern, folded into one GEMM)
  Tensor x = rnd({2, 3, 4}, 21), w = rnd({7, 4}, 22);
  EXPECT_TRUE(all_close(matmul(x, w.t()), naive_matmul(x, w.t()), 1e-12, 1e-12));
  // rows of a sliced batch are not evenly spaced: must not be folded
  Tensor xs = rnd({2, 5, 4}, 23).narrow(1, 1, 3);
  EXPECT_TRUE(all_close(matmul(xs, w.t()), naive_matmul(xs, w.t()), 1e-12, 1e-12));
}

TEST(Matmul, EmptyAndHalf) {
  EXPECT_EQ(matmul(zeros({0, 3}), zeros({3, 4})).shape(), (Shape{0, 4}));
  Tensor z = matmul(ones({2, 0}), ones({0, 3}));
  EXPECT_TRUE(all_close(z, zeros({2, 3})));
  EXPECT_EQ(matmul(zeros({0, 2, 3}), zeros({3, 4})).shape(), (Shape{0, 2, 4}));
  for (DType dt : {DType::bf16, DType::f16}) {
    Tensor a = tensor({1, 2, 3, 4}, {2, 2}, dt), b = tensor({0.5, 1, 1.5, 2}, {2, 2}, dt);
    Tensor c = matmul(a, b);
    EXPECT_EQ(c.dtype(), dt);
    EXPECT_EQ(c.to_vector(), (std::vector<double>{3.5, 5, 7.5, 11}));
  }
}

TEST(MatmulGrad, TwoDimensional) {
  Tensor a = leaf({3, 4}, 30), b = leaf({4, 5}, 31);
  EXPECT_TRUE(gradcheck([](const V& in) { return matmul(in[0], in[1]); }, {a, b}));
  Tensor c = leaf({1, 1}, 32), d = leaf({1, 7}, 33);
  EXPECT_TRUE(gradcheck([](const V& in) { return matmul(in[0], in[1]); }, {c, d}));
}

TEST(MatmulGrad, BatchedWithBroadcast) {
  Tensor a = leaf({2, 1, 3, 4}, 34), b = leaf({3, 4, 2}, 35);
  EXPECT_TRUE(gradcheck([](const V& in) { return matmul(in[0], in[1]); }, {a, b}));
  Tensor m = leaf({3, 4}, 36), w = leaf({4, 2}, 37);
  EXPECT_TRUE(gradcheck([](const V& in) { return matmul(in[0], in[1]); }, {a, w}));
  EXPECT_TRUE(gradcheck([](const V& in) { return matmul(in[0], in[1]); }, {m, b}));
}

TEST(MatmulGrad, VectorForms) {
  Tensor v = leaf({4}, 38), u = leaf({4}, 39), m = leaf({4, 3}, 40), n = leaf({2, 4}, 41);
  Tensor bm = leaf({2, 4, 3}, 42), bn = leaf({2, 2, 4}, 43);
  auto mm = [](const V& in) { return matmul(in[0], in[1]); };
  EXPECT_TRUE(gradcheck(mm, {v, u}));
  EXPECT_TRUE(gradcheck(mm, {v, m}));
  EXPECT_TRUE(gradcheck(mm, {n, v}));
  EXPECT_TRUE(gradcheck(mm, {v, bm}));
  EXPECT_TRUE(gradcheck(mm, {bn, v}));
}

TEST(MatmulGrad, TransposedAndStridedInputs) {
  Tensor a = leaf({4, 3}, 44), b = leaf({5, 4}, 45);
  EXPECT_TRUE(gradcheck([](const V& in) { return matmul(in[0].t(), in[1].t()); }, {a, b}));
  Tensor sa = strided_leaf({3, 4}, 46), sb = strided_leaf({2, 4, 5}, 47);
  EXPECT_FALSE(sb.is_contiguous());
  EXPECT_TRUE(gradcheck([](const V& in) { return matmul(in[0], in[1]); }, {sa, sb}));
  Tensor x = leaf({2, 3, 4}, 48), w = leaf({5, 4}, 49);
  EXPECT_TRUE(gradcheck([](const V& in) { return matmul(in[0], in[1].t()); }, {x, w}));
  Tensor sx = strided_leaf({2, 3, 4}, 50);
  EXPECT_TRUE(gradcheck([](const V& in) { return matmul(in[0], in[1].t()); }, {sx, w}));
}

TEST(MatmulGrad, HalfInputsGetGradients) {
  Tensor a = ones({2, 3}, DType::bf16).requires_grad_(), b = ones({3, 2}, DType::bf16);
  b.requires_grad_();
  sum(matmul(a, b)).backward();
  ASSERT_TRUE(a.grad().defined());
  EXPECT_EQ(a.grad().dtype(), DType::bf16);
  EXPECT_EQ(a.grad().to_vector(), std::vector<double>(6, 2.0));
}

TEST(Matmul, Errors) {
  EXPECT_MEL_ERROR(matmul(zeros({2, 3}), zeros({4, 5})), "matmul", "[2, 3] and [4, 5]",
                   "inner dimensions 3 and 4");
  EXPECT_MEL_ERROR(matmul(zeros({3}), zeros({4})), "[3] and [4]", "inner dimensions 3 and 4");
  EXPECT_MEL_ERROR(matmul(zeros({2, 2, 3}), zeros({5})), "[2, 2, 3] and [5]",
                   "inner dimensions 3 and 5");
  EXPECT_MEL_ERROR(matmul(zeros({}), zeros({3})), "matmul", "at least one dimension", "[]");
  EXPECT_MEL_ERROR(matmul(zeros({2, 2}, DType::i64), zeros({2, 2}, DType::i64)), "matmul", "i64",
                   "not supported");
  EXPECT_MEL_ERROR(matmul(zeros({2, 2}), zeros({2, 2}, DType::f64)), "matmul", "f32", "f64");
  EXPECT_MEL_ERROR(matmul(zeros({2, 2, 3}), zeros({3, 3, 4})), "matmul", "batch dimensions",
                   "[2] and [3]");
  EXPECT_MEL_ERROR(matmul(Tensor(), zeros({2})), "matmul", "undefined");
}

}  // namespace
}  // namespace mel
