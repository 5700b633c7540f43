#include <cmath>

#include "gradcheck.h"
#include "kernels/philox.h"

namespace mel {
namespace {

// Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
TEST(Philox, KnownAnswers) {
  using kernels::Philox4;
  Philox4 r = kernels::philox4x32_10(Philox4{{0, 0, 0, 0}}, 0, 0);
  EXPECT_EQ(r.v[0], 0x6627e8d5u);
  EXPECT_EQ(r.v[1], 0xe169c58du);
  EXPECT_EQ(r.v[2], 0xbc57ac4cu);
  EXPECT_EQ(r.v[3], 0x9b00dbd8u);
  r = kernels::philox4x32_10(Philox4{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
                             0xffffffffu, 0xffffffffu);
  EXPECT_EQ(r.v[0], 0x408f276du);
  EXPECT_EQ(r.v[1], 0x41c83b0eu);
  EXPECT_EQ(r.v[2], 0xa20bc7c6u);
  EXPECT_EQ(r.v[3], 0x6d5451fdu);
  r = kernels::philox4x32_10(Philox4{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
                             0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(r.v[0], 0xd16cfe09u);
  EXPECT_EQ(r.v[1], 0x94fdccebu);
  EXPECT_EQ(r.v[2], 0x5001e420u);
  EXPECT_EQ(r.v[3], 0x24126ea1u);
}

TEST(Generator, SameSeedSameStream) {
  Generator a(42), b(42), c(43);
  Tensor ra = rand({1000}, a), rb = rand({1000}, b), rc = rand({1000}, c);
  EXPECT_EQ(ra.to_vector(), rb.to_vector());
  EXPECT_NE(ra.to_vector(), rc.to_vector());
  // successive draws continue the stream instead of repeating it
  Tensor ra2 = rand({1000}, a);
  EXPECT_NE(ra.to_vector(), ra2.to_vector());
  EXPECT_EQ(a.offset(), 500u);
  // the stream is a function of (seed, offset): restoring the offset replays it
  Generator d(42);
  d.set_offset(250);
  EXPECT_EQ(rand({1000}, d).to_vector(), ra2.to_vector());
}

TEST(Generator, ElementsDependOnlyOnTheirPosition) {
  // a prefix drawn alone equals the prefix of a longer draw (what lets a GPU kernel reproduce it)
  Generator a(7), b(7);
  std::vector<double> small = randn({10}, a, DType::f64).to_vector();
  std::vector<double> large = randn({1001}, b, DType::f64).to_vector();
  for (size_t i = 0; i < small.size(); ++i) EXPECT_EQ(small[i], large[i]);
}

TEST(Generator, DistributionsLookRight) {
  Generator g(2024);
  const int64_t n = 200000;
  Tensor u = rand({n}, g, DType::f64, -2.0, 3.0);
  EXPECT_NEAR(mean(u).item(), 0.5, 0.02);
  EXPECT_NEAR(var(u).item(), 25.0 / 12.0, 0.03);
  EXPECT_GE(max(neg(u)).item(), -3.0 + 0.0);  // min >= -2 means max(-u) <= 2
  EXPECT_LE(max(neg(u)).item(), 2.0);
  EXPECT_LT(max(u).item(), 3.0);
  Tensor z = randn({n}, g, DType::f32, 1.0, 2.0);
  EXPECT_NEAR(mean(z).item(), 1.0, 0.02);
  EXPECT_NEAR(std::sqrt(var(z).item()), 2.0, 0.02);
  Tensor k = randint(-3, 4, {n}, g);
  EXPECT_EQ(k.dtype(), DType::i64);
  EXPECT_EQ(max(k).item(), 3.0);
  EXPECT_EQ(max(neg(k)).item(), 3.0);
  EXPECT_NEAR(mean(k.to(DType::f64)).item(), 0.0, 0.03);
  Tensor f32 = rand({n}, g);
  EXPECT_LT(max(f32).item(), 1.0);
  EXPECT_EQ(rand({3}, g, DType::bf16).dtype(), DType::bf16);
}

TEST(Generator, BadArguments) {
  Generator g(1);
  EXPECT_MEL_ERROR(rand({2}, g, DType::i32), "rand", "floating");
  EXPECT_MEL_ERROR(randint(5, 5, {2}, g), "randint", "low=5", "high=5");
  EXPECT_MEL_ERROR(randn({2}, g, DType::f32, 0.0, -1.0), "randn", "std");
}

}  // namespace
}  // namespace mel
