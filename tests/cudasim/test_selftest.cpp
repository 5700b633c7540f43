// The kernel simulator's self-test: every planted bug of broken_kernels.cu is caught with a message
// that names it, and the correct twin of each kernel passes (no false alarm).
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "cudasim/sim.h"
#include "tests/cudasim/broken_kernels.h"

namespace cs = cudasim_selftest;

namespace {

// Device memory holding `v`, freed at scope exit.
struct DeviceBuffer {
  float* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(const std::vector<float>& v) : n(v.size()) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(float)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, v.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  }
  explicit DeviceBuffer(size_t count) : DeviceBuffer(std::vector<float>(count, 0.0f)) {}
  ~DeviceBuffer() { cudaFree(p); }
  std::vector<float> host() const {
    std::vector<float> v(n);
    EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
};

std::vector<float> iota(size_t n, float start = 1.0f) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

// Runs f, expects a cudasim::Error whose message contains `needle`.
template <class F>
void expect_caught(F f, const std::string& needle) {
  try {
    f();
  } catch (const cudasim::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << needle;
    return;
  }
  ADD_FAILURE() << "the simulator did not catch it (expected: " << needle << ")";
}

TEST(CudaSim, WarpShufflesOfFullWarpsPass) {
  DeviceBuffer x(iota(128)), out(4);
  cs::warp_sums(x.p, out.p, 128, 64);
  std::vector<float> r = out.host();
  for (int w = 0; w < 4; ++w) {
    float want = 0;
    for (int i = 32 * w; i < 32 * w + 32; ++i) want += float(i + 1);
    EXPECT_EQ(r[w], want) << "warp " << w;
  }
  EXPECT_GT(cudasim::counters().warp_ops, 0u);
}

TEST(CudaSim, CatchesAShuffleInAPartialWarp) {
  DeviceBuffer x(iota(48)), out(2);
  expect_caught([&] { cs::warp_sums(x.p, out.p, 48, 48); },
                "in a partial warp: lane 16 does not exist");
}

TEST(CudaSim, CatchesAFullMaskShuffleOnlyHalfTheWarpCalls) {
  DeviceBuffer x(iota(64)), out(2);
  expect_caught([&] { cs::warp_sum_in_branch(x.p, out.p, 64); },
                "has exited instead of joining it");
}

TEST(CudaSim, BlockSumWithABarrierPasses) {
  DeviceBuffer x(iota(50)), out(1);
  cs::block_sum(x.p, out.p, 50, 64, /*early_exit=*/false, /*barrier=*/true);
  EXPECT_EQ(out.host()[0], 50.0f * 51.0f / 2.0f);
  EXPECT_GT(cudasim::counters().barriers, 0u);
}

TEST(CudaSim, CatchesADivergentBarrier) {
  DeviceBuffer x(iota(50)), out(1);
  expect_caught([&] { cs::block_sum(x.p, out.p, 50, 64, /*early_exit=*/true, true); },
                "divergent __syncthreads");
}

TEST(CudaSim, CatchesAMissingBarrier) {
  DeviceBuffer x(iota(50)), out(1);
  expect_caught([&] { cs::block_sum(x.p, out.p, 50, 64, false, /*barrier=*/false); },
                "depends on the schedule or on uninitialised shared memory");
}

TEST(CudaSim, GridStrideCopyPasses) {
  for (int n : {1, 61, 64, 200}) {
    DeviceBuffer x(iota(n)), y(n);
    cs::copy(x.p, y.p, n, 0, 0);
    EXPECT_EQ(y.host(), iota(n)) << "n = " << n;
  }
}

// Fresh device memory is garbage (0xa5 bytes), never zeros: a dropped element cannot pass a parity
// check by being zero.
TEST(CudaSim, ADroppedTailElementFailsTheParityCheck) {
  DeviceBuffer x(iota(61)), y(61);
  cudaMemset(y.p, 0xa5, 61 * sizeof(float));
  cs::copy(x.p, y.p, 61, /*drop=*/1, 0);
  std::vector<float> r = y.host();
  EXPECT_EQ(r[59], 60.0f);
  EXPECT_NE(r[60], 61.0f);
  EXPECT_LT(std::abs(r[60]), 1e-10f) << "0xa5a5a5a5 as a float";
}

TEST(CudaSim, CatchesAnOverrunOntoTheGuardPage) {
  DeviceBuffer x(iota(64)), y(64);  // 256 bytes: the end of each is the start of its guard page
  expect_caught([&] { cs::copy(x.p, y.p, 64, 0, /*overrun=*/1); },
                "0 bytes past the end of allocation");
}

TEST(CudaSim, CatchesAWriteIntoTheAlignmentSlack) {
  DeviceBuffer x(iota(61)), y(61);  // 244 bytes: 12 bytes of slack before the guard page
  expect_caught([&] { cs::copy(x.p, y.p, 61, 0, /*overrun=*/1); },
                "bytes past the end of allocation");
}

TEST(CudaSim, AlignedFloat4CopyPasses) {
  DeviceBuffer x(iota(72)), y(64);
  cs::copy4(x.p, y.p, 16, 0);
  EXPECT_EQ(y.host(), iota(64));
}

TEST(CudaSimDeathTest, CatchesAMisalignedFloat4Load) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  DeviceBuffer x(iota(72)), y(64);
  EXPECT_DEATH(
      cs::copy4(x.p, y.p, 16, 1),
      "misaligned address.*float4(.|\n)*cudasim: undefined behaviour in kernel launched at");
}

