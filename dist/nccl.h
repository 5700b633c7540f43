// The NCCL backend: one process (or thread) per GPU, CUDA tensors, every operation queued on the
// device's stream (no host synchronisation except barrier). Bootstrapped over another communicator
// (MPI between processes, in-process between threads), which carries NCCL's unique id.
#pragma once
#include <memory>

#include "dist/communicator.h"

namespace mel::dist {

// True in a build with the CUDA backend and NCCL.
bool nccl_built();
// A communicator over the same ranks as `bootstrap` (a collective call on it), for tensors on
// `device`. Messages are not checked against the receiving tensor (that would need the host);
// sizes must agree by construction.
std::unique_ptr<Communicator> nccl_communicator(Communicator& bootstrap, Device device);

}  // namespace mel::dist
