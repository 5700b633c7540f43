// `mel train --placement threads|servers` for ensembles: the MEL task placed on M + 1 ranks
// (threads in this process, or the MPI processes of `mpirun -np M+1 mel train ...`), checked to
// run one config, and the placement's traffic and time in report.json.
#pragma once
#include <string>

#include "app/ensemble_config.h"

namespace mel::app {

// placement: "threads" or "servers". Returns the combination server's report.json (every rank
// trains; only that one prints and writes the run folder).
Json train_mel_placed(const MelConfig& c, const RunOverrides& overrides,
                      const std::string& resume_dir, const std::string& placement);

}  // namespace mel::app
