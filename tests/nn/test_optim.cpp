// Optimizers against step-by-step reference formulas (PyTorch's), clipping, and the schedules'
// values at known points (OneCycleLR's warm-up end, peak and final values).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>

#include "nn/layers.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "tests/gradcheck.h"

namespace mel::nn {
namespace {

// A module with one parameter vector whose gradient we set by hand.
class Vec : public Module {
 public:
  explicit Vec(std::vector<double> v) : Module("Vec") {
    w = register_parameter("w", tensor(v, {static_cast<int64_t>(v.size())}));
  }
  Tensor w;
};

void set_grad(FlatParameters& f, const std::vector<double>& g) {
  Tensor gr = f.grad();
  gr.copy_(tensor(g, {static_cast<int64_t>(g.size())}));
}

TEST(Optim, SgdMomentumNesterovWeightDecay) {
  for (bool nesterov : {false, true}) {
    Vec m({1.0, -2.0, 0.5});
    FlatParameters f(m);
    Sgd opt(f, SgdOptions{0.9, 0.0, 0.01, nesterov});
    std::vector<double> p = {1.0, -2.0, 0.5}, buf(3, 0.0);
    for (int step = 0; step < 4; ++step) {
      std::vector<double> g = {0.1 * step + 0.3, -0.2, 0.05 * step};
      set_grad(f, g);
      opt.step(0.1);
      for (int i = 0; i < 3; ++i) {
        double d = g[i] + 0.01 * p[i];
        buf[i] = step == 0 ? d : 0.9 * buf[i] + d;
        d = nesterov ? d + 0.9 * buf[i] : buf[i];
        p[i] -= 0.1 * d;
      }
      for (int i = 0; i < 3; ++i) EXPECT_NEAR(m.w.at({i}), p[i], 1e-6) << step << " " << i;
    }
  }
}

TEST(Optim, AdamAndAdamWMatchReference) {
  for (bool decoupled : {false, true}) {
    Vec m({0.5, -1.5});
    FlatParameters f(m);
    Adam opt(f, AdamOptions{0.9, 0.999, 1e-8, 0.1, decoupled});
    std::vector<double> p = {0.5, -1.5}, mm(2, 0.0), vv(2, 0.0);
    for (int t = 1; t <= 5; ++t) {
      const double beta1 = 0.95 - 0.02 * t;  // as a one-cycle schedule would vary it
      std::vector<double> g = {0.3 * t - 0.5, 0.1};
      set_grad(f, g);
      opt.step(0.01, beta1);
      for (int i = 0; i < 2; ++i) {
        double gi = g[i];
        if (!decoupled)
          gi += 0.1 * p[i];
        else
          p[i] *= 1.0 - 0.01 * 0.1;
        mm[i] = beta1 * mm[i] + (1 - beta1) * gi;
        vv[i] = 0.999 * vv[i] + 0.001 * gi * gi;
        const double bc1 = 1 - std::pow(beta1, t), bc2 = 1 - std::pow(0.999, t);
        p[i] -= 0.01 / bc1 * mm[i] / (std::sqrt(vv[i]) / std::sqrt(bc2) + 1e-8);
      }
      for (int i = 0; i < 2; ++i) EXPECT_NEAR(m.w.at({i}), p[i], 1e-6) << t;
    }
    EXPECT_EQ(opt.steps(), 5);
  }
}

TEST(Optim, StateRoundTripContinuesIdentically) {
  Vec a({1.0, 2.0}), b({1.0, 2.0});
  FlatParameters fa(a), fb(b);
  Adam oa(fa, {}), ob(fb, {});
  set_grad(fa, {0.1, 0.2});
  oa.step(0.1);
  ob.load_state(oa.state());
  b.load_state_dict(a.state_dict());
  set_grad(fa, {0.3, -0.1});
  set_grad(fb, {0.3, -0.1});
  oa.step(0.1);
  ob.step(0.1);
  EXPECT_EQ(a.w.to_vector(), b.w.to_vector());
  EXPECT_MEL_ERROR(ob.load_state({{"step", tensor_i64({1}, {})}}), "no entry 'exp_avg'");
}

// Two parameter vectors in one flat buffer.
class Two : public Module {
 public:
  Two() : Module("Two") {
    a = register_parameter("a", tensor({1.0, -1.0}, {2}));
    b = register_parameter("b", tensor({0.5, 2.0, -0.5}, {3}));
  }
  Tensor a, b;
};

// A parameter left out of a step keeps its value and state, and its own step count: stepped
// later, it moves exactly as if those steps had never been (PyTorch skips a parameter without a
// gradient). The counts survive state() and load_state().
TEST(Optim, MaskedStepsKeepAStepCountPerParameter) {
  const std::vector<double> ga = {0.2, -0.4}, gb = {0.1, 0.3, -0.2};
  for (const char* kind : {"adam", "sgd"}) {
    SCOPED_TRACE(kind);
    auto make = [&](FlatParameters& f) -> std::unique_ptr<Optimizer> {
      if (std::string(kind) == "adam") return std::make_unique<Adam>(f, AdamOptions{});
      return std::make_unique<Sgd>(f, SgdOptions{0.9, 0.0, 0.0, false});
    };
    Two m;
    FlatParameters f(m);
    auto opt = make(f);
    EXPECT_MEL_ERROR(opt->step(0.1, -1.0, {true, false}), "track_entry_steps");
    opt->track_entry_steps();
    EXPECT_MEL_ERROR(opt->step(0.1, -1.0, {true}), "mask has 1 entries for 2 parameters");
    set_grad(f, {ga[0], ga[1], gb[0], gb[1], gb[2]});
    opt->step(0.1, -1.0, {true, false});  // b untrained
    EXPECT_EQ(m.b.to_vector(), (std::vector<double>{0.5, 2.0, -0.5}));
    // the reference: b alone, stepped once with the same gradient
    Vec alone({0.5, 2.0, -0.5});
    FlatParameters fb(alone);
    auto ob = make(fb);
    set_grad(fb, gb);
    ob->step(0.1);
    // a state round trip before b's first step
    Two m2;
    m2.load_state_dict(m.state_dict());
    FlatParameters f2(m2);
    auto opt2 = make(f2);
    opt2->track_entry_steps();
    opt2->load_state(opt->state());
    set_grad(f2, {ga[0], ga[1], gb[0], gb[1], gb[2]});
    opt2->step(0.1);  // both trained: b's first step, a's second
    EXPECT_EQ(m2.b.to_vector(), alone.w.to_vector());
    const NamedTensors st = opt2->state();
    EXPECT_EQ(st.front().second.item(), 2);
    EXPECT_EQ(st.back().first, "entry_steps");
    EXPECT_EQ(st.back().second.to_vector(), (std::vector<double>{2, 1}));
  }
  // a state from untracked steps: every parameter at the step count
  Two m;
  FlatParameters f(m);
  Adam plain(f, {}), tracked(f, {});
  plain.step(0.1);
  tracked.track_entry_steps();
  tracked.load_state(plain.state());
  EXPECT_EQ(tracked.state().back().second.to_vector(), (std::vector<double>{1, 1}));
}

TEST(Optim, ClipGradNorm) {
  Vec m({0, 0});
  FlatParameters f(m);
  set_grad(f, {3.0, 4.0});
  EXPECT_NEAR(clip_grad_norm(f, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(f.grad().at({0}), 0.6, 1e-5);
  EXPECT_NEAR(f.grad().at({1}), 0.8, 1e-5);
  set_grad(f, {0.3, 0.4});
  clip_grad_norm(f, 1.0);  // below the limit: unchanged
  EXPECT_NEAR(f.grad().at({0}), 0.3, 1e-7);
  EXPECT_MEL_ERROR(clip_grad_norm(f, 0.0), "max_norm must be positive");
}

TEST(Optim, BadOptionsAreErrors) {
  Vec m({0});
  FlatParameters f(m);
  EXPECT_MEL_ERROR(Adam(f, AdamOptions{1.0, 0.999, 1e-8, 0, false}), "betas must be in [0, 1)");
  EXPECT_MEL_ERROR(Sgd(f, SgdOptions{0.0, 0.0, 0.0, true}), "Nesterov");
}

TEST(Schedule, OneCycleMatchesPyTorch) {
  OneCycleOptions o;
  o.max_lr = 2e-3;
  o.total_steps = 100;
  o.pct_start = 0.1;
  OneCycleLr s(o);
  // PyTorch: starts at max_lr / 25 with momentum max, peaks at step pct_start * total - 1.
  EXPECT_NEAR(s.at(0).lr, 2e-3 / 25, 1e-12);
  EXPECT_NEAR(s.at(0).momentum, 0.95, 1e-12);
  EXPECT_NEAR(s.at(9).lr, 2e-3, 1e-12);
  EXPECT_NEAR(s.at(9).momentum, 0.85, 1e-12);
  EXPECT_NEAR(s.at(99).lr, 2e-3 / 25 / 1e4, 1e-15);
  EXPECT_NEAR(s.at(99).momentum, 0.95, 1e-12);
  // mid warm-up: cosine between initial and max at pct = 4.5 / 9 (step 4.5 is not an integer;
  // take step 3: pct = 3/9)
  const double pct = 3.0 / 9.0, init = 2e-3 / 25;
  EXPECT_NEAR(s.at(3).lr, 2e-3 + (init - 2e-3) / 2 * (std::cos(M_PI * pct) + 1), 1e-12);
  // decay phase measured from step 9 to step 99
  const double pct2 = (54.0 - 9.0) / 90.0, minlr = init / 1e4;
  EXPECT_NEAR(s.at(54).lr, minlr + (2e-3 - minlr) / 2 * (std::cos(M_PI * pct2) + 1), 1e-12);
}

TEST(Schedule, StepCosineConstant) {
  StepLr st(0.1, 10, 0.5);
  EXPECT_NEAR(st.at(9).lr, 0.1, 1e-12);
  EXPECT_NEAR(st.at(10).lr, 0.05, 1e-12);
  EXPECT_NEAR(st.at(25).lr, 0.025, 1e-12);
  CosineLr c(1.0, 110, 10, 0.0);
  EXPECT_NEAR(c.at(0).lr, 1.0 / 11, 1e-12);
  EXPECT_NEAR(c.at(10).lr, 1.0, 1e-12);
  EXPECT_NEAR(c.at(60).lr, 0.5, 1e-12);
  EXPECT_NEAR(c.at(110).lr, 0.0, 1e-12);
  EXPECT_EQ(ConstantLr(0.3).at(1000).lr, 0.3);
  EXPECT_MEL_ERROR(OneCycleLr(OneCycleOptions{}), "total steps must be positive");
}

}  // namespace
}  // namespace mel::nn
