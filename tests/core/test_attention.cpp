// Fused causal self-attention (core/ops_attention.h): values and gradients against the same
// attention composed from primitive ops (matmul, a causal mask, softmax, matmul) in f64, finite
// differences, the input checks, thread-count independence, strided and 16-bit inputs.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>

#include "gradcheck.h"

namespace mel {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;
using testing::strided_leaf;

struct Dims {
  int64_t B, T, H, Dh;
};

Shape qkv_shape(const Dims& d) {
  return {d.B, d.T, 3 * d.H * d.Dh};
}

// The attention composed from primitive ops (differentiable through mel's autograd):
// [B, T, 3D] -> q, k, v [B, H, T, Dh] -> softmax(q k^T * scale + causal mask) v -> [B, T, D].
Tensor composed_attention(const Tensor& qkv, int64_t H, double scale = 0.0) {
  const int64_t B = qkv.shape()[0], T = qkv.shape()[1], D = qkv.shape()[2] / 3, Dh = D / H;
  if (scale <= 0) scale = 1.0 / std::sqrt(static_cast<double>(Dh));
  auto heads = [&](int64_t part) {
    return qkv.narrow(2, part * D, D).reshape({B, T, H, Dh}).permute({0, 2, 1, 3});
  };
  const Tensor q = heads(0), k = heads(1), v = heads(2);
  std::vector<double> mask(static_cast<size_t>(T * T), 0.0);
  for (int64_t i = 0; i < T; ++i) {
    for (int64_t j = i + 1; j < T; ++j) mask[i * T + j] = -std::numeric_limits<double>::infinity();
  }
  Tensor s = add(mul(matmul(q, k.transpose(2, 3)), scale),
                 tensor(mask, {T, T}, qkv.dtype()).to(qkv.device()));
  Tensor o = matmul(softmax(s, 3), v);  // [B, H, T, Dh]
  return o.permute({0, 2, 1, 3}).reshape({B, T, D});
}

// Shapes with T = 1, odd T, T across the CPU kernel's 64-row query blocks, Dh not a multiple of 8,
// B = 1, H = 1 and H = 3.
const Dims kShapes[] = {{2, 7, 3, 5},  {1, 1, 2, 4},   {1, 33, 1, 8}, {3, 17, 4, 6},
                        {2, 65, 2, 3}, {1, 130, 3, 7}, {2, 2, 1, 1}};

TEST(CausalSelfAttention, MatchesComposedReferenceInF64) {
  uint64_t seed = 1;
  for (const Dims& d : kShapes) {
    SCOPED_TRACE(shape_str(qkv_shape(d)) + " heads " + std::to_string(d.H));
    Tensor x = leaf(qkv_shape(d), seed++, -2.0, 2.0);
    Tensor y = causal_self_attention(x, d.H);
    EXPECT_EQ(y.shape(), (Shape{d.B, d.T, d.H * d.Dh}));
    EXPECT_EQ(y.dtype(), DType::f64);
    EXPECT_TRUE(all_close(y, composed_attention(x.detach(), d.H), 1e-12, 1e-10));
    // an explicit scale
    EXPECT_TRUE(all_close(causal_self_attention(x, d.H, 0.3),
                          composed_attention(x.detach(), d.H, 0.3), 1e-12, 1e-10));
  }
}

TEST(CausalSelfAttention, F32MatchesF64Reference) {
  uint64_t seed = 100;
  for (const Dims& d : kShapes) {
    SCOPED_TRACE(shape_str(qkv_shape(d)) + " heads " + std::to_string(d.H));
    Tensor x = leaf(qkv_shape(d), seed++, -2.0, 2.0).detach();
    Tensor y = causal_self_attention(x.to(DType::f32), d.H);
    EXPECT_EQ(y.dtype(), DType::f32);
    EXPECT_TRUE(all_close(y, composed_attention(x, d.H), 1e-5, 1e-4));
  }
}

// The gradient of sum(out * r) for a fixed random r, fused against composed (f64 autograd).
TEST(CausalSelfAttention, GradientsMatchComposedReference) {
  uint64_t seed = 200;
  for (const Dims& d : kShapes) {
    SCOPED_TRACE(shape_str(qkv_shape(d)) + " heads " + std::to_string(d.H));
    Tensor x = leaf(qkv_shape(d), seed++, -2.0, 2.0);
    Tensor r = leaf({d.B, d.T, d.H * d.Dh}, seed++).detach();
    Tensor xr = x.detach().requires_grad_();
    sum(mul(causal_self_attention(x, d.H), r)).backward();
    sum(mul(composed_attention(xr, d.H), r)).backward();
    EXPECT_TRUE(all_close(x.grad(), xr.grad(), 1e-12, 1e-9));
    // in f32, against the f64 gradient
    Tensor xf = x.detach().to(DType::f32).requires_grad_();
    sum(mul(causal_self_attention(xf, d.H), r.to(DType::f32))).backward();
    EXPECT_TRUE(all_close(xf.grad(), xr.grad(), 1e-4, 1e-3));
  }
}

TEST(CausalSelfAttention, GradcheckF64) {
  auto f = [](int64_t H, double scale) {
    return [H, scale](const std::vector<Tensor>& in) {
      return causal_self_attention(in[0], H, scale);
    };
  };
  EXPECT_TRUE(gradcheck(f(2, 0.0), {leaf({2, 5, 18}, 1)}));         // H = 2, Dh = 3
  EXPECT_TRUE(gradcheck(f(1, 0.7), {leaf({1, 6, 12}, 2)}));         // H = 1, Dh = 4, scale
  EXPECT_TRUE(gradcheck(f(3, 0.0), {strided_leaf({1, 4, 9}, 3)}));  // strided, Dh = 1
  EXPECT_TRUE(gradcheck(f(2, 0.0), {leaf({1, 1, 12}, 4)}));         // T = 1
}

TEST(CausalSelfAttention, EmptyBatch) {
  Tensor x = zeros({0, 5, 24}, DType::f64).requires_grad_();
  Tensor y = causal_self_attention(x, 2);
  EXPECT_EQ(y.shape(), (Shape{0, 5, 8}));
  sum(y).backward();
  EXPECT_EQ(x.grad().shape(), (Shape{0, 5, 24}));
}

TEST(CausalSelfAttention, RowsSeeOnlyThePast) {
  // T = 1: the output is v itself; changing later positions leaves earlier outputs alone
  Tensor x = leaf({1, 1, 12}, 5).detach();
  EXPECT_TRUE(all_close(causal_self_attention(x, 2), x.narrow(2, 8, 4), 1e-15, 0));
  Tensor a = leaf({2, 9, 12}, 6).detach();
  Tensor b = a.clone();
  for (int64_t c = 0; c < 12; ++c) b.set({1, 8, c}, 5.0);
  Tensor ya = causal_self_attention(a, 2), yb = causal_self_attention(b, 2);
  EXPECT_EQ(ya.narrow(1, 0, 8).to_vector(), yb.narrow(1, 0, 8).to_vector());
  EXPECT_EQ(ya.narrow(0, 0, 1).to_vector(), yb.narrow(0, 0, 1).to_vector());
}

TEST(CausalSelfAttention, RejectsBadInput) {
  const char* op = "causal_self_attention";
  EXPECT_MEL_ERROR(causal_self_attention(zeros({4, 12}), 2), op, "3-D", "[4, 12]");
  EXPECT_MEL_ERROR(causal_self_attention(zeros({2, 3, 4, 12}), 2), op, "3-D");
  EXPECT_MEL_ERROR(causal_self_attention(zeros({2, 3, 20}), 2), op, "[2, 3, 20]",
                   "multiple of 3 * heads = 6");
  EXPECT_MEL_ERROR(causal_self_attention(zeros({2, 3, 0}), 1), op, "positive multiple");
  EXPECT_MEL_ERROR(causal_self_attention(zeros({2, 3, 12}), 0), op, "heads must be at least 1");
  EXPECT_MEL_ERROR(causal_self_attention(zeros({2, 3, 12}), -1), op, "heads");
  EXPECT_MEL_ERROR(causal_self_attention(zeros({2, 3, 12}, DType::i64), 2), op, "floating", "i64");
  EXPECT_MEL_ERROR(causal_self_attention(zeros({2, 0, 12}), 2), op, "T >= 1", "[2, 0, 12]");
  EXPECT_MEL_ERROR(causal_self_attention(zeros({2, 3, 12}), 2, -1.0), op, "scale");
  EXPECT_MEL_ERROR(causal_self_attention(zeros({2, 3, 12}), 2, std::nan("")), op, "scale");
  EXPECT_MEL_ERROR(causal_self_attention(Tensor(), 2), op);
}

TEST(CausalSelfAttention, IdenticalForAnyThreadCount) {
  // many (b, h) pairs, and a single one (whose GEMMs must not go parallel either)
  for (const Dims& d : {Dims{3, 70, 2, 16}, Dims{1, 150, 1, 32}}) {
    for (DType dt : {DType::f32, DType::f64}) {
      Tensor x0 = leaf(qkv_shape(d), 7, -2.0, 2.0).detach().to(dt);
      Tensor r = leaf({d.B, d.T, d.H * d.Dh}, 8).detach().to(dt);
      auto run = [&] {
        Tensor x = x0.detach().requires_grad_();
        Tensor y = causal_self_attention(x, d.H);
        sum(mul(y, r)).backward();
        return std::vector<std::vector<double>>{y.to_vector(), x.grad().to_vector()};
      };
      const int threads = omp_get_max_threads();
      omp_set_num_threads(2);
      const auto two = run();
      omp_set_num_threads(1);
      const auto one = run();
      omp_set_num_threads(threads);
      EXPECT_EQ(one, two) << dtype_name(dt) << " " << shape_str(qkv_shape(d));
      EXPECT_EQ(run(), two);
    }
  }
}

TEST(CausalSelfAttention, NonContiguousInputGivesTheSameResult) {
  // a transposed view and a narrowed view of a wider tensor
  Tensor s = strided_leaf({2, 9, 24}, 9);
  ASSERT_FALSE(s.is_contiguous());
  Tensor c = s.detach().contiguous().requires_grad_();
  Tensor r = leaf({2, 9, 8}, 10).detach();
  Tensor ys = causal_self_attention(s, 2), yc = causal_self_attention(c, 2);
  EXPECT_EQ(ys.to_vector(), yc.to_vector());
  sum(mul(ys, r)).backward();
  sum(mul(yc, r)).backward();
  EXPECT_EQ(s.grad().to_vector(), c.grad().to_vector());
  Tensor wide = leaf({2, 9, 30}, 11).detach();
  Tensor n = wide.narrow(2, 3, 24);
  EXPECT_EQ(causal_self_attention(n, 2).to_vector(),
            causal_self_attention(n.contiguous(), 2).to_vector());
}

TEST(CausalSelfAttention, HalfTypesComputeInF32) {
  Tensor x = leaf({2, 11, 24}, 12, -2.0, 2.0).detach();
  for (DType dt : {DType::bf16, DType::f16}) {
    Tensor xh = x.to(dt).requires_grad_();
    Tensor y = causal_self_attention(xh, 2);
    EXPECT_EQ(y.dtype(), dt);
    Tensor want = causal_self_attention(xh.detach().to(DType::f32), 2);
    EXPECT_TRUE(all_close(y.to(DType::f32), want, 0.02, 0.02));
    sum(y).backward();
    EXPECT_EQ(xh.grad().dtype(), dt);
    EXPECT_EQ(xh.grad().shape(), x.shape());
  }
}

}  // namespace
}  // namespace mel
