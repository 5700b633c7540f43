// Layer-norm kernels of kernels/cuda/norm.h. Layer norm: one group of threads per row
// (sums in double, as on the CPU); the parameter gradients are column sums over the rows
// (colsum.cuh). Dropout draws the CPU's Philox mask (kernels/philox.h), one thread per block.
#include "kernels/cuda/check.h"
#include "kernels/cuda/colsum.cuh"
#include "kernels/cuda/norm.h"

namespace mel::kernels::cuda {

namespace {

template <class T, int G>
__global__ void __launch_bounds__(kBlock)
    layer_norm_forward_kernel(const T* __restrict__ x, int64_t m, int64_t k,
                              const T* __restrict__ weight, const T* __restrict__ bias, double eps,
                              T* __restrict__ y, T* __restrict__ mean, T* __restrict__ rstd) {
  __shared__ double scratch[kWarp];
  constexpr int kRowsPerBlock = kBlock / G;
  const int lane = static_cast<int>(threadIdx.x) % G;
  const int sub = static_cast<int>(threadIdx.x) / G;
  for (int64_t r0 = int64_t(blockIdx.x) * kRowsPerBlock; r0 < m;
       r0 += int64_t(gridDim.x) * kRowsPerBlock) {
    const int64_t r = r0 + sub;
    const bool valid = r < m;  // invalid groups still join the reductions
    const T* xr = x + (valid ? r : 0) * k;
    double s = 0;
    if (valid) {
      for (int64_t j = lane; j < k; j += G) s += static_cast<double>(xr[j]);
    }
    const double mu = group_sum<G>(s, scratch) / static_cast<double>(k);
    double q = 0;
    if (valid) {
      for (int64_t j = lane; j < k; j += G) {
        const double v = static_cast<double>(xr[j]) - mu;
        q += v * v;
      }
    }
    const double rs = 1.0 / sqrt(group_sum<G>(q, scratch) / static_cast<double>(k) + eps);
    if (!valid) continue;
    if (lane == 0) {
      mean[r] = static_cast<T>(mu);
      rstd[r] = static_cast<T>(rs);
    }
    const T tm = static_cast<T>(mu), tr = static_cast<T>(rs);
    T* yr = y + r * k;
    for (int64_t j = lane; j < k; j += G) {
      const T v = (xr[j] - tm) * tr;
      yr[j] = (weight ? v * weight[j] : v) + (bias ? bias[j] : T(0));
    }
  }
}

// gx = rstd (g - mean(g) - xhat mean(g xhat)) with g = gy w.
template <class T, int G>
__global__ void __launch_bounds__(kBlock)
    layer_norm_grad_input_kernel(const T* __restrict__ x, const T* __restrict__ gy,
                                 const T* __restrict__ mean, const T* __restrict__ rstd,
                                 const T* __restrict__ weight, int64_t m, int64_t k,
                                 T* __restrict__ gx) {
  __shared__ double scratch[kWarp];
  constexpr int kRowsPerBlock = kBlock / G;
  const int lane = static_cast<int>(threadIdx.x) % G;
  const int sub = static_cast<int>(threadIdx.x) / G;
  for (int64_t r0 = int64_t(blockIdx.x) * kRowsPerBlock; r0 < m;
       r0 += int64_t(gridDim.x) * kRowsPerBlock) {
    const int64_t r = r0 + sub;
    const bool valid = r < m;
    const int64_t base = (valid ? r : 0) * k;
    const T mu = mean[valid ? r : 0], rs = rstd[valid ? r : 0];
    double s1 = 0, s2 = 0;
    if (valid) {
      for (int64_t j = lane; j < k; j += G) {
        const T g = weight ? gy[base + j] * weight[j] : gy[base + j];
        s1 += static_cast<double>(g);
        s2 += static_cast<double>(g * ((x[base + j] - mu) * rs));
      }
    }
    s1 = group_sum<G>(s1, scratch);
    s2 = group_sum<G>(s2, scratch);
    if (!valid) continue;
    const T c1 = static_cast<T>(s1 / static_cast<double>(k));
    const T c2 = static_cast<T>(s2 / static_cast<double>(k));
    for (int64_t j = lane; j < k; j += G) {
      const T g = weight ? gy[base + j] * weight[j] : gy[base + j];
      gx[base + j] = rs * (g - c1 - (x[base + j] - mu) * rs * c2);
    }
  }
}

template <class T>
struct ParamGradTerm {  // (gy xhat, gy) of row r, column j
  const T *x, *gy, *mean, *rstd;
  int64_t k;
  __device__ void operator()(int64_t r, int64_t j, int64_t, double& a1, double& a2) const {
    const T g = gy[r * k + j];
    a1 += static_cast<double>(g * ((x[r * k + j] - mean[r]) * rstd[r]));
    a2 += static_cast<double>(g);
  }
};

template <class T>
__global__ void param_grad_finalize_kernel(int64_t k, int64_t chunks, const double* p1,
                                           const double* p2, T* gweight, T* gbias) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < k;
       j += int64_t(gridDim.x) * blockDim.x) {
    double sw = 0, sb = 0;
    for (int64_t c = 0; c < chunks; ++c) sw += p1[c * k + j], sb += p2[c * k + j];
    if (gweight) gweight[j] = static_cast<T>(sw);
    if (gbias) gbias[j] = static_cast<T>(sb);
  }
}

}  // namespace

