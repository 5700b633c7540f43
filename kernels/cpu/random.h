// CPU random fills from the Philox stream (seed, offset). Element i of each fill draws from
// block i/4 (lane i%4) except f64 uniforms (block i/2, two lanes each); normals use Box-Muller on
// lane pairs. The CUDA kernels follow the same mapping, so both devices give the same values.
#pragma once
#include <cstdint>

namespace mel::kernels::cpu {

// Blocks (counter increments) a fill of n elements consumes.
inline uint64_t philox_blocks_uniform(int64_t n, bool f64) {
  return f64 ? static_cast<uint64_t>((n + 1) / 2) : static_cast<uint64_t>((n + 3) / 4);
}
inline uint64_t philox_blocks(int64_t n) {
  return static_cast<uint64_t>((n + 3) / 4);
}

// T: float (24-bit uniform) or double (53-bit uniform); low + (high - low) * u.
template <class T>
void uniform(uint64_t seed, uint64_t offset, int64_t n, T* out, double low, double high);
// Standard normals scaled: mean + std * z, computed in double.
void normal_f64(uint64_t seed, uint64_t offset, int64_t n, double* out, double mean, double std);
// low + floor(u32 * range / 2^32); range in [1, 2^32].
void randint_i64(uint64_t seed, uint64_t offset, int64_t n, int64_t* out, int64_t low,
                 uint64_t range);

}  // namespace mel::kernels::cpu
