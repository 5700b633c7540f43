#include "kernels/cuda/check.h"
#include "kernels/cuda/rows.cuh"
#include "kernels/cuda/softmax.h"

namespace mel::kernels::cuda {

namespace {

// Rows of C elements (B == 1): a group of G threads per row. kPer > 0 (G <= 32, C <= G * kPer)
// keeps the row in registers, so x is read once; kPer == 0 re-reads it from memory (L2) on each
// pass, and recomputes exp(x - m) in the last one rather than storing and re-reading it, so that y
// may alias x and 16-bit outputs are rounded once.
template <class T, bool kLog, int G, int kPer>
__global__ void __launch_bounds__(kBlock)
    softmax_rows_kernel(const T* x, int64_t rows, int64_t C, T* y) {
  using A = acc_t<T>;
  __shared__ A scratch[kWarp];
  constexpr int kRowsPerBlock = kBlock / G;
  const int lane = static_cast<int>(threadIdx.x) % G;
  const int sub = static_cast<int>(threadIdx.x) / G;
  for (int64_t r0 = int64_t(blockIdx.x) * kRowsPerBlock; r0 < rows;
       r0 += int64_t(gridDim.x) * kRowsPerBlock) {
    const int64_t r = r0 + sub;
    const bool valid = r < rows;  // the whole group agrees; invalid groups still join shuffles
    const T* xr = x + (valid ? r : 0) * C;
    T* yr = y + (valid ? r : 0) * C;
    A m = neg_inf<A>(), s = 0;
    if constexpr (kPer > 0) {
      A v[kPer];
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        const int64_t c = lane + int64_t(k) * G;
        v[k] = valid && c < C ? static_cast<A>(xr[c]) : neg_inf<A>();
        m = dmax(m, v[k]);
      }
      m = group_max<G>(m, scratch);
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        if (!valid || lane + int64_t(k) * G >= C) continue;
        const A e = dexp(v[k] - m);
        if constexpr (!kLog) v[k] = e;
        s += e;
      }
      s = group_sum<G>(s, scratch);
      const A ls = kLog ? dlog(s) : A(1) / s;
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        const int64_t c = lane + int64_t(k) * G;
        if (!valid || c >= C) continue;
        yr[c] = static_cast<T>(kLog ? (v[k] - m) - ls : v[k] * ls);
      }
    } else {
      if (valid) {
        for (int64_t c = lane; c < C; c += G) m = dmax(m, static_cast<A>(xr[c]));
      }
      m = group_max<G>(m, scratch);
      if (valid) {
        for (int64_t c = lane; c < C; c += G) s += dexp(static_cast<A>(xr[c]) - m);
      }
      s = group_sum<G>(s, scratch);
      const A ls = kLog ? dlog(s) : A(1) / s;
      if (valid) {
        for (int64_t c = lane; c < C; c += G) {
          const A v = static_cast<A>(xr[c]) - m;
          yr[c] = static_cast<T>(kLog ? v - ls : dexp(v) * ls);
        }
      }
    }
  }
}

// softmax: gx = y * (gy - sum(gy * y)); log_softmax: gx = gy - exp(y) * sum(gy).
template <class T, bool kLog, int G, int kPer>
__global__ void __launch_bounds__(kBlock)
    softmax_backward_rows_kernel(const T* y, const T* gy, int64_t rows, int64_t C, T* gx) {
  using A = acc_t<T>;
  __shared__ A scratch[kWarp];
  constexpr int kRowsPerBlock = kBlock / G;
  const int lane = static_cast<int>(threadIdx.x) % G;
  const int sub = static_cast<int>(threadIdx.x) / G;
  for (int64_t r0 = int64_t(blockIdx.x) * kRowsPerBlock; r0 < rows;
       r0 += int64_t(gridDim.x) * kRowsPerBlock) {
    const int64_t r = r0 + sub;
    const bool valid = r < rows;
    const int64_t base = (valid ? r : 0) * C;
    A s = 0;
    if constexpr (kPer > 0) {
      A yv[kPer], gv[kPer];
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        const int64_t c = lane + int64_t(k) * G;
        const bool in = valid && c < C;
        yv[k] = in ? static_cast<A>(y[base + c]) : A(0);
        gv[k] = in ? static_cast<A>(gy[base + c]) : A(0);
        s += kLog ? gv[k] : gv[k] * yv[k];
      }
      s = group_sum<G>(s, scratch);
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        const int64_t c = lane + int64_t(k) * G;
        if (!valid || c >= C) continue;
        gx[base + c] = static_cast<T>(kLog ? gv[k] - dexp(yv[k]) * s : yv[k] * (gv[k] - s));
      }
    } else {
      if (valid) {
        for (int64_t c = lane; c < C; c += G) {
          const A g = static_cast<A>(gy[base + c]);
          s += kLog ? g : g * static_cast<A>(y[base + c]);
        }
      }
      s = group_sum<G>(s, scratch);
      if (valid) {
        for (int64_t c = lane; c < C; c += G) {
          const A g = static_cast<A>(gy[base + c]), v = static_cast<A>(y[base + c]);
          gx[base + c] = static_cast<T>(kLog ? g - dexp(v) * s : v * (g - s));
        }
      }
    }
  }
}

// B > 1: one thread per (a, b) column walks the C axis with stride B (coalesced across b).
template <class T, bool kLog>
__global__ void softmax_strided_kernel(const T* x, int64_t A_, int64_t C, int64_t B, T* y) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < A_ * B;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t a = i / B;
    const int64_t base = a * C * B + (i - a * B);
    A m = neg_inf<A>(), s = 0;
    for (int64_t c = 0; c < C; ++c) m = dmax(m, static_cast<A>(x[base + c * B]));
    for (int64_t c = 0; c < C; ++c) s += dexp(static_cast<A>(x[base + c * B]) - m);
    const A ls = kLog ? dlog(s) : A(1) / s;
    for (int64_t c = 0; c < C; ++c) {
      const A v = static_cast<A>(x[base + c * B]) - m;
      y[base + c * B] = static_cast<T>(kLog ? v - ls : dexp(v) * ls);
    }
  }
}

