#include <sstream>

#include "gradcheck.h"

namespace mel {
namespace {

TEST(Tensor, FactoriesAndMetadata) {
  Tensor z = zeros({2, 3});
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.strides(), (Shape{3, 1}));
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.dtype(), DType::f32);
  EXPECT_TRUE(z.device().is_cpu());
  EXPECT_EQ(sum(z).item(), 0.0);
  EXPECT_EQ(sum(ones({4}, DType::i32)).item(), 4.0);
  EXPECT_EQ(full({2}, 2.5, DType::f64).at({1}), 2.5);
  EXPECT_EQ(arange(5).to_vector(), (std::vector<double>{0, 1, 2, 3, 4}));
  EXPECT_EQ(arange(1.0, 2.0, 0.25, DType::f32).to_vector(),
            (std::vector<double>{1, 1.25, 1.5, 1.75}));
  EXPECT_EQ(arange(3.0, 0.0, -1.0, DType::f64).to_vector(), (std::vector<double>{3, 2, 1}));
  Tensor s = full({}, 7.0);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.item(), 7.0);
  Tensor e = zeros({0, 3});
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(sum(e, {0}).to_vector(), (std::vector<double>{0, 0, 0}));
  EXPECT_MEL_ERROR(arange(0.0, 1.0, 0.0), "arange", "step");
  EXPECT_MEL_ERROR(tensor({1, 2, 3}, {2, 2}), "tensor", "3 values", "[2, 2]");
  EXPECT_MEL_ERROR(empty({2, -1}), "negative");
}

TEST(Tensor, StorageIsAligned) {
  for (int64_t n : {1, 3, 17, 1000}) {
    Tensor t = empty({n}, DType::u8);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 64, 0u);
  }
  auto before = cpu_allocator().stats().live_bytes;
  {
    Tensor t = empty({1000}, DType::f64);
    EXPECT_GE(cpu_allocator().stats().live_bytes, before + 8000);
  }
  EXPECT_EQ(cpu_allocator().stats().live_bytes, before);
}

TEST(Tensor, DataAccessChecksDtype) {
  Tensor t = zeros({2}, DType::f64);
  EXPECT_NE(t.data<double>(), nullptr);
  EXPECT_MEL_ERROR(t.data<float>(), "f64", "f32");
}

TEST(Tensor, PrinterShowsHeaderAndElidesValues) {
  Tensor t = arange(0.0, 6.0, 1.0, DType::f32).view({2, 3});
  std::ostringstream os;
  os << t;
  EXPECT_EQ(os.str(), "Tensor(shape=[2, 3], dtype=f32, device=cpu)\n[[0, 1, 2],\n [3, 4, 5]]");
  std::string big = arange(100).str();
  EXPECT_NE(big.find("[0, 1, 2, ..., 97, 98, 99]"), std::string::npos) << big;
  Tensor g = ones({2});
  g.requires_grad_();
  EXPECT_NE(mul(g, g).str().find("requires_grad, grad_fn=mul"), std::string::npos);
  EXPECT_EQ(Tensor().str(), "Tensor(undefined)");
}

TEST(Tensor, DtypeNamesAndSizes) {
  for (DType t :
       {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8}) {
    EXPECT_EQ(parse_dtype(dtype_name(t)), t);
  }
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_EQ(parse_dtype("float32"), DType::f32);
  EXPECT_MEL_ERROR(parse_dtype("f8"), "unknown dtype 'f8'");
}

TEST(Device, ParseAndAvailability) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:3"), Device::cuda(3));
  EXPECT_EQ(Device::cuda(2).str(), "cuda:2");
  EXPECT_MEL_ERROR(Device::parse("gpu"), "'gpu'", "cuda:N");
  EXPECT_MEL_ERROR(Device::parse("cuda:-1"), "'cuda:-1'");
  EXPECT_MEL_ERROR(Device::parse("cuda:1x"), "'cuda:1x'");
  EXPECT_NO_THROW(check_device_available(Device::cpu()));
  if (!cuda_built()) {
    EXPECT_MEL_ERROR(check_device_available(Device::cuda(0)), "no CUDA backend");
    EXPECT_MEL_ERROR(zeros({2}, DType::f32, Device::cuda(0)), "cuda:0", "CUDA");
  } else if (cuda_device_count() == 0) {
    EXPECT_MEL_ERROR(check_device_available(Device::cuda(0)), "no CUDA GPU");
  } else {
    EXPECT_MEL_ERROR(check_device_available(Device::cuda(cuda_device_count())), "does not exist");
  }
}

TEST(Tensor, MixedDtypesAndUndefinedInputsAreRejected) {
  EXPECT_MEL_ERROR(add(zeros({2}), zeros({2}, DType::f64)), "add", "f32", "f64", ".to(dtype)");
  EXPECT_MEL_ERROR(exp(zeros({2}, DType::i64)), "exp", "i64", "f32 or f64");
  EXPECT_MEL_ERROR(add(Tensor(), zeros({2})), "add", "undefined");
  EXPECT_MEL_ERROR(Tensor().shape(), "undefined");
  EXPECT_MEL_ERROR(where(zeros({2}), zeros({2}), zeros({2})), "where", "u8");
  EXPECT_MEL_ERROR(clamp(zeros({2}), 1.0, 0.0), "clamp", "min 1", "max 0");
}

