// CUDA normalisation kernels, the twins of kernels/cpu/norm.h: batch norm over contiguous
// [N, C, S] (optionally fused with a ReLU) and layer norm over rows of [M, K].
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/norm.h"

namespace mel::kernels::cuda {

using cpu::BatchNormDims;

// Device scratch the batch-norm kernels below need for d and an element size of elem_size bytes
// (per-block partial sums and per-channel coefficients); at least 256 bytes.
size_t batch_norm_workspace_bytes(const BatchNormDims& d, size_t elem_size);

// As the CPU kernels: statistics from shifted sums (shift = the channel's first element) added
// in double in a fixed order (deterministic), variance biased, the affine form computed from the
// rounded mean and rstd so that backward recomputes exactly the forward's ReLU mask. T: float or
// double. `workspace`: batch_norm_workspace_bytes(d, sizeof(T)) bytes of device memory.
template <class T>
void batch_norm_forward_train(const BatchNormDims& d, const T* x, const T* weight, const T* bias,
                              double eps, bool relu, T* y, T* mean, T* var, T* rstd,
                              void* workspace, cudaStream_t stream);
template <class T>
void batch_norm_forward_apply(const BatchNormDims& d, const T* x, const T* mean, const T* rstd,
                              const T* weight, const T* bias, bool relu, T* y, void* workspace,
                              cudaStream_t stream);
template <class T>
void batch_norm_backward(const BatchNormDims& d, const T* x, const T* gy, const T* mean,
                         const T* rstd, const T* weight, const T* bias, bool training, bool relu,
                         T* gx, T* gweight, T* gbias, void* workspace, cudaStream_t stream);

// CUDA only (the CPU op does these on the host). running[i * stride] = (1 - momentum) *
// running + momentum * factor * stat[i] for i < c, computed in double. R: any floating type.
template <class R, class T>
void batch_norm_update_running(int64_t c, R* running, int64_t stride, const T* stat,
                               double momentum, double factor, cudaStream_t stream);
// mean[i] = running_mean[i * mean_stride], rstd[i] = 1 / sqrt(running_var[i * var_stride] + eps).
template <class R, class T>
void batch_norm_eval_stats(int64_t c, const R* running_mean, int64_t mean_stride,
                           const R* running_var, int64_t var_stride, double eps, T* mean, T* rstd,
                           cudaStream_t stream);

// Device scratch layer_norm_backward needs (the parameter-gradient partial sums); >= 256 bytes.
size_t layer_norm_workspace_bytes(int64_t m, int64_t k);

template <class T>
void layer_norm_forward(const T* x, int64_t m, int64_t k, const T* weight, const T* bias,
                        double eps, T* y, T* mean, T* rstd, cudaStream_t stream);
// Parameter gradients summed in a fixed order (deterministic). `workspace`:
// layer_norm_workspace_bytes(m, k) bytes, used only when gweight or gbias is wanted.
template <class T>
void layer_norm_backward(const T* x, const T* gy, const T* mean, const T* rstd, const T* weight,
                         int64_t m, int64_t k, T* gx, T* gweight, T* gbias, void* workspace,
                         cudaStream_t stream);

}  // namespace mel::kernels::cuda