template <class T, bool kLog>
__global__ void softmax_backward_strided_kernel(const T* y, const T* gy, int64_t A_, int64_t C,
                                                int64_t B, T* gx) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < A_ * B;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t a = i / B;
    const int64_t base = a * C * B + (i - a * B);
    A s = 0;
    for (int64_t c = 0; c < C; ++c) {
      const A g = static_cast<A>(gy[base + c * B]);
      s += kLog ? g : g * static_cast<A>(y[base + c * B]);
    }
    for (int64_t c = 0; c < C; ++c) {
      const A g = static_cast<A>(gy[base + c * B]), v = static_cast<A>(y[base + c * B]);
      gx[base + c * B] = static_cast<T>(kLog ? g - dexp(v) * s : v * (g - s));
    }
  }
}

// Calls f(G, kPer) (integral constants) for rows of C elements: registers up to kMaxWarpRow.
template <class F>
void with_row_shape(int64_t C, F&& f) {
  using std::integral_constant;
  const int g = group_for(C);
  if (g == 8) return f(integral_constant<int, 8>{}, integral_constant<int, 1>{});
  if (g == 16) return f(integral_constant<int, 16>{}, integral_constant<int, 1>{});
  if (g == kBlock) return f(integral_constant<int, kBlock>{}, integral_constant<int, 0>{});
  const int64_t per = (C + kWarp - 1) / kWarp;
  if (per <= 1) return f(integral_constant<int, kWarp>{}, integral_constant<int, 1>{});
  if (per <= 2) return f(integral_constant<int, kWarp>{}, integral_constant<int, 2>{});
  if (per <= 4) return f(integral_constant<int, kWarp>{}, integral_constant<int, 4>{});
  if (per <= 8) return f(integral_constant<int, kWarp>{}, integral_constant<int, 8>{});
  if (per <= 16) return f(integral_constant<int, kWarp>{}, integral_constant<int, 16>{});
  return f(integral_constant<int, kWarp>{}, integral_constant<int, 32>{});
}

template <class T, bool kLog>
void softmax_launch(const T* x, int64_t A, int64_t C, int64_t B, T* y, cudaStream_t stream) {
  if (A == 0 || C == 0 || B == 0) return;
  if (B == 1) {
    with_row_shape(C, [&](auto G, auto per) {
      softmax_rows_kernel<T, kLog, decltype(G)::value, decltype(per)::value>
          <<<blocks_for(A, kBlock / decltype(G)::value), kBlock, 0, stream>>>(x, A, C, y);
    });
  } else {
    softmax_strided_kernel<T, kLog><<<grid_for(A * B), kBlock, 0, stream>>>(x, A, C, B, y);
  }
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T, bool kLog>
void softmax_backward_launch(const T* y, const T* gy, int64_t A, int64_t C, int64_t B, T* gx,
                             cudaStream_t stream) {
  if (A == 0 || C == 0 || B == 0) return;
  if (B == 1) {
    with_row_shape(C, [&](auto G, auto per) {
      softmax_backward_rows_kernel<T, kLog, decltype(G)::value, decltype(per)::value>
          <<<blocks_for(A, kBlock / decltype(G)::value), kBlock, 0, stream>>>(y, gy, A, C, gx);
    });
  } else {
    softmax_backward_strided_kernel<T, kLog>
        <<<grid_for(A * B), kBlock, 0, stream>>>(y, gy, A, C, B, gx);
  }
  MEL_CUDA_CHECK_LAUNCH();
}

}  // namespace

template <class T>
void softmax(const T* x, int64_t A, int64_t C, int64_t B, T* y, cudaStream_t stream) {
  softmax_launch<T, false>(x, A, C, B, y, stream);
}

template <class T>
void log_softmax(const T* x, int64_t A, int64_t C, int64_t B, T* y, cudaStream_t stream) {
  softmax_launch<T, true>(x, A, C, B, y, stream);
}

template <class T>
void softmax_backward(const T* y, const T* gy, int64_t A, int64_t C, int64_t B, T* gx,
                      cudaStream_t stream) {
  softmax_backward_launch<T, false>(y, gy, A, C, B, gx, stream);
}

template <class T>
void log_softmax_backward(const T* y, const T* gy, int64_t A, int64_t C, int64_t B, T* gx,
                          cudaStream_t stream) {
  softmax_backward_launch<T, true>(y, gy, A, C, B, gx, stream);
}

#define MEL_INSTANTIATE_SOFTMAX(T)                                                         \
  template void softmax<T>(const T*, int64_t, int64_t, int64_t, T*, cudaStream_t);         \
  template void log_softmax<T>(const T*, int64_t, int64_t, int64_t, T*, cudaStream_t);     \
  template void softmax_backward<T>(const T*, const T*, int64_t, int64_t, int64_t, T*,     \
                                    cudaStream_t);                                         \
  template void log_softmax_backward<T>(const T*, const T*, int64_t, int64_t, int64_t, T*, \
                                        cudaStream_t);
MEL_INSTANTIATE_SOFTMAX(float)
MEL_INSTANTIATE_SOFTMAX(double)
MEL_INSTANTIATE_SOFTMAX(bfloat16)
MEL_INSTANTIATE_SOFTMAX(half)
#undef MEL_INSTANTIATE_SOFTMAX

}  // namespace mel::kernels::cuda
