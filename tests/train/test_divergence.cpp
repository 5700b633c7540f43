// Divergence: an exploding loss and non-finite weights or batch-norm statistics stop a run.
#include <gtest/gtest.h>

#include <limits>

#include "core/factory.h"
#include "nn/layers.h"
#include "tests/gradcheck.h"
#include "train/metrics.h"

namespace mel::train {
namespace {

StepOutput step(double loss) {
  StepOutput o;
  o.loss = full({}, loss);
  o.correct = zeros({1}, DType::i64);
  o.samples = 4;
  return o;
}

TEST(Divergence, AnExplodingLossIsAnErrorNamingTheStep) {
  StepMetrics m(1, /*epoch=*/2, /*read_every=*/1, /*divergence_factor=*/100.0);
  m.add(step(2.3), 0, 0.1);
  m.add(step(0.5), 1, 0.1);
  m.add(step(90.0), 2, 0.1);  // below 100 x max(0.5, 1)
  EXPECT_MEL_ERROR(m.add(step(1e11), 3, 0.1), "the loss exploded to 1e+11 at epoch 3 step 3");
}

TEST(Divergence, TheLowestLossCarriesOverEpochsAndTheCheckCanBeOff) {
  StepMetrics next(1, 3, 1, 10.0, /*lowest_loss=*/2.0);
  EXPECT_MEL_ERROR(next.add(step(25.0), 0, 0.1), "above 10 x max(lowest loss so far 2");
  StepMetrics off(1, 0, 1, 0.0);
  off.add(step(1.0), 0, 0.1);
  EXPECT_NO_THROW(off.add(step(1e30), 1, 0.1));
  EXPECT_MEL_ERROR(off.add(step(std::numeric_limits<double>::infinity()), 2, 0.1),
                   "the loss became inf at epoch 1 step 2");
}

TEST(Divergence, NonFiniteWeightsAndStatisticsAreNamed) {
  nn::Sequential net;
  net.push_back(std::make_shared<nn::Linear>(3, 2));
  net.push_back(std::make_shared<nn::BatchNorm>(1, 2));
  EXPECT_NO_THROW(check_finite_state(net, 0));
  auto* bn = dynamic_cast<nn::BatchNorm*>(net.children()[1].second.get());
  bn->running_var.data<float>()[1] = std::numeric_limits<float>::infinity();
  EXPECT_MEL_ERROR(check_finite_state(net, 4),
                   "buffer '1.running_var' holds 1 non-finite value(s) after epoch 5");
  bn->running_var.data<float>()[1] = 1.0f;
  auto* lin = dynamic_cast<nn::Linear*>(net.children()[0].second.get());
  lin->weight.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_MEL_ERROR(check_finite_state(net, 0), "parameter '0.weight' holds 1 non-finite");
}

}  // namespace
}  // namespace mel::train