TEST(Reduce, SumMeanMaxVarValues) {
  Tensor x = arange(0.0, 24.0, 1.0, DType::f64).view({2, 3, 4});
  EXPECT_EQ(sum(x).item(), 276.0);
  EXPECT_EQ(sum(x, {1}).shape(), (Shape{2, 4}));
  EXPECT_EQ(sum(x, {1}).at({1, 2}), 14.0 + 18.0 + 22.0);
  EXPECT_EQ(sum(x, {0, 2}, true).shape(), (Shape{1, 3, 1}));
  EXPECT_EQ(sum(x, {0, 2}, true).at({0, 1, 0}), 4 + 5 + 6 + 7 + 16 + 17 + 18 + 19.0);
  EXPECT_EQ(sum(x, {-1}).at({0, 0}), 6.0);
  EXPECT_EQ(mean(x, {0}).at({0, 0}), 6.0);
  auto [v, i] = max(x, 1);
  EXPECT_EQ(v.at({0, 3}), 11.0);
  EXPECT_EQ(i.at({0, 3}), 2.0);
  EXPECT_EQ(i.dtype(), DType::i64);
  EXPECT_EQ(argmax(tensor({1, 5, 5, 2}, {4}), 0).item(), 1.0);  // first occurrence
  EXPECT_EQ(max(x).item(), 23.0);
  EXPECT_NEAR(var(tensor({1, 2, 3, 4}, {4}, DType::f64)).item(), 5.0 / 3.0, 1e-12);
  EXPECT_NEAR(var(tensor({1, 2, 3, 4}, {4}, DType::f64), {}, 0).item(), 1.25, 1e-12);
  EXPECT_EQ(var(x, {2}).shape(), (Shape{2, 3}));
  Tensor big = ones({1000, 1000});
  EXPECT_EQ(sum(big).item(), 1e6);  // accumulated in double
  EXPECT_MEL_ERROR(sum(x, {1, 1}), "sum", "twice");
  EXPECT_MEL_ERROR(sum(x, {3}), "sum", "out of range");
  EXPECT_MEL_ERROR(max(zeros({2, 0}), 1), "max", "empty");
  EXPECT_MEL_ERROR(mean(zeros({2}, DType::i64)), "mean", "floating");
}

TEST(ReduceGrad, AllReductions) {
  using testing::gradcheck;
  using V = std::vector<Tensor>;
  Tensor x = testing::leaf({3, 4, 5}, 31);
  Tensor xs = testing::strided_leaf({3, 4, 5}, 32);
  for (const Tensor& in : {x, xs}) {
    EXPECT_TRUE(gradcheck([](const V& v) { return sum(v[0]); }, {in}));
    EXPECT_TRUE(gradcheck([](const V& v) { return sum(v[0], {0, 2}); }, {in}));
    EXPECT_TRUE(gradcheck([](const V& v) { return sum(v[0], {1}, true); }, {in}));
    EXPECT_TRUE(gradcheck([](const V& v) { return mean(v[0], {2}); }, {in}));
    EXPECT_TRUE(gradcheck([](const V& v) { return max(v[0], 1).first; }, {in}));
    EXPECT_TRUE(gradcheck([](const V& v) { return max(v[0], -1, true).first; }, {in}));
    EXPECT_TRUE(gradcheck([](const V& v) { return max(v[0]); }, {in}));
    EXPECT_TRUE(gradcheck([](const V& v) { return var(v[0], {0, 1}); }, {in}));
    EXPECT_TRUE(gradcheck([](const V& v) { return var(v[0], {2}, 0, true); }, {in}));
  }
}

}  // namespace
}  // namespace mel

namespace mel {
namespace {

TEST(Allocator, LargeBlocksAreReusedAndCacheCanBeEmptied) {
  CpuAllocator& a = cpu_allocator();
  EXPECT_EQ(CpuAllocator::block_size(100), 128u);
  EXPECT_GE(CpuAllocator::block_size(1000000), 1000000u);
  EXPECT_LT(CpuAllocator::block_size(1000000), 1250000u);
  { Tensor t = empty({250000}); }  // 1 MB: freed into the cache (unless sanitizers are on)
  AllocatorStats before = a.stats();
  { Tensor t = empty({250000}); }
  AllocatorStats after = a.stats();
  EXPECT_EQ(after.allocations, before.allocations + 1);
#if !defined(__SANITIZE_ADDRESS__)
  EXPECT_EQ(after.cache_hits, before.cache_hits + 1);
  EXPECT_GT(after.cached_bytes, 0u);
#endif
  a.empty_cache();
  EXPECT_EQ(a.stats().cached_bytes, 0u);
  EXPECT_GE(a.stats().reserved_bytes, a.stats().live_bytes);
}

TEST(Reduce, LongRowSumIsExactAndIndependentOfSplit) {
  Tensor x = ones({3, 300001}, DType::f32);
  Tensor s = sum(x, {1});
  EXPECT_EQ(s.to_vector(), (std::vector<double>{300001, 300001, 300001}));
  Generator g(5);
  Tensor r = rand({1 << 20}, g, DType::f64);
  double ref = 0;
  for (double v : r.to_vector()) ref += v;
  EXPECT_NEAR(sum(r).item(), ref, 1e-7);
}

}  // namespace
}  // namespace mel

namespace mel {
namespace {

TEST(TensorSizes, CountsThatOverflowAreErrorsNotSmallAllocations) {
  EXPECT_MEL_ERROR(empty({int64_t{1} << 62, 4}), "more elements than a 64-bit count holds");
  EXPECT_MEL_ERROR(empty({int64_t{1} << 61}, DType::f64), "needs more than 2^62 bytes");
  EXPECT_MEL_ERROR(empty({0, int64_t{1} << 40, int64_t{1} << 40}), "strides beyond a 64-bit count");
  EXPECT_EQ(empty({0, 3}).numel(), 0);
}

}  // namespace
}  // namespace mel
