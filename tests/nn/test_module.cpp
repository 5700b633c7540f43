// Module tree naming, state dicts, train/eval propagation, dtype conversion and FlatParameters.
#include <gtest/gtest.h>

#include "nn/layers.h"
#include "tests/gradcheck.h"

namespace mel::nn {
namespace {

std::shared_ptr<Sequential> small_cnn() {
  auto trunk = std::make_shared<Sequential>();
  Conv2dOptions o;
  o.padding = {1, 1};
  trunk->push_back(std::make_shared<Conv2d>(1, 4, std::array<int64_t, 2>{3, 3}, o, false));
  trunk->push_back(std::make_shared<BatchNorm>(2, 4));
  trunk->push_back(make_relu());
  trunk->push_back(std::make_shared<GlobalAvgPool>());
  trunk->push_back(std::make_shared<Linear>(4, 3));
  return trunk;
}

TEST(Module, NamesFollowPyTorch) {
  auto m = small_cnn();
  std::vector<std::string> names;
  for (auto& [n, t] : m->state_dict()) names.push_back(n);
  const std::vector<std::string> expected = {
      "0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked",
      "4.weight", "4.bias"};
  EXPECT_EQ(names, expected);
  EXPECT_EQ(m->num_parameters(), 4 * 9 + 4 + 4 + 4 * 3 + 3);
  EXPECT_EQ(m->named_parameters().size(), 5u);
  EXPECT_EQ(m->named_buffers().size(), 3u);
}

TEST(Module, TrainEvalPropagates) {
  auto m = small_cnn();
  EXPECT_TRUE((*m)[1]->is_training());
  m->eval();
  EXPECT_FALSE((*m)[1]->is_training());
  m->train();
  EXPECT_TRUE((*m)[4]->is_training());
}

TEST(Module, InitIsReproducibleAndBounded) {
  auto a = small_cnn(), b = small_cnn();
  Generator g1(7), g2(7);
  a->reset_parameters(g1);
  b->reset_parameters(g2);
  auto sa = a->state_dict(), sb = b->state_dict();
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].second.to_vector(), sb[i].second.to_vector()) << sa[i].first;
  }
  // kaiming_uniform(a = sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in = 9 for the conv
  for (double v : sa[0].second.to_vector()) EXPECT_LE(std::abs(v), 1.0 / 3.0);
  double maxabs = 0;
  for (double v : sa[0].second.to_vector()) maxabs = std::max(maxabs, std::abs(v));
  EXPECT_GT(maxabs, 0.25);  // actually spread over the range
  EXPECT_EQ(sa[1].second.to_vector(), std::vector<double>(4, 1.0));       // BN weight 1
  EXPECT_EQ(sa[2].second.to_vector(), std::vector<double>(4, 0.0));       // BN bias 0
  for (double v : sa[7].second.to_vector()) EXPECT_LE(std::abs(v), 0.5);  // linear bias, fan_in 4
}

TEST(Module, StateDictRoundTrip) {
  auto a = small_cnn(), b = small_cnn();
  Generator g1(1), g2(2);
  a->reset_parameters(g1);
  b->reset_parameters(g2);
  b->load_state_dict(a->state_dict());
  auto sa = a->state_dict(), sb = b->state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].second.to_vector(), sb[i].second.to_vector()) << sa[i].first;
  }
}

TEST(Module, LoadStateDictListsEveryProblem) {
  auto m = small_cnn();
  NamedTensors s = m->state_dict();
  s.erase(s.begin() + 2);             // drop 1.bias
  s[0].second = zeros({4, 1, 5, 5});  // wrong shape for 0.weight
  s.emplace_back("extra.weight", zeros({1}));
  EXPECT_MEL_ERROR(m->load_state_dict(s), "missing: 1.bias", "unexpected: extra.weight",
                   "wrong shape: 0.weight (checkpoint [4, 1, 5, 5], model [4, 1, 3, 3])");
  // non-strict tolerates missing/unexpected but never a wrong shape
  EXPECT_MEL_ERROR(m->load_state_dict(s, false), "wrong shape: 0.weight");
  s[0].second = zeros({4, 1, 3, 3});
  m->load_state_dict(s, false);
  EXPECT_EQ(m->state_dict()[0].second.to_vector(), std::vector<double>(36, 0.0));
}

TEST(Module, FlatParametersAreViews) {
  auto m = small_cnn();
  Generator g(3);
  m->reset_parameters(g);
  const auto before = m->state_dict()[0].second.to_vector();
  FlatParameters flat(*m);
  EXPECT_EQ(flat.numel(), m->num_parameters());
  auto params = m->named_parameters();
  // values preserved, and each parameter now aliases the flat buffer
  EXPECT_EQ(params[0].second.to_vector(), before);
  EXPECT_EQ(params[0].second.data_ptr(), flat.data().data_ptr());
  Tensor d = flat.data();
  d.fill_(0.5);
  for (auto& [n, t] : params) {
    for (double v : t.to_vector()) EXPECT_EQ(v, 0.5) << n;
  }
  // gradients accumulate into the flat gradient buffer
  Generator gx(4);
  Tensor x = randn({2, 1, 5, 5}, gx);
  Tensor y = sum((*m)(x));
  y.backward();
  double gsum = 0;
  for (double v : flat.grad().to_vector()) gsum += std::abs(v);
  EXPECT_GT(gsum, 0.0);
  EXPECT_EQ(params[4].second.grad().data_ptr(),
            static_cast<float*>(flat.grad().data_ptr()) + flat.entries()[4].offset);
  // a second backward accumulates (in place)
  const auto g1 = flat.grad().to_vector();
  sum((*m)(x)).backward();
  const auto g2 = flat.grad().to_vector();
  for (size_t i = 0; i < g1.size(); ++i)
    EXPECT_NEAR(g2[i], 2 * g1[i], 1e-4 + 1e-4 * std::abs(g1[i]));
  flat.zero_grad();
  for (double v : flat.grad().to_vector()) EXPECT_EQ(v, 0.0);
}

TEST(Module, ReprShowsTreeAndCounts) {
  auto m = small_cnn();
  const std::string r = m->repr(true);
  EXPECT_NE(r.find("(0): Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), "
                   "bias=False)  # 36 params"),
            std::string::npos)
      << r;
  EXPECT_NE(r.find("(4): Linear(in_features=4, out_features=3, bias=True)  # 15 params"),
            std::string::npos)
      << r;
}

TEST(Module, ToDeviceWithoutCudaIsAClearError) {
  if (cuda_built() && cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present";
  auto m = small_cnn();
  EXPECT_MEL_ERROR(m->to(Device::parse("cuda:0")), "cuda");
}

}  // namespace
}  // namespace mel::nn
