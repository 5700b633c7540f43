// MEL failure evaluation against hand-computed answers for M = 2 and M = 3 (all heads and listed
// heads), and errors for inconsistent inputs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include "mel/failure.h"
#include "tests/gradcheck.h"

namespace mel::method {
namespace {

namespace fs = std::filesystem;

struct Expected {
  std::vector<std::string> failed;
  std::string answer;
  double accuracy;
};

void expect_patterns(const FailureReport& r, const std::vector<Expected>& want) {
  ASSERT_EQ(r.patterns.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE("pattern " + std::to_string(i));
    EXPECT_EQ(r.patterns[i].failed, want[i].failed);
    EXPECT_EQ(r.patterns[i].answer, want[i].answer);
    EXPECT_NEAR(r.patterns[i].accuracy, want[i].accuracy, 1e-12);
    EXPECT_NEAR(r.patterns[i].preserved, want[i].accuracy / r.no_failure_accuracy, 1e-12);
  }
}

// Exits 0.8 and 0.7, head 1+2 0.9.
FailureReport report_m2() {
  return evaluate_failures(2, {0.8, 0.7}, {{0, 1}}, {0.9});
}

// Exits 0.6, 0.7, 0.8 and every head.
FailureReport report_m3() {
  return evaluate_failures(3, {0.6, 0.7, 0.8}, all_subsets(3), {0.75, 0.82, 0.85, 0.9});
}

TEST(Failure, SubsetNames) {
  EXPECT_EQ(subset_name({0, 2}), "1+3");
  EXPECT_EQ(subset_name({1}), "2");
  EXPECT_EQ(subset_name({0, 1, 2, 3}), "1+2+3+4");
  EXPECT_EQ(subset_name({}), "");
}

TEST(Failure, AllSubsets) {
  using S = std::vector<std::vector<int>>;
  EXPECT_EQ(all_subsets(2), (S{{0, 1}}));
  EXPECT_EQ(all_subsets(3), (S{{0, 1}, {0, 2}, {1, 2}, {0, 1, 2}}));
  EXPECT_EQ(all_subsets(4).size(), 11u);
  EXPECT_EQ(all_subsets(4)[6], (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(all_subsets(2, 0), (S{{}, {0}, {1}, {0, 1}}));
  EXPECT_EQ(all_subsets(3, 3), (S{{0, 1, 2}}));
  EXPECT_TRUE(all_subsets(2, 3).empty());
  EXPECT_MEL_ERROR(all_subsets(-1), "all_subsets", "M = -1");
}

TEST(Failure, TwoModelsEveryPattern) {
  FailureReport r = report_m2();
  EXPECT_DOUBLE_EQ(r.no_failure_accuracy, 0.9);
  expect_patterns(r, {{{}, "1+2", 0.9},
                      {{"1"}, "2", 0.7},
                      {{"2"}, "1", 0.8},
                      {{"C"}, "1,2", 0.75},
                      {{"1", "2"}, "none", 0.0},
                      {{"1", "C"}, "2", 0.7},
                      {{"2", "C"}, "1", 0.8},
                      {{"1", "2", "C"}, "none", 0.0}});
  EXPECT_DOUBLE_EQ(r.patterns[0].preserved, 1.0);
  EXPECT_NEAR(r.patterns[1].preserved, 0.7 / 0.9, 1e-12);
  EXPECT_NEAR(r.preserved_mean, (0.7 + 0.8 + 0.75) / 0.9 / 3, 1e-12);
  EXPECT_NEAR(r.preserved_worst, 0.7 / 0.9, 1e-12);
}

TEST(Failure, ThreeModelsAllHeads) {
  FailureReport r = report_m3();
  expect_patterns(r, {{{}, "1+2+3", 0.9},
                      {{"1"}, "2+3", 0.85},
                      {{"2"}, "1+3", 0.82},
                      {{"3"}, "1+2", 0.75},
                      {{"C"}, "1,2,3", 0.7},
                      {{"1", "2"}, "3", 0.8},
                      {{"1", "3"}, "2", 0.7},
                      {{"1", "C"}, "2,3", 0.75},
                      {{"2", "3"}, "1", 0.6},
                      {{"2", "C"}, "1,3", 0.7},
                      {{"3", "C"}, "1,2", 0.65},
                      {{"1", "2", "3"}, "none", 0.0},
                      {{"1", "2", "C"}, "3", 0.8},
                      {{"1", "3", "C"}, "2", 0.7},
                      {{"2", "3", "C"}, "1", 0.6},
                      {{"1", "2", "3", "C"}, "none", 0.0}});
  EXPECT_NEAR(r.preserved_mean, (0.85 + 0.82 + 0.75 + 0.7) / 4 / 0.9, 1e-12);
  EXPECT_NEAR(r.preserved_worst, 0.7 / 0.9, 1e-12);
}

TEST(Failure, ThreeModelsListedHeads) {
  FailureReport r = evaluate_failures(3, {0.6, 0.7, 0.8}, {{0, 1, 2}, {0, 1}}, {0.9, 0.75});
  ASSERT_EQ(r.patterns.size(), 16u);
  // {2, 3} and {1, 3} have no head and no subset of them has one: their exits answer alone.
  expect_patterns(r, {{{}, "1+2+3", 0.9},
                      {{"1"}, "2,3", 0.75},
                      {{"2"}, "1,3", 0.7},
                      {{"3"}, "1+2", 0.75},
                      {{"C"}, "1,2,3", 0.7},
                      {{"1", "2"}, "3", 0.8},
                      {{"1", "3"}, "2", 0.7},
                      {{"1", "C"}, "2,3", 0.75},
                      {{"2", "3"}, "1", 0.6},
                      {{"2", "C"}, "1,3", 0.7},
                      {{"3", "C"}, "1,2", 0.65},
                      {{"1", "2", "3"}, "none", 0.0},
                      {{"1", "2", "C"}, "3", 0.8},
                      {{"1", "3", "C"}, "2", 0.7},
                      {{"2", "3", "C"}, "1", 0.6},
                      {{"1", "2", "3", "C"}, "none", 0.0}});
  EXPECT_NEAR(r.preserved_mean, (0.75 + 0.7 + 0.75 + 0.7) / 4 / 0.9, 1e-12);
  EXPECT_NEAR(r.preserved_worst, 0.7 / 0.9, 1e-12);
}

TEST(Failure, LargestListedSubsetThenFirstListed) {
  // M = 4 with heads 1+2, 2+3 and 1+2+3+4 only (given unsorted: order inside a subset is free).
  FailureReport r =
      evaluate_failures(4, {0.5, 0.5, 0.5, 0.5}, {{1, 0}, {1, 2}, {0, 1, 2, 3}}, {0.6, 0.7, 0.9});
  ASSERT_EQ(r.patterns.size(), 32u);
  auto find = [&](const std::vector<std::string>& failed) {
    for (const FailurePattern& p : r.patterns) {
      if (p.failed == failed) return p;
    }
    ADD_FAILURE() << "no pattern";
    return FailurePattern{};
  };
  EXPECT_EQ(find({}).answer, "1+2+3+4");
  EXPECT_EQ(find({"4"}).answer, "1+2");  // 1+2 and 2+3 tie on size: the first listed wins
  EXPECT_DOUBLE_EQ(find({"4"}).accuracy, 0.6);
  EXPECT_EQ(find({"1"}).answer, "2+3");
  EXPECT_EQ(find({"2"}).answer, "1,3,4");
  EXPECT_EQ(find({"1", "4"}).answer, "2+3");
  EXPECT_EQ(find({"4", "C"}).answer, "1,2,3");
}

TEST(Failure, NoHeadsAtAll) {
  FailureReport r = evaluate_failures(2, {0.8, 0.6}, {}, {});
  EXPECT_EQ(r.patterns[0].answer, "1,2");
  EXPECT_NEAR(r.no_failure_accuracy, 0.7, 1e-12);
  EXPECT_NEAR(r.patterns[3].preserved, 1.0, 1e-12);  // C down changes nothing
}

// With per-sample accuracies of averaged exits, a set of alive exits without a head answers with
// them; a set they do not name falls back to the mean. Beside every answer: the best alive exit.
TEST(Failure, AveragedExitsAnswerWhereGiven) {
  FailureReport r = evaluate_failures(3, {0.6, 0.7, 0.8}, {{0, 1, 2}}, {0.9},
                                      {{"1,2,3", 0.84}, {"1,2", 0.72}, {"2,3", 0.83}});
  auto find = [&](const std::vector<std::string>& failed) {
    for (const FailurePattern& p : r.patterns) {
      if (p.failed == failed) return p;
    }
    ADD_FAILURE() << "no pattern";
    return FailurePattern{};
  };
  const FailurePattern c = find({"C"});
  EXPECT_EQ(c.answer, "1,2,3");
  EXPECT_TRUE(c.averaged);
  EXPECT_DOUBLE_EQ(c.accuracy, 0.84);
  EXPECT_EQ(c.best_exit, "3");
  EXPECT_DOUBLE_EQ(c.best_exit_accuracy, 0.8);
  EXPECT_NEAR(c.mean_exit_accuracy, 0.7, 1e-12);
  EXPECT_DOUBLE_EQ(find({"3"}).accuracy, 0.72);  // no head 1+2: the averaged exits answer
  EXPECT_DOUBLE_EQ(find({"1"}).accuracy, 0.83);
  const FailurePattern no13 = find({"2"});  // "1,3" not given: the mean
  EXPECT_EQ(no13.answer, "1,3");
  EXPECT_FALSE(no13.averaged);
  EXPECT_NEAR(no13.accuracy, 0.7, 1e-12);
  const FailurePattern head = find({});
  EXPECT_FALSE(head.averaged);
  EXPECT_EQ(head.best_exit, "3");
  EXPECT_EQ(find({"1", "2", "3"}).best_exit, "");
  EXPECT_EQ(find({"1", "2"}).best_exit, "3");
  EXPECT_NEAR(r.preserved_worst, 0.7 / 0.9, 1e-12);
  EXPECT_MEL_ERROR(evaluate_failures(2, {0.5, 0.5}, {{0, 1}}, {0.5}, {{"1,2", 1.5}}),
                   "averaged exits 1,2", "1.5");
  EXPECT_EQ(exits_name({0, 2}), "1,3");
}

TEST(Failure, ZeroAccuracyDoesNotDivideByZero) {
  FailureReport r = evaluate_failures(2, {0.0, 0.0}, {{0, 1}}, {0.0});
  for (const FailurePattern& p : r.patterns) EXPECT_EQ(p.preserved, 0.0);
  EXPECT_EQ(r.preserved_mean, 0.0);
}

TEST(Failure, Errors) {
  EXPECT_MEL_ERROR(evaluate_failures(1, {0.5}, {}, {}), "evaluate_failures", "M = 1");
  EXPECT_MEL_ERROR(evaluate_failures(3, {0.5, 0.5}, {}, {}), "2 exit accuracies", "M = 3");
  EXPECT_MEL_ERROR(evaluate_failures(2, {0.5, 0.5}, {{0, 1}}, {}), "1 head subsets",
                   "0 head accuracies");
  EXPECT_MEL_ERROR(evaluate_failures(3, {0.5, 0.5, 0.5}, {{0, 3}}, {0.5}), "head subset {0, 3}",
                   "names model 3", "M = 3");
  EXPECT_MEL_ERROR(evaluate_failures(3, {0.5, 0.5, 0.5}, {{-1, 1}}, {0.5}), "{-1, 1}", "M = 3");
  EXPECT_MEL_ERROR(evaluate_failures(3, {0.5, 0.5, 0.5}, {{1}}, {0.5}), "head subset {1}",
                   "at least 2");
  EXPECT_MEL_ERROR(evaluate_failures(3, {0.5, 0.5, 0.5}, {{1, 1}}, {0.5}), "{1, 1}",
                   "more than once");
  EXPECT_MEL_ERROR(evaluate_failures(3, {0.5, 0.5, 0.5}, {{0, 1}, {1, 0}}, {0.5, 0.6}),
                   "head 1+2 is listed twice");
  EXPECT_MEL_ERROR(evaluate_failures(2, {0.5, 85.0}, {}, {}), "exit 2 accuracy is 85", "[0, 1]");
  EXPECT_MEL_ERROR(evaluate_failures(2, {0.5, 0.5}, {{0, 1}}, {-0.1}), "head 1+2", "[0, 1]");
}

}  // namespace
}  // namespace mel::method
