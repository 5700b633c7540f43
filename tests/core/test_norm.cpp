#include <cmath>
#include <limits>

#include "core/ops_norm.h"
#include "core/ops_norm_fused.h"
#include "gradcheck.h"

namespace mel {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;
using testing::strided_leaf;
using V = std::vector<Tensor>;

// [1, C, 1, ...] for broadcasting a per-channel vector against x.
Shape channel_shape(const Tensor& x) {
  Shape s(x.dim(), 1);
  s[1] = x.shape()[1];
  return s;
}

// Batch norm composed from mean / var / elementwise ops: with mean_in and var_in undefined it
// uses the batch statistics (biased variance), as in training.
Tensor composed_batch_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps,
                           const Tensor& mean_in = Tensor(), const Tensor& var_in = Tensor()) {
  Shape dims = {0};
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  const Shape cs = channel_shape(x);
  Tensor m = mean_in.defined() ? mean_in.reshape(cs) : mean(x, dims, true);
  Tensor v = var_in.defined() ? var_in.reshape(cs) : var(x, dims, 0, true);
  Tensor y = (x - m) / sqrt(v + eps);
  if (w.defined()) y = y * w.reshape(cs);
  if (b.defined()) y = y + b.reshape(cs);
  return y;
}

Tensor composed_layer_norm(const Tensor& x, int64_t nd, const Tensor& w, const Tensor& b,
                           double eps) {
  Shape dims;
  for (int64_t d = x.dim() - nd; d < x.dim(); ++d) dims.push_back(d);
  Tensor y = (x - mean(x, dims, true)) / sqrt(var(x, dims, 0, true) + eps);
  if (w.defined()) y = y * w;
  if (b.defined()) y = y + b;
  return y;
}

// ---- batch norm -----------------------------------------------------------------------------

TEST(BatchNormValues, TrainingMatchesComposedOps) {
  Generator gen(21);
  // 4-D (plane path), 3-D, and 2-D [N, C] with C > 64 (the channel-block path, two blocks).
  for (const Shape& shape : {Shape{4, 3, 5, 6}, Shape{3, 4, 7}, Shape{9, 70}, Shape{2, 5, 1, 1}}) {
    for (DType dt : {DType::f32, DType::f64}) {
      const int64_t C = shape[1];
      Tensor x = randn(shape, gen, dt, 0.5, 2.0);
      Tensor w = randn({C}, gen, dt), b = randn({C}, gen, dt);
      const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
      EXPECT_TRUE(all_close(batch_norm(x, w, b, Tensor(), Tensor(), true),
                            composed_batch_norm(x, w, b, 1e-5), tol, tol))
          << shape_str(shape);
      EXPECT_TRUE(all_close(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-3),
                            composed_batch_norm(x, Tensor(), Tensor(), 1e-3), tol, tol))
          << shape_str(shape);
      EXPECT_TRUE(all_close(batch_norm_relu(x, w, b, Tensor(), Tensor(), true),
                            relu(composed_batch_norm(x, w, b, 1e-5)), tol, tol))
          << shape_str(shape);
    }
  }
}

// Gradients of sum(f(x, w, b) * g) for leaves copied from x, w, b.
V grads_of(const std::function<Tensor(const V&)>& f, const V& inputs, const Tensor& g) {
  V leaves;
  for (const Tensor& t : inputs) leaves.push_back(t.detach().clone().requires_grad_());
  sum(f(leaves) * g).backward();
  V out;
  for (const Tensor& t : leaves) out.push_back(t.grad());
  return out;
}

