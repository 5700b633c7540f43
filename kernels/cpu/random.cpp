#include "kernels/cpu/random.h"

#include <cmath>

#include "kernels/philox.h"
#include "kernels/strided.h"

namespace mel::kernels::cpu {

template <class T>
void uniform(uint64_t seed, uint64_t offset, int64_t n, T* out, double low, double high) {
  const double scale = high - low;
  parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if constexpr (sizeof(T) == 8) {
        Philox4 r = philox_block(seed, offset, static_cast<uint64_t>(i / 2));
        int lane = static_cast<int>(i % 2) * 2;
        out[i] = static_cast<T>(low + scale * philox_unit_f64(r.v[lane], r.v[lane + 1]));
      } else {
        Philox4 r = philox_block(seed, offset, static_cast<uint64_t>(i / 4));
        out[i] = static_cast<T>(static_cast<float>(low) +
                                static_cast<float>(scale) * philox_unit_f32(r.v[i % 4]));
      }
    }
  });
}

void normal_f64(uint64_t seed, uint64_t offset, int64_t n, double* out, double mean, double std) {
  constexpr double kTwoPi = 6.283185307179586476925;
  parallel_for(n, 1 << 13, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      Philox4 r = philox_block(seed, offset, static_cast<uint64_t>(i / 4));
      int pair = static_cast<int>((i % 4) / 2) * 2;
      double u1 = (static_cast<double>(r.v[pair]) + 1.0) * (1.0 / 4294967296.0);  // (0, 1]
      double u2 = static_cast<double>(r.v[pair + 1]) * (1.0 / 4294967296.0);
      double rad = std::sqrt(-2.0 * std::log(u1));
      double z = (i % 2 == 0) ? rad * std::cos(kTwoPi * u2) : rad * std::sin(kTwoPi * u2);
      out[i] = mean + std * z;
    }
  });
}

void randint_i64(uint64_t seed, uint64_t offset, int64_t n, int64_t* out, int64_t low,
                 uint64_t range) {
  parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      Philox4 r = philox_block(seed, offset, static_cast<uint64_t>(i / 4));
      uint64_t x = r.v[i % 4];
      out[i] = low + static_cast<int64_t>((x * range) >> 32);
    }
  });
}

template void uniform<float>(uint64_t, uint64_t, int64_t, float*, double, double);
template void uniform<double>(uint64_t, uint64_t, int64_t, double*, double, double);

}  // namespace mel::kernels::cpu
