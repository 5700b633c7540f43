#include "kernels/cpu/pool.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/strided.h"

namespace mel::kernels::cpu {

namespace {

// Planes per parallel chunk: enough work per chunk to amortise the OpenMP fork.
int64_t plane_grain(int64_t plane_elems) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(plane_elems, 1));
}

// Output columns j whose input column j * sw - pw + dw lies in [0, W): [lo, hi).
struct ColRange {
  int64_t lo, hi;
};
ColRange valid_cols(const Pool2dGeom& g, int64_t dw) {
  const int64_t lo = g.pw > dw ? (g.pw - dw + g.sw - 1) / g.sw : 0;
  const int64_t hi = std::min(g.ow, (g.w + g.pw - dw + g.sw - 1) / g.sw);
  return {lo, std::max(lo, hi)};
}

// PyTorch's avg_pool2d divisor for output row or column i along one axis: the window clipped to
// the padded input (count_include_pad) or to the real input.
int64_t pool_extent(int64_t i, int64_t s, int64_t p, int64_t k, int64_t n, bool include_pad) {
  int64_t start = i * s - p;
  int64_t end = std::min(start + k, n + p);
  if (include_pad) return end - start;
  return std::min(end, n) - std::max(start, int64_t(0));
}

std::vector<int64_t> col_extents(const Pool2dGeom& g, bool include_pad) {
  std::vector<int64_t> ext(g.ow);
  for (int64_t j = 0; j < g.ow; ++j) ext[j] = pool_extent(j, g.sw, g.pw, g.kw, g.w, include_pad);
  return ext;
}

int64_t adaptive_start(int64_t i, int64_t in, int64_t out) {
  return (i * in) / out;
}
int64_t adaptive_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

}  // namespace

// Output rows are built one window offset (dh, dw) at a time over all columns, so the inner loop
// is a strided sweep the compiler vectorises for any kernel size; visiting offsets in row-major
// window order with a strict '>' keeps PyTorch's first-maximum rule.
template <class T>
void max_pool2d(const Pool2dGeom& g, const T* x, T* y, int32_t* idx) {
  const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
  const int64_t sw = g.sw;
  parallel_for(g.planes, plane_grain(in_plane), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const T* xp = x + p * in_plane;
      for (int64_t i = 0; i < g.oh; ++i) {
        T* yr = y + p * out_plane + i * g.ow;
        int32_t* ir = idx + p * out_plane + i * g.ow;
        const int64_t h0 = i * g.sh - g.ph;
        const int64_t hs = std::max<int64_t>(h0, 0), he = std::min(h0 + g.kh, g.h);
        for (int64_t j = 0; j < g.ow; ++j) {
          yr[j] = -std::numeric_limits<T>::infinity();
          ir[j] = static_cast<int32_t>(hs * g.w + std::max<int64_t>(j * sw - g.pw, 0));
        }
        for (int64_t hh = hs; hh < he; ++hh) {
          for (int64_t dw = 0; dw < g.kw; ++dw) {
            const ColRange r = valid_cols(g, dw);
            const int64_t shift = dw - g.pw;
            const T* xr = xp + hh * g.w + shift;
            const int32_t base = static_cast<int32_t>(hh * g.w + shift);
            for (int64_t j = r.lo; j < r.hi; ++j) {
              const T v = xr[j * sw];
              const bool take = v > yr[j] || v != v;  // NaN propagates, as in PyTorch
              yr[j] = take ? v : yr[j];
              ir[j] = take ? base + static_cast<int32_t>(j * sw) : ir[j];
            }
          }
        }
      }
    }
  });
}

template <class T>
void max_pool2d_backward(const Pool2dGeom& g, const T* gy, const int32_t* idx, T* gx) {
  const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
  parallel_for(g.planes, plane_grain(in_plane), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      T* gp = gx + p * in_plane;
      std::memset(gp, 0, sizeof(T) * in_plane);
      const T* gq = gy + p * out_plane;
      const int32_t* iq = idx + p * out_plane;
      for (int64_t k = 0; k < out_plane; ++k) gp[iq[k]] += gq[k];
    }
  });
}

template <class T>
void avg_pool2d(const Pool2dGeom& g, bool count_include_pad, const T* x, T* y) {
  const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
  const int64_t sw = g.sw;
  const std::vector<int64_t> ext_w = col_extents(g, count_include_pad);
  parallel_for(g.planes, plane_grain(in_plane), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const T* xp = x + p * in_plane;
      for (int64_t i = 0; i < g.oh; ++i) {
        T* yr = y + p * out_plane + i * g.ow;
        const int64_t h0 = i * g.sh - g.ph;
        const int64_t hs = std::max<int64_t>(h0, 0), he = std::min(h0 + g.kh, g.h);
        for (int64_t j = 0; j < g.ow; ++j) yr[j] = T(0);
        for (int64_t hh = hs; hh < he; ++hh) {
          for (int64_t dw = 0; dw < g.kw; ++dw) {
            const ColRange r = valid_cols(g, dw);
            const T* xr = xp + hh * g.w + dw - g.pw;
            for (int64_t j = r.lo; j < r.hi; ++j) yr[j] += xr[j * sw];
          }
        }
        const int64_t ext_h = pool_extent(i, g.sh, g.ph, g.kh, g.h, count_include_pad);
        for (int64_t j = 0; j < g.ow; ++j) yr[j] /= static_cast<T>(ext_h * ext_w[j]);
      }
    }
  });
}