TEST(BatchNormValues, EveryKernelPathMatchesComposedGradients) {
  // [150, 5, 3]: more rows than one f32 accumulation chunk (64); [2, 3, 41, 53]: planes longer
  // than the column path takes (2048), so the per-channel plane path; [3, 40, 2, 2]: many small
  // channels per column block.
  Generator gen(26);
  for (const Shape& shape : {Shape{150, 5, 3}, Shape{2, 3, 41, 53}, Shape{3, 40, 2, 2}}) {
    const int64_t C = shape[1];
    Tensor x = randn(shape, gen, DType::f64, 0.3, 1.5), g = randn(shape, gen, DType::f64);
    Tensor w = randn({C}, gen, DType::f64), b = randn({C}, gen, DType::f64);
    Tensor rm = rand({C}, gen, DType::f64, -1, 1), rv = rand({C}, gen, DType::f64, 0.5, 2);
    for (bool training : {true, false}) {
      for (bool fused : {false, true}) {
        auto ours = [&](const V& in) {
          return fused ? batch_norm_relu(in[0], in[1], in[2], rm, rv, training, 0.0)
                       : batch_norm(in[0], in[1], in[2], rm, rv, training, 0.0);
        };
        auto ref = [&](const V& in) {
          Tensor y = training ? composed_batch_norm(in[0], in[1], in[2], 1e-5)
                              : composed_batch_norm(in[0], in[1], in[2], 1e-5, rm, rv);
          return fused ? relu(y) : y;
        };
        EXPECT_TRUE(all_close(ours({x, w, b}), ref({x, w, b}), 1e-10, 1e-10))
            << shape_str(shape) << " training " << training << " fused " << fused;
        V ga = grads_of(ours, {x, w, b}, g), gb = grads_of(ref, {x, w, b}, g);
        for (size_t i = 0; i < 3; ++i) {
          EXPECT_TRUE(all_close(ga[i], gb[i], 1e-9, 1e-8))
              << shape_str(shape) << " input " << i << " training " << training << " fused "
              << fused;
        }
      }
    }
  }
}

TEST(BatchNormValues, LargeMeanKeepsF32Accuracy) {
  // |mean| / std = 1e4: a plain f32 sum of squares would lose the variance entirely.
  Generator gen(22);
  Tensor x64 = add(randn({8, 2, 16, 16}, gen, DType::f64), 1e4);
  Tensor y = batch_norm(x64.to(DType::f32), Tensor(), Tensor(), Tensor(), Tensor(), true);
  Tensor ref = composed_batch_norm(x64, Tensor(), Tensor(), 1e-5);
  EXPECT_TRUE(all_close(y, ref, 5e-3, 0));
}

TEST(BatchNormValues, RunningStatisticsAfterTwoSteps) {
  // Channel 0 sees {1, 3} then {0, 2}; channel 1 sees {2, 6} then {0, -2}. Unbiased variances:
  // 2, 8, then 2, 2. momentum 0.1 from running_mean 0, running_var 1:
  // step 1: mean [0.2, 0.4], var [0.9 + 0.2, 0.9 + 0.8];
  // step 2: mean 0.9 [0.2, 0.4] + 0.1 [1, -1], var 0.9 [1.1, 1.7] + 0.1 [2, 2].
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor rm = zeros({2}, dt), rv = ones({2}, dt);
    batch_norm(tensor({1, 2, 3, 6}, {2, 2}, dt), Tensor(), Tensor(), rm, rv, true);
    EXPECT_TRUE(all_close(rm, tensor({0.2, 0.4}, {2}, dt), 1e-6, 0));
    EXPECT_TRUE(all_close(rv, tensor({1.1, 1.7}, {2}, dt), 1e-6, 0));
    batch_norm(tensor({0, 0, 2, -2}, {2, 2}, dt), Tensor(), Tensor(), rm, rv, true);
    EXPECT_TRUE(all_close(rm, tensor({0.28, 0.26}, {2}, dt), 1e-6, 0));
    EXPECT_TRUE(all_close(rv, tensor({1.19, 1.73}, {2}, dt), 1e-6, 0));
  }
  // 4-D input, momentum 0.3, running stats in a strided view: n = N H W = 12 per channel.
  Generator gen(23);
  Tensor x = randn({3, 2, 2, 2}, gen, DType::f64);
  Tensor buf = zeros({2, 2}, DType::f64);
  Tensor rm = buf.select(1, 0), rv = buf.select(1, 1);
  rv.fill_(2.0);
  batch_norm(x, Tensor(), Tensor(), rm, rv, true, 0.3);
  Tensor m = mean(x, {0, 2, 3}), v = var(x, {0, 2, 3}, 1);
  EXPECT_TRUE(all_close(rm, mul(m, 0.3), 1e-12, 0));
  EXPECT_TRUE(all_close(rv, add(mul(v, 0.3), 0.7 * 2.0), 1e-12, 0));
}

