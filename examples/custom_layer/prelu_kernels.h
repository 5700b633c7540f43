// The PReLU kernels: y = x for x > 0, a[c] * x otherwise, with one learnable slope per channel.
// CPU functions and their CUDA twins with the same arguments (then a stream), as mel's own
// kernel families: pointers and sizes in, no tensor types.
#pragma once
#include <cstdint>
#ifdef MEL_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace custom::kernels {

// x, y, gy, gx: contiguous [outer, C, inner]; a, ga: [C].
namespace cpu {
template <class T>
void prelu_forward(const T* x, const T* a, int64_t outer, int64_t C, int64_t inner, T* y);
// gx (may be null) = gy * (x > 0 ? 1 : a[c]); ga (may be null) = sum over outer and inner of
// gy * (x > 0 ? 0 : x), summed in a fixed order.
template <class T>
void prelu_backward(const T* x, const T* a, const T* gy, int64_t outer, int64_t C, int64_t inner,
                    T* gx, T* ga);
}  // namespace cpu

#ifdef MEL_HAVE_CUDA
namespace cuda {
// Throws mel::Error naming the failed launch (defined in prelu.cpp: nvcc need not see fmt).
[[noreturn]] void launch_failed(const char* what, const char* message);
template <class T>
void prelu_forward(const T* x, const T* a, int64_t outer, int64_t C, int64_t inner, T* y,
                   cudaStream_t stream);
template <class T>
void prelu_backward(const T* x, const T* a, const T* gy, int64_t outer, int64_t C, int64_t inner,
                    T* gx, T* ga, cudaStream_t stream);
}  // namespace cuda
#endif

}  // namespace custom::kernels
