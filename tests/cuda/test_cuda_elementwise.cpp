// GPU parity of the elementwise ops: every unary op (forward and gradient), binary arithmetic
// with broadcasting, scalars, strided and misaligned inputs, integer dtypes, comparisons, where,
// and the bf16/f16 upcast path, each compared with the CPU on the same inputs.
// Tolerances: tol_for(dtype) (f32 1e-6 abs + 1e-5 rel, f64 1e-12 + 1e-10, integers exact);
// gradients that go through a sum use tol_for(dtype, true).
#include <gtest/gtest.h>

#include <array>
#include <functional>
#include <string>
#include <vector>

#include "cuda_testing.h"

namespace mel::testing {
namespace {

using Fn1 = std::function<Tensor(const Tensor&)>;
using Fn2 = std::function<Tensor(const Tensor&, const Tensor&)>;

struct UnaryCase {
  std::string name;
  Fn1 f;
  double lo, hi;  // input range (positive for log, sqrt, rsqrt and fractional powers)
};

std::vector<UnaryCase> unary_cases() {
  return {
      {"neg", [](const Tensor& x) { return neg(x); }, -3, 3},
      {"exp", [](const Tensor& x) { return exp(x); }, -3, 3},
      {"log", [](const Tensor& x) { return log(x); }, 0.1, 4},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, 0.1, 4},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, 0.1, 4},
      {"abs", [](const Tensor& x) { return abs(x); }, -3, 3},
      {"tanh", [](const Tensor& x) { return tanh(x); }, -3, 3},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, -6, 6},
      {"relu", [](const Tensor& x) { return relu(x); }, -3, 3},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, GeluApprox::tanh); }, -3, 3},
      {"gelu_erf", [](const Tensor& x) { return gelu(x, GeluApprox::none); }, -3, 3},
      {"silu", [](const Tensor& x) { return silu(x); }, -6, 6},
      {"pow2", [](const Tensor& x) { return pow(x, 2.0); }, -3, 3},
      {"pow3", [](const Tensor& x) { return pow(x, 3.0); }, -2, 2},
      {"pow0", [](const Tensor& x) { return pow(x, 0.0); }, -2, 2},
      {"pow1", [](const Tensor& x) { return pow(x, 1.0); }, -2, 2},
      {"pow_half", [](const Tensor& x) { return pow(x, 0.5); }, 0.1, 4},
      {"pow_neg", [](const Tensor& x) { return pow(x, -1.5); }, 0.2, 4},
      {"clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.7); }, -2, 2},
  };
}

// Values uniform in [lo, hi) of dtype dt; strided: a transposed view of fresh storage.
Tensor random_range(const Shape& shape, uint64_t seed, DType dt, double lo, double hi,
                    bool strided = false) {
  if (!strided) return random_cpu(shape, seed, DType::f64, lo, hi).to(dt);
  Shape rev(shape.rbegin(), shape.rend()), perm;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) perm.push_back(i);
  return random_cpu(rev, seed, DType::f64, lo, hi).to(dt).permute(perm);
}

// A CPU leaf and its GPU twin with the same values and strides.
std::pair<Tensor, Tensor> leaf_pair(const Shape& shape, uint64_t seed, DType dt, bool strided,
                                    double lo = -1, double hi = 1) {
  Tensor c = random_range(shape, seed, dt, lo, hi, strided);
  Tensor g = to_gpu_keep_strides(c).detach();
  c = c.detach();
  c.requires_grad_();
  g.requires_grad_();
  return {c, g};
}

// sum(y * r) with a fixed random r, so every output element has its own gradient weight.
Tensor project(const Tensor& y, uint64_t seed) {
  Tensor r = random_cpu(y.shape(), seed, y.dtype());
  return sum(mul(y, r.to(y.device())));
}

const std::vector<Shape> kUnaryShapes = {{1}, {7}, {33, 257}, {3, 5, 7}, {65536 + 3}};

