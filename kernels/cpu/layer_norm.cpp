// The layer-norm kernels of kernels/cpu/norm.h: one row per task, parameter gradients summed
// over fixed row blocks (results independent of the thread count).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/norm.h"
#include "kernels/strided.h"

namespace mel::kernels::cpu {

template <class T>
void layer_norm_forward(const T* x, int64_t m, int64_t k, const T* weight, const T* bias,
                        double eps, T* y, T* mean, T* rstd) {
  parallel_for(m, std::max<int64_t>(1, 16384 / std::max<int64_t>(k, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* xr = x + r * k;
      T* yr = y + r * k;
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < k; ++j) s += double(xr[j]);
      const double mu = s / static_cast<double>(k);
      double q = 0;
#pragma omp simd reduction(+ : q)
      for (int64_t j = 0; j < k; ++j) {
        const double v = double(xr[j]) - mu;
        q += v * v;
      }
      const double rs = 1.0 / std::sqrt(q / static_cast<double>(k) + eps);
      mean[r] = static_cast<T>(mu);
      rstd[r] = static_cast<T>(rs);
      const T tm = static_cast<T>(mu), tr = static_cast<T>(rs);
#pragma omp simd
      for (int64_t j = 0; j < k; ++j) {
        const T v = (xr[j] - tm) * tr;
        yr[j] = (weight ? v * weight[j] : v) + (bias ? bias[j] : T(0));
      }
    }
  });
}

template <class T>
void layer_norm_backward(const T* x, const T* gy, const T* mean, const T* rstd, const T* weight,
                         int64_t m, int64_t k, T* gx, T* gweight, T* gbias, void*) {
  // Row blocks fixed by m alone, so the parameter-gradient sums do not depend on threads.
  const int64_t nblk = std::min<int64_t>(m, 32);
  const bool params = gweight || gbias;
  std::vector<double> pw(params ? nblk * k : 0), pb(params ? nblk * k : 0);
  parallel_for(nblk, 1, [&](int64_t bb, int64_t be) {
    for (int64_t blk = bb; blk < be; ++blk) {
      double* pwr = params ? pw.data() + blk * k : nullptr;
      double* pbr = params ? pb.data() + blk * k : nullptr;
      for (int64_t r = m * blk / nblk; r < m * (blk + 1) / nblk; ++r) {
        const T* xr = x + r * k;
        const T* gr = gy + r * k;
        const T mu = mean[r], rs = rstd[r];
        if (params) {
#pragma omp simd
          for (int64_t j = 0; j < k; ++j) {
            pwr[j] += double(gr[j] * ((xr[j] - mu) * rs));
            pbr[j] += double(gr[j]);
          }
        }
        if (!gx) continue;
        double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
        for (int64_t j = 0; j < k; ++j) {
          const T g = weight ? gr[j] * weight[j] : gr[j];
          s1 += double(g);
          s2 += double(g * ((xr[j] - mu) * rs));
        }
        const T c1 = static_cast<T>(s1 / static_cast<double>(k));
        const T c2 = static_cast<T>(s2 / static_cast<double>(k));
        T* out = gx + r * k;
#pragma omp simd
        for (int64_t j = 0; j < k; ++j) {
          const T g = weight ? gr[j] * weight[j] : gr[j];
          out[j] = rs * (g - c1 - (xr[j] - mu) * rs * c2);
        }
      }
    }
  });
  if (!params) return;
  parallel_for(k, 4096, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      double sw = 0, sb = 0;
      for (int64_t blk = 0; blk < nblk; ++blk) sw += pw[blk * k + j], sb += pb[blk * k + j];
      if (gweight) gweight[j] = static_cast<T>(sw);
      if (gbias) gbias[j] = static_cast<T>(sb);
    }
  });
}

#define MEL_LAYER_NORM_INSTANTIATE(T)                                                             \
  template void layer_norm_forward<T>(const T*, int64_t, int64_t, const T*, const T*, double, T*, \
                                      T*, T*);                                                    \
  template void layer_norm_backward<T>(const T*, const T*, const T*, const T*, const T*, int64_t, \
                                       int64_t, T*, T*, T*, void*);
MEL_LAYER_NORM_INSTANTIATE(float)
MEL_LAYER_NORM_INSTANTIATE(double)
#undef MEL_LAYER_NORM_INSTANTIATE

}  // namespace mel::kernels::cpu
