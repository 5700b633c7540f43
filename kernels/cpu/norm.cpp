#include "kernels/cpu/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/philox.h"
#include "kernels/strided.h"

namespace mel::kernels::cpu {

namespace {

// Per-plane partial sums run in T over at most this many elements (vectorised, short enough to
// stay accurate in f32); the partials are added in double.
constexpr int64_t kPlaneChunk = 4096;
// Channels per job in the [N, C] (s == 1) layout, where channels are the contiguous axis.
constexpr int64_t kChannelBlock = 64;

// Affine form of one channel: y = x * scale + shift.
struct ChannelAffine {
  double scale, shift;
};
ChannelAffine channel_affine(double mean, double rstd, double w, double b) {
  return {w * rstd, b - mean * w * rstd};
}

template <class T>
T maybe_relu(T v, bool relu) {
  return relu ? std::max(v, T(0)) : v;
}

// sum(v) and sum(v * v) of v = p[j] - shift over j < len, chunked as described above.
template <class T>
void shifted_sums(const T* p, int64_t len, T shift, double& s1, double& s2) {
  for (int64_t s0 = 0; s0 < len; s0 += kPlaneChunk) {
    const int64_t e = std::min(len - s0, kPlaneChunk);
    const T* q = p + s0;
    T a1 = 0, a2 = 0;
#pragma omp simd reduction(+ : a1, a2)
    for (int64_t j = 0; j < e; ++j) {
      const T v = q[j] - shift;
      a1 += v;
      a2 += v * v;
    }
    s1 += a1;
    s2 += a2;
  }
}

// sum(g) and sum(g * (x - mean)) with g = gy masked by the recomputed ReLU when relu is set.
template <class T>
void grad_sums(const T* x, const T* gy, int64_t len, T mean, T scale, T shift, bool relu,
               double& sg, double& sgx) {
  for (int64_t s0 = 0; s0 < len; s0 += kPlaneChunk) {
    const int64_t e = std::min(len - s0, kPlaneChunk);
    const T* xq = x + s0;
    const T* gq = gy + s0;
    T a1 = 0, a2 = 0;
    if (relu) {
#pragma omp simd reduction(+ : a1, a2)
      for (int64_t j = 0; j < e; ++j) {
        const T g = xq[j] * scale + shift > T(0) ? gq[j] : T(0);
        a1 += g;
        a2 += g * (xq[j] - mean);
      }
    } else {
#pragma omp simd reduction(+ : a1, a2)
      for (int64_t j = 0; j < e; ++j) {
        a1 += gq[j];
        a2 += gq[j] * (xq[j] - mean);
      }
    }
    sg += a1;
    sgx += a2;
  }
}

// gx = a * g + b * x + c with g masked as in grad_sums.
template <class T>
void grad_apply(const T* x, const T* gy, int64_t len, T scale, T shift, bool relu, T a, T b, T c,
                T* gx) {
  if (relu) {
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) {
      const T g = x[j] * scale + shift > T(0) ? gy[j] : T(0);
      gx[j] = a * g + b * x[j] + c;
    }
  } else {
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) gx[j] = a * gy[j] + b * x[j] + c;
  }
}

template <class T>
void apply_affine(const T* x, int64_t len, T scale, T shift, bool relu, T* y) {
  if (relu) {
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) y[j] = std::max(x[j] * scale + shift, T(0));
  } else {
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) y[j] = x[j] * scale + shift;
  }
}

}  // namespace

// ---- batch norm -------------------------------------------------------------------------------
// Statistics use sums shifted by the channel's first element: one read of x gives mean and
// variance without the cancellation of a plain sum of squares when |mean| >> std.

