// The in-process backend: one thread per rank, messages and collectives through shared memory. For
// tests of distributed code without a cluster, and for `--placement threads`.
#pragma once
#include <chrono>
#include <functional>
#include <memory>

#include "dist/communicator.h"

namespace mel::dist {

class InProcessWorld;

// The ranks of one in-process group. A rank whose thread fails (see run_ranks) fails every
// operation that waits on it with an error naming it; a wait longer than `timeout` fails naming
// the rank it waited for, so nothing hangs.
std::shared_ptr<InProcessWorld> make_inprocess_world(
    int size, std::chrono::milliseconds timeout = std::chrono::minutes(5));
std::unique_ptr<Communicator> inprocess_communicator(const std::shared_ptr<InProcessWorld>& world,
                                                     int rank);

// Runs fn(comm) for every rank of a new world of `size` ranks, each on its own thread, and waits
// for all of them. When ranks fail, the others are told (their waits fail with the first rank's
// error) and the first failure is rethrown here.
void run_ranks(int size, const std::function<void(Communicator&)>& fn,
               std::chrono::milliseconds timeout = std::chrono::minutes(5));

}  // namespace mel::dist
