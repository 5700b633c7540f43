// The communicator conformance suite on the in-process backend (2 and 3 ranks as threads), its
// failure handling, and the one-rank NCCL communicator on a GPU (skipped without one).
#include <gtest/gtest.h>

#include <atomic>

#include "dist/inprocess.h"
#include "dist/mpi.h"
#include "dist/nccl.h"
#include "tests/cuda/cuda_testing.h"
#include "tests/dist/conformance.h"

namespace mel::dist {
namespace {

// (ranks, index of the body)
class InProcessConformance : public ::testing::TestWithParam<std::tuple<int, size_t>> {};

TEST_P(InProcessConformance, Body) {
  const auto [ranks, index] = GetParam();
  const conformance::Body body = conformance::bodies()[index];
  run_ranks(ranks, [&](Communicator& comm) {
    conformance::sizes_and_ranks(comm, ranks);
    body.run(comm);
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, InProcessConformance,
                         ::testing::Combine(::testing::Values(2, 3),
                                            ::testing::Range(size_t{0},
                                                             conformance::bodies().size())),
                         [](const auto& info) {
                           return std::string(conformance::bodies()[std::get<1>(info.param)].name) +
                                  "_" + std::to_string(std::get<0>(info.param));
                         });

TEST(InProcess, AFailedRankFailsTheOthersAndItsErrorIsRethrown) {
  std::atomic<int> told{0};
  try {
    run_ranks(3, [&](Communicator& comm) {
      if (comm.rank() == 2) fail("rank two gives up");
      Tensor t = zeros({1});
      try {
        comm.recv(t, 2);
      } catch (const Error& e) {
        if (std::string(e.what()).find("rank 2 failed: rank two gives up") != std::string::npos) {
          ++told;
        }
        throw;
      }
    });
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "rank two gives up");
  }
  EXPECT_EQ(told.load(), 2);
}

TEST(InProcess, ASilentRankIsATimeoutNamingIt) {
  EXPECT_MEL_ERROR(run_ranks(
                       2,
                       [](Communicator& comm) {
                         if (comm.rank() == 0) {
                           Tensor t = zeros({1});
                           comm.recv(t, 1);  // rank 1 never sends
                         }
                       },
                       std::chrono::milliseconds(200)),
                   "rank 0: recv: no answer from rank 1 within");
}

TEST(InProcess, BadPeersAndDevicesAreErrors) {
  run_ranks(2, [](Communicator& comm) {
    EXPECT_MEL_ERROR(comm.send(zeros({1}), comm.rank()), "cannot talk to rank", "not itself");
    EXPECT_MEL_ERROR(comm.send(zeros({1}), 5), "cannot talk to rank 5");
    Tensor undefined;
    EXPECT_MEL_ERROR(comm.all_reduce_sum(undefined), "all_reduce_sum", "undefined");
  });
  EXPECT_MEL_ERROR(make_inprocess_world(0), "size must be >= 1");
}

TEST(Nccl, OneRankOnOneGpu) {
  MEL_REQUIRE_GPU();
  if (!nccl_built()) GTEST_SKIP() << "this build has no NCCL";
  run_ranks(1, [](Communicator& boot) {
    auto comm = nccl_communicator(boot, Device::cuda(0));
    EXPECT_EQ(comm->size(), 1);
    EXPECT_EQ(comm->backend(), "nccl");
    Tensor t = conformance::values_of(0, {7}, DType::f32).to(Device::cuda(0));
    comm->all_reduce_sum(t);
    comm->broadcast(t, 0);
    Tensor g = comm->all_gather(t);
    comm->barrier();
    EXPECT_EQ(g.shape(), (Shape{1, 7}));
    EXPECT_EQ(t.to_vector(), conformance::values_of(0, {7}, DType::f32).to_vector());
    auto sub = comm->split(0, 0);
    EXPECT_EQ(sub->size(), 1);
  });
}

TEST(Nccl, ConformanceOnTwoGpus) {
  MEL_REQUIRE_GPU();
  if (!nccl_built()) GTEST_SKIP() << "this build has no NCCL";
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs 2 GPUs, found " << cuda_device_count();
  for (const auto& body : conformance::bodies()) {
    SCOPED_TRACE(body.name);
    run_ranks(2, [&](Communicator& boot) {
      auto comm = nccl_communicator(boot, Device::cuda(boot.rank()));
      body.run(*comm);
    });
  }
}

TEST(Mpi, BuildAndLauncherAreReported) {
  // The MPI conformance runs under mpirun (test_dist_mpi); here only what this process knows.
  if (mpi_built()) {
    SUCCEED();
  } else {
    EXPECT_MEL_ERROR(mpi_world(), "no MPI backend");
  }
}

}  // namespace
}  // namespace mel::dist
