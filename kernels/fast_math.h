// Host float math that GCC vectorises (no float comparisons, no calls): Cephes' expf and an erf
// built on it, for the CPU kernels whose loops would otherwise call libm once per element. f64 is
// the precision reference (gradient checks), so its overloads keep the library functions.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

namespace mel::kernels {

// Cephes' expf: exp(x) = 2^n exp(r), r = x - n ln2 in [-ln2/2, ln2/2], with a degree-6
// polynomial (about 1 ulp). x is first clamped to [-87, 88] (exp(-87) stands in for 0). Written
// without float comparisons, which GCC treats as possibly trapping and so will not turn into
// vector selects: the clamp works on the bits, and rounding by adding 1.5 * 2^23 leaves n in the
// low mantissa bits. A NaN x passes the clamp and comes out NaN.
inline float exp_fast(float x) {
  constexpr uint32_t kInfBits = 0x7f800000u, kSign = 0x80000000u;
  constexpr uint32_t kLo = std::bit_cast<uint32_t>(87.0f), kHi = std::bit_cast<uint32_t>(88.0f);
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t mag = u & ~kSign;
  // all ones where x < -87 (including -inf) or x > 88 (including +inf)
  const uint32_t neg = 0u - (u >> 31);
  const uint32_t low = neg & (0u - static_cast<uint32_t>((mag > kLo) & (mag <= kInfBits)));
  const uint32_t high = ~neg & (0u - static_cast<uint32_t>((mag > kHi) & (mag <= kInfBits)));
  const float xs = std::bit_cast<float>((u & ~(low | high)) | (low & (kLo | kSign)) | (high & kHi));
  constexpr float kShifter = 12582912.0f;
  const float t = xs * 1.44269504088896341f + kShifter;
  const float n = t - kShifter;
  float r = xs - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t e = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kShifter);
  return p * std::bit_cast<float>((e + 127) << 23);
}

inline double exp_fast(double x) {
  return std::exp(x);
}

// erf(x) = sign(x) (1 - (a1 t + ... + a5 t^5) exp(-x^2)), t = 1 / (1 + p |x|): Abramowitz and
// Stegun 7.1.26, absolute error at most 1.5e-7 (a few f32 ulps of 1 + erf, which is what GELU
// uses; not meant for the relative accuracy of erf near 0). |x| >= 10 is clamped (erf is then 1 in f32).
inline float erf_fast(float x) {
  constexpr uint32_t kSign = 0x80000000u;
  constexpr uint32_t kTen = std::bit_cast<uint32_t>(10.0f);
  const uint32_t u = std::bit_cast<uint32_t>(x);
  // |x| clamped on the bits (ordered like the values for positive floats; a NaN becomes 10, and
  // GELU, which multiplies by x, still returns NaN).
  const uint32_t mag = u & ~kSign;
  const float a = std::bit_cast<float>(mag < kTen ? mag : kTen);
  const float t = 1.0f / (1.0f + 0.3275911f * a);
  float poly = 1.061405429f;
  poly = poly * t - 1.453152027f;
  poly = poly * t + 1.421413741f;
  poly = poly * t - 0.284496736f;
  poly = poly * t + 0.254829592f;
  poly = poly * t;
  const float y = 1.0f - poly * exp_fast(-a * a);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(y) | (u & kSign));
}

inline double erf_fast(double x) {
  return std::erf(x);
}

}  // namespace mel::kernels
