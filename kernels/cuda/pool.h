// CUDA 2-D pooling over contiguous [planes, H, W] blocks, the twins of kernels/cpu/pool.h: max
// pooling with saved argmax, average pooling (PyTorch's divisor rules), adaptive average pooling.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cpu/pool.h"

namespace mel::kernels::cuda {

using cpu::Pool2dGeom;

// One thread per output element, visiting the window in the CPU's order: the outputs, the argmax
// (first maximum; NaN wins) and the window sums match the CPU bit for bit. T: float or double.
template <class T>
void max_pool2d(const Pool2dGeom& g, const T* x, T* y, int32_t* idx, cudaStream_t stream);
template <class T>
void avg_pool2d(const Pool2dGeom& g, bool count_include_pad, const T* x, T* y, cudaStream_t stream);
template <class T>
void adaptive_avg_pool2d(const Pool2dGeom& g, const T* x, T* y, cudaStream_t stream);

// Backward passes gather: one thread per input element adds the gradients of the windows that
// cover it, in the order the CPU's scatter adds them, so the result is deterministic and equal to
// the CPU's (no atomics).
template <class T>
void max_pool2d_backward(const Pool2dGeom& g, const T* gy, const int32_t* idx, T* gx,
                         cudaStream_t stream);
template <class T>
void avg_pool2d_backward(const Pool2dGeom& g, bool count_include_pad, const T* gy, T* gx,
                         cudaStream_t stream);
template <class T>
void adaptive_avg_pool2d_backward(const Pool2dGeom& g, const T* gy, T* gx, cudaStream_t stream);

}  // namespace mel::kernels::cuda
