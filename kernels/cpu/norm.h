// CPU normalisation kernels: batch norm over contiguous [N, C, S] (optionally fused with a ReLU),
// layer norm over the rows of [M, K], and dropout with a Philox mask; forward and backward.
#pragma once
#include <cstdint>

namespace mel::kernels::cpu {

// x viewed as contiguous [n, c, s] (s = product of the spatial dims, 1 for [N, C] input).
struct BatchNormDims {
  int64_t n = 0, c = 0, s = 1;
};

// Training forward. Per channel: mean and biased variance of x (written to mean, var), rstd =
// 1 / sqrt(var + eps), then y = (x - mean) * rstd * w + b (relu: max(., 0)). weight and bias
// may be null (1 and 0). Each channel is finished before the next, so the second read of x hits
// cache. T: float or double; y may not alias x.
template <class T>
void batch_norm_forward_train(const BatchNormDims& d, const T* x, const T* weight, const T* bias,
                              double eps, bool relu, T* y, T* mean, T* var, T* rstd);

// y = (x - mean) * rstd * w + b (relu: max(., 0)) with given per-channel statistics.
template <class T>
void batch_norm_forward_apply(const BatchNormDims& d, const T* x, const T* mean, const T* rstd,
                              const T* weight, const T* bias, bool relu, T* y);

// Backward from gy. With relu, gy is first masked by (x - mean) * rstd * w + b > 0 (recomputed,
// so y need not be saved). training: dx goes through the batch statistics,
// dx = (w rstd / n) (n g - sum(g) - xhat sum(g xhat)); otherwise dx = w rstd g.
// gweight = sum(g xhat), gbias = sum(g). Any of gx, gweight, gbias may be null (not wanted).
template <class T>
void batch_norm_backward(const BatchNormDims& d, const T* x, const T* gy, const T* mean,
                         const T* rstd, const T* weight, const T* bias, bool training, bool relu,
                         T* gx, T* gweight, T* gbias);

// Layer norm over rows of contiguous [m, k]: mean, rstd per row (saved), y = xhat * w + b with
// w, b of length k or null.
template <class T>
void layer_norm_forward(const T* x, int64_t m, int64_t k, const T* weight, const T* bias,
                        double eps, T* y, T* mean, T* rstd);

// gx = rstd (gxhat - mean(gxhat) - xhat mean(gxhat xhat)) with gxhat = gy w; gweight =
// sum over rows of gy xhat, gbias = sum of gy, summed in a fixed order (no dependence on the
// thread count). Any output may be null.
template <class T>
void layer_norm_backward(const T* x, const T* gy, const T* mean, const T* rstd, const T* weight,
                         int64_t m, int64_t k, T* gx, T* gweight, T* gbias);

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
