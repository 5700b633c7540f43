// Cross-entropy kernels of kernels/cuda/softmax.h (forward, backward and the loss reduction).
#include "kernels/cuda/check.h"
#include "kernels/cuda/rows.cuh"
#include "kernels/cuda/softmax.h"

namespace mel::kernels::cuda {

namespace {

// One group of G threads per row, as softmax_rows_kernel (kPer > 0: the row in registers). The
// per-row tail (logsumexp, smoothing) runs in double as on the CPU.
template <class T, int G, int kPer>
__global__ void __launch_bounds__(kBlock)
    cross_entropy_forward_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels,
                                 int64_t N, int64_t C, double eps, int64_t ignore_index,
                                 T* __restrict__ loss, T* __restrict__ lse) {
  using A = acc_t<T>;
  __shared__ A scratch[kWarp];
  constexpr int kRowsPerBlock = kBlock / G;
  const int lane = static_cast<int>(threadIdx.x) % G;
  const int sub = static_cast<int>(threadIdx.x) / G;
  const bool smooth = eps > 0;
  for (int64_t r0 = int64_t(blockIdx.x) * kRowsPerBlock; r0 < N;
       r0 += int64_t(gridDim.x) * kRowsPerBlock) {
    const int64_t r = r0 + sub;
    const bool valid = r < N;
    const T* xr = logits + (valid ? r : 0) * C;
    A m = neg_inf<A>(), s = 0, sx = 0;
    if constexpr (kPer > 0) {
      A v[kPer];
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        const int64_t c = lane + int64_t(k) * G;
        v[k] = valid && c < C ? xr[c] : neg_inf<A>();
        m = dmax(m, v[k]);
      }
      m = group_max<G>(m, scratch);
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        if (valid && lane + int64_t(k) * G < C) {
          s += dexp(v[k] - m);
          sx += v[k];
        }
      }
    } else {
      if (valid) {
        for (int64_t c = lane; c < C; c += G) m = dmax(m, A(xr[c]));
      }
      m = group_max<G>(m, scratch);
      if (valid) {
        for (int64_t c = lane; c < C; c += G) {
          s += dexp(A(xr[c]) - m);
          sx += xr[c];
        }
      }
    }
    s = group_sum<G>(s, scratch);
    if (smooth) sx = group_sum<G>(sx, scratch);
    if (!valid || lane != 0) continue;
    const int64_t label = labels[r];
    if (label == ignore_index) {
      loss[r] = T(0);
      lse[r] = T(0);
    } else if (label < 0 || label >= C) {
      loss[r] = quiet_nan<T>();
      lse[r] = quiet_nan<T>();
    } else {
      const double l = static_cast<double>(m) + log(static_cast<double>(s));
      double row = (1.0 - eps) * (l - static_cast<double>(xr[label]));
      // only with smoothing, so that a -inf logit of another class cannot make 0 * inf = NaN
      if (smooth) row += eps * (l - static_cast<double>(sx) / static_cast<double>(C));
      loss[r] = static_cast<T>(row);
      lse[r] = static_cast<T>(l);
    }
  }
}

// Elementwise over rows; tpr threads per row (no reductions, so any count works).
template <class T>
__global__ void cross_entropy_backward_kernel(
    const T* __restrict__ logits, const int64_t* __restrict__ labels, const T* __restrict__ lse,
    const T* __restrict__ gy, int64_t gy_stride, double alpha, const double* __restrict__ alpha_dev,
    int64_t N, int64_t C, T off, T on, int64_t ignore_index, T* __restrict__ dlogits, int tpr) {
  const int rows_per_block = static_cast<int>(blockDim.x) / tpr;
  const int lane = static_cast<int>(threadIdx.x) % tpr;
  const double a = alpha_dev ? alpha * *alpha_dev : alpha;
  for (int64_t r = int64_t(blockIdx.x) * rows_per_block + threadIdx.x / tpr; r < N;
       r += int64_t(gridDim.x) * rows_per_block) {
    T* out = dlogits + r * C;
    const int64_t label = labels[r];
    if (label == ignore_index || label < 0 || label >= C) {
      const T fill = label == ignore_index ? T(0) : quiet_nan<T>();
      for (int64_t c = lane; c < C; c += tpr) out[c] = fill;
      continue;
    }
    const T* xr = logits + r * C;
    const T l = lse[r];
    const T scale = static_cast<T>(static_cast<double>(gy[r * gy_stride]) * a);
    for (int64_t c = lane; c < C; c += tpr) {
      out[c] = (dexp(xr[c] - l) - (c == label ? on : off)) * scale;
    }
  }
}

constexpr int kReduceBlock = 512;

