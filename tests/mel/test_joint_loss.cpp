// The fused MEL joint loss against the same loss composed from primitive ops (values, per-term
// numbers and gradients in f32 and f64), a hand-computed case, f64 gradchecks, determinism across
// calls and thread counts, and its input errors.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <string>

#include "mel/joint_loss.h"
#include "tests/gradcheck.h"

namespace mel::method {
namespace {

using testing::all_close;
using testing::gradcheck;
using V = std::vector<Tensor>;

Tensor make_logits(const Shape& s, uint64_t seed, DType dt, bool strided) {
  Generator gen(seed);
  Tensor t =
      strided ? rand({s[1], s[0]}, gen, dt, -2.0, 2.0).t().detach() : rand(s, gen, dt, -2.0, 2.0);
  t.requires_grad_();
  return t;
}

// A configuration: logits shapes [B, C_k], options, and whether the logits are transposed views.
struct Case {
  std::string name;
  std::vector<Shape> shapes;
  JointLossOptions opt;
  bool strided = false;
  // set by the test: the hinge must be active (true) or inactive (false); unset: no pairs
  int expect_active = -1;
};

constexpr int64_t kB = 5;

JointLossOptions weighted(double eps) {
  JointLossOptions o;
  o.weights = {1.0, 0.5, 0.0};
  o.label_smoothing = eps;
  return o;
}

// Two coarse exits of 3 classes and one fine head of 6 classes.
JointLossOptions hierarchical(double eps) {
  JointLossOptions o;
  o.weights = {1.0, 1.0, 1.0};
  o.coarse = {true, true, false};
  o.label_smoothing = eps;
  return o;
}

std::vector<Case> cases() {
  const std::vector<Shape> flat = {{kB, 6}, {kB, 6}, {kB, 6}};
  const std::vector<Shape> hier = {{kB, 3}, {kB, 3}, {kB, 6}};
  std::vector<Case> cs;
  cs.push_back({"weights", flat, weighted(0.0)});
  cs.push_back({"smoothing", flat, weighted(0.1)});
  cs.push_back({"hierarchical", hier, hierarchical(0.1)});
  // Logits uniform in [-2, 2): per-row squared distances of 3 or 6 classes average 8 or 16.
  JointLossOptions active = weighted(0.1);
  active.diversity_weight = 0.3;
  active.diversity_margin = 100.0;
  active.diversity_pairs = {{0, 1}, {0, 2}, {1, 2}};
  cs.push_back({"diversity_active", flat, active, false, 1});
  JointLossOptions inactive = active;
  inactive.diversity_margin = 1.0;
  cs.push_back({"diversity_inactive", flat, inactive, false, 0});
  JointLossOptions hier_div = hierarchical(0.1);
  hier_div.diversity_weight = 0.5;
  hier_div.diversity_margin = 50.0;
  hier_div.diversity_pairs = {{1, 0}};
  cs.push_back({"hierarchical_diversity", hier, hier_div, false, 1});
  cs.push_back({"noncontiguous", hier, hier_div, true, 1});
  cs.push_back({"noncontiguous_flat", flat, active, true, 1});
  return cs;
}

struct Inputs {
  V logits;
  Tensor labels, coarse;
};

Inputs make_inputs(const Case& c, DType dt, uint64_t seed = 1) {
  Inputs in;
  for (size_t k = 0; k < c.shapes.size(); ++k) {
    in.logits.push_back(make_logits(c.shapes[k], seed * 100 + k, dt, c.strided));
  }
  Generator gen(seed * 7 + 3);
  const int64_t B = c.shapes[0][0];
  in.labels = randint(0, 6, {B}, gen);
  // coarse class = fine class / 2 (6 fine classes into 3 coarse ones)
  std::vector<int64_t> coarse;
  for (double v : in.labels.to_vector()) coarse.push_back(static_cast<int64_t>(v) / 2);
  in.coarse = tensor_i64(coarse, {B});
  return in;
}

std::vector<Tensor> grads_of(const V& logits) {
  std::vector<Tensor> g;
  for (const Tensor& z : logits) g.push_back(z.grad());
  return g;
}

void zero_grads(const V& logits) {
  for (Tensor z : logits) z.zero_grad();
}

TEST(JointLoss, HandComputedTinyCase) {
  // B = 2, two terms of 2 classes, label smoothing 0.2, one active diversity pair.
  Tensor z0 = tensor({1, 2, 0, 0}, {2, 2}, DType::f64);
  Tensor z1 = tensor({0.5, -1, 2, 1}, {2, 2}, DType::f64);
  z0.requires_grad_();
  z1.requires_grad_();
  Tensor labels = tensor_i64({1, 0}, {2});
  JointLossOptions o;
  o.weights = {1.0, 2.0};
  o.label_smoothing = 0.2;
  o.diversity_weight = 0.5;
  o.diversity_margin = 10.0;
  o.diversity_pairs = {{0, 1}};
  const double eps = 0.2;
  auto ce = [&](double a, double b, int y) {
    const double l = std::log(std::exp(a) + std::exp(b));
    const double lp[2] = {a - l, b - l};
    return -(1 - eps) * lp[y] - eps / 2 * (lp[0] + lp[1]);
  };
  const double t0 = (ce(1, 2, 1) + ce(0, 0, 0)) / 2;
  const double t1 = (ce(0.5, -1, 1) + ce(2, 1, 0)) / 2;
  const double dist = (0.25 + 9 + 4 + 1) / 2.0;  // 7.125
  const double hinge = 10 - dist;

  JointLossResult r = joint_loss({z0, z1}, labels, Tensor(), o);
  ASSERT_EQ(r.terms.size(), 2u);
  EXPECT_NEAR(r.terms[0], t0, 1e-12);
  EXPECT_NEAR(r.terms[1], t1, 1e-12);
  EXPECT_NEAR(r.diversity, hinge, 1e-12);
  EXPECT_EQ(r.total.dim(), 0);
  EXPECT_EQ(r.total.dtype(), DType::f64);
  EXPECT_NEAR(r.total.item(), t0 + 2 * t1 + 0.5 * hinge, 1e-12);

  r.total.backward();
  // d/dz0[0, 0]: w0 / B (softmax - eps / C) - lambda 2 / B (z0 - z1)
  const double p00 = 1 / (1 + std::exp(1.0));
  EXPECT_NEAR(z0.grad().at({0, 0}), 0.5 * (p00 - 0.1) - 0.5 * (1 - 0.5), 1e-12);
  // d/dz1[1, 0]: label 0, w1 = 2: (2 / 2) (softmax - (1 - eps + eps / C)) + lambda 2 / B (z0 - z1)
  const double p10 = 1 / (1 + std::exp(-1.0));
  EXPECT_NEAR(z1.grad().at({1, 0}), (p10 - 0.9) + 0.5 * (0 - 2), 1e-12);
}

TEST(JointLoss, MatchesComposedReference) {
  for (const Case& c : cases()) {
    for (DType dt : {DType::f32, DType::f64}) {
      SCOPED_TRACE(c.name + (dt == DType::f32 ? " f32" : " f64"));
      const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
      Inputs in = make_inputs(c, dt);
      EXPECT_EQ(in.logits[0].is_contiguous(), !c.strided);

      JointLossResult r = joint_loss(in.logits, in.labels, in.coarse, c.opt);
      r.total.backward();
      std::vector<Tensor> g = grads_of(in.logits);
      zero_grads(in.logits);
      Tensor ref = joint_loss_reference(in.logits, in.labels, in.coarse, c.opt);
      ref.backward();
      std::vector<Tensor> gref = grads_of(in.logits);
      zero_grads(in.logits);

      EXPECT_EQ(r.total.dtype(), dt);
      EXPECT_TRUE(all_close(r.total, ref, tol, tol));
      // per-term numbers against cross_entropy on its own
      for (size_t k = 0; k < in.logits.size(); ++k) {
        CrossEntropyOptions ce;
        ce.label_smoothing = c.opt.label_smoothing;
        const bool coarse = !c.opt.coarse.empty() && c.opt.coarse[k];
        const double want =
            cross_entropy(in.logits[k].detach(), coarse ? in.coarse : in.labels, ce).item();
        EXPECT_NEAR(r.terms[k], want, tol * (1 + std::abs(want))) << "term " << k;
      }
      if (c.expect_active == 1) {
        EXPECT_GT(r.diversity, 0.0);
      } else if (c.expect_active == 0) {
        EXPECT_EQ(r.diversity, 0.0);
      }
      for (size_t k = 0; k < g.size(); ++k) {
        ASSERT_TRUE(g[k].defined()) << "term " << k;
        EXPECT_EQ(g[k].shape(), in.logits[k].shape());
        EXPECT_TRUE(all_close(g[k], gref[k], dt == DType::f32 ? 1e-6 : 1e-13, tol)) << "term " << k;
      }
      // A zero weight gives exactly no cross-entropy gradient (the hinge may still add one).
      if (c.opt.weights[2] == 0.0 && c.opt.diversity_pairs.empty()) {
        for (double v : g[2].to_vector()) EXPECT_EQ(v, 0.0);
      }
    }
  }
}

TEST(JointLoss, Gradcheck) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    Inputs in = make_inputs(c, DType::f64, 2);
    const Tensor labels = in.labels, coarse = in.coarse;
    const JointLossOptions opt = c.opt;
    // gradcheck seeds backward with a random scalar, which exercises the scaling path.
    EXPECT_TRUE(
        gradcheck([&](const V& z) { return joint_loss(z, labels, coarse, opt).total; }, in.logits));
  }
}