TEST(CudaElementwise, UnaryForwardMatchesCpu) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    const Tol tol = tol_for(dt);
    for (const auto& uc : unary_cases()) {
      for (size_t s = 0; s < kUnaryShapes.size(); ++s) {
        for (bool strided : {false, true}) {
          if (strided && kUnaryShapes[s].size() < 2) continue;
          auto [c, g] = leaf_pair(kUnaryShapes[s], 10 + s, dt, strided, uc.lo, uc.hi);
          autograd::NoGradGuard ng;
          EXPECT_TRUE(gpu_close(uc.f(g), uc.f(c), tol))
              << uc.name << " " << dtype_name(dt) << " " << shape_str(kUnaryShapes[s])
              << (strided ? " strided" : "");
        }
      }
    }
  }
}

// A contiguous input starting one element into its storage: not 16-byte aligned, so the
// vectorised path must fall back to the scalar one.
TEST(CudaElementwise, UnaryMisalignedInputMatchesCpu) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor flat = random_range({4099}, 50, dt, -3, 3);
    Tensor xc = flat.slice(0, 1, 4099), xg = flat.to(gpu()).slice(0, 1, 4099);
    ASSERT_TRUE(xg.is_contiguous());
    EXPECT_TRUE(gpu_close(exp(xg), exp(xc), tol_for(dt))) << dtype_name(dt);
    EXPECT_TRUE(gpu_close(relu(xg), relu(xc), tol_for(dt))) << dtype_name(dt);
  }
}

// The f32 derivatives of gelu and silu cancel (1 - tanh^2 near |x| = 3), which magnifies the
// last-bit differences of tanhf/erff; the accumulating f32 tolerance covers that.
TEST(CudaElementwise, UnaryGradientMatchesCpu) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    const Tol tol = tol_for(dt, true);
    for (const auto& uc : unary_cases()) {
      for (bool strided : {false, true}) {
        auto [c, g] = leaf_pair({17, 33}, 21, dt, strided, uc.lo, uc.hi);
        project(uc.f(c), 5).backward();
        project(uc.f(g), 5).backward();
        ASSERT_TRUE(g.grad().defined()) << uc.name;
        EXPECT_TRUE(gpu_close(g.grad(), c.grad(), tol))
            << uc.name << " " << dtype_name(dt) << (strided ? " strided" : "");
      }
    }
  }
}

struct BinaryCase {
  std::string name;
  Fn2 f;
};

std::vector<BinaryCase> binary_cases() {
  return {
      {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }},
      {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }},
      {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }},
      {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); }},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); }},
  };
}

// Input pairs: same shape, broadcasting both ways, a 0-d scalar, odd and large sizes (the
// vectorised path and its tail).
const std::vector<std::pair<Shape, Shape>> kBinaryShapes = {
    {{33, 257}, {33, 257}},
    {{7, 1, 5}, {1, 3, 1}},
    {{5, 7}, {}},
    {{}, {4, 3}},
    {{1}, {1}},
    {{6, 33}, {33}},
    {{9, 4}, {9, 1}},
    {{(1 << 20) + 5}, {(1 << 20) + 5}},
};

Tensor values(const Shape& shape, uint64_t seed, DType dt, double lo, double hi) {
  return random_range(shape, seed, dt, lo, hi);
}

TEST(CudaElementwise, BinaryFloatMatchesCpu) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    const Tol tol = tol_for(dt);
    for (const auto& bc : binary_cases()) {
      for (size_t s = 0; s < kBinaryShapes.size(); ++s) {
        Tensor a = values(kBinaryShapes[s].first, 100 + s, dt, -2, 2);
        Tensor b = values(kBinaryShapes[s].second, 200 + s, dt, 0.5, 2);
        if (bc.name != "div") b = sub(b, 1.25);  // both signs, away from zero
        EXPECT_TRUE(gpu_close(bc.f(a.to(gpu()), b.to(gpu())), bc.f(a, b), tol))
            << bc.name << " " << dtype_name(dt) << " " << shape_str(a.shape()) << " op "
            << shape_str(b.shape());
        // scalar operand forms (the double takes the tensor's dtype)
        if (bc.name == "add") {
          EXPECT_TRUE(gpu_close(add(a.to(gpu()), 2.5), add(a, 2.5), tol));
          EXPECT_TRUE(gpu_close(div(a.to(gpu()), 3.0), div(a, 3.0), tol));
        }
      }
    }
  }
}