template <class T>
void avg_pool2d_backward(const Pool2dGeom& g, bool count_include_pad, const T* gy, T* gx) {
  const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
  const int64_t sw = g.sw;
  const std::vector<int64_t> ext_w = col_extents(g, count_include_pad);
  parallel_for(g.planes, plane_grain(in_plane), [&](int64_t b, int64_t e) {
    std::vector<T> row(g.ow);
    for (int64_t p = b; p < e; ++p) {
      T* gp = gx + p * in_plane;
      std::memset(gp, 0, sizeof(T) * in_plane);
      for (int64_t i = 0; i < g.oh; ++i) {
        const T* gr = gy + p * out_plane + i * g.ow;
        const int64_t ext_h = pool_extent(i, g.sh, g.ph, g.kh, g.h, count_include_pad);
        for (int64_t j = 0; j < g.ow; ++j) row[j] = gr[j] / static_cast<T>(ext_h * ext_w[j]);
        const int64_t h0 = i * g.sh - g.ph;
        const int64_t hs = std::max<int64_t>(h0, 0), he = std::min(h0 + g.kh, g.h);
        for (int64_t hh = hs; hh < he; ++hh) {
          for (int64_t dw = 0; dw < g.kw; ++dw) {
            const ColRange r = valid_cols(g, dw);
            T* xr = gp + hh * g.w + dw - g.pw;
            // one dw at a time: distinct j hit distinct columns, so the sweep has no conflicts
            for (int64_t j = r.lo; j < r.hi; ++j) xr[j * sw] += row[j];
          }
        }
      }
    }
  });
}

template <class T>
void adaptive_avg_pool2d(const Pool2dGeom& g, const T* x, T* y) {
  const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
  parallel_for(g.planes, plane_grain(in_plane), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const T* xp = x + p * in_plane;
      for (int64_t i = 0; i < g.oh; ++i) {
        const int64_t hs = adaptive_start(i, g.h, g.oh), he = adaptive_end(i, g.h, g.oh);
        for (int64_t j = 0; j < g.ow; ++j) {
          const int64_t ws = adaptive_start(j, g.w, g.ow), we = adaptive_end(j, g.w, g.ow);
          T s = 0;
          for (int64_t hh = hs; hh < he; ++hh) {
            for (int64_t ww = ws; ww < we; ++ww) s += xp[hh * g.w + ww];
          }
          y[p * out_plane + i * g.ow + j] = s / static_cast<T>((he - hs) * (we - ws));
        }
      }
    }
  });
}

template <class T>
void adaptive_avg_pool2d_backward(const Pool2dGeom& g, const T* gy, T* gx) {
  const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
  parallel_for(g.planes, plane_grain(in_plane), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      T* gp = gx + p * in_plane;
      std::memset(gp, 0, sizeof(T) * in_plane);
      for (int64_t i = 0; i < g.oh; ++i) {
        const int64_t hs = adaptive_start(i, g.h, g.oh), he = adaptive_end(i, g.h, g.oh);
        for (int64_t j = 0; j < g.ow; ++j) {
          const int64_t ws = adaptive_start(j, g.w, g.ow), we = adaptive_end(j, g.w, g.ow);
          const T v = gy[p * out_plane + i * g.ow + j] / static_cast<T>((he - hs) * (we - ws));
          for (int64_t hh = hs; hh < he; ++hh) {
            for (int64_t ww = ws; ww < we; ++ww) gp[hh * g.w + ww] += v;
          }
        }
      }
    }
  });
}

#define MEL_POOL_INSTANTIATE(T)                                                              \
  template void max_pool2d<T>(const Pool2dGeom&, const T*, T*, int32_t*);                    \
  template void max_pool2d_backward<T>(const Pool2dGeom&, const T*, const int32_t*, T*);     \
  template void avg_pool2d<T>(const Pool2dGeom&, bool, const T*, T*);                        \
  template void avg_pool2d_backward<T>(const Pool2dGeom&, bool, const T*, T*);               \
  template void adaptive_avg_pool2d<T>(const Pool2dGeom&, const T*, T*);                     \
  template void adaptive_avg_pool2d_backward<T>(const Pool2dGeom&, const T*, T*);
MEL_POOL_INSTANTIATE(float)
MEL_POOL_INSTANTIATE(double)
#undef MEL_POOL_INSTANTIATE

}  // namespace mel::kernels::cpu
