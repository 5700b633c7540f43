// The fused MEL joint loss on the GPU against the CPU kernel: M = 2 and M = 3 ensembles (exits and
// every combination head), with and without diversity, label smoothing and coarse exit labels,
// values and gradients in f32 and f64, non-unit backward seeds, determinism and label errors.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "cuda_testing.h"
#include "mel/joint_loss.h"

namespace mel::testing {
namespace {

using method::JointLossOptions;
using method::JointLossResult;

// An M-model MEL problem: M exits, then one head per subset of two or more models (2^M - M - 1).
struct Problem {
  std::vector<Shape> shapes;
  JointLossOptions opt;
  bool coarse = false;
};

Problem mel_problem(int M, int64_t B, bool coarse, double eps, bool diversity, double margin) {
  constexpr int64_t kFine = 10, kCoarse = 4;
  Problem p;
  p.coarse = coarse;
  const int heads = (1 << M) - M - 1;
  for (int i = 0; i < M; ++i) {
    p.shapes.push_back({B, coarse ? kCoarse : kFine});
    p.opt.weights.push_back(i == 1 ? 0.5 : 1.0);
    p.opt.coarse.push_back(coarse);
  }
  for (int h = 0; h < heads; ++h) {
    p.shapes.push_back({B, kFine});
    // the last head of M >= 3 gets weight 0: reported, no gradient
    p.opt.weights.push_back(h > 0 && h == heads - 1 ? 0.0 : 1.0);
    p.opt.coarse.push_back(false);
  }
  p.opt.label_smoothing = eps;
  if (diversity) {
    p.opt.diversity_weight = 0.3;
    p.opt.diversity_margin = margin;
    for (int i = 0; i < M; ++i) {
      for (int j = i + 1; j < M; ++j) p.opt.diversity_pairs.push_back({i, j});
    }
  }
  return p;
}

struct Inputs {
  std::vector<Tensor> cpu, gpu;
  Tensor labels, coarse_labels;
};

Inputs make_inputs(const Problem& p, DType dt, uint64_t seed, bool strided) {
  Inputs in;
  const int64_t B = p.shapes[0][0];
  for (const Shape& s : p.shapes) {
    Tensor z = mul(random_cpu(s, ++seed, DType::f64), 2.0).to(dt);
    if (strided) z = z.t().contiguous().t();  // same values, transposed layout
    in.cpu.push_back(z.detach().requires_grad_());
    in.gpu.push_back(to_gpu_keep_strides(z).requires_grad_());
  }
  Generator gen(seed + 1000);
  in.labels = randint(0, 10, {B}, gen);
  in.coarse_labels = randint(0, 4, {B}, gen);
  return in;
}

void compare(const Problem& p, DType dt, uint64_t seed, bool strided, const std::string& what,
             double seed_grad = 1.0) {
  Inputs in = make_inputs(p, dt, seed, strided);
  Tensor cl = p.coarse ? in.coarse_labels : Tensor();
  JointLossResult rc = method::joint_loss(in.cpu, in.labels, cl, p.opt);
  JointLossResult rg =
      method::joint_loss(in.gpu, in.labels.to(gpu()), p.coarse ? cl.to(gpu()) : Tensor(), p.opt);
  const Tol tv = tol_for(dt, true);
  ASSERT_TRUE(rg.total.device().is_cuda()) << what;
  EXPECT_TRUE(gpu_close(rg.total, rc.total, tv)) << what;
  ASSERT_EQ(rg.terms.size(), rc.terms.size());
  for (size_t k = 0; k < rc.terms.size(); ++k) {
    EXPECT_NEAR(rg.terms[k], rc.terms[k], tv.atol + tv.rtol * std::abs(rc.terms[k]))
        << what << " term " << k;
  }
  EXPECT_NEAR(rg.diversity, rc.diversity, tv.atol + tv.rtol * std::abs(rc.diversity)) << what;
  EXPECT_NEAR(rg.total_value, rc.total_value, tv.atol + tv.rtol * std::abs(rc.total_value)) << what;
  if (dt == DType::f64) {
    EXPECT_EQ(rg.total_value, rg.total.item()) << what;
  }
  if (seed_grad == 1.0) {
    rc.total.backward();
    rg.total.backward();
  } else {
    rc.total.backward(full({}, seed_grad, dt));
    rg.total.backward(full({}, seed_grad, dt, gpu()));
  }
  for (size_t k = 0; k < in.cpu.size(); ++k) {
    ASSERT_TRUE(in.gpu[k].grad().defined()) << what << " term " << k;
    EXPECT_TRUE(gpu_close(in.gpu[k].grad(), in.cpu[k].grad(), tol_for(dt, true)))
        << what << " gradient of term " << k;
  }
}

TEST(CudaJointLoss, MatchesCpu) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 1;
  for (DType dt : {DType::f32, DType::f64}) {
    for (int M : {2, 3}) {
      for (int64_t B : {1, 33, 257}) {
        for (bool coarse : {false, true}) {
          for (double eps : {0.0, 0.1}) {
            for (int div = 0; div < 3; ++div) {  // off, hinge active (large margin), inactive
              const double margin = div == 1 ? 1000.0 : 1.0;
              Problem p = mel_problem(M, B, coarse, eps, div > 0, margin);
              const std::string what = std::string(dtype_name(dt)) + " M " + std::to_string(M) +
                                       " B " + std::to_string(B) + (coarse ? " coarse" : "") +
                                       " eps " + std::to_string(eps) + " div " +
                                       std::to_string(div);
              compare(p, dt, seed += 50, B == 33, what);
            }
          }
        }
      }
    }
  }
}

TEST(CudaJointLoss, NonUnitSeedAndHalfLogits) {
  MEL_REQUIRE_GPU();
  Problem p = mel_problem(3, 17, true, 0.1, true, 1000.0);
  compare(p, DType::f32, 5, false, "seed 2.5", 2.5);
  compare(p, DType::f64, 6, true, "seed -0.5", -0.5);
  compare(p, DType::bf16, 7, false, "bf16");
}

TEST(CudaJointLoss, WideRowsAndManyTerms) {
  MEL_REQUIRE_GPU();
  // rows wider than a warp (C = 1000) and more terms than one launch takes (M = 6: 63 terms,
  // 15 pairs)
  Problem wide = mel_problem(2, 9, false, 0.1, true, 1e5);
  for (Shape& s : wide.shapes) s[1] = 1000;
  compare(wide, DType::f32, 11, false, "wide");
  compare(mel_problem(6, 5, false, 0.05, true, 1000.0), DType::f32, 12, false, "M 6");
}

TEST(CudaJointLoss, NoGradValuesAndDeterminism) {
  MEL_REQUIRE_GPU();
  Problem p = mel_problem(3, 256, false, 0.1, true, 1000.0);
  Inputs in = make_inputs(p, DType::f32, 21, false);
  std::vector<Tensor> plain;
  for (const Tensor& z : in.gpu) plain.push_back(z.detach());
  JointLossResult a = method::joint_loss(plain, in.labels.to(gpu()), Tensor(), p.opt);
  EXPECT_FALSE(a.total.requires_grad());
  JointLossResult rc = method::joint_loss(in.cpu, in.labels, Tensor(), p.opt);
  EXPECT_TRUE(gpu_close(a.total, rc.total, tol_for(DType::f32, true)));
  // two calls on one device: bitwise the same values and gradients
  JointLossResult r1 = method::joint_loss(in.gpu, in.labels.to(gpu()), Tensor(), p.opt);
  r1.total.backward();
  std::vector<Tensor> g1;
  for (Tensor& z : in.gpu) {
    g1.push_back(z.grad().clone());
    z.zero_grad();
  }
  JointLossResult r2 = method::joint_loss(in.gpu, in.labels.to(gpu()), Tensor(), p.opt);
  r2.total.backward();
  EXPECT_EQ(r1.total.item(), r2.total.item());
  EXPECT_EQ(r1.terms, r2.terms);
  for (size_t k = 0; k < g1.size(); ++k) {
    EXPECT_TRUE(gpu_close(in.gpu[k].grad(), g1[k].to(Device::cpu()), {0, 0})) << k;
  }
}

TEST(CudaJointLoss, LabelAndDeviceErrors) {
  MEL_REQUIRE_GPU();
  Problem p = mel_problem(2, 6, true, 0.0, false, 0.0);
  Inputs in = make_inputs(p, DType::f32, 31, false);
  Tensor fine = tensor_i64({0, 1, 2, 12, 4, 5}, {6}).to(gpu());
  Tensor coarse = tensor_i64({0, 1, 2, 3, 3, 3}, {6}).to(gpu());
  EXPECT_MEL_ERROR(method::joint_loss(in.gpu, fine, coarse, p.opt),
                   "term 2 (fine labels): label 12 at row 3 is out of range for its 10 classes");
  Tensor bad_coarse = tensor_i64({0, 1, 2, 3, -1, 3}, {6}).to(gpu());
  Tensor ok = tensor_i64({0, 1, 2, 3, 4, 5}, {6}).to(gpu());
  EXPECT_MEL_ERROR(method::joint_loss(in.gpu, ok, bad_coarse, p.opt),
                   "term 0 (coarse labels): label -1 at row 4");
  EXPECT_MEL_ERROR(method::joint_loss(in.gpu, tensor_i64({0, 1, 2, 3, 4, 5}, {6}), coarse, p.opt),
                   "move them with .to(device)");
  std::vector<Tensor> mixed = in.gpu;
  mixed[1] = in.cpu[1];
  EXPECT_MEL_ERROR(method::joint_loss(mixed, ok, coarse, p.opt), "expected one device");
  // the device still works after the errors
  JointLossResult r = method::joint_loss(in.gpu, ok, coarse, p.opt);
  EXPECT_TRUE(std::isfinite(r.total.item()));
}

}  // namespace
}  // namespace mel::testing