size_t layer_norm_workspace_bytes(int64_t m, int64_t k) {
  const ColSplit s = col_split(m, k);
  return std::max<size_t>(256, 2 * static_cast<size_t>(s.chunks * k) * sizeof(double));
}

template <class T>
void layer_norm_forward(const T* x, int64_t m, int64_t k, const T* weight, const T* bias,
                        double eps, T* y, T* mean, T* rstd, cudaStream_t stream) {
  if (m == 0 || k == 0) return;
  with_group(group_for(k), [&](auto G) {
    constexpr int kG = decltype(G)::value;
    layer_norm_forward_kernel<T, kG><<<blocks_for(m, kBlock / kG), kBlock, 0, stream>>>(
        x, m, k, weight, bias, eps, y, mean, rstd);
  });
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void layer_norm_backward(const T* x, const T* gy, const T* mean, const T* rstd, const T* weight,
                         int64_t m, int64_t k, T* gx, T* gweight, T* gbias, void* workspace,
                         cudaStream_t stream) {
  if (k == 0) return;
  if (gweight || gbias) {
    if (m == 0) {
      if (gweight) MEL_CUDA_CHECK(cudaMemsetAsync(gweight, 0, sizeof(T) * k, stream));
      if (gbias) MEL_CUDA_CHECK(cudaMemsetAsync(gbias, 0, sizeof(T) * k, stream));
    } else {
      const ColSplit s = col_split(m, k);
      double* p1 = static_cast<double*>(workspace);
      double* p2 = p1 + s.chunks * k;
      launch_col_partials(s, m, k, 1, ParamGradTerm<T>{x, gy, mean, rstd, k}, p1, p2, stream);
      MEL_CUDA_CHECK_LAUNCH();
      param_grad_finalize_kernel<T>
          <<<grid_for(k), kBlock, 0, stream>>>(k, s.chunks, p1, p2, gweight, gbias);
      MEL_CUDA_CHECK_LAUNCH();
    }
  }
  if (!gx || m == 0) return;
  with_group(group_for(k), [&](auto G) {
    constexpr int kG = decltype(G)::value;
    layer_norm_grad_input_kernel<T, kG>
        <<<blocks_for(m, kBlock / kG), kBlock, 0, stream>>>(x, gy, mean, rstd, weight, m, k, gx);
  });
  MEL_CUDA_CHECK_LAUNCH();
}

#define MEL_LN_INSTANTIATE(T)                                                                     \
  template void layer_norm_forward<T>(const T*, int64_t, int64_t, const T*, const T*, double, T*, \
                                      T*, T*, cudaStream_t);                                      \
  template void layer_norm_backward<T>(const T*, const T*, const T*, const T*, const T*, int64_t, \
                                       int64_t, T*, T*, T*, void*, cudaStream_t);
MEL_LN_INSTANTIATE(float)
MEL_LN_INSTANTIATE(double)
#undef MEL_LN_INSTANTIATE

}  // namespace mel::kernels::cuda
