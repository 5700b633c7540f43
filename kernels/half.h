// 16-bit floating-point storage types (bfloat16 and IEEE half) with round-to-nearest-even
// conversions; usable on the host and, when compiled by nvcc, on the device.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MEL_HOST_DEVICE __host__ __device__
#else
#define MEL_HOST_DEVICE
#endif

namespace mel {

MEL_HOST_DEVICE inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
MEL_HOST_DEVICE inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct bfloat16 {
  uint16_t bits = 0;
  bfloat16() = default;
  MEL_HOST_DEVICE bfloat16(float f) {  // NOLINT(google-explicit-constructor)
    uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it quiet, never round to infinity
      bits = static_cast<uint16_t>((u >> 16) | 0x0040u);
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);
      bits = static_cast<uint16_t>(u >> 16);
    }
  }
  MEL_HOST_DEVICE operator float() const { return bits_float(uint32_t(bits) << 16); }  // NOLINT
};

struct half {
  uint16_t bits = 0;
  half() = default;
  MEL_HOST_DEVICE half(float f) {  // NOLINT(google-explicit-constructor)
    uint32_t u = float_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) {
      bits = static_cast<uint16_t>(sign | 0x7e00u);
    } else if (a >= 0x47800000u) {  // >= 65536 rounds to infinity
      // values in [65520, 65536) round to inf too; handled by the normal path below when <
      // 0x47800000
      bits = static_cast<uint16_t>(sign | 0x7c00u);
    } else if (a < 0x38800000u) {  // subnormal half (or zero)
      // shift the implicit-one mantissa into place with round-to-nearest-even
      if (a < 0x33000000u) {  // below half the smallest subnormal: rounds to zero
        bits = static_cast<uint16_t>(sign);
      } else {
        uint32_t e = a >> 23;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;  // 113 - e + 13
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
        bits = static_cast<uint16_t>(sign | r);
      }
    } else {
      uint32_t r = a - 0x38000000u;  // rebias exponent 127 -> 15
      r += 0xfffu + ((r >> 13) & 1u);
      r >>= 13;
      bits = static_cast<uint16_t>(sign | (r > 0x7c00u ? 0x7c00u : r));
    }
  }
  MEL_HOST_DEVICE operator float() const {  // NOLINT
    uint32_t sign = uint32_t(bits & 0x8000u) << 16;
    uint32_t e = (bits >> 10) & 0x1fu;
    uint32_t m = bits & 0x3ffu;
    if (e == 0) {
      if (m == 0) return bits_float(sign);
      float f = static_cast<float>(m) * 5.9604644775390625e-08f;  // m * 2^-24
      return sign ? -f : f;
    }
    if (e == 31) return bits_float(sign | 0x7f800000u | (m << 13));
    return bits_float(sign | ((e + 112u) << 23) | (m << 13));
  }
};

}  // namespace mel
