// CUDA softmax and log_softmax over the middle axis of a contiguous [A, C, B] block (and their
// backward passes), and fused cross-entropy from logits: the twins of kernels/cpu/softmax.h.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/half.h"

namespace mel::kernels::cuda {

// As the CPU kernels (max subtracted first; y may alias x, gx may alias gy), one group of threads
// per row. T: float, double, bfloat16 or half; the 16-bit types compute in f32 and round the
// output once, as the CPU op's f32 round trip does.
template <class T>
void softmax(const T* x, int64_t A, int64_t C, int64_t B, T* y, cudaStream_t stream);
template <class T>
void log_softmax(const T* x, int64_t A, int64_t C, int64_t B, T* y, cudaStream_t stream);
template <class T>
void softmax_backward(const T* y, const T* gy, int64_t A, int64_t C, int64_t B, T* gx,
                      cudaStream_t stream);
template <class T>
void log_softmax_backward(const T* y, const T* gy, int64_t A, int64_t C, int64_t B, T* gx,
                          cudaStream_t stream);

// As the CPU kernel, except that the labels are not checked beforehand (that would need the host):
// a label outside [0, C) that is not ignore_index gives NaN loss and lse. T: float or double.
template <class T>
void cross_entropy_forward(const T* logits, const int64_t* labels, int64_t N, int64_t C, double eps,
                           int64_t ignore_index, T* loss, T* lse, cudaStream_t stream);

// As the CPU kernel; the scale is gy[n * gy_stride] * alpha, further multiplied by *alpha_dev
// when alpha_dev is not null (the mean reduction's 1 / count, computed on the device by
// cross_entropy_reduce). Rows with a bad label get NaN.
template <class T>
void cross_entropy_backward(const T* logits, const int64_t* labels, const T* lse, const T* gy,
                            int64_t gy_stride, double alpha, int64_t N, int64_t C, double eps,
                            int64_t ignore_index, T* dlogits, const double* alpha_dev,
                            cudaStream_t stream);

// CUDA only (the CPU op reduces with sum and the host-side label count): out[0] = sum of loss
// (mean: divided by the number of rows whose label is not ignore_index, NaN when there is none),
// in a fixed order. When scale is not null it receives the backward's alpha: 1 / count for the
// mean with count > 0, else 1.
template <class T>
void cross_entropy_reduce(const T* loss, const int64_t* labels, int64_t N, int64_t ignore_index,
                          bool mean, T* out, double* scale, cudaStream_t stream);

}  // namespace mel::kernels::cuda
