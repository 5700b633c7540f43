// The communicator conformance suite on the MPI backend: run by `mpirun -np N test_dist_mpi`, every
// process runs every body on MPI_COMM_WORLD; the job fails when any rank's test fails.
#include <gtest/gtest.h>

#include "dist/mpi.h"
#include "tests/dist/conformance.h"

namespace mel::dist {
namespace {

Communicator& world() {
  static std::unique_ptr<Communicator> w = mpi_world(std::chrono::seconds(120));
  return *w;
}

class MpiConformance : public ::testing::TestWithParam<size_t> {};

TEST_P(MpiConformance, Body) {
  ASSERT_GE(world().size(), 2) << "run under mpirun -np 2 or more";
  conformance::bodies()[GetParam()].run(world());
  world().barrier();
}

INSTANTIATE_TEST_SUITE_P(World, MpiConformance,
                         ::testing::Range(size_t{0}, conformance::bodies().size()),
                         [](const auto& info) {
                           return std::string(conformance::bodies()[info.param].name);
                         });

TEST(Mpi, SizesAndRanks) {
  EXPECT_TRUE(launched_by_mpi());
  conformance::sizes_and_ranks(world(), world().size());
}

}  // namespace
}  // namespace mel::dist

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  mel::dist::world();  // MPI_Init before any test; every rank prints its own report
  return RUN_ALL_TESTS();
}
