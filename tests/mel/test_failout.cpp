// Failout's pieces: the seeded draw of the servers that are up (the same for every caller, about
// the asked rate), which predictors then have their inputs, the loss restricted to them, and the
// names of the parameters left untrained.
#include <gtest/gtest.h>

#include "mel/failout.h"
#include "nn/layers.h"
#include "tests/gradcheck.h"

namespace mel::method {
namespace {

TEST(Failout, TheDrawDependsOnSeedPhaseAndStepOnlyAtTheAskedRate) {
  const FailoutSpec f{{0.1, 0.3, 0.0}, 7};
  EXPECT_EQ(servers_up(f, 0, 12), servers_up(f, 0, 12));
  std::vector<int> down(3, 0);
  int differ_phase = 0, differ_seed = 0;
  const int steps = 20000;
  for (int s = 0; s < steps; ++s) {
    const std::vector<bool> up = servers_up(f, 0, s);
    ASSERT_EQ(up.size(), 3u);
    for (int i = 0; i < 3; ++i) down[i] += up[static_cast<size_t>(i)] ? 0 : 1;
    differ_phase += up != servers_up(f, 1, s);
    differ_seed += up != servers_up(FailoutSpec{f.probability, 8}, 0, s);
  }
  EXPECT_NEAR(down[0] / double(steps), 0.1, 0.01);
  EXPECT_NEAR(down[1] / double(steps), 0.3, 0.015);
  EXPECT_EQ(down[2], 0);  // probability 0: never down
  EXPECT_GT(differ_phase, steps / 5);
  EXPECT_GT(differ_seed, steps / 5);
}

TEST(Failout, HeadsNeedEveryServerOfTheirSubset) {
  EnsembleSpec spec;
  spec.M = 3;
  spec.head_subsets = {{0, 1}, {0, 2}, {1, 2}, {0, 1, 2}};
  EXPECT_EQ(predictors_present(spec, {true, true, true}), std::vector<bool>(7, true));
  EXPECT_EQ(predictors_present(spec, {true, false, true}),
            (std::vector<bool>{true, false, true, false, true, false, false}));
  EXPECT_EQ(predictors_present(spec, {false, false, false}), std::vector<bool>(7, false));
}

TEST(Failout, TheLossKeepsThePresentTermsAndTheirPairs) {
  JointLossOptions o;
  o.weights = {1, 2, 3, 4};
  o.coarse = {true, false, true, false};
  o.label_smoothing = 0.1;
  o.diversity_weight = 0.5;
  o.diversity_margin = 9;
  o.diversity_pairs = {{0, 1}, {0, 2}, {1, 2}};
  const JointLossOptions r = present_terms(o, {true, false, true, true});
  EXPECT_EQ(r.weights, (std::vector<double>{1, 3, 4}));
  EXPECT_EQ(r.coarse, (std::vector<bool>{true, true, false}));
  EXPECT_EQ(r.diversity_pairs, (std::vector<std::pair<int, int>>{{0, 1}}));  // (0, 2) renumbered
  EXPECT_EQ(r.label_smoothing, 0.1);
  EXPECT_EQ(r.diversity_weight, 0.5);
  EXPECT_EQ(r.diversity_margin, 9);
}

std::shared_ptr<Ensemble> tiny_ensemble(int M) {
  std::vector<std::shared_ptr<Upstream>> ups;
  for (int i = 0; i < M; ++i) {
    auto backbone = std::make_shared<nn::Sequential>(
        std::vector<std::shared_ptr<nn::Module>>{std::make_shared<nn::Linear>(4, 3)});
    auto exit = std::make_shared<nn::Sequential>(
        std::vector<std::shared_ptr<nn::Module>>{std::make_shared<nn::Linear>(3, 10)});
    ups.push_back(std::make_shared<Upstream>(backbone, exit, Shape{3}));
  }
  HeadSpec h;
  for (int i = 0; i < M; ++i) {
    for (int j = i + 1; j < M; ++j) h.subsets.push_back({i, j});
  }
  return build_ensemble(ups, h, 10, 10);
}

// The prefixes name exactly the parameters of the absent predictors.
TEST(Failout, UntrainedPrefixesNameTheAbsentModelsAndHeads) {
  const auto m = tiny_ensemble(3);  // heads 1+2, 1+3, 2+3
  const std::vector<bool> present = predictors_present(m->spec, {true, false, true});
  const std::vector<std::string> whole = untrained_prefixes(*m, present, "");
  EXPECT_EQ(whole, (std::vector<std::string>{"upstream.1.", "heads.1+2.", "heads.2+3."}));
  EXPECT_EQ(untrained_prefixes(*m, present, "heads"), (std::vector<std::string>{"1+2.", "2+3."}));
  int matched = 0;
  for (const auto& [name, t] : m->named_parameters()) {
    bool hit = false;
    for (const auto& p : whole) hit = hit || name.starts_with(p);
    matched += hit;
    const bool absent = name.starts_with("upstream.1.") || name.starts_with("heads.1+2.") ||
                        name.starts_with("heads.2+3.");
    EXPECT_EQ(hit, absent) << name;
  }
  EXPECT_EQ(matched, 4 + 2 * 2);  // upstream 2's two Linears, two heads' weight and bias
}

}  // namespace
}  // namespace mel::method