TEST(BatchNormValues, EvalUsesRunningStatistics) {
  Generator gen(24);
  for (const Shape& shape : {Shape{2, 3, 4, 5}, Shape{5, 3}}) {
    Tensor x = randn(shape, gen, DType::f64);
    Tensor w = randn({3}, gen, DType::f64), b = randn({3}, gen, DType::f64);
    Tensor rm = tensor({0.5, -1, 2}, {3}, DType::f64), rv = tensor({0.25, 4, 1}, {3}, DType::f64);
    Tensor before_m = rm.clone(), before_v = rv.clone();
    Tensor y = batch_norm(x, w, b, rm, rv, false);
    EXPECT_TRUE(all_close(y, composed_batch_norm(x, w, b, 1e-5, rm, rv), 1e-12, 1e-12));
    EXPECT_TRUE(all_close(batch_norm_relu(x, w, b, rm, rv, false),
                          relu(composed_batch_norm(x, w, b, 1e-5, rm, rv)), 1e-12, 1e-12));
    EXPECT_TRUE(all_close(rm, before_m, 0, 0));  // eval leaves the statistics alone
    EXPECT_TRUE(all_close(rv, before_v, 0, 0));
  }
  // f32 running statistics with an f64 input are converted.
  Tensor x = randn({4, 2}, gen, DType::f64);
  Tensor rm = tensor({1, 2}, {2}), rv = tensor({2, 3}, {2});
  EXPECT_TRUE(all_close(
      batch_norm(x, Tensor(), Tensor(), rm, rv, false),
      composed_batch_norm(x, Tensor(), Tensor(), 1e-5, rm.to(DType::f64), rv.to(DType::f64)), 1e-7,
      1e-7));
}

TEST(BatchNormValues, EmptyInputsInEval) {
  for (const Shape& shape : {Shape{0, 3, 2}, Shape{2, 3, 0}}) {
    Tensor x = zeros(shape, DType::f64).requires_grad_();
    Tensor w = ones({3}, DType::f64).requires_grad_(), b = zeros({3}, DType::f64).requires_grad_();
    Tensor y = batch_norm(x, w, b, zeros({3}), ones({3}), false);
    EXPECT_EQ(y.shape(), shape);
    sum(y).backward();
    EXPECT_TRUE(all_close(w.grad(), zeros({3}, DType::f64), 0, 0));
    EXPECT_TRUE(all_close(b.grad(), zeros({3}, DType::f64), 0, 0));
  }
  Tensor x = zeros({0, 4}, DType::f64).requires_grad_(), w = ones({4}, DType::f64);
  w.requires_grad_();
  sum(layer_norm(x, {4}, w)).backward();
  EXPECT_TRUE(all_close(w.grad(), zeros({4}, DType::f64), 0, 0));
}

TEST(BatchNormValues, HalfInputWithF32Parameters) {
  Generator gen(25);
  Tensor x = randn({4, 3, 3, 3}, gen, DType::f32);
  Tensor w = randn({3}, gen, DType::f32), b = randn({3}, gen, DType::f32);
  Tensor rm = zeros({3}), rv = ones({3});
  Tensor y = batch_norm(x.to(DType::bf16), w, b, rm, rv, true);
  EXPECT_EQ(y.dtype(), DType::bf16);
  EXPECT_TRUE(all_close(y.to(DType::f32), composed_batch_norm(x, w, b, 1e-5), 0.1, 0.02));
  EXPECT_EQ(batch_norm(x.to(DType::f16), w.to(DType::f16), Tensor(), rm, rv, false).dtype(),
            DType::f16);
}

TEST(BatchNormGrad, TrainingAndEval) {
  Tensor x = leaf({3, 2, 3, 2}, 31, -1.0, 2.0), w = leaf({2}, 32, 0.5, 1.5), b = leaf({2}, 33);
  EXPECT_TRUE(gradcheck(
      [](const V& in) { return batch_norm(in[0], in[1], in[2], Tensor(), Tensor(), true); },
      {x, w, b}));
  EXPECT_TRUE(gradcheck(
      [](const V& in) { return batch_norm(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true); },
      {x}));
  Tensor rm = tensor({0.1, -0.2}, {2}, DType::f64), rv = tensor({0.5, 2.0}, {2}, DType::f64);
  EXPECT_TRUE(gradcheck(
      [rm, rv](const V& in) { return batch_norm(in[0], in[1], in[2], rm, rv, false); }, {x, w, b}));
}

