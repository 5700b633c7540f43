#include "mel/failout.h"

#include <fmt/format.h>

#include "core/random.h"

namespace mel::method {

std::vector<bool> servers_up(const FailoutSpec& f, int phase, int64_t step) {
  std::vector<bool> up;
  for (size_t i = 0; i < f.probability.size(); ++i) {
    uint64_t h = splitmix64(f.seed ^ 0x6661696c6f7574ull);  // "failout"
    h = splitmix64(h ^ static_cast<uint64_t>(phase));
    h = splitmix64(h ^ static_cast<uint64_t>(step));
    h = splitmix64(h ^ static_cast<uint64_t>(i));
    const double u = static_cast<double>(h >> 11) * 0x1.0p-53;  // uniform in [0, 1)
    up.push_back(u >= f.probability[i]);
  }
  return up;
}

std::vector<bool> predictors_present(const EnsembleSpec& spec, const std::vector<bool>& up) {
  std::vector<bool> present(up.begin(), up.end());
  for (const auto& subset : spec.head_subsets) {
    bool all = true;
    for (int i : subset) all = all && up[static_cast<size_t>(i)];
    present.push_back(all);
  }
  return present;
}

JointLossOptions present_terms(const JointLossOptions& o, const std::vector<bool>& present) {
  JointLossOptions r;
  r.label_smoothing = o.label_smoothing;
  r.diversity_weight = o.diversity_weight;
  r.diversity_margin = o.diversity_margin;
  std::vector<int> index(present.size(), -1);
  for (size_t k = 0; k < present.size(); ++k) {
    if (!present[k]) continue;
    index[k] = static_cast<int>(r.weights.size());
    r.weights.push_back(o.weights[k]);
    r.coarse.push_back(o.coarse.empty() ? false : static_cast<bool>(o.coarse[k]));
  }
  for (const auto& [i, j] : o.diversity_pairs) {
    const int a = index[static_cast<size_t>(i)], b = index[static_cast<size_t>(j)];
    if (a >= 0 && b >= 0) r.diversity_pairs.emplace_back(a, b);
  }
  return r;
}

std::vector<std::string> untrained_prefixes(const Ensemble& m, const std::vector<bool>& present,
                                            const std::string& root) {
  const int M = m.spec.M;
  const std::vector<std::string> names = m.predictor_names();
  std::vector<std::string> out;
  for (size_t k = 0; k < present.size(); ++k) {
    if (present[k]) continue;
    const bool exit = static_cast<int>(k) < M;
    if (root.empty()) {
      out.push_back(exit ? fmt::format("upstream.{}.", k) : "heads." + names[k] + ".");
    } else if (!exit) {
      out.push_back(names[k] + ".");
    }
  }
  return out;
}

}  // namespace mel::method
