#include "gradcheck.h"

namespace mel {
namespace {

// The checker itself must catch a wrong gradient: detach() hides half of d(x*x)/dx.
TEST(GradCheck, DetectsWrongGradient) {
  Tensor x = testing::leaf({4}, 11, 0.5, 1.0);
  EXPECT_FALSE(testing::gradcheck(
      [](const std::vector<Tensor>& in) { return mul(in[0].detach(), in[0]); }, {x}));
  EXPECT_TRUE(
      testing::gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[0]); }, {x}));
}

}  // namespace
}  // namespace mel