TEST(BatchNormGrad, OddShapesAndNonContiguous) {
  // N * H * W = 2 per channel: the smallest batch training accepts.
  Tensor tiny = leaf({1, 3, 2}, 34), w = leaf({3}, 35, 0.5, 1.5), b = leaf({3}, 36);
  EXPECT_TRUE(gradcheck(
      [](const V& in) { return batch_norm(in[0], in[1], in[2], Tensor(), Tensor(), true); },
      {tiny, w, b}));
  Tensor two = leaf({2, 3, 1, 1}, 37);
  EXPECT_TRUE(gradcheck(
      [](const V& in) { return batch_norm(in[0], in[1], in[2], Tensor(), Tensor(), true); },
      {two, w, b}));
  // [N, C] with the channel axis contiguous, and a transposed (strided) input.
  Tensor x2 = leaf({5, 3}, 38), xs = strided_leaf({3, 3, 2, 3}, 39);
  ASSERT_FALSE(xs.is_contiguous());
  for (const Tensor& x : {x2, xs}) {
    EXPECT_TRUE(gradcheck(
        [](const V& in) { return batch_norm(in[0], in[1], in[2], Tensor(), Tensor(), true); },
        {x, w, b}))
        << shape_str(x.shape());
  }
}

TEST(BatchNormGrad, FusedReluMatchesSeparateOps) {
  Tensor w = leaf({3}, 40, 0.5, 1.5), b = leaf({3}, 41, -0.3, 0.3);
  for (const Shape& shape : {Shape{3, 3, 2, 3}, Shape{6, 3}}) {
    Tensor x = leaf(shape, 42);
    EXPECT_TRUE(gradcheck(
        [](const V& in) { return batch_norm_relu(in[0], in[1], in[2], Tensor(), Tensor(), true); },
        {x, w, b}));
    // Same gradients as batch_norm followed by relu (f32, through both paths).
    Tensor xf = x.detach().to(DType::f32), wf = w.detach().to(DType::f32);
    Tensor bf = b.detach().to(DType::f32);
    Generator gen(43);
    Tensor g = randn(shape, gen);
    V fused, separate;
    for (bool fuse : {true, false}) {
      V leaves = {xf.clone(), wf.clone(), bf.clone()};
      for (Tensor& t : leaves) t.requires_grad_();
      Tensor y = fuse ? batch_norm_relu(leaves[0], leaves[1], leaves[2], Tensor(), Tensor(), true)
                      : relu(batch_norm(leaves[0], leaves[1], leaves[2], Tensor(), Tensor(), true));
      sum(y * g).backward();
      for (Tensor& t : leaves) (fuse ? fused : separate).push_back(t.grad());
    }
    for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(all_close(fused[i], separate[i], 1e-5, 1e-4)) << i;
  }
  Tensor x = leaf({4, 3, 2}, 44);
  Tensor rm = tensor({0.1, -0.2, 0}, {3}, DType::f64), rv = tensor({0.5, 2.0, 1}, {3}, DType::f64);
  EXPECT_TRUE(gradcheck(
      [rm, rv](const V& in) { return batch_norm_relu(in[0], in[1], in[2], rm, rv, false); },
      {x, w, b}));
}

TEST(BatchNormErrors, RejectsBadShapesAndModes) {
  Tensor x = zeros({4, 3, 2, 2});
  EXPECT_MEL_ERROR(batch_norm(x, zeros({4}), Tensor(), Tensor(), Tensor(), true), "batch_norm",
                   "weight has shape [4]", "[4, 3, 2, 2]", "C-sized [3]");
  EXPECT_MEL_ERROR(batch_norm(x, Tensor(), zeros({3, 1}), Tensor(), Tensor(), true), "bias");
  EXPECT_MEL_ERROR(batch_norm(x, Tensor(), Tensor(), zeros({2}), ones({3}), true), "running_mean",
                   "[2]");
  EXPECT_MEL_ERROR(batch_norm(x, zeros({3}, DType::f64), Tensor(), Tensor(), Tensor(), true),
                   "weight has dtype f64", "f32");
  EXPECT_MEL_ERROR(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), false),
                   "running_mean and running_var are required");
  EXPECT_MEL_ERROR(batch_norm(zeros({1, 3}), Tensor(), Tensor(), Tensor(), Tensor(), true),
                   "more than 1 value per channel", "[1, 3]");
  EXPECT_MEL_ERROR(batch_norm(zeros({3}), Tensor(), Tensor(), Tensor(), Tensor(), true), "[N, C]");
  EXPECT_MEL_ERROR(batch_norm_relu(x, zeros({2}), Tensor(), Tensor(), Tensor(), true),
                   "batch_norm_relu", "weight");
}

