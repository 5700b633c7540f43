// The op catalogue on the CPU: every table op has a case, and every case's gradient matches
// central finite differences in f64.
#include <gtest/gtest.h>

#include <algorithm>

#include "gradcheck.h"
#include "op_catalogue.h"

namespace mel::testing {
namespace {

bool has_case(const std::string& op) {
  const auto& cases = op_catalogue();
  return std::any_of(cases.begin(), cases.end(), [&](const OpCase& c) { return c.op == op; });
}

TEST(OpCatalogue, EveryTableOpHasACase) {
  for (int i = 0; i < kernels::kUnaryOpCount; ++i) {
    EXPECT_TRUE(has_case(kernels::kUnaryOpNames[i]))
        << "unary op '" << kernels::kUnaryOpNames[i]
        << "' of kernels/elementwise_ops.h has no case in tests/op_catalogue.h";
  }
  for (int i = 0; i < kernels::kBinaryOpCount; ++i) {
    EXPECT_TRUE(has_case(kernels::kBinaryOpNames[i]))
        << "binary op '" << kernels::kBinaryOpNames[i]
        << "' of kernels/elementwise_ops.h has no case in tests/op_catalogue.h";
  }
}

TEST(OpCatalogue, NamesAreUnique) {
  std::vector<std::string> names;
  for (const OpCase& c : op_catalogue()) names.push_back(c.name());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::adjacent_find(names.begin(), names.end()), names.end());
}

class CatalogueGradcheck : public ::testing::TestWithParam<size_t> {};

TEST_P(CatalogueGradcheck, MatchesFiniteDifferences) {
  const OpCase& c = op_catalogue()[GetParam()];
  SCOPED_TRACE(c.name());
  const std::vector<Tensor> in = make_inputs(c, DType::f64, 7);
  EXPECT_TRUE(gradcheck(c.fn, in));
}

std::string case_name(const ::testing::TestParamInfo<size_t>& info) {
  std::string n = op_catalogue()[info.param].name();
  for (char& ch : n) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return n;
}

INSTANTIATE_TEST_SUITE_P(Ops, CatalogueGradcheck,
                         ::testing::Range(size_t{0}, op_catalogue().size()), case_name);

}  // namespace
}  // namespace mel::testing
