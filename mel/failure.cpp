#include "mel/failure.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "core/error.h"

namespace mel::method {
namespace {

// Bitmask enumeration keeps a pattern's bookkeeping trivial; 20 upstreams is already 2^21
// patterns, far beyond anything a report or chart can show.
constexpr int kMaxModels = 20;

struct Head {
  uint32_t mask;
  int size;
  double accuracy;
};

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? sep : "") + parts[i];
  return out;
}

// "{0, 3}": the raw indices, for messages about subsets that may not have a valid name.
std::string raw_subset(const std::vector<int>& s) {
  std::string out = "{";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "}";
}

void check_accuracy(double a, const std::string& what) {
  MEL_CHECK(std::isfinite(a) && a >= 0.0 && a <= 1.0,
            "evaluate_failures: {} accuracy is {}, expected a fraction in [0, 1]", what, a);
}

std::vector<Head> check_heads(int M, const std::vector<std::vector<int>>& head_subsets,
                              const std::vector<double>& head_accuracy) {
  MEL_CHECK(head_subsets.size() == head_accuracy.size(),
            "evaluate_failures: {} head subsets but {} head accuracies", head_subsets.size(),
            head_accuracy.size());
  std::vector<Head> heads;
  for (size_t k = 0; k < head_subsets.size(); ++k) {
    std::vector<int> s = head_subsets[k];
    std::sort(s.begin(), s.end());
    for (int i : s) {
      MEL_CHECK(i >= 0 && i < M,
                "evaluate_failures: head subset {} (0-based model indices) names model {}, but "
                "there are only M = {} upstream models (indices 0..{})",
                raw_subset(head_subsets[k]), i, M, M - 1);
    }
    MEL_CHECK(s.size() >= 2,
              "evaluate_failures: head subset {} has {} model(s); a head combines at least 2",
              raw_subset(head_subsets[k]), s.size());
    MEL_CHECK(std::adjacent_find(s.begin(), s.end()) == s.end(),
              "evaluate_failures: head subset {} names a model more than once",
              raw_subset(head_subsets[k]));
    uint32_t mask = 0;
    for (int i : s) mask |= 1u << i;
    for (size_t j = 0; j < heads.size(); ++j) {
      MEL_CHECK(heads[j].mask != mask,
                "evaluate_failures: head {} is listed twice (entries {} and {})", subset_name(s), j,
                k);
    }
    check_accuracy(head_accuracy[k], "head " + subset_name(s));
    heads.push_back({mask, static_cast<int>(s.size()), head_accuracy[k]});
  }
  return heads;
}

std::string indices_name(uint32_t mask, const std::string& sep) {
  std::vector<std::string> parts;
  for (int i = 0; i < 32; ++i) {
    if (mask & (1u << i)) parts.push_back(std::to_string(i + 1));
  }
  return join(parts, sep);
}

// The predictor answering when the upstreams in `alive` and (if `c_up`) C are running.
void answer(FailurePattern& p, int M, uint32_t alive, bool c_up, const std::vector<double>& exits,
            const std::vector<Head>& heads, const std::map<std::string, double>& averaged) {
  const int n_alive = std::popcount(alive);
  if (n_alive == 0) {
    p.answer = "none";
    p.accuracy = 0.0;
    return;
  }
  double sum = 0.0;
  for (int i = 0; i < M; ++i) {
    if (!(alive & (1u << i))) continue;
    sum += exits[i];
    if (p.best_exit.empty() || exits[i] > p.best_exit_accuracy) {
      p.best_exit = std::to_string(i + 1);
      p.best_exit_accuracy = exits[i];
    }
  }
  p.mean_exit_accuracy = sum / n_alive;
  if (c_up && n_alive >= 2) {
    const Head* best = nullptr;
    for (const Head& h : heads) {
      if ((h.mask & ~alive) == 0 && (!best || h.size > best->size)) best = &h;
    }
    if (best) {
      p.answer = indices_name(best->mask, "+");
      p.accuracy = best->accuracy;
      return;
    }
  }
  p.answer = indices_name(alive, ",");
  p.accuracy = p.mean_exit_accuracy;
  if (n_alive >= 2) {
    const auto it = averaged.find(p.answer);
    if (it != averaged.end()) {
      p.averaged = true;
      p.accuracy = it->second;
    }
  }
}

}  // namespace

