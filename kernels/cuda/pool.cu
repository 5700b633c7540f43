#include "kernels/cuda/check.h"
#include "kernels/cuda/pool.h"
#include "kernels/cuda/rows.cuh"

namespace mel::kernels::cuda {

namespace {

struct OutPos {
  int64_t p, i, j;
};
__device__ __forceinline__ OutPos out_pos(int64_t o, int64_t oh, int64_t ow) {
  const int64_t t = o / ow;
  return {t / oh, t - (t / oh) * oh, o - t * ow};
}

// PyTorch's avg_pool2d divisor along one axis (as pool_extent in kernels/cpu/pool.cpp).
__device__ __forceinline__ int64_t pool_extent(int64_t i, int64_t s, int64_t p, int64_t k,
                                               int64_t n, bool include_pad) {
  const int64_t start = i * s - p;
  const int64_t end = start + k < n + p ? start + k : n + p;
  if (include_pad) return end - start;
  return (end < n ? end : n) - (start > 0 ? start : 0);
}

// Output indices [lo, hi] along one axis whose window [o * s - p, o * s - p + k) covers input q.
__device__ __forceinline__ void covering(int64_t q, int64_t s, int64_t p, int64_t k, int64_t out,
                                         int64_t& lo, int64_t& hi) {
  const int64_t a = q + p - k + 1;  // smallest window start that still covers q
  lo = a <= 0 ? 0 : (a + s - 1) / s;
  hi = (q + p) / s;
  if (hi > out - 1) hi = out - 1;
}

__device__ __forceinline__ int64_t adaptive_start(int64_t i, int64_t in, int64_t out) {
  return (i * in) / out;
}
__device__ __forceinline__ int64_t adaptive_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

template <class T>
__global__ void max_pool_kernel(Pool2dGeom g, const T* __restrict__ x, T* __restrict__ y,
                                int32_t* __restrict__ idx) {
  const int64_t total = g.planes * g.oh * g.ow;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total;
       o += int64_t(gridDim.x) * blockDim.x) {
    const OutPos q = out_pos(o, g.oh, g.ow);
    const int64_t h0 = q.i * g.sh - g.ph, w0 = q.j * g.sw - g.pw;
    const int64_t hs = h0 > 0 ? h0 : 0, he = h0 + g.kh < g.h ? h0 + g.kh : g.h;
    const int64_t ws = w0 > 0 ? w0 : 0, we = w0 + g.kw < g.w ? w0 + g.kw : g.w;
    const T* xp = x + q.p * g.h * g.w;
    T m = neg_inf<T>();
    int64_t k = hs * g.w + ws;
    for (int64_t hh = hs; hh < he; ++hh) {
      for (int64_t ww = ws; ww < we; ++ww) {
        const T v = xp[hh * g.w + ww];
        if (v > m || v != v) {  // NaN propagates, as in PyTorch
          m = v;
          k = hh * g.w + ww;
        }
      }
    }
    y[o] = m;
    idx[o] = static_cast<int32_t>(k);
  }
}

// The CPU scatters gy over outputs in increasing order from a zeroed gx; visiting the covering
// windows in the same order from 0 gives the same sums.
template <class T>
__global__ void max_pool_backward_kernel(Pool2dGeom g, const T* __restrict__ gy,
                                         const int32_t* __restrict__ idx, T* __restrict__ gx) {
  const int64_t total = g.planes * g.h * g.w;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const OutPos q = out_pos(e, g.h, g.w);  // (plane, input row, input column)
    int64_t ilo, ihi, jlo, jhi;
    covering(q.i, g.sh, g.ph, g.kh, g.oh, ilo, ihi);
    covering(q.j, g.sw, g.pw, g.kw, g.ow, jlo, jhi);
    const auto target = static_cast<int32_t>(q.i * g.w + q.j);
    const int64_t base = q.p * g.oh * g.ow;
    T s = T(0);
    for (int64_t i = ilo; i <= ihi; ++i) {
      for (int64_t j = jlo; j <= jhi; ++j) {
        const int64_t o = base + i * g.ow + j;
        if (idx[o] == target) s += gy[o];
      }
    }
    gx[e] = s;
  }
}

