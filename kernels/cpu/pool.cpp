#include "kernels/cpu/pool.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

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

// One output row of 2x2 stride-2 max pooling from input rows r0, r1; base is r0's offset in the
// plane, w the row length. Candidates are visited in window order, so the first maximum wins.
template <class T>
void max_pool_2x2_row(const T* r0, const T* r1, int64_t ow, int32_t base, int32_t w, T* yr,
                      int32_t* ir) {
  for (int64_t j = 0; j < ow; ++j) {
    const int32_t k0 = base + static_cast<int32_t>(2 * j);
    T m = r0[2 * j];
    int32_t k = k0;
    const T v1 = r0[2 * j + 1], v2 = r1[2 * j], v3 = r1[2 * j + 1];
    const bool t1 = v1 > m || v1 != v1;  // NaN propagates, as in PyTorch
    m = t1 ? v1 : m;
    k = t1 ? k0 + 1 : k;
    const bool t2 = v2 > m || v2 != v2;
    m = t2 ? v2 : m;
    k = t2 ? k0 + w : k;
    const bool t3 = v3 > m || v3 != v3;
    m = t3 ? v3 : m;
    k = t3 ? k0 + w + 1 : k;
    yr[j] = m;
    ir[j] = k;
  }
}

#if defined(__AVX2__)
// f32: 8 outputs per step from 16 inputs of each row, split into even and odd columns. Masked
// loads and stores cover the tail, so short rows (7x7 maps give 3 outputs) need no scalar loop,
// whose data-dependent branches cost about 3x on random inputs (measured, bench_norm).
inline __m256 even_lanes(__m256 a, __m256 b) {
  const __m256 s = _mm256_shuffle_ps(a, b, 0x88);  // a0 a2 b0 b2 | a4 a6 b4 b6
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), 0xD8));
}
inline __m256 odd_lanes(__m256 a, __m256 b) {
  const __m256 s = _mm256_shuffle_ps(a, b, 0xDD);
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), 0xD8));
}

template <>
void max_pool_2x2_row<float>(const float* r0, const float* r1, int64_t ow, int32_t base, int32_t w,
                             float* yr, int32_t* ir) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i twice = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  for (int64_t j0 = 0; j0 < ow; j0 += 8) {
    const auto cnt = static_cast<int32_t>(std::min<int64_t>(8, ow - j0));
    const __m256i lo = _mm256_cmpgt_epi32(_mm256_set1_epi32(2 * cnt), lanes);
    const __m256i hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(2 * cnt - 8), lanes);
    const __m256i out = _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt), lanes);
    const float* p0 = r0 + 2 * j0;
    const float* p1 = r1 + 2 * j0;
    const __m256 a0 = _mm256_maskload_ps(p0, lo), b0 = _mm256_maskload_ps(p0 + 8, hi);
    const __m256 a1 = _mm256_maskload_ps(p1, lo), b1 = _mm256_maskload_ps(p1 + 8, hi);
    const __m256i k0 =
        _mm256_add_epi32(_mm256_set1_epi32(base + static_cast<int32_t>(2 * j0)), twice);
    __m256 m = even_lanes(a0, b0);
    __m256 k = _mm256_castsi256_ps(k0);
    auto take = [&](__m256 v, int32_t shift) {
      const __m256 t =
          _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      m = _mm256_blendv_ps(m, v, t);
      const __m256i kv = _mm256_add_epi32(k0, _mm256_set1_epi32(shift));
      k = _mm256_blendv_ps(k, _mm256_castsi256_ps(kv), t);
    };
    take(odd_lanes(a0, b0), 1);
    take(even_lanes(a1, b1), w);
    take(odd_lanes(a1, b1), w + 1);
    _mm256_maskstore_ps(yr + j0, out, m);
    _mm256_maskstore_epi32(ir + j0, out, _mm256_castps_si256(k));
  }
}
#endif

}  // namespace

// Output rows are built one window offset (dh, dw) at a time over all columns, so the inner loop
// is a strided sweep the compiler vectorises for any kernel size; visiting offsets in row-major
// window order with a strict '>' keeps PyTorch's first-maximum rule.
template <class T>
void max_pool2d(const Pool2dGeom& g, const T* x, T* y, int32_t* idx) {
  const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
  const int64_t sw = g.sw;
  const bool two_by_two =
      g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0;
  parallel_for(g.planes, plane_grain(in_plane), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      if (two_by_two) {  // the CNN default, with the four candidates in registers
        const T* xp = x + p * in_plane;
        for (int64_t i = 0; i < g.oh; ++i) {
          const T* r0 = xp + 2 * i * g.w;
          const T* r1 = r0 + g.w;
          T* yr = y + p * out_plane + i * g.ow;
          int32_t* ir = idx + p * out_plane + i * g.ow;
          max_pool_2x2_row(r0, r1, g.ow, static_cast<int32_t>(2 * i * g.w),
                           static_cast<int32_t>(g.w), yr, ir);
        }
        continue;
      }
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

#define MEL_POOL_INSTANTIATE(T)                                                          \
  template void max_pool2d<T>(const Pool2dGeom&, const T*, T*, int32_t*);                \
  template void max_pool2d_backward<T>(const Pool2dGeom&, const T*, const int32_t*, T*); \
  template void avg_pool2d<T>(const Pool2dGeom&, bool, const T*, T*);                    \
  template void avg_pool2d_backward<T>(const Pool2dGeom&, bool, const T*, T*);           \
  template void adaptive_avg_pool2d<T>(const Pool2dGeom&, const T*, T*);                 \
  template void adaptive_avg_pool2d_backward<T>(const Pool2dGeom&, const T*, T*);
MEL_POOL_INSTANTIATE(float)
MEL_POOL_INSTANTIATE(double)
#undef MEL_POOL_INSTANTIATE

}  // namespace mel::kernels::cpu
