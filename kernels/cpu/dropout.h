// CPU dropout with a Philox mask: the mask of element i comes from the counter-based stream
// (seed, offset), so the CUDA twin (kernels/cuda/dropout.h) draws the same mask.
#pragma once
#include <cstdint>

namespace mel::kernels::cpu {

// Philox blocks a dropout mask of n elements consumes (the same as an f32 uniform fill).
inline uint64_t dropout_blocks(int64_t n) {
  return static_cast<uint64_t>((n + 3) / 4);
}

// mask[i] = (u_i < keep) with u_i the f32 uniform that rand() draws for element i of the stream
// (seed, offset): block i / 4, lane i % 4, 24 bits. y = x * mask * scale. All contiguous.
template <class T>
void dropout_forward(uint64_t seed, uint64_t offset, int64_t n, float keep, T scale, const T* x,
                     T* y, uint8_t* mask);

// gx = gy * mask * scale.
template <class T>
void dropout_backward(int64_t n, T scale, const T* gy, const uint8_t* mask, T* gx);

}  // namespace mel::kernels::cpu