template <class T>
__global__ void avg_pool_kernel(Pool2dGeom g, bool include_pad, const T* __restrict__ x,
                                T* __restrict__ y) {
  const int64_t total = g.planes * g.oh * g.ow;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total;
       o += int64_t(gridDim.x) * blockDim.x) {
    const OutPos q = out_pos(o, g.oh, g.ow);
    const int64_t h0 = q.i * g.sh - g.ph, w0 = q.j * g.sw - g.pw;
    const int64_t hs = h0 > 0 ? h0 : 0, he = h0 + g.kh < g.h ? h0 + g.kh : g.h;
    const int64_t ws = w0 > 0 ? w0 : 0, we = w0 + g.kw < g.w ? w0 + g.kw : g.w;
    const T* xp = x + q.p * g.h * g.w;
    T s = T(0);
    for (int64_t hh = hs; hh < he; ++hh) {
      for (int64_t ww = ws; ww < we; ++ww) s += xp[hh * g.w + ww];
    }
    const int64_t div = pool_extent(q.i, g.sh, g.ph, g.kh, g.h, include_pad) *
                        pool_extent(q.j, g.sw, g.pw, g.kw, g.w, include_pad);
    y[o] = s / static_cast<T>(div);
  }
}

// The CPU adds, for each output row i in increasing order, the window offsets dw in increasing
// order, i.e. the covering output columns j in decreasing order; this visits them the same way.
template <class T>
__global__ void avg_pool_backward_kernel(Pool2dGeom g, bool include_pad, const T* __restrict__ gy,
                                         T* __restrict__ gx) {
  const int64_t total = g.planes * g.h * g.w;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const OutPos q = out_pos(e, g.h, g.w);
    int64_t ilo, ihi, jlo, jhi;
    covering(q.i, g.sh, g.ph, g.kh, g.oh, ilo, ihi);
    covering(q.j, g.sw, g.pw, g.kw, g.ow, jlo, jhi);
    const T* gp = gy + q.p * g.oh * g.ow;
    T s = T(0);
    for (int64_t i = ilo; i <= ihi; ++i) {
      const int64_t eh = pool_extent(i, g.sh, g.ph, g.kh, g.h, include_pad);
      for (int64_t j = jhi; j >= jlo; --j) {
        const int64_t ew = pool_extent(j, g.sw, g.pw, g.kw, g.w, include_pad);
        s += gp[i * g.ow + j] / static_cast<T>(eh * ew);
      }
    }
    gx[e] = s;
  }
}

template <class T>
__global__ void adaptive_avg_pool_kernel(Pool2dGeom g, const T* __restrict__ x, T* __restrict__ y) {
  const int64_t total = g.planes * g.oh * g.ow;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total;
       o += int64_t(gridDim.x) * blockDim.x) {
    const OutPos q = out_pos(o, g.oh, g.ow);
    const int64_t hs = adaptive_start(q.i, g.h, g.oh), he = adaptive_end(q.i, g.h, g.oh);
    const int64_t ws = adaptive_start(q.j, g.w, g.ow), we = adaptive_end(q.j, g.w, g.ow);
    const T* xp = x + q.p * g.h * g.w;
    T s = T(0);
    for (int64_t hh = hs; hh < he; ++hh) {
      for (int64_t ww = ws; ww < we; ++ww) s += xp[hh * g.w + ww];
    }
    y[o] = s / static_cast<T>((he - hs) * (we - ws));
  }
}

// Output indices along one axis whose adaptive window covers input q: a superset from the
// window bounds' monotonicity, narrowed by the exact test.
__device__ __forceinline__ void adaptive_covering(int64_t q, int64_t in, int64_t out, int64_t& lo,
                                                  int64_t& hi) {
  lo = (q * out) / in - 1;
  hi = ((q + 1) * out) / in + 1;
  if (lo < 0) lo = 0;
  if (hi > out - 1) hi = out - 1;
  while (lo <= hi && adaptive_end(lo, in, out) <= q) ++lo;
  while (hi >= lo && adaptive_start(hi, in, out) > q) --hi;
}