// ---- layer norm -----------------------------------------------------------------------------

TEST(LayerNormValues, MatchesComposedOps) {
  Generator gen(51);
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    Tensor x = randn({3, 4, 6}, gen, dt, 1.0, 3.0);
    Tensor w = randn({6}, gen, dt), b = randn({6}, gen, dt);
    EXPECT_TRUE(
        all_close(layer_norm(x, {6}, w, b), composed_layer_norm(x, 1, w, b, 1e-5), tol, tol));
    Tensor w2 = randn({4, 6}, gen, dt);
    EXPECT_TRUE(all_close(layer_norm(x, {4, 6}, w2, Tensor(), 1e-3),
                          composed_layer_norm(x, 2, w2, Tensor(), 1e-3), tol, tol));
    EXPECT_TRUE(all_close(layer_norm(x, {3, 4, 6}),
                          composed_layer_norm(x, 3, Tensor(), Tensor(), 1e-5), tol, tol));
  }
  Tensor xb = randn({2, 8}, gen, DType::bf16);
  EXPECT_EQ(layer_norm(xb, {8}, ones({8}), zeros({8})).dtype(), DType::bf16);
}

TEST(LayerNormGrad, AffineAndPlain) {
  Tensor x = leaf({3, 2, 5}, 52), w = leaf({5}, 53, 0.5, 1.5), b = leaf({5}, 54);
  EXPECT_TRUE(
      gradcheck([](const V& in) { return layer_norm(in[0], {5}, in[1], in[2]); }, {x, w, b}));
  EXPECT_TRUE(gradcheck([](const V& in) { return layer_norm(in[0], {5}); }, {x}));
  Tensor w2 = leaf({2, 5}, 55, 0.5, 1.5);
  EXPECT_TRUE(gradcheck([](const V& in) { return layer_norm(in[0], {2, 5}, in[1]); }, {x, w2}));
}

TEST(LayerNormGrad, BatchOneAndNonContiguous) {
  Tensor one = leaf({1, 7}, 56), w = leaf({7}, 57, 0.5, 1.5), b = leaf({7}, 58);
  EXPECT_TRUE(
      gradcheck([](const V& in) { return layer_norm(in[0], {7}, in[1], in[2]); }, {one, w, b}));
  Tensor xs = strided_leaf({4, 3, 7}, 59);
  ASSERT_FALSE(xs.is_contiguous());
  EXPECT_TRUE(
      gradcheck([](const V& in) { return layer_norm(in[0], {7}, in[1], in[2]); }, {xs, w, b}));
  // More rows than the backward's 32 parameter-gradient blocks.
  Tensor many = leaf({40, 3}, 60), w3 = leaf({3}, 61), b3 = leaf({3}, 62);
  EXPECT_TRUE(
      gradcheck([](const V& in) { return layer_norm(in[0], {3}, in[1], in[2]); }, {many, w3, b3}));
}

TEST(LayerNormErrors, RejectsMismatchedShapes) {
  Tensor x = zeros({2, 3, 4});
  EXPECT_MEL_ERROR(layer_norm(x, {3}), "layer_norm", "normalized_shape [3]", "trailing dimensions",
                   "[2, 3, 4]");
  EXPECT_MEL_ERROR(layer_norm(x, {1, 2, 3, 4}), "normalized_shape [1, 2, 3, 4]");
  EXPECT_MEL_ERROR(layer_norm(x, {}), "normalized_shape []");
  EXPECT_MEL_ERROR(layer_norm(x, {4}, zeros({3})), "weight has shape [3]", "normalized_shape [4]");
  EXPECT_MEL_ERROR(layer_norm(x, {3, 4}, Tensor(), zeros({4})), "bias has shape [4]");
}

// ---- dropout --------------------------------------------------------------------------------

