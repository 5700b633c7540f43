// CPU normalisation kernels: batch norm over contiguous [N, C, S] (optionally fused with a ReLU)
// and layer norm over the rows of [M, K]; forward and backward, and batch norm's running
// statistics.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mel::kernels::cpu {

// x viewed as contiguous [n, c, s] (s = product of the spatial dims, 1 for [N, C] input).
struct BatchNormDims {
  int64_t n = 0, c = 0, s = 1;
};

// Scratch the kernels need (none on the CPU; the CUDA twins need some): the `workspace`
// arguments below take that many bytes and are unused here.
inline size_t batch_norm_workspace_bytes(const BatchNormDims&, size_t) {
  return 0;
}
inline size_t layer_norm_workspace_bytes(int64_t, int64_t) {
  return 0;
}

// Training forward. Per channel: mean and biased variance of x (written to mean, var), rstd =
// 1 / sqrt(var + eps), then y = (x - mean) * rstd * w + b (relu: max(., 0)). weight and bias
// may be null (1 and 0). Each channel is finished before the next, so the second read of x hits
// cache. T: float or double; y may not alias x.
template <class T>
void batch_norm_forward_train(const BatchNormDims& d, const T* x, const T* weight, const T* bias,
                              double eps, bool relu, T* y, T* mean, T* var, T* rstd,
                              void* workspace);

// y = (x - mean) * rstd * w + b (relu: max(., 0)) with given per-channel statistics.
template <class T>
void batch_norm_forward_apply(const BatchNormDims& d, const T* x, const T* mean, const T* rstd,
                              const T* weight, const T* bias, bool relu, T* y, void* workspace);

// Backward from gy. With relu, gy is first masked by (x - mean) * rstd * w + b > 0 (recomputed,
// so y need not be saved). training: dx goes through the batch statistics,
// dx = (w rstd / n) (n g - sum(g) - xhat sum(g xhat)); otherwise dx = w rstd g.
// gweight = sum(g xhat), gbias = sum(g). Any of gx, gweight, gbias may be null (not wanted).
template <class T>
void batch_norm_backward(const BatchNormDims& d, const T* x, const T* gy, const T* mean,
                         const T* rstd, const T* weight, const T* bias, bool training, bool relu,
                         T* gx, T* gweight, T* gbias, void* workspace);

// running[i * stride] = (1 - momentum) * running + momentum * factor * stat[i] for i < c,
// computed in double. R: any floating type (bf16 and f16 included).
template <class R, class T>
void batch_norm_update_running(int64_t c, R* running, int64_t stride, const T* stat,
                               double momentum, double factor);
// mean[i] = running_mean[i * mean_stride], rstd[i] = 1 / sqrt(running_var[i * var_stride] + eps),
// computed in double.
template <class R, class T>
void batch_norm_eval_stats(int64_t c, const R* running_mean, int64_t mean_stride,
                           const R* running_var, int64_t var_stride, double eps, T* mean, T* rstd);

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
                         int64_t m, int64_t k, T* gx, T* gweight, T* gbias, void* workspace);

}  // namespace mel::kernels::cpu
