// MEL failure evaluation against hand-computed answers for M = 2 and M = 3 (all heads and listed
// heads), its JSON, table and SVG chart, and errors for inconsistent inputs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include "mel/chart.h"
#include "mel/failure.h"
#include "tests/gradcheck.h"

namespace mel::app {
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

TEST(Failure, ZeroAccuracyDoesNotDivideByZero) {
  FailureReport r = evaluate_failures(2, {0.0, 0.0}, {{0, 1}}, {0.0});
  for (const FailurePattern& p : r.patterns) EXPECT_EQ(p.preserved, 0.0);
  EXPECT_EQ(r.preserved_mean, 0.0);
}

TEST(Failure, Json) {
  Json j = failure_report_json(report_m2());
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"failures", "preserved_mean", "preserved_worst"}));
  ASSERT_EQ(j["failures"].size(), 8u);
  const Json& none = j["failures"][0];
  EXPECT_TRUE(none["failed"].is_array());
  EXPECT_TRUE(none["failed"].empty());
  EXPECT_EQ(none["answer"], "1+2");
  EXPECT_DOUBLE_EQ(none["accuracy"].get<double>(), 0.9);
  EXPECT_DOUBLE_EQ(none["preserved"].get<double>(), 1.0);
  const Json& two_c = j["failures"][6];
  EXPECT_EQ(two_c["failed"], (Json{"2", "C"}));
  EXPECT_EQ(two_c["answer"], "1");
  EXPECT_DOUBLE_EQ(two_c["accuracy"].get<double>(), 0.8);
  std::vector<std::string> pkeys;
  for (auto it = two_c.begin(); it != two_c.end(); ++it) pkeys.push_back(it.key());
  EXPECT_EQ(pkeys, (std::vector<std::string>{"failed", "answer", "accuracy", "preserved"}));
  EXPECT_NEAR(j["preserved_worst"].get<double>(), 0.7 / 0.9, 1e-12);
}

// The table row whose first column is `failed`.
std::string table_row(const std::string& table, const std::string& failed) {
  std::istringstream in(table);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(failed + "  ", 0) == 0) return line;
  }
  return "";
}

TEST(Failure, Table) {
  const std::string t = failure_table(report_m2());
  EXPECT_EQ(t.rfind("failed", 0), 0u) << t;
  EXPECT_NE(t.find("answered by"), std::string::npos);
  EXPECT_NE(t.find("accuracy %"), std::string::npos);
  EXPECT_NE(t.find("preserved %"), std::string::npos);
  auto expect_row = [&](const std::string& failed, std::vector<std::string> cells) {
    const std::string row = table_row(t, failed);
    ASSERT_FALSE(row.empty()) << "no row for '" << failed << "' in\n" << t;
    for (const std::string& c : cells) EXPECT_NE(row.find(c), std::string::npos) << row;
  };
  expect_row("none", {"head 1+2", "90.00", "100.00"});
  expect_row("1", {"exit 2", "70.00", "77.78"});
  expect_row("C", {"exits 1,2 (mean)", "75.00", "83.33"});
  expect_row("1, 2", {"none", "0.00"});
  expect_row("1, C", {"exit 2", "70.00"});
  expect_row("1, 2, C", {"none", "0.00"});
  // All rows are equally wide up to the last column, so the numbers line up.
  EXPECT_EQ(table_row(t, "none").size(), table_row(t, "1, 2, C").size());
  EXPECT_NE(t.find("preserved over single failures: mean 83.33%, worst 77.78% (server 1 failed)"),
            std::string::npos)
      << t;
}

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(Failure, ChartSvg) {
  for (const FailureReport& r : {report_m2(), report_m3()}) {
    const std::string svg = failure_chart_svg(r, "MEL <fmnist> & friends");
    EXPECT_EQ(svg.rfind("<svg", 0), 0u);
    ASSERT_GE(svg.size(), 7u);
    EXPECT_EQ(svg.substr(svg.find_last_not_of('\n') - 5, 6), "</svg>");
    EXPECT_EQ(count(svg, "<rect class=\"bar\""), static_cast<int>(r.patterns.size()));
    EXPECT_EQ(count(svg, "<text"), count(svg, "</text>"));
    EXPECT_EQ(count(svg, "<svg"), 1);
    EXPECT_NE(svg.find("MEL &lt;fmnist&gt; &amp; friends"), std::string::npos);
    EXPECT_EQ(svg.find("<fmnist>"), std::string::npos);
    EXPECT_NE(svg.find("none failed"), std::string::npos);
    EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);
  }
  EXPECT_NE(failure_chart_svg(report_m3(), "t").find("h 2+3"), std::string::npos);
}

TEST(Failure, WriteChart) {
  const fs::path dir =
      fs::temp_directory_path() / ("mel_test_failure_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "failures.svg").string();
  write_failure_chart(path, report_m3(), "M = 3");
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), failure_chart_svg(report_m3(), "M = 3"));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  fs::remove_all(dir);
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
}  // namespace mel::app