TEST(DropoutValues, KeepsTheExpectedScaleAndFraction) {
  Generator gen(71);
  const int64_t n = 200000;
  for (double p : {0.1, 0.5, 0.8}) {
    Tensor y = dropout(ones({n}), p, true, gen);
    std::vector<double> v = y.to_vector();
    int64_t zeros_seen = 0;
    double total = 0;
    for (double e : v) {
      if (e == 0) {
        ++zeros_seen;
      } else {
        EXPECT_FLOAT_EQ(e, 1.0 / (1.0 - p));
      }
      total += e;
    }
    EXPECT_NEAR(static_cast<double>(zeros_seen) / n, p, 0.005) << p;
    EXPECT_NEAR(total / n, 1.0, 0.02) << p;  // the mean is preserved in expectation
  }
}

TEST(DropoutValues, MaskIsAFunctionOfTheGeneratorState) {
  Generator g1(72), g2(72);
  g1.reserve(5);
  g2.reserve(5);
  Tensor x = add(arange(0.0, 30.0, 1.0, DType::f32).reshape({5, 6}), 1.0);
  Tensor a = dropout(x, 0.4, true, g1), b = dropout(x, 0.4, true, g2);
  EXPECT_TRUE(all_close(a, b, 0, 0));
  EXPECT_EQ(g1.offset(), 5u + 8u);  // 30 elements: 8 Philox blocks, as rand() would reserve
  // The mask is rand()'s f32 uniforms from the same state compared with 1 - p.
  Generator g3(72);
  g3.reserve(5);
  Tensor u = rand({5, 6}, g3, DType::f32);
  Tensor expect = where(lt(u, full({}, 0.6)), div(x, 0.6), zeros({}));
  EXPECT_TRUE(all_close(a, expect, 1e-6, 1e-6));
  // A non-contiguous input draws by logical (row-major) index.
  Generator g4(72);
  g4.reserve(5);
  Tensor xt = x.t().contiguous().t();
  ASSERT_FALSE(xt.is_contiguous());
  EXPECT_TRUE(all_close(dropout(xt, 0.4, true, g4), a, 0, 0));
  // The next call continues the stream: a different mask.
  EXPECT_FALSE(all_close(dropout(x, 0.4, true, g1), a, 0, 0));
}

TEST(DropoutValues, IdentityCasesAndDropAll) {
  Generator gen(73);
  Tensor x = randn({4, 5}, gen, DType::f64);
  EXPECT_EQ(dropout(x, 0.5, false, gen).impl(), x.impl());  // eval: the input itself
  EXPECT_EQ(dropout(x, 0.0, true, gen).impl(), x.impl());
  Tensor z = dropout(x, 1.0, true, gen);
  EXPECT_TRUE(all_close(z, zeros({4, 5}, DType::f64), 0, 0));
  Tensor xb = x.to(DType::bf16);
  EXPECT_EQ(dropout(xb, 0.5, true, gen).dtype(), DType::bf16);
}

TEST(DropoutGrad, UsesTheForwardMask) {
  Tensor x = leaf({3, 7}, 74), xs = strided_leaf({4, 5}, 75);
  for (double p : {0.3, 1.0}) {
    for (const Tensor& t : {x, xs}) {
      // A fresh generator per call, so every evaluation draws the same mask.
      EXPECT_TRUE(gradcheck(
          [p](const V& in) {
            Generator g(76);
            return dropout(in[0], p, true, g);
          },
          {t}))
          << p;
    }
  }
  Generator g(77);
  Tensor y = dropout(x, 0.5, true, g);
  x.zero_grad();
  sum(y).backward();
  // d(sum y)/dx = mask / (1 - p) = y / x elementwise
  EXPECT_TRUE(all_close(x.grad(), div(y.detach(), x.detach()), 1e-12, 1e-12));
}

TEST(DropoutErrors, RejectsProbabilityOutOfRange) {
  Generator gen(78);
  Tensor x = ones({3});
  EXPECT_MEL_ERROR(dropout(x, -0.1, true, gen), "dropout", "p must be in [0, 1]", "-0.1");
  EXPECT_MEL_ERROR(dropout(x, 1.5, false, gen), "dropout", "1.5");
  EXPECT_MEL_ERROR(dropout(x, std::nan(""), true, gen), "dropout");
  EXPECT_MEL_ERROR(dropout(ones({3}, DType::i64), 0.5, true, gen), "floating", "i64");
}

}  // namespace
}  // namespace mel