void add_losses(FailureReport& r, const std::map<std::string, double>& losses) {
  for (FailurePattern& p : r.patterns) {
    const bool several_exits = p.answer.find(',') != std::string::npos;
    const auto it = losses.find(p.answer);
    if (it != losses.end() && (!several_exits || p.averaged)) p.loss = it->second;
  }
  if (!r.patterns.empty()) r.no_failure_loss = r.patterns[0].loss;
}

std::string subset_name(const std::vector<int>& s) {
  std::vector<std::string> parts;
  for (int i : s) parts.push_back(std::to_string(i + 1));
  return join(parts, "+");
}

std::string exits_name(const std::vector<int>& s) {
  std::vector<std::string> parts;
  for (int i : s) parts.push_back(std::to_string(i + 1));
  return join(parts, ",");
}

std::vector<std::vector<int>> all_subsets(int M, int min_size) {
  MEL_CHECK(M >= 0 && M <= kMaxModels, "all_subsets: M = {}, expected 0..{}", M, kMaxModels);
  std::vector<std::vector<int>> out;
  for (int k = std::max(min_size, 0); k <= M; ++k) {
    // Lexicographic combinations of size k: bump the rightmost index that can still grow.
    std::vector<int> c(k);
    for (int i = 0; i < k; ++i) c[i] = i;
    while (true) {
      out.push_back(c);
      int i = k - 1;
      while (i >= 0 && c[i] == M - k + i) --i;
      if (i < 0) break;
      ++c[i];
      for (int j = i + 1; j < k; ++j) c[j] = c[j - 1] + 1;
    }
  }
  return out;
}

FailureReport evaluate_failures(int M, const std::vector<double>& exit_accuracy,
                                const std::vector<std::vector<int>>& head_subsets,
                                const std::vector<double>& head_accuracy,
                                const std::map<std::string, double>& averaged_exits) {
  MEL_CHECK(M >= 2 && M <= kMaxModels,
            "evaluate_failures: M = {} upstream models, expected 2..{} (MEL combines at least 2)",
            M, kMaxModels);
  MEL_CHECK(static_cast<int>(exit_accuracy.size()) == M,
            "evaluate_failures: {} exit accuracies for M = {} upstream models",
            exit_accuracy.size(), M);
  for (int i = 0; i < M; ++i) check_accuracy(exit_accuracy[i], fmt::format("exit {}", i + 1));
  const std::vector<Head> heads = check_heads(M, head_subsets, head_accuracy);
  for (const auto& [name, a] : averaged_exits) check_accuracy(a, "averaged exits " + name);

  FailureReport r;
  // Servers 0..M-1 are the upstreams, server M is C.
  for (const std::vector<int>& failed : all_subsets(M + 1, 0)) {
    FailurePattern p;
    uint32_t alive = (1u << M) - 1;
    bool c_up = true;
    for (int s : failed) {
      if (s == M) {
        c_up = false;
        p.failed.push_back("C");
      } else {
        alive &= ~(1u << s);
        p.failed.push_back(std::to_string(s + 1));
      }
    }
    answer(p, M, alive, c_up, exit_accuracy, heads, averaged_exits);
    r.patterns.push_back(std::move(p));
  }
  r.no_failure_accuracy = r.patterns[0].accuracy;
  for (FailurePattern& p : r.patterns) {
    p.preserved = r.no_failure_accuracy > 0.0 ? p.accuracy / r.no_failure_accuracy : 0.0;
  }
  double sum = 0.0, worst = 0.0;
  for (int i = 1; i <= M + 1; ++i) {
    sum += r.patterns[i].preserved;
    worst = i == 1 ? r.patterns[i].preserved : std::min(worst, r.patterns[i].preserved);
  }
  r.preserved_mean = sum / (M + 1);
  r.preserved_worst = worst;
  return r;
}

}  // namespace mel::method
