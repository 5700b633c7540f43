// CUDA dropout, the twin of kernels/cpu/dropout.h: the same Philox mask, on a stream.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cpu/dropout.h"

namespace mel::kernels::cuda {

using cpu::dropout_blocks;

// The CPU's mask bit for bit: element i keeps when the f32 uniform of block i / 4, lane i % 4 of
// the Philox stream (seed, offset) is below keep.
template <class T>
void dropout_forward(uint64_t seed, uint64_t offset, int64_t n, float keep, T scale, const T* x,
                     T* y, uint8_t* mask, cudaStream_t stream);
template <class T>
void dropout_backward(int64_t n, T scale, const T* gy, const uint8_t* mask, T* gx,
                      cudaStream_t stream);

}  // namespace mel::kernels::cuda