template <class T>
void batch_norm_forward_train(const BatchNormDims& d, const T* x, const T* weight, const T* bias,
                              double eps, bool relu, T* y, T* mean, T* var, T* rstd) {
  const int64_t cs = d.c * d.s;
  const double count = static_cast<double>(d.n * d.s);
  auto finish = [&](int64_t c, double k0, double s1, double s2) {
    const double m1 = s1 / count;
    const double v = std::max(s2 / count - m1 * m1, 0.0);
    const double r = 1.0 / std::sqrt(v + eps);
    mean[c] = static_cast<T>(k0 + m1);
    var[c] = static_cast<T>(v);
    rstd[c] = static_cast<T>(r);
    // from the rounded statistics, so that backward recomputes exactly this ReLU mask
    return channel_affine(double(mean[c]), double(rstd[c]), weight ? double(weight[c]) : 1.0,
                          bias ? double(bias[c]) : 0.0);
  };
  if (d.s > 1) {
    parallel_for(d.c, 1, [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) {
        const T* xc = x + c * d.s;
        const T k0 = xc[0];
        double s1 = 0, s2 = 0;
        for (int64_t i = 0; i < d.n; ++i) shifted_sums(xc + i * cs, d.s, k0, s1, s2);
        const ChannelAffine a = finish(c, k0, s1, s2);
        for (int64_t i = 0; i < d.n; ++i) {
          apply_affine(xc + i * cs, d.s, T(a.scale), T(a.shift), relu, y + c * d.s + i * cs);
        }
      }
    });
    return;
  }
  const int64_t blocks = (d.c + kChannelBlock - 1) / kChannelBlock;
  parallel_for(blocks, 1, [&](int64_t bb, int64_t be) {
    double s1[kChannelBlock], s2[kChannelBlock];
    T k0[kChannelBlock], scale[kChannelBlock], shift[kChannelBlock];
    for (int64_t blk = bb; blk < be; ++blk) {
      const int64_t c0 = blk * kChannelBlock, nc = std::min(kChannelBlock, d.c - c0);
      for (int64_t j = 0; j < nc; ++j) k0[j] = x[c0 + j], s1[j] = 0, s2[j] = 0;
      for (int64_t i = 0; i < d.n; ++i) {
        const T* row = x + i * d.c + c0;
#pragma omp simd
        for (int64_t j = 0; j < nc; ++j) {
          const double v = double(row[j] - k0[j]);
          s1[j] += v;
          s2[j] += v * v;
        }
      }
      for (int64_t j = 0; j < nc; ++j) {
        const ChannelAffine a = finish(c0 + j, k0[j], s1[j], s2[j]);
        scale[j] = T(a.scale), shift[j] = T(a.shift);
      }
      for (int64_t i = 0; i < d.n; ++i) {
        const T* row = x + i * d.c + c0;
        T* out = y + i * d.c + c0;
#pragma omp simd
        for (int64_t j = 0; j < nc; ++j) out[j] = maybe_relu(row[j] * scale[j] + shift[j], relu);
      }
    }
  });
}

template <class T>
void batch_norm_forward_apply(const BatchNormDims& d, const T* x, const T* mean, const T* rstd,
                              const T* weight, const T* bias, bool relu, T* y) {
  std::vector<T> scale(d.c), shift(d.c);
  for (int64_t c = 0; c < d.c; ++c) {
    ChannelAffine a = channel_affine(mean[c], rstd[c], weight ? double(weight[c]) : 1.0,
                                     bias ? double(bias[c]) : 0.0);
    scale[c] = T(a.scale), shift[c] = T(a.shift);
  }
  const int64_t rows = d.n * d.c;  // (i, c) planes of s elements
  parallel_for(rows, std::max<int64_t>(1, 32768 / d.s), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t c = r % d.c;
      apply_affine(x + r * d.s, d.s, scale[c], shift[c], relu, y + r * d.s);
    }
  });
}

