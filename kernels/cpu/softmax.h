// CPU softmax and log_softmax over the middle axis of a contiguous [A, C, B] block (and their
// backward passes), and fused cross-entropy from logits with label smoothing and ignore_index.
#pragma once
#include <cstdint>

namespace mel::kernels::cpu {

// y[a, :, b] = softmax / log_softmax of x[a, :, b] over the C axis (max subtracted first, so large
// logits stay finite). T: float or double. y may alias x.
template <class T>
void softmax(const T* x, int64_t A, int64_t C, int64_t B, T* y);
template <class T>
void log_softmax(const T* x, int64_t A, int64_t C, int64_t B, T* y);

// From the forward output y: softmax gx = y * (gy - sum_c(gy * y)); log_softmax
// gx = gy - exp(y) * sum_c(gy). gx may alias gy.
template <class T>
void softmax_backward(const T* y, const T* gy, int64_t A, int64_t C, int64_t B, T* gx);
template <class T>
void log_softmax_backward(const T* y, const T* gy, int64_t A, int64_t C, int64_t B, T* gx);

// Cross-entropy of logits [N, C] (contiguous) against labels [N], with PyTorch's label smoothing:
// loss[n] = -(1 - eps) * logp[n, y_n] - eps / C * sum_c logp[n, c]. Rows whose label equals
// ignore_index get loss 0 (and lse 0); every other label must lie in [0, C) (the caller checks).
// lse[n] = logsumexp of row n, saved for the backward pass.
template <class T>
void cross_entropy_forward(const T* logits, const int64_t* labels, int64_t N, int64_t C, double eps,
                           int64_t ignore_index, T* loss, T* lse);

// dlogits[n, c] = (softmax[n, c] - ((1 - eps) * [c == y_n] + eps / C)) * gy[n * gy_stride] * alpha
// and 0 on ignored rows. gy_stride = 1 for a per-row upstream gradient, 0 for a reduced loss
// (alpha = 1 / count for the mean, 1 for the sum).
template <class T>
void cross_entropy_backward(const T* logits, const int64_t* labels, const T* lse, const T* gy,
                            int64_t gy_stride, double alpha, int64_t N, int64_t C, double eps,
                            int64_t ignore_index, T* dlogits);

}  // namespace mel::kernels::cpu
