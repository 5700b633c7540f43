// GPU tensors: host/device copies, strided and dtype-converting copies on the device, fill, the
// caching allocator's reuse and statistics, out-of-memory and mixed-device errors.
#include <gtest/gtest.h>

#include "cuda_testing.h"

namespace mel::testing {
namespace {

TEST(CudaTensor, RoundTripEveryDtype) {
  MEL_REQUIRE_GPU();
  for (DType dt :
       {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8}) {
    Tensor c = random_cpu({3, 5, 7}, 1, DType::f64, 0, 100).to(dt);
    Tensor g = c.to(gpu());
    EXPECT_TRUE(g.device().is_cuda());
    EXPECT_EQ(g.dtype(), dt);
    EXPECT_TRUE(all_close(g.to(Device::cpu()), c, 0, 0)) << dtype_name(dt);
  }
}

TEST(CudaTensor, EmptyAndScalar) {
  MEL_REQUIRE_GPU();
  Tensor e = zeros({0, 4}, DType::f32, gpu());
  EXPECT_EQ(e.to(Device::cpu()).numel(), 0);
  Tensor s = full({}, 2.5, DType::f32, gpu());
  EXPECT_EQ(s.item(), 2.5);
}

TEST(CudaTensor, StridedAndConvertingCopies) {
  MEL_REQUIRE_GPU();
  Tensor c = random_strided_cpu({17, 33, 5}, 2);  // odd sizes, transposed strides
  Tensor g = to_gpu_keep_strides(c);
  EXPECT_FALSE(g.is_contiguous());
  EXPECT_TRUE(all_close(g.contiguous(), c.contiguous(), 0, 0));
  for (DType dt : {DType::f64, DType::bf16, DType::f16, DType::i32}) {
    EXPECT_TRUE(all_close(g.to(dt), c.to(dt), 0, 0)) << dtype_name(dt);
  }
  // broadcast copy into a slice of a larger tensor
  Tensor dst_g = zeros({4, 6}, DType::f32, gpu());
  Tensor dst_c = zeros({4, 6});
  Tensor row = random_cpu({3}, 3);
  dst_g.slice(1, 1, 6, 2).copy_(row.to(gpu()));
  dst_c.slice(1, 1, 6, 2).copy_(row);
  EXPECT_TRUE(all_close(dst_g, dst_c, 0, 0));
}

TEST(CudaTensor, FillSetAndReadBack) {
  MEL_REQUIRE_GPU();
  Tensor g = zeros({5, 9}, DType::f32, gpu());
  g.slice(0, 1, 5, 3).fill_(7);
  g.set({4, 8}, -1.5);
  Tensor c = zeros({5, 9});
  c.slice(0, 1, 5, 3).fill_(7);
  c.set({4, 8}, -1.5);
  EXPECT_TRUE(all_close(g, c, 0, 0));
  EXPECT_EQ(g.at({4, 8}), -1.5);
}

TEST(CudaTensor, ToDeviceIsDifferentiable) {
  MEL_REQUIRE_GPU();
  Tensor x = random_cpu({4, 3}, 4).requires_grad_();
  Tensor y = x.to(gpu());
  sum(y.to(Device::cpu())).backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(x.grad().device().is_cpu());
  EXPECT_TRUE(all_close(x.grad(), ones({4, 3}), 0, 0));
}

TEST(CudaAllocator, ReusesFreedBlocksAndCountsBytes) {
  MEL_REQUIRE_GPU();
#ifdef MEL_CUDA_SIM
  GTEST_SKIP() << "on the kernel simulator mel's allocator does not cache: every tensor gets an "
                  "allocation of its own size, followed by a guard page";
#endif
  synchronize(gpu());
  empty_cache(gpu());
  reset_peak_memory(gpu());
  AllocatorStats before = memory_stats(gpu());
  { Tensor a = empty({1 << 20}, DType::f32, gpu()); }  // 4 MiB, freed into the cache
  AllocatorStats mid = memory_stats(gpu());
  EXPECT_EQ(mid.live_bytes, before.live_bytes);
  EXPECT_GE(mid.peak_bytes, before.live_bytes + (4u << 20));
  EXPECT_GE(mid.cached_bytes, 4u << 20);
  { Tensor b = empty({1 << 20}, DType::f32, gpu()); }
  AllocatorStats after = memory_stats(gpu());
  EXPECT_EQ(after.cache_hits, mid.cache_hits + 1);
  EXPECT_EQ(after.reserved_bytes, mid.reserved_bytes);  // no new cudaMalloc
  empty_cache(gpu());
  EXPECT_EQ(memory_stats(gpu()).cached_bytes, 0u);
}

TEST(CudaAllocator, SizeClasses) {
  EXPECT_EQ(cuda_block_size(1), 512u);
  EXPECT_EQ(cuda_block_size(513), 1024u);
  EXPECT_EQ(cuda_block_size((1u << 20) + 1), (1u << 20) + (1u << 18));
}

TEST(CudaAllocator, OutOfMemoryIsAClearError) {
  MEL_REQUIRE_GPU();
  // 2^46 floats = 256 TiB: more than any GPU has
  EXPECT_MEL_ERROR(empty({int64_t(1) << 46}, DType::f32, gpu()), "out of memory", "requested",
                   "free");
  // the failed request leaves the device usable
  Tensor ok = ones({8}, DType::f32, gpu());
  EXPECT_EQ(ok.to(Device::cpu()).to_vector().size(), 8u);
}

TEST(CudaTensor, MixedDevicesAreAClearError) {
  MEL_REQUIRE_GPU();
  Tensor a = ones({3}, DType::f32, gpu());
  Tensor b = ones({3});
  EXPECT_MEL_ERROR(add(a, b), "different devices", "cuda:0", "cpu");
}

TEST(CudaTensor, CopyAcrossDevicesBroadcastsAndConverts) {
  MEL_REQUIRE_GPU();
  Tensor g = zeros({3, 4}, DType::f64, gpu());
  Tensor row = random_cpu({4}, 5);  // f32 on the CPU
  g.copy_(row);
  EXPECT_TRUE(all_close(g, row.to(DType::f64).expand({3, 4}), 0, 0));
  Tensor c = zeros({3, 4});
  c.copy_(g.t().t());
  EXPECT_TRUE(all_close(c, g, 0, 0));
}

TEST(CudaTensor, PrintsItsValues) {
  MEL_REQUIRE_GPU();
  Tensor g = tensor({1.5, -2, 3, 4}, {2, 2}).to(gpu());
  const std::string s = g.str();
  EXPECT_NE(s.find("device=cuda:0"), std::string::npos) << s;
  EXPECT_NE(s.find("-2"), std::string::npos) << s;
}

TEST(CudaTensor, BadOrdinalIsAClearError) {
  MEL_REQUIRE_GPU();
  EXPECT_MEL_ERROR(zeros({2}, DType::f32, Device::cuda(cuda_device_count())), "does not exist");
}

}  // namespace
}  // namespace mel::testing
