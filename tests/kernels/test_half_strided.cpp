#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernels/half.h"
#include "kernels/strided.h"

namespace mel {
namespace {

TEST(Half, RoundTripsAndRounding) {
  for (float f : {0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.9604644775390625e-08f}) {
    EXPECT_EQ(static_cast<float>(half(f)), f) << f;
  }
  EXPECT_EQ(half(1.0f).bits, 0x3c00);
  EXPECT_EQ(half(-2.0f).bits, 0xc000);
  EXPECT_EQ(half(65520.0f).bits, 0x7c00);            // rounds up to infinity
  EXPECT_EQ(half(1.0f + 1.0f / 2048).bits, 0x3c00);  // tie rounds to even
  EXPECT_EQ(half(1.0f + 3.0f / 2048).bits, 0x3c02);  // tie rounds to even (up)
  EXPECT_EQ(half(2.98e-08f).bits, 0x0000);           // below half the smallest subnormal
  EXPECT_EQ(half(4.5e-08f).bits, 0x0001);
  EXPECT_TRUE(std::isnan(static_cast<float>(half(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(static_cast<float>(half(1e6f))));
}

TEST(BFloat16, RoundTripsAndRounding) {
  EXPECT_EQ(bfloat16(1.0f).bits, 0x3f80);
  EXPECT_EQ(static_cast<float>(bfloat16(3.0f)), 3.0f);
  EXPECT_EQ(bfloat16(1.0f + 1.0f / 256).bits, 0x3f80);  // tie to even
  EXPECT_EQ(bfloat16(1.0f + 3.0f / 256).bits, 0x3f82);
  EXPECT_TRUE(std::isnan(static_cast<float>(bfloat16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(static_cast<float>(bfloat16(std::numeric_limits<float>::infinity()))));
}

TEST(Strided, CoalesceMergesContiguousDims) {
  kernels::Iter<2> it;
  it.ndim = 3;
  int64_t shape[3] = {2, 3, 4};
  for (int d = 0; d < 3; ++d) it.shape[d] = shape[d];
  int64_t c[3] = {12, 4, 1}, b[3] = {0, 4, 1};  // operand 1 broadcast over dim 0
  for (int d = 0; d < 3; ++d) {
    it.stride[0][d] = c[d];
    it.stride[1][d] = b[d];
  }
  it.coalesce();
  EXPECT_EQ(it.ndim, 2);
  EXPECT_EQ(it.shape[0], 2);
  EXPECT_EQ(it.shape[1], 12);
}

TEST(Strided, RunsVisitEveryElementOnceInAnySplit) {
  kernels::Iter<1> it;
  it.ndim = 3;
  it.shape[0] = 3;
  it.shape[1] = 5;
  it.shape[2] = 7;
  it.stride[0][0] = 100;
  it.stride[0][1] = 10;
  it.stride[0][2] = 1;
  for (int64_t split : {1, 4, 7, 50, 104}) {
    std::vector<int> hits(300, 0);
    auto visit = [&](const int64_t* off, int64_t n, const int64_t* st) {
      for (int64_t i = 0; i < n; ++i) ++hits[off[0] + i * st[0]];
    };
    kernels::for_runs(it, 0, split, visit);
    kernels::for_runs(it, split, it.numel(), visit);
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 5; ++b)
        for (int c = 0; c < 7; ++c) EXPECT_EQ(hits[a * 100 + b * 10 + c], 1);
  }
}

}  // namespace
}  // namespace mel