// One block: a fixed assignment of rows to threads and a fixed tree, so the sum is reproducible.
template <class T>
__global__ void __launch_bounds__(kReduceBlock)
    cross_entropy_reduce_kernel(const T* __restrict__ loss, const int64_t* __restrict__ labels,
                                int64_t N, int64_t ignore_index, bool mean, T* __restrict__ out,
                                double* __restrict__ scale) {
  __shared__ double scratch[kWarp];
  double s = 0, count = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    s += static_cast<double>(loss[i]);
    count += labels[i] != ignore_index ? 1.0 : 0.0;
  }
  s = block_sum(s, scratch);
  count = block_sum(count, scratch);
  if (threadIdx.x != 0) return;
  out[0] = static_cast<T>(mean ? s / count : s);  // 0 / 0 = NaN when every row is ignored
  if (scale) scale[0] = mean && count > 0 ? 1.0 / count : 1.0;
}

}  // namespace

template <class T>
void cross_entropy_forward(const T* logits, const int64_t* labels, int64_t N, int64_t C, double eps,
                           int64_t ignore_index, T* loss, T* lse, cudaStream_t stream) {
  if (N == 0) return;
  using std::integral_constant;
  auto launch = [&](auto G, auto per) {
    constexpr int kG = decltype(G)::value;
    cross_entropy_forward_kernel<T, kG, decltype(per)::value>
        <<<blocks_for(N, kBlock / kG), kBlock, 0, stream>>>(logits, labels, N, C, eps, ignore_index,
                                                            loss, lse);
  };
  const int64_t per = (C + kWarp - 1) / kWarp;
  const int g = group_for(C);
  if (g == 8) {
    launch(integral_constant<int, 8>{}, integral_constant<int, 1>{});
  } else if (g == 16) {
    launch(integral_constant<int, 16>{}, integral_constant<int, 1>{});
  } else if (g == kBlock) {
    launch(integral_constant<int, kBlock>{}, integral_constant<int, 0>{});
  } else if (per <= 1) {
    launch(integral_constant<int, kWarp>{}, integral_constant<int, 1>{});
  } else if (per <= 2) {
    launch(integral_constant<int, kWarp>{}, integral_constant<int, 2>{});
  } else if (per <= 4) {
    launch(integral_constant<int, kWarp>{}, integral_constant<int, 4>{});
  } else if (per <= 8) {
    launch(integral_constant<int, kWarp>{}, integral_constant<int, 8>{});
  } else if (per <= 16) {
    launch(integral_constant<int, kWarp>{}, integral_constant<int, 16>{});
  } else {
    launch(integral_constant<int, kWarp>{}, integral_constant<int, 32>{});
  }
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void cross_entropy_backward(const T* logits, const int64_t* labels, const T* lse, const T* gy,
                            int64_t gy_stride, double alpha, int64_t N, int64_t C, double eps,
                            int64_t ignore_index, T* dlogits, const double* alpha_dev,
                            cudaStream_t stream) {
  if (N == 0 || C == 0) return;
  const T off = static_cast<T>(eps / static_cast<double>(C));
  const T on = static_cast<T>(1.0 - eps + eps / static_cast<double>(C));
  const int tpr = group_for(C);
  cross_entropy_backward_kernel<T><<<blocks_for(N, kBlock / tpr), kBlock, 0, stream>>>(
      logits, labels, lse, gy, gy_stride, alpha, alpha_dev, N, C, off, on, ignore_index, dlogits,
      tpr);
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void cross_entropy_reduce(const T* loss, const int64_t* labels, int64_t N, int64_t ignore_index,
                          bool mean, T* out, double* scale, cudaStream_t stream) {
  cross_entropy_reduce_kernel<T>
      <<<1, kReduceBlock, 0, stream>>>(loss, labels, N, ignore_index, mean, out, scale);
  MEL_CUDA_CHECK_LAUNCH();
}

#define MEL_INSTANTIATE_CE(T)                                                                    \
  template void cross_entropy_forward<T>(const T*, const int64_t*, int64_t, int64_t, double,     \
                                         int64_t, T*, T*, cudaStream_t);                         \
  template void cross_entropy_backward<T>(const T*, const int64_t*, const T*, const T*, int64_t, \
                                          double, int64_t, int64_t, double, int64_t, T*,         \
                                          const double*, cudaStream_t);                          \
  template void cross_entropy_reduce<T>(const T*, const int64_t*, int64_t, int64_t, bool, T*,    \
                                        double*, cudaStream_t);
MEL_INSTANTIATE_CE(float)
MEL_INSTANTIATE_CE(double)
#undef MEL_INSTANTIATE_CE

}  // namespace mel::kernels::cuda
