// MEL failure evaluation: which predictor answers, and how accurately, for every pattern of failed
// servers (upstream 1..M plus the combination server C), given per-exit and per-head accuracies.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mel::method {

// Subsets are sorted 0-based model indices; their names are 1-based and joined by '+':
// {0,2} -> "1+3".
std::string subset_name(const std::vector<int>& s);
// All subsets of {0..M-1} with at least `min_size` members, by size, then lexicographic.
std::vector<std::vector<int>> all_subsets(int M, int min_size = 2);

struct PredictorAccuracy {
  std::string name;  // "1", "2", "1+2"...
  double accuracy;
};

struct FailurePattern {
  std::vector<std::string> failed;  // e.g. {"1"}, {"C"}, {"2", "C"}; empty = no failure
  // "1+2": head h_{1,2}; "1": exit 1 alone; "1,3": exits 1 and 3 together, the client averaging
  // their probabilities (or, without per-sample accuracies, answering independently: the mean of
  // their accuracies); "none": every upstream failed.
  std::string answer;
  bool averaged = false;  // "1,3" is the per-sample average of probabilities
  double accuracy = 0.0;
  double preserved = 0.0;  // accuracy / no-failure accuracy (0 when that is 0)
  // Beside the answer, over the alive upstreams' exits: the best one ("" when none is alive) and
  // the mean of their accuracies.
  std::string best_exit;
  double best_exit_accuracy = 0.0, mean_exit_accuracy = 0.0;
  // The answer's mean cross-entropy (nats per sample), when known (add_losses).
  std::optional<double> loss;
};

struct FailureReport {
  double no_failure_accuracy = 0.0;
  // Every subset of the M+1 servers: no failure first, then by number of failures; within a count,
  // lexicographic with C after the upstreams ({1}, {2}, {C}, {1,2}, {1,C}, {2,C}, ...).
  std::vector<FailurePattern> patterns;
  // Over the M+1 single-server failures.
  double preserved_mean = 0.0, preserved_worst = 0.0;
  std::optional<double> no_failure_loss;
};

// exit_accuracy[i] is upstream i's exit; head_subsets[k] / head_accuracy[k] describe each head on
// C. Accuracies are fractions in [0, 1].
//
// With C up and alive upstreams A (|A| >= 2) the answer is h_A. When heads are only listed for some
// subsets and A has none, C uses the head of the largest listed subset of A (ties: the one listed
// first), since C can evaluate any head whose inputs all arrived; if no subset of A has a head,
// A's exits answer, as when C is down. One alive upstream answers with its own exit.
//
// Several alive exits without a head: the client averages their probabilities, whose accuracy
// `averaged_exits` gives per set of exits, named "1,3" (measured per sample on the test set);
// for a set it does not name, the exits answer independently and the accuracy is their mean.
FailureReport evaluate_failures(int M, const std::vector<double>& exit_accuracy,
                                const std::vector<std::vector<int>>& head_subsets,
                                const std::vector<double>& head_accuracy,
                                const std::map<std::string, double>& averaged_exits = {});

// Sets each pattern's loss from `losses`, keyed like the answers: exits ("1"), heads ("1+2") and
// averaged exits ("1,3"; only for answers that are per-sample averages). Answers without an entry
// (none alive, independent exits) keep no loss.
void add_losses(FailureReport& r, const std::map<std::string, double>& losses);

// The name of a set of exits in `averaged_exits`: 1-based indices joined by ',' ({0, 2} -> "1,3").
std::string exits_name(const std::vector<int>& s);

}  // namespace mel::method