TEST(CudaElementwise, BinaryStridedAndMisalignedMatchCpu) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64}) {
    const Tol tol = tol_for(dt);
    Tensor a = random_range({33, 65}, 3, dt, -20, 20, true);
    Tensor b = random_range({33, 65}, 4, dt, 10, 50, true);
    Tensor ag = to_gpu_keep_strides(a), bg = to_gpu_keep_strides(b);
    ASSERT_FALSE(ag.is_contiguous());
    for (const auto& bc : binary_cases()) {
      EXPECT_TRUE(gpu_close(bc.f(ag, bg), bc.f(a, b), tol)) << bc.name << " " << dtype_name(dt);
      // one strided and one contiguous operand
      EXPECT_TRUE(gpu_close(bc.f(ag, bg.contiguous()), bc.f(a, b.contiguous()), tol))
          << bc.name << " " << dtype_name(dt);
    }
    // contiguous slices starting one element in: not 16-byte aligned, the scalar path
    Tensor flat_a = values({4099}, 5, DType::f64, -20, 20).to(dt);
    Tensor flat_b = values({4099}, 6, DType::f64, 1, 20).to(dt);
    Tensor sa = flat_a.slice(0, 1, 4099), sb = flat_b.slice(0, 1, 4099);
    Tensor ga = flat_a.to(gpu()).slice(0, 1, 4099), gb = flat_b.to(gpu()).slice(0, 1, 4099);
    ASSERT_TRUE(ga.is_contiguous());
    for (const auto& bc : binary_cases()) {
      EXPECT_TRUE(gpu_close(bc.f(ga, gb), bc.f(sa, sb), tol))
          << bc.name << " misaligned " << dtype_name(dt);
    }
  }
}

TEST(CudaElementwise, BinaryIntegerMatchesCpuExactly) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::i32, DType::i64}) {
    for (const auto& bc : binary_cases()) {
      for (size_t s = 0; s < kBinaryShapes.size(); ++s) {
        Tensor a = values(kBinaryShapes[s].first, 300 + s, DType::f64, -100, 100).to(dt);
        // [-4, 4) truncates to small values, many of them 0: integer division by zero is 0
        Tensor b = values(kBinaryShapes[s].second, 400 + s, DType::f64, -4, 4).to(dt);
        EXPECT_TRUE(gpu_close(bc.f(a.to(gpu()), b.to(gpu())), bc.f(a, b), tol_for(dt)))
            << bc.name << " " << dtype_name(dt) << " " << shape_str(a.shape()) << " op "
            << shape_str(b.shape());
      }
    }
    // negative operands: division truncates towards zero
    Tensor a = tensor({-7, 7, -7, 7, 0, 5}, {6}).to(dt),
           b = tensor({2, -2, -2, 2, 3, 0}, {6}).to(dt);
    EXPECT_TRUE(gpu_close(div(a.to(gpu()), b.to(gpu())), div(a, b), tol_for(dt)));
    EXPECT_TRUE(gpu_close(neg(a.to(gpu())), neg(a), tol_for(dt)));
  }
  // u8 arithmetic wraps like the CPU's
  Tensor a = values({37}, 7, DType::f64, 0, 255).to(DType::u8);
  Tensor b = values({37}, 8, DType::f64, 0, 255).to(DType::u8);
  EXPECT_TRUE(gpu_close(add(a.to(gpu()), b.to(gpu())), add(a, b), tol_for(DType::u8)));
  EXPECT_TRUE(gpu_close(div(a.to(gpu()), b.to(gpu())), div(a, b), tol_for(DType::u8)));
}

