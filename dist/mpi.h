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
// MPI_COMM_WORLD (MPI is initialised on first use and finalised at exit). Every call waits
// through non-blocking MPI: a receive or send that waits longer than `timeout` fails naming the
// peer rank, a collective names its operation; the launcher ends every rank when one dies.
std::unique_ptr<Communicator> mpi_world(
    std::chrono::milliseconds timeout = std::chrono::minutes(5));
// After an error in a process that uses MPI: ends every rank of the job (MPI_Abort with `code`),
// since MPI_Finalize at exit would wait for peers that failed or hang. A no-op when this process
// never initialised MPI.
void abort_job(int code);

}  // namespace mel::dist