template <class T>
__global__ void adaptive_avg_pool_backward_kernel(Pool2dGeom g, const T* __restrict__ gy,
                                                  T* __restrict__ gx) {
  const int64_t total = g.planes * g.h * g.w;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const OutPos q = out_pos(e, g.h, g.w);
    int64_t ilo, ihi, jlo, jhi;
    adaptive_covering(q.i, g.h, g.oh, ilo, ihi);
    adaptive_covering(q.j, g.w, g.ow, jlo, jhi);
    const T* gp = gy + q.p * g.oh * g.ow;
    T s = T(0);
    for (int64_t i = ilo; i <= ihi; ++i) {
      const int64_t ch = adaptive_end(i, g.h, g.oh) - adaptive_start(i, g.h, g.oh);
      for (int64_t j = jlo; j <= jhi; ++j) {
        const int64_t cw = adaptive_end(j, g.w, g.ow) - adaptive_start(j, g.w, g.ow);
        s += gp[i * g.ow + j] / static_cast<T>(ch * cw);
      }
    }
    gx[e] = s;
  }
}

}  // namespace

template <class T>
void max_pool2d(const Pool2dGeom& g, const T* x, T* y, int32_t* idx, cudaStream_t stream) {
  const int64_t n = g.planes * g.oh * g.ow;
  if (n == 0) return;
  max_pool_kernel<T><<<grid_for(n), kBlock, 0, stream>>>(g, x, y, idx);
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void max_pool2d_backward(const Pool2dGeom& g, const T* gy, const int32_t* idx, T* gx,
                         cudaStream_t stream) {
  const int64_t n = g.planes * g.h * g.w;
  if (n == 0) return;
  max_pool_backward_kernel<T><<<grid_for(n), kBlock, 0, stream>>>(g, gy, idx, gx);
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void avg_pool2d(const Pool2dGeom& g, bool count_include_pad, const T* x, T* y,
                cudaStream_t stream) {
  const int64_t n = g.planes * g.oh * g.ow;
  if (n == 0) return;
  avg_pool_kernel<T><<<grid_for(n), kBlock, 0, stream>>>(g, count_include_pad, x, y);
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void avg_pool2d_backward(const Pool2dGeom& g, bool count_include_pad, const T* gy, T* gx,
                         cudaStream_t stream) {
  const int64_t n = g.planes * g.h * g.w;
  if (n == 0) return;
  avg_pool_backward_kernel<T><<<grid_for(n), kBlock, 0, stream>>>(g, count_include_pad, gy, gx);
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void adaptive_avg_pool2d(const Pool2dGeom& g, const T* x, T* y, cudaStream_t stream) {
  const int64_t n = g.planes * g.oh * g.ow;
  if (n == 0) return;
  adaptive_avg_pool_kernel<T><<<grid_for(n), kBlock, 0, stream>>>(g, x, y);
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void adaptive_avg_pool2d_backward(const Pool2dGeom& g, const T* gy, T* gx, cudaStream_t stream) {
  const int64_t n = g.planes * g.h * g.w;
  if (n == 0) return;
  adaptive_avg_pool_backward_kernel<T><<<grid_for(n), kBlock, 0, stream>>>(g, gy, gx);
  MEL_CUDA_CHECK_LAUNCH();
}

#define MEL_POOL_INSTANTIATE(T)                                                              \
  template void max_pool2d<T>(const Pool2dGeom&, const T*, T*, int32_t*, cudaStream_t);      \
  template void max_pool2d_backward<T>(const Pool2dGeom&, const T*, const int32_t*, T*,      \
                                       cudaStream_t);                                        \
  template void avg_pool2d<T>(const Pool2dGeom&, bool, const T*, T*, cudaStream_t);          \
  template void avg_pool2d_backward<T>(const Pool2dGeom&, bool, const T*, T*, cudaStream_t); \
  template void adaptive_avg_pool2d<T>(const Pool2dGeom&, const T*, T*, cudaStream_t);       \
  template void adaptive_avg_pool2d_backward<T>(const Pool2dGeom&, const T*, T*, cudaStream_t);
MEL_POOL_INSTANTIATE(float)
MEL_POOL_INSTANTIATE(double)
#undef MEL_POOL_INSTANTIATE

}  // namespace mel::kernels::cuda