TEST(CudaElementwise, BinaryGradientsWithBroadcastMatchCpu) {
  MEL_REQUIRE_GPU();
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{7, 1, 5}, {1, 3, 1}}, {{6, 33}, {33}}, {{5, 7}, {}}, {{17, 9}, {17, 9}}};
  for (DType dt : {DType::f32, DType::f64}) {
    const Tol tol = tol_for(dt, true);
    for (const auto& bc : binary_cases()) {
      for (size_t s = 0; s < shapes.size(); ++s) {
        auto [ac, ag] = leaf_pair(shapes[s].first, 500 + s, dt, false, -2, 2);
        auto [bc_, bg] = leaf_pair(shapes[s].second, 600 + s, dt, false, 0.5, 2);
        project(bc.f(ac, bc_), 9).backward();
        project(bc.f(ag, bg), 9).backward();
        EXPECT_TRUE(gpu_close(ag.grad(), ac.grad(), tol)) << bc.name << " a " << s;
        EXPECT_TRUE(gpu_close(bg.grad(), bc_.grad(), tol)) << bc.name << " b " << s;
      }
    }
  }
  // maximum/minimum ties: the gradient goes to a (>= / <=) on both devices
  Tensor a = tensor({1, 2, 3, 4}, {4}), b = tensor({1, 3, 3, 0}, {4});
  for (bool is_max : {true, false}) {
    Tensor ac = a.detach(), bc = b.detach();
    Tensor ag = a.to(gpu()).detach(), bg = b.to(gpu()).detach();
    for (Tensor* t : {&ac, &bc, &ag, &bg}) t->requires_grad_();
    auto f = [&](const Tensor& x, const Tensor& y) {
      return is_max ? maximum(x, y) : minimum(x, y);
    };
    sum(f(ac, bc)).backward();
    sum(f(ag, bg)).backward();
    EXPECT_TRUE(gpu_close(ag.grad(), ac.grad(), tol_for(DType::f32)));
    EXPECT_TRUE(gpu_close(bg.grad(), bc.grad(), tol_for(DType::f32)));
  }
}

TEST(CudaElementwise, CompareMatchesCpu) {
  MEL_REQUIRE_GPU();
  const std::vector<Fn2> ops = {
      [](const Tensor& a, const Tensor& b) { return eq(a, b); },
      [](const Tensor& a, const Tensor& b) { return ne(a, b); },
      [](const Tensor& a, const Tensor& b) { return lt(a, b); },
      [](const Tensor& a, const Tensor& b) { return le(a, b); },
      [](const Tensor& a, const Tensor& b) { return gt(a, b); },
      [](const Tensor& a, const Tensor& b) { return ge(a, b); },
  };
  for (DType dt :
       {DType::f32, DType::f64, DType::i32, DType::i64, DType::u8, DType::bf16, DType::f16}) {
    for (size_t s = 0; s < kBinaryShapes.size(); ++s) {
      // small integer values so that equal pairs are common
      Tensor a = values(kBinaryShapes[s].first, 700 + s, DType::f64, 0, 4).to(DType::i64).to(dt);
      Tensor b = values(kBinaryShapes[s].second, 800 + s, DType::f64, 0, 4).to(DType::i64).to(dt);
      for (size_t k = 0; k < ops.size(); ++k) {
        Tensor r = ops[k](a.to(gpu()), b.to(gpu()));
        EXPECT_EQ(r.dtype(), DType::u8);
        EXPECT_TRUE(gpu_close(r, ops[k](a, b), tol_for(DType::u8)))
            << "op " << k << " " << dtype_name(dt) << " " << shape_str(a.shape());
      }
    }
  }
  // NaN compares unequal to everything, also on the GPU
  Tensor n = tensor({0, 1, 2}, {3});
  n.set({1}, std::nan(""));
  Tensor z = zeros({3});
  for (size_t k = 0; k < ops.size(); ++k) {
    EXPECT_TRUE(gpu_close(ops[k](n.to(gpu()), z.to(gpu())), ops[k](n, z), tol_for(DType::u8)));
  }
}