TEST(JointLoss, OneNodeOverAllLogits) {
  const Case c = cases()[5];
  Inputs in = make_inputs(c, DType::f32);
  JointLossResult r = joint_loss(in.logits, in.labels, in.coarse, c.opt);
  ASSERT_TRUE(r.total.grad_fn());
  EXPECT_EQ(r.total.grad_fn()->name(), "joint_loss");
  ASSERT_EQ(r.total.grad_fn()->next.size(), in.logits.size());
  for (const auto& e : r.total.grad_fn()->next) {
    ASSERT_TRUE(e);
    EXPECT_EQ(e->name(), "AccumulateGrad");
  }
  // Without gradients wanted nothing is recorded, and the values do not change.
  autograd::NoGradGuard ng;
  JointLossResult r2 = joint_loss(in.logits, in.labels, in.coarse, c.opt);
  EXPECT_FALSE(r2.total.grad_fn());
  EXPECT_EQ(r2.total.item(), r.total.item());
  EXPECT_EQ(r2.terms, r.terms);
  EXPECT_EQ(r2.diversity, r.diversity);
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

TEST(JointLoss, DeterministicAcrossCallsAndThreadCounts) {
  // M = 3 MEL shapes (3 exits, 4 heads): B = 300 runs serially over several chunks of rows,
  // B = 2048 is split across threads.
  for (int64_t B : {300, 2048}) {
    SCOPED_TRACE("B = " + std::to_string(B));
    Case c;
    c.shapes.assign(7, Shape{B, 10});
    c.opt.weights = {1, 1, 1, 0.5, 0.5, 0.5, 0.25};
    c.opt.label_smoothing = 0.1;
    c.opt.diversity_weight = 0.1;
    c.opt.diversity_margin = 1e3;
    c.opt.diversity_pairs = {{0, 1}, {0, 2}, {1, 2}};
    Inputs in = make_inputs(c, DType::f32, 3);

    auto run = [&]() {
      JointLossResult r = joint_loss(in.logits, in.labels, in.coarse, c.opt);
      r.total.backward();
      std::vector<Tensor> g = grads_of(in.logits);
      zero_grads(in.logits);
      return std::make_pair(r, g);
    };
    auto [r1, g1] = run();
    auto [r2, g2] = run();
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    auto [r3, g3] = run();
    omp_set_num_threads(threads);
    JointLossResult r4;
    {
      autograd::NoGradGuard ng;  // the kernel's no-gradient path
      r4 = joint_loss(in.logits, in.labels, in.coarse, c.opt);
    }

    EXPECT_GT(r1.diversity, 0.0);
    for (const auto* other : {&r2, &r3, &r4}) {
      EXPECT_TRUE(bitwise_equal(r1.total, other->total));
      EXPECT_EQ(r1.terms, other->terms);  // doubles compared exactly
      EXPECT_EQ(r1.diversity, other->diversity);
    }
    for (size_t k = 0; k < g1.size(); ++k) {
      EXPECT_TRUE(bitwise_equal(g1[k], g2[k])) << "term " << k;
      EXPECT_TRUE(bitwise_equal(g1[k], g3[k])) << "term " << k;
    }
    Tensor ref = joint_loss_reference(in.logits, in.labels, in.coarse, c.opt);
    ref.backward();
    EXPECT_TRUE(all_close(r1.total, ref, 1e-5, 1e-5));
    for (size_t k = 0; k < g1.size(); ++k) {
      EXPECT_TRUE(all_close(g1[k], in.logits[k].grad(), 1e-7, 1e-4)) << "term " << k;
    }
    zero_grads(in.logits);
  }
}

TEST(JointLoss, HalfLogitsComputeInF32) {
  const Case c = cases()[5];  // hierarchical with diversity
  Inputs in = make_inputs(c, DType::f32);
  V half;
  for (const Tensor& z : in.logits) {
    Tensor h = z.detach().to(DType::bf16);
    h.requires_grad_();
    half.push_back(h);
  }
  V upcast;  // the same bf16 values in f32
  for (const Tensor& h : half) {
    Tensor u = h.detach().to(DType::f32);
    u.requires_grad_();
    upcast.push_back(u);
  }
  JointLossResult r = joint_loss(half, in.labels, in.coarse, c.opt);
  JointLossResult want = joint_loss(upcast, in.labels, in.coarse, c.opt);
  EXPECT_EQ(r.total.dtype(), DType::bf16);
  EXPECT_EQ(r.terms, want.terms);
  r.total.backward();
  want.total.backward();
  for (size_t k = 0; k < half.size(); ++k) {
    ASSERT_EQ(half[k].grad().dtype(), DType::bf16);
    EXPECT_TRUE(all_close(half[k].grad().to(DType::f32), upcast[k].grad(), 1e-3, 1e-2));
  }
}

TEST(JointLoss, Errors) {
  Inputs in = make_inputs(cases()[2], DType::f32);  // hierarchical: widths 3, 3, 6
  const JointLossOptions o = hierarchical(0.0);

  Tensor bad_fine = tensor_i64({0, 6, 1, 2, 3}, {kB});
  EXPECT_MEL_ERROR(joint_loss(in.logits, bad_fine, in.coarse, o), "joint_loss", "term 2", "fine",
                   "label 6 at row 1", "6 classes");
  Tensor bad_coarse = tensor_i64({0, 1, 2, -1, 0}, {kB});
  EXPECT_MEL_ERROR(joint_loss(in.logits, in.labels, bad_coarse, o), "term 0", "coarse",
                   "label -1 at row 3", "3 classes");
  EXPECT_MEL_ERROR(joint_loss(in.logits, in.labels, Tensor(), o),
                   "term 0 uses coarse labels but no coarse labels were given");

  V mixed = in.logits;
  mixed[1] = make_logits({kB + 1, 3}, 9, DType::f32, false);
  EXPECT_MEL_ERROR(joint_loss(mixed, in.labels, in.coarse, o), "term 1", "[6, 3]",
                   "same batch size");
  EXPECT_MEL_ERROR(joint_loss(in.logits, tensor_i64({0, 1}, {2}), in.coarse, o), "the labels",
                   "[2]", "batch size 5");

  JointLossOptions pairs = o;
  pairs.diversity_weight = 1.0;
  pairs.diversity_pairs = {{0, 2}};
  EXPECT_MEL_ERROR(joint_loss(in.logits, in.labels, in.coarse, pairs), "pair (0, 2)", "[5, 3]",
                   "[5, 6]", "equal widths");
  pairs.diversity_pairs = {{0, 3}};
  EXPECT_MEL_ERROR(joint_loss(in.logits, in.labels, in.coarse, pairs), "pair (0, 3)",
                   "outside 0..2");
  pairs.diversity_pairs = {{1, 1}};
  EXPECT_MEL_ERROR(joint_loss(in.logits, in.labels, in.coarse, pairs), "itself");

  JointLossOptions weights = o;
  weights.weights = {1.0, 1.0};
  EXPECT_MEL_ERROR(joint_loss(in.logits, in.labels, in.coarse, weights), "2 weights for 3 terms");
  EXPECT_MEL_ERROR(joint_loss_reference(in.logits, in.labels, in.coarse, weights),
                   "2 weights for 3 terms");
  JointLossOptions flags = o;
  flags.coarse = {true};
  EXPECT_MEL_ERROR(joint_loss(in.logits, in.labels, in.coarse, flags), "1 coarse flags");
  JointLossOptions eps = o;
  eps.label_smoothing = 1.5;
  EXPECT_MEL_ERROR(joint_loss(in.logits, in.labels, in.coarse, eps), "label_smoothing");

  V dtypes = in.logits;
  dtypes[2] = make_logits({kB, 6}, 9, DType::f64, false);
  EXPECT_MEL_ERROR(joint_loss(dtypes, in.labels, in.coarse, o), "term 2", "f64", "f32");
  EXPECT_MEL_ERROR(joint_loss({}, in.labels, in.coarse, JointLossOptions{}), "no terms");
}

}  // namespace
}  // namespace mel::method
