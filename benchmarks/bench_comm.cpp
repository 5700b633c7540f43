// Communicator bandwidth per backend: send/recv ping-pong between ranks 0 and 1 (one-way time and
// bandwidth) and all_reduce_sum over every rank (time, algorithm bandwidth bytes/time and NCCL's
// "bus bandwidth" algbw * 2(n-1)/n), from 4 KiB to 64 MiB of f32.
//
//   bench_comm [--ranks N]                   in-process backend, N threads (default 2)
//   mpirun -np N bench_comm                  MPI backend, N processes
//   mpirun -np N bench_comm --nccl           NCCL backend, one GPU per process (local rank)
//
// Each size runs for about 0.2 s after a warm-up; rank 0 prints the median of 5 such rounds.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/factory.h"
#include "dist/inprocess.h"
#include "dist/mpi.h"
#include "dist/nccl.h"

namespace {

using namespace mel;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Seconds per call of `op`, the median of 5 rounds of enough calls for ~0.2 s; every rank runs
// the same number of calls (rank 0 decides and broadcasts it).
template <class Op>
double time_op(dist::Communicator& comm, Op&& op) {
  op();  // warm-up
  comm.barrier();
  auto t0 = Clock::now();
  op();
  comm.barrier();
  Tensor reps = full({1}, std::max(1.0, 0.2 / std::max(seconds_since(t0), 1e-7)), DType::f64);
  comm.broadcast(reps, 0);
  const int n = static_cast<int>(std::min(reps.item(), 100000.0));
  std::vector<double> rounds;
  for (int r = 0; r < 5; ++r) {
    comm.barrier();
    t0 = Clock::now();
    for (int i = 0; i < n; ++i) op();
    comm.barrier();
    rounds.push_back(seconds_since(t0) / n);
  }
  std::sort(rounds.begin(), rounds.end());
  return rounds[2];
}

std::string size_str(int64_t bytes) {
  return bytes >= (1 << 20) ? fmt::format("{} MiB", bytes >> 20)
                            : fmt::format("{} KiB", bytes >> 10);
}

void run(dist::Communicator& comm, Device device) {
  const int n = comm.size();
  if (comm.rank() == 0) {
    fmt::print("backend {}, {} ranks\n", comm.backend(), n);
    fmt::print("{:>8}  {:>14}  {:>12}  {:>16}  {:>12}  {:>12}\n", "size", "send/recv us",
               "p2p GB/s", "all_reduce us", "algbw GB/s", "busbw GB/s");
  }
  for (int64_t bytes = 4 << 10; bytes <= (64 << 20); bytes *= 4) {
    Tensor t = zeros({bytes / 4}, DType::f32, device);
    const double p2p = time_op(comm,
                               [&] {  // a round trip: two one-way transfers
                                 if (comm.rank() == 0) {
                                   comm.send(t, 1);
                                   comm.recv(t, 1);
                                 } else if (comm.rank() == 1) {
                                   comm.recv(t, 0);
                                   comm.send(t, 0);
                                 }
                               }) /
                       2.0;
    const double ar = time_op(comm, [&] { comm.all_reduce_sum(t); });
    if (comm.rank() == 0) {
      const double algbw = static_cast<double>(bytes) / ar / 1e9;
      fmt::print("{:>8}  {:>14.1f}  {:>12.2f}  {:>16.1f}  {:>12.2f}  {:>12.2f}\n", size_str(bytes),
                 p2p * 1e6, static_cast<double>(bytes) / p2p / 1e9, ar * 1e6, algbw,
                 algbw * 2.0 * (n - 1) / n);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int ranks = 2;
  bool nccl = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--ranks") && i + 1 < argc) {
      ranks = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--nccl")) {
      nccl = true;
    } else {
      fmt::print(stderr, "usage: bench_comm [--ranks N] | mpirun -np N bench_comm [--nccl]\n");
      return 2;
    }
  }
  try {
    if (dist::launched_by_mpi()) {
      auto world = dist::mpi_world();
      if (world->size() < 2) throw std::runtime_error("bench_comm needs at least 2 ranks");
      if (!nccl) {
        run(*world, Device::cpu());
        return 0;
      }
      const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
      const Device gpu = Device::cuda(local ? std::atoi(local) : 0);
      auto comm = dist::nccl_communicator(*world, gpu);
      run(*comm, gpu);
      return 0;
    }
    if (nccl)
      throw std::runtime_error("--nccl needs one process per GPU: mpirun -np N bench_comm --nccl");
    if (ranks < 2) throw std::runtime_error("--ranks must be >= 2");
    dist::run_ranks(ranks, [](dist::Communicator& comm) { run(comm, Device::cpu()); });
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_comm: {}\n", e.what());
    dist::abort_job(1);
    return 1;
  }
  return 0;
}
