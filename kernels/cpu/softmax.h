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

// dlogits[n, c] = (softmax[n, c] - ((1 - eps) * [c == y_n] + eps / C)) * gy[n * gy_stride] * a
// and 0 on ignored rows, with a = alpha, times *alpha_dev when alpha_dev is not null (the mean's
// 1 / count as cross_entropy_reduce left it). gy_stride = 1 for a per-row upstream gradient, 0 for
// a reduced loss.
template <class T>
void cross_entropy_backward(const T* logits, const int64_t* labels, const T* lse, const T* gy,
                            int64_t gy_stride, double alpha, int64_t N, int64_t C, double eps,
                            int64_t ignore_index, T* dlogits, const double* alpha_dev);

// out[0] = the sum of loss[0..N) (as the sum op adds it); with mean, divided by the number of rows
// whose label is not ignore_index (0 / 0 = NaN when every row is ignored, as in PyTorch). When
// scale is not null it receives the backward's factor: 1 / count for the mean with count > 0,
// else 1.
template <class T>
void cross_entropy_reduce(const T* loss, const int64_t* labels, int64_t N, int64_t ignore_index,
                          bool mean, T* out, double* scale);

}  // namespace mel::kernels::cpu
