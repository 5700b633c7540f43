// The MPI backend: one process per rank (OpenMPI's `mpirun` on one machine, `mpirun`/`srun` across
// nodes), CPU tensors, and the bootstrap of NCCL communicators. Built when MPI is found.
#pragma once
#include <chrono>
#include <memory>

#include "dist/communicator.h"

namespace mel::dist {

// True in a build with the MPI backend.
bool mpi_built();
// True when this process was started by an MPI launcher (mpirun, srun): the environment names a
// world size.
bool launched_by_mpi();
// MPI_COMM_WORLD (MPI is initialised on first use and finalised at exit). A receive that waits
// longer than `timeout` fails naming the rank it waited for; collectives rely on the launcher,
// which ends every rank when one dies.
std::unique_ptr<Communicator> mpi_world(
    std::chrono::milliseconds timeout = std::chrono::minutes(5));

}  // namespace mel::dist