template <class T>
void batch_norm_backward(const BatchNormDims& d, const T* x, const T* gy, const T* mean,
                         const T* rstd, const T* weight, const T* bias, bool training, bool relu,
                         T* gx, T* gweight, T* gbias) {
  const int64_t cs = d.c * d.s;
  const double count = static_cast<double>(d.n * d.s);
  const bool need_sums = gweight || gbias || (gx && training);
  // Coefficients of gx = a g + b x + c for channel c given its sums.
  struct Coef {
    T scale, shift, a, b, c;
  };
  auto coef = [&](int64_t c, double sg, double sgx) {
    const double w = weight ? double(weight[c]) : 1.0, r = rstd[c], m = mean[c];
    const ChannelAffine af = channel_affine(m, r, w, bias ? double(bias[c]) : 0.0);
    if (gweight) gweight[c] = static_cast<T>(sgx * r);
    if (gbias) gbias[c] = static_cast<T>(sg);
    Coef k{T(af.scale), T(af.shift), T(w * r), T(0), T(0)};
    if (training) {
      const double bb = -w * r * r * r * sgx / count;
      k.b = T(bb);
      k.c = T(-w * r * sg / count - bb * m);
    }
    return k;
  };
  if (d.s > 1) {
    parallel_for(d.c, 1, [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) {
        const int64_t base = c * d.s;
        const ChannelAffine af = channel_affine(mean[c], rstd[c], weight ? double(weight[c]) : 1.0,
                                                bias ? double(bias[c]) : 0.0);
        double sg = 0, sgx = 0;
        if (need_sums) {
          for (int64_t i = 0; i < d.n; ++i) {
            grad_sums(x + base + i * cs, gy + base + i * cs, d.s, mean[c], T(af.scale),
                      T(af.shift), relu, sg, sgx);
          }
        }
        const Coef k = coef(c, sg, sgx);
        if (!gx) continue;
        for (int64_t i = 0; i < d.n; ++i) {
          const int64_t o = base + i * cs;
          grad_apply(x + o, gy + o, d.s, k.scale, k.shift, relu, k.a, k.b, k.c, gx + o);
        }
      }
    });
    return;
  }
  const int64_t blocks = (d.c + kChannelBlock - 1) / kChannelBlock;
  parallel_for(blocks, 1, [&](int64_t bb, int64_t be) {
    double sg[kChannelBlock], sgx[kChannelBlock];
    T m[kChannelBlock], sc[kChannelBlock], sh[kChannelBlock];
    T ka[kChannelBlock], kb[kChannelBlock], kc[kChannelBlock];
    for (int64_t blk = bb; blk < be; ++blk) {
      const int64_t c0 = blk * kChannelBlock, nc = std::min(kChannelBlock, d.c - c0);
      for (int64_t j = 0; j < nc; ++j) {
        const int64_t c = c0 + j;
        const ChannelAffine af = channel_affine(mean[c], rstd[c], weight ? double(weight[c]) : 1.0,
                                                bias ? double(bias[c]) : 0.0);
        m[j] = mean[c], sc[j] = T(af.scale), sh[j] = T(af.shift), sg[j] = 0, sgx[j] = 0;
      }
      if (need_sums) {
        for (int64_t i = 0; i < d.n; ++i) {
          const T* xr = x + i * d.c + c0;
          const T* gr = gy + i * d.c + c0;
#pragma omp simd
          for (int64_t j = 0; j < nc; ++j) {
            const T g = !relu || xr[j] * sc[j] + sh[j] > T(0) ? gr[j] : T(0);
            sg[j] += double(g);
            sgx[j] += double(g * (xr[j] - m[j]));
          }
        }
      }
      for (int64_t j = 0; j < nc; ++j) {
        const Coef k = coef(c0 + j, sg[j], sgx[j]);
        ka[j] = k.a, kb[j] = k.b, kc[j] = k.c;
      }
      if (!gx) continue;
      for (int64_t i = 0; i < d.n; ++i) {
        const T* xr = x + i * d.c + c0;
        const T* gr = gy + i * d.c + c0;
        T* out = gx + i * d.c + c0;
#pragma omp simd
        for (int64_t j = 0; j < nc; ++j) {
          const T g = !relu || xr[j] * sc[j] + sh[j] > T(0) ? gr[j] : T(0);
          out[j] = ka[j] * g + kb[j] * xr[j] + kc[j];
        }
      }
    }
  });
}

// ---- layer norm -------------------------------------------------------------------------------

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
                         int64_t m, int64_t k, T* gx, T* gweight, T* gbias) {
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

// ---- dropout ----------------------------------------------------------------------------------

template <class T>
void dropout_forward(uint64_t seed, uint64_t offset, int64_t n, float keep, T scale, const T* x,
                     T* y, uint8_t* mask) {
  const int64_t blocks = static_cast<int64_t>(dropout_blocks(n));
  parallel_for(blocks, 4096, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk) {
      const Philox4 r = philox_block(seed, offset, static_cast<uint64_t>(blk));
      const int64_t i0 = blk * 4;
      for (int lane = 0; lane < 4 && i0 + lane < n; ++lane) {
        const bool kept = philox_unit_f32(r.v[lane]) < keep;
        mask[i0 + lane] = kept ? 1 : 0;
        // a multiply rather than a select, so that dropped inf / NaN give NaN as in PyTorch
        y[i0 + lane] = x[i0 + lane] * (kept ? scale : T(0));
      }
    }
  });
}

template <class T>
void dropout_backward(int64_t n, T scale, const T* gy, const uint8_t* mask, T* gx) {
  parallel_for(n, 1 << 15, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) gx[i] = gy[i] * (mask[i] ? scale : T(0));
  });
}

#define MEL_NORM_INSTANTIATE(T)                                                                   \
  template void batch_norm_forward_train<T>(const BatchNormDims&, const T*, const T*, const T*,   \
                                            double, bool, T*, T*, T*, T*);                        \
  template void batch_norm_forward_apply<T>(const BatchNormDims&, const T*, const T*, const T*,   \
                                            const T*, const T*, bool, T*);                        \
  template void batch_norm_backward<T>(const BatchNormDims&, const T*, const T*, const T*,        \
                                       const T*, const T*, const T*, bool, bool, T*, T*, T*);     \
  template void layer_norm_forward<T>(const T*, int64_t, int64_t, const T*, const T*, double, T*, \
                                      T*, T*);                                                    \
  template void layer_norm_backward<T>(const T*, const T*, const T*, const T*, const T*, int64_t, \
                                       int64_t, T*, T*, T*);                                      \
  template void dropout_forward<T>(uint64_t, uint64_t, int64_t, float, T, const T*, T*,           \
                                   uint8_t*);                                                     \
  template void dropout_backward<T>(int64_t, T, const T*, const uint8_t*, T*);
MEL_NORM_INSTANTIATE(float)
MEL_NORM_INSTANTIATE(double)
#undef MEL_NORM_INSTANTIATE

}  // namespace mel::kernels::cpu
