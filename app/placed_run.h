// `mel train --placement threads|servers` for ensembles: the MEL task placed on M + 1 ranks
// (threads in this process, or the MPI processes of `mpirun -np M+1 mel train ...`), optionally
// replicated R times for data parallelism ((M + 1) R ranks), checked to run one config, and the
// placement's traffic and time in report.json.
#pragma once
#include <string>

#include "app/ensemble_config.h"

namespace mel::app {

struct Placement {
  std::string kind = "threads";  // "threads" or "servers"
  int replicas = 1;              // data-parallel copies of the whole placement
  double timeout_seconds = 300;  // a rank waiting longer for another fails naming it
  // Between GPUs of a `servers` run: "nccl" (device to device) or "host" (staged through the
  // host over MPI). Threads always use the host.
  std::string gpu_comm = "nccl";
};

// Returns the report.json of replica 0's combination server (every rank trains; only that one
// prints and writes the run folder).
Json train_mel_placed(const MelConfig& c, const RunOverrides& overrides,
                      const std::string& resume_dir, const Placement& placement);

}  // namespace mel::app