TEST(CudaElementwise, WhereMatchesCpu) {
  MEL_REQUIRE_GPU();
  const std::vector<std::array<Shape, 3>> shapes = {
      {Shape{33, 65}, Shape{33, 65}, Shape{33, 65}},
      {Shape{7, 1, 5}, Shape{1, 3, 1}, Shape{}},
      {Shape{1, 9}, Shape{4, 1}, Shape{4, 9}},
      {Shape{(1 << 18) + 1}, Shape{(1 << 18) + 1}, Shape{(1 << 18) + 1}},
  };
  for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64, DType::bf16}) {
    for (size_t s = 0; s < shapes.size(); ++s) {
      Tensor cond = gt(values(shapes[s][0], 900 + s, DType::f32, -1, 1), zeros({}));
      Tensor a = values(shapes[s][1], 910 + s, DType::f64, -50, 50).to(dt);
      Tensor b = values(shapes[s][2], 920 + s, DType::f64, -50, 50).to(dt);
      EXPECT_TRUE(gpu_close(where(cond.to(gpu()), a.to(gpu()), b.to(gpu())), where(cond, a, b),
                            tol_for(dt)))
          << dtype_name(dt) << " case " << s;
    }
  }
  // strided condition and values, and the gradient to both branches
  Tensor cond = gt(random_cpu({13, 9}, 30), zeros({})).permute({1, 0});
  auto [ac, ag] = leaf_pair({9, 13}, 31, DType::f32, true);
  auto [bc, bg] = leaf_pair({13}, 32, DType::f32, false);
  Tensor condg = to_gpu_keep_strides(cond);
  EXPECT_TRUE(gpu_close(where(condg, ag, bg), where(cond, ac, bc), tol_for(DType::f32)));
  project(where(cond, ac, bc), 33).backward();
  project(where(condg, ag, bg), 33).backward();
  EXPECT_TRUE(gpu_close(ag.grad(), ac.grad(), tol_for(DType::f32, true)));
  EXPECT_TRUE(gpu_close(bg.grad(), bc.grad(), tol_for(DType::f32, true)));
}

TEST(CudaElementwise, HalfTypesUpcastLikeTheCpu) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::bf16, DType::f16}) {
    const Tol tol = tol_for(dt);
    Tensor a = values({7, 1, 5}, 40, DType::f64, -2, 2).to(dt);
    Tensor b = values({1, 3, 1}, 41, DType::f64, 0.5, 2).to(dt);
    Tensor ag = a.to(gpu()), bg = b.to(gpu());
    EXPECT_TRUE(gpu_close(add(ag, bg), add(a, b), tol)) << dtype_name(dt);
    EXPECT_TRUE(gpu_close(mul(ag, bg), mul(a, b), tol)) << dtype_name(dt);
    EXPECT_TRUE(gpu_close(div(ag, bg), div(a, b), tol)) << dtype_name(dt);
    EXPECT_TRUE(gpu_close(gelu(ag), gelu(a), tol)) << dtype_name(dt);
    EXPECT_TRUE(gpu_close(relu(ag), relu(a), tol)) << dtype_name(dt);
    EXPECT_TRUE(gpu_close(exp(ag), exp(a), tol)) << dtype_name(dt);
    EXPECT_TRUE(gpu_close(sigmoid(ag), sigmoid(a), tol)) << dtype_name(dt);
    EXPECT_EQ(gelu(ag).dtype(), dt);
    // gradient through the f32 upcast
    auto [xc, xg] = leaf_pair({5, 9}, 42, dt, true, -2, 2);
    project(silu(xc), 43).backward();
    project(silu(xg), 43).backward();
    EXPECT_EQ(xg.grad().dtype(), dt);
    EXPECT_TRUE(gpu_close(xg.grad(), xc.grad(), tol)) << dtype_name(dt);
  }
}

TEST(CudaElementwise, EmptyTensorsAndMixedDevices) {
  MEL_REQUIRE_GPU();
  Tensor e = zeros({0, 5}, DType::f32, gpu());
  EXPECT_EQ(add(e, e).numel(), 0);
  EXPECT_EQ(exp(e).numel(), 0);
  EXPECT_EQ(add(e, ones({5}, DType::f32, gpu())).shape(), (Shape{0, 5}));
  EXPECT_MEL_ERROR(add(ones({3}), ones({3}, DType::f32, gpu())), "add", "different devices");
  EXPECT_MEL_ERROR(
      where(gt(ones({3}), zeros({3})), ones({3}, DType::f32, gpu()), ones({3}, DType::f32, gpu())),
      "where");
}

}  // namespace
}  // namespace mel::testing
