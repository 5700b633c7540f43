// Failout: upstream servers that fail during training, as ResiliNet trains against node failures.
// Each step every upstream server is down with its probability, drawn from the run's seed, the
// phase and the step alone (so every rank of a placed run, and every rerun or resume, draws the
// same). A down server computes and sends nothing; only the predictors whose inputs arrived (its
// exit when it is up, a head when every server of its subset is) are in that step's loss, and only
// their parameters are stepped.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mel/ensemble.h"
#include "mel/joint_loss.h"

namespace mel::method {

struct FailoutSpec {
  std::vector<double> probability;  // per upstream server, in [0, 1); empty: off
  uint64_t seed = 0;
  bool enabled() const { return !probability.empty(); }
};

// Which upstream servers are up at step `step` of phase `phase`.
std::vector<bool> servers_up(const FailoutSpec& f, int phase, int64_t step);

// Per predictor (the M exits, then the heads in spec.head_subsets order): whether its inputs
// arrived when the servers `up` are up.
std::vector<bool> predictors_present(const EnsembleSpec& spec, const std::vector<bool>& up);

// `o` restricted to the present terms (renumbered in order); diversity pairs keep both ends.
JointLossOptions present_terms(const JointLossOptions& o, const std::vector<bool>& present);

// Parameter-name prefixes of what does not train this step, relative to `root`: "upstream.i." and
// "heads.S." under the whole ensemble (root "" ), "S." under the heads module (root "heads").
std::vector<std::string> untrained_prefixes(const Ensemble& m, const std::vector<bool>& present,
                                            const std::string& root);

}  // namespace mel::method
