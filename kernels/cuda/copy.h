// CUDA dtype-converting strided copy and fill: the twins of kernels/cpu/copy.h's copy and
// fill, on a stream. Every operand pointer is device memory.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/half.h"
#include "kernels/strided.h"

namespace mel::kernels::cuda {

// dst = convert(src); operands of `it`: 0 dst, 1 src. D and S: any of the seven element types.
template <class D, class S>
void copy(const Iter<2>& it, D* dst, const S* src, cudaStream_t stream);

// dst[i] = value over a strided destination.
template <class T>
void fill(const Iter<1>& it, T* dst, T value, cudaStream_t stream);

}  // namespace mel::kernels::cuda
