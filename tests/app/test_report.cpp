// The failure report as people and files see it: report.json's fields, the terminal table and the
// SVG chart.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "app/chart.h"
#include "app/report.h"
#include "tests/gradcheck.h"

namespace mel::app {
namespace {

namespace fs = std::filesystem;

// Exits 0.8 and 0.7, head 1+2 0.9.
FailureReport report_m2() {
  return method::evaluate_failures(2, {0.8, 0.7}, {{0, 1}}, {0.9});
}

// Exits 0.6, 0.7, 0.8 and every head.
FailureReport report_m3() {
  return method::evaluate_failures(3, {0.6, 0.7, 0.8}, method::all_subsets(3),
                                   {0.75, 0.82, 0.85, 0.9});
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

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(Report, Json) {
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
  EXPECT_EQ(pkeys,
            (std::vector<std::string>{"failed", "answer", "answered_by", "accuracy", "preserved",
                                      "best_exit", "best_exit_accuracy", "mean_exit_accuracy"}));
  EXPECT_EQ(two_c["answered_by"], "exit 1");
  EXPECT_EQ(j["failures"][7].count("best_exit"), 0u);  // nothing alive
  EXPECT_NEAR(j["preserved_worst"].get<double>(), 0.7 / 0.9, 1e-12);
}

TEST(Report, Table) {
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
  expect_row("C", {"exits 1,2 (mean)", "75.00", "83.33", "exit 1: 80.00"});
  expect_row("1, 2", {"none", "0.00"});
  expect_row("1, C", {"exit 2", "70.00"});
  expect_row("1, 2, C", {"none", "0.00"});
  // All rows are equally wide up to the last column, so the numbers line up.
  EXPECT_EQ(table_row(t, "none").size(), table_row(t, "1, 2, C").size());
  EXPECT_NE(t.find("preserved over single failures: mean 83.33%, worst 77.78% (server 1 failed)"),
            std::string::npos)
      << t;
}

TEST(Report, AveragedExitsInTableAndChart) {
  const FailureReport r =
      method::evaluate_failures(2, {0.8, 0.7}, {{0, 1}}, {0.9}, {{"1,2", 0.85}});
  const std::string t = failure_table(r);
  const std::string row = table_row(t, "C");
  EXPECT_NE(row.find("exits 1,2 (averaged)"), std::string::npos) << t;
  EXPECT_NE(row.find("85.00"), std::string::npos) << t;
  EXPECT_NE(row.find("exit 1: 80.00"), std::string::npos) << t;
  const std::string svg = failure_chart_svg(r, "averaged");
  EXPECT_NE(svg.find("avg 1,2"), std::string::npos);
  EXPECT_NE(svg.find("alive exits, probabilities averaged"), std::string::npos);
  EXPECT_EQ(svg.find("answering independently"), std::string::npos);
}

TEST(Report, ChartSvg) {
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

TEST(Report, WriteChart) {
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

}  // namespace
}  // namespace mel::app
