#include "app/report.h"

#include <fmt/format.h>

#include <algorithm>

namespace mel::app {

namespace {

std::string pad_right(const std::string& s, size_t w) {
  return s + std::string(w > s.size() ? w - s.size() : 0, ' ');
}
std::string pad_left(const std::string& s, size_t w) {
  return std::string(w > s.size() ? w - s.size() : 0, ' ') + s;
}

std::string failed_name(const FailurePattern& p) {
  return p.failed.empty() ? "none" : fmt::format("{}", fmt::join(p.failed, ", "));
}

}  // namespace

Json failure_report_json(const FailureReport& r) {
  Json failures = Json::array();
  for (const FailurePattern& p : r.patterns) {
    Json j;
    j["failed"] = p.failed;
    j["answer"] = p.answer;
    j["answered_by"] = describe_answer(p);
    j["accuracy"] = p.accuracy;
    j["preserved"] = p.preserved;
    if (p.loss) j["loss"] = *p.loss;
    if (!p.best_exit.empty()) {
      j["best_exit"] = p.best_exit;
      j["best_exit_accuracy"] = p.best_exit_accuracy;
      j["mean_exit_accuracy"] = p.mean_exit_accuracy;
    }
    failures.push_back(std::move(j));
  }
  Json out;
  out["failures"] = std::move(failures);
  out["preserved_mean"] = r.preserved_mean;
  out["preserved_worst"] = r.preserved_worst;
  if (r.no_failure_loss) out["no_failure_loss"] = *r.no_failure_loss;
  return out;
}

std::string describe_answer(const FailurePattern& p) {
  if (p.answer == "none" || p.answer.empty()) return "none";
  if (p.answer.find('+') != std::string::npos) return "head " + p.answer;
  if (p.answer.find(',') != std::string::npos) {
    return "exits " + p.answer + (p.averaged ? " (averaged)" : " (mean)");
  }
  return "exit " + p.answer;
}

std::string failure_table(const FailureReport& r) {
  // With losses (text runs): a column of the answer's loss beside its accuracy.
  const bool losses = std::any_of(r.patterns.begin(), r.patterns.end(),
                                  [](const FailurePattern& p) { return p.loss.has_value(); });
  std::vector<std::string> header = {"failed", "answered by", "accuracy %", "preserved %",
                                     "best alive exit %"};
  if (losses) header.insert(header.begin() + 3, "loss (nats)");
  std::vector<std::vector<std::string>> rows;
  for (const FailurePattern& p : r.patterns) {
    rows.push_back({failed_name(p), describe_answer(p), fmt::format("{:.2f}", 100 * p.accuracy),
                    fmt::format("{:.2f}", 100 * p.preserved),
                    p.best_exit.empty()
                        ? "-"
                        : fmt::format("exit {}: {:.2f}", p.best_exit, 100 * p.best_exit_accuracy)});
    if (losses)
      rows.back().insert(rows.back().begin() + 3, p.loss ? fmt::format("{:.4f}", *p.loss) : "-");
  }
  std::vector<size_t> w(header.size());
  for (size_t c = 0; c < header.size(); ++c) {
    w[c] = header[c].size();
    for (const auto& row : rows) w[c] = std::max(w[c], row[c].size());
  }
  // Text columns align left, numbers right, so the decimal points line up.
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t c = 0; c < cells.size(); ++c) {
      if (c) out += "  ";
      out += c < 2 ? pad_right(cells[c], w[c]) : pad_left(cells[c], w[c]);
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(header);
  std::vector<std::string> rule;
  for (size_t width : w) rule.push_back(std::string(width, '-'));
  out += line(rule);
  for (const auto& row : rows) out += line(row);

  // Name the single failure that hurts most: that is the server worth protecting first.
  std::string worst_name;
  for (size_t i = 1; i < r.patterns.size() && r.patterns[i].failed.size() == 1; ++i) {
    if (r.patterns[i].preserved == r.preserved_worst) {
      worst_name = r.patterns[i].failed[0];
      break;
    }
  }
  out += fmt::format("preserved over single failures: mean {:.2f}%, worst {:.2f}%",
                     100 * r.preserved_mean, 100 * r.preserved_worst);
  if (!worst_name.empty()) out += fmt::format(" (server {} failed)", worst_name);
  return out + "\n";
}

}  // namespace mel::app