TEST(CudaSim, SharedMemoryReadAfterItsWritesPasses) {
  DeviceBuffer x(iota(32)), y(32);
  cs::rotate(x.p, y.p, /*wrap=*/true);
  std::vector<float> r = y.host();
  for (int t = 0; t < 32; ++t) EXPECT_EQ(r[t], float((t + 1) % 32 + 1));
}

TEST(CudaSim, CatchesAReadOfUninitialisedSharedMemory) {
  DeviceBuffer x(iota(32)), y(32);
  expect_caught([&] { cs::rotate(x.p, y.p, /*wrap=*/false); },
                "depends on the schedule or on uninitialised shared memory");
}

TEST(CudaSimDeathTest, CatchesASharedArrayIndexOutOfBounds) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  DeviceBuffer x(iota(64)), y(64);
  EXPECT_DEATH(cs::shared_overflow(x.p, y.p), "index 64 out of bounds");
}

TEST(CudaSim, CatchesAHostPointerArgument) {
  std::vector<float> host = iota(64);
  DeviceBuffer y(64);
  expect_caught([&] { cs::copy(host.data(), y.p, 64, 0, 0); }, "host memory, not device memory");
}

TEST(CudaSim, CatchesAFreedPointerArgument) {
  DeviceBuffer y(64);
  float* stale = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&stale), 64 * sizeof(float));
  cudaFree(stale);
  expect_caught([&] { cs::copy(stale, y.p, 64, 0, 0); }, "used after cudaFree");
}

TEST(CudaSimDeathTest, CatchesHostCodeReadingDeviceMemory) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  DeviceBuffer x(iota(64));
  volatile float* p = x.p;
  EXPECT_DEATH((void)p[3], "host code accessed device memory");
}

TEST(CudaSim, CatchesACopyOfTheWrongKind) {
  DeviceBuffer x(iota(64));
  std::vector<float> host(64);
  expect_caught([&] { cudaMemcpy(host.data(), x.p, 64 * sizeof(float), cudaMemcpyHostToDevice); },
                "should be device memory");
  expect_caught([&] { cudaMemcpy(host.data(), x.p, 65 * sizeof(float), cudaMemcpyDeviceToHost); },
                "bytes past the end of allocation");
}

TEST(CudaSim, AnInvalidLaunchConfigurationIsALaunchError) {
  DeviceBuffer x(iota(64)), y(64);
  cudaGetLastError();
  cs::block_sum(x.p, y.p, 64, 2048, false, true);  // 2048 threads per block
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
}

}  // namespace
