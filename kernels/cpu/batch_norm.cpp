#include "kernels/cpu/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <omp.h>

#include "kernels/cpu/copy.h"
#include "kernels/strided.h"

namespace mel::kernels::cpu {

namespace {

// Plane path (s > kMaxColumnS): per-plane partial sums run in T over at most this many elements
// (vectorised, short enough to stay accurate in f32) and are added in double.
constexpr int64_t kPlaneChunk = 4096;
// Column path (s <= kMaxColumnS): x is seen as rows [n, c * s] and split into column blocks of
// whole channels, about kBlockCols wide; per-column sums run in T over kRowChunk rows at a time.
constexpr int64_t kMaxColumnS = 2048;
constexpr int64_t kBlockCols = 1024;
constexpr int64_t kRowChunk = 64;

// Affine form of one channel: y = x * scale + shift.
struct ChannelAffine {
  double scale, shift;
};
ChannelAffine channel_affine(double mean, double rstd, double w, double b) {
  return {w * rstd, b - mean * w * rstd};
}

// Brings the next row's segment towards the cache while the current one is processed: rows of a
// column block are far apart, so the hardware prefetcher restarts cold on each. Prefetching the
// output rows for writing too saves about 15% of the forward pass (measured, bench_norm).
template <class T>
void prefetch_span(const T* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  const int64_t bytes = n * static_cast<int64_t>(sizeof(T));
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b);
}
template <class T>
void prefetch_span_write(T* p, int64_t n) {
  char* c = reinterpret_cast<char*>(p);
  const int64_t bytes = n * static_cast<int64_t>(sizeof(T));
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b, 1);
}

// Channels per column block, and the block count (a multiple of the thread count when there are
// enough channels, so the threads get equal shares). The sums do not depend on the blocking.
struct ColumnBlocks {
  int64_t per_block, count;
};
ColumnBlocks column_blocks(const BatchNormDims& d) {
  int64_t per = std::max<int64_t>(1, kBlockCols / d.s);
  int64_t count = (d.c + per - 1) / per;
  const int64_t t = omp_get_max_threads();
  count = std::min(d.c, (count + t - 1) / t * t);
  per = (d.c + count - 1) / count;
  return {per, (d.c + per - 1) / per};
}

// Per-column accumulators of one block: row(n, a1, a2) adds row n's terms into a1, a2 (T); they
// are flushed into d1, d2 (double) every kRowChunk rows.
template <class T>
struct ColumnSums {
  std::vector<T> a1, a2;
  std::vector<double> d1, d2;
  explicit ColumnSums(int64_t w) : a1(w), a2(w), d1(w), d2(w) {}

  template <class RowFn>
  void run(int64_t rows, int64_t w, RowFn&& row) {
    std::fill_n(d1.begin(), w, 0.0);
    std::fill_n(d2.begin(), w, 0.0);
    for (int64_t n0 = 0; n0 < rows; n0 += kRowChunk) {
      std::fill_n(a1.begin(), w, T(0));
      std::fill_n(a2.begin(), w, T(0));
      for (int64_t n = n0; n < std::min(rows, n0 + kRowChunk); ++n) row(n, a1.data(), a2.data());
      for (int64_t j = 0; j < w; ++j) d1[j] += double(a1[j]), d2[j] += double(a2[j]);
    }
  }
  // Sums of channel k of the block (columns [k s, (k + 1) s)).
  void channel(int64_t k, int64_t s, double& s1, double& s2) const {
    s1 = 0;
    s2 = 0;
    for (int64_t j = k * s; j < (k + 1) * s; ++j) s1 += d1[j], s2 += d2[j];
  }
};

// sum(v) and sum(v * v) of v = p[j] - shift over j < len (plane path).
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
#pragma omp simd reduction(+ : a1, a2)
    for (int64_t j = 0; j < e; ++j) {
      const T g = !relu || xq[j] * scale + shift > T(0) ? gq[j] : T(0);
      a1 += g;
      a2 += g * (xq[j] - mean);
    }
    sg += a1;
    sgx += a2;
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

// Per-column form of apply_affine (scale and shift vary along the row).
template <class T>
void apply_affine_cols(const T* x, int64_t len, const T* scale, const T* shift, bool relu, T* y) {
  if (relu) {
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) y[j] = std::max(x[j] * scale[j] + shift[j], T(0));
  } else {
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) y[j] = x[j] * scale[j] + shift[j];
  }
}

}  // namespace

// ---- batch norm -------------------------------------------------------------------------------
// Statistics use sums shifted by the channel's first element: one read of x gives mean and
// variance without the cancellation of a plain sum of squares when |mean| >> std. Each column
// block (or channel, on the plane path) is finished before the next, so the second pass over it
// reads cache rather than memory.

template <class T>
void batch_norm_forward_train(const BatchNormDims& d, const T* x, const T* weight, const T* bias,
                              double eps, bool relu, T* y, T* mean, T* var, T* rstd, void*) {
  if (d.n * d.c * d.s == 0) return;  // the caller rejects empty batches; nothing for no channels
  const int64_t L = d.c * d.s;
  const double count = static_cast<double>(d.n * d.s);
  auto finish = [&](int64_t c, double k0, double s1, double s2) {
    const double m1 = s1 / count;
    const double v = std::max(s2 / count - m1 * m1, 0.0);
    mean[c] = static_cast<T>(k0 + m1);
    var[c] = static_cast<T>(v);
    rstd[c] = static_cast<T>(1.0 / std::sqrt(v + eps));
    // from the rounded statistics, so that backward recomputes exactly this ReLU mask
    return channel_affine(double(mean[c]), double(rstd[c]), weight ? double(weight[c]) : 1.0,
                          bias ? double(bias[c]) : 0.0);
  };
  if (d.s > kMaxColumnS) {
    parallel_for(d.c, 1, [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) {
        const T* xc = x + c * d.s;
        const T k0 = xc[0];
        double s1 = 0, s2 = 0;
        for (int64_t i = 0; i < d.n; ++i) shifted_sums(xc + i * L, d.s, k0, s1, s2);
        const ChannelAffine a = finish(c, k0, s1, s2);
        for (int64_t i = 0; i < d.n; ++i) {
          apply_affine(xc + i * L, d.s, T(a.scale), T(a.shift), relu, y + c * d.s + i * L);
        }
      }
    });
    return;
  }
  const ColumnBlocks cb = column_blocks(d);
  parallel_for(cb.count, 1, [&](int64_t bb, int64_t be) {
    const int64_t maxw = cb.per_block * d.s;
    ColumnSums<T> sums(maxw);
    std::vector<T> k(maxw), scale(maxw), shift(maxw);
    for (int64_t blk = bb; blk < be; ++blk) {
      const int64_t c0 = blk * cb.per_block, nc = std::min(cb.per_block, d.c - c0);
      const int64_t l0 = c0 * d.s, w = nc * d.s;
      for (int64_t j = 0; j < w; ++j) k[j] = x[l0 + j / d.s * d.s];
      sums.run(d.n, w, [&](int64_t n, T* a1, T* a2) {
        const T* row = x + n * L + l0;
        if (n + 1 < d.n) prefetch_span(row + L, w);
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) {
          const T v = row[j] - k[j];
          a1[j] += v;
          a2[j] += v * v;
        }
      });
      for (int64_t q = 0; q < nc; ++q) {
        double s1, s2;
        sums.channel(q, d.s, s1, s2);
        const ChannelAffine a = finish(c0 + q, k[q * d.s], s1, s2);
        std::fill_n(scale.begin() + q * d.s, d.s, T(a.scale));
        std::fill_n(shift.begin() + q * d.s, d.s, T(a.shift));
      }
      for (int64_t n = 0; n < d.n; ++n) {
        if (n + 1 < d.n) prefetch_span_write(y + (n + 1) * L + l0, w);
        apply_affine_cols(x + n * L + l0, w, scale.data(), shift.data(), relu, y + n * L + l0);
      }
    }
  });
}

template <class T>
void batch_norm_forward_apply(const BatchNormDims& d, const T* x, const T* mean, const T* rstd,
                              const T* weight, const T* bias, bool relu, T* y, void*) {
  std::vector<T> scale(d.c), shift(d.c);
  for (int64_t c = 0; c < d.c; ++c) {
    ChannelAffine a = channel_affine(mean[c], rstd[c], weight ? double(weight[c]) : 1.0,
                                     bias ? double(bias[c]) : 0.0);
    scale[c] = T(a.scale), shift[c] = T(a.shift);
  }
  if (d.s >= 64) {
    const int64_t planes = d.n * d.c;
    parallel_for(planes, std::max<int64_t>(1, 32768 / d.s), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t c = r % d.c;
        apply_affine(x + r * d.s, d.s, scale[c], shift[c], relu, y + r * d.s);
      }
    });
    return;
  }
  // Short planes: whole rows with the statistics expanded per column.
  const int64_t L = d.c * d.s;
  std::vector<T> sc(L), sh(L);
  for (int64_t l = 0; l < L; ++l) sc[l] = scale[l / d.s], sh[l] = shift[l / d.s];
  parallel_for(d.n, std::max<int64_t>(1, 32768 / std::max<int64_t>(L, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t n = b; n < e; ++n) {
                   apply_affine_cols(x + n * L, L, sc.data(), sh.data(), relu, y + n * L);
                 }
               });
}

namespace {

// batch_norm_backward's arguments. coef() turns channel c's sums sum(g) and sum(g (x - mean)) (g:
// gy masked by the recomputed ReLU) into gx = a g + b x + c and stores the parameter gradients.
template <class T>
struct BatchNormGrad {
  struct Coef {
    T scale, shift, a, b, c;
  };
  const BatchNormDims& d;
  const T *x, *gy, *mean, *rstd, *weight, *bias;
  bool training, relu;
  T *gx, *gweight, *gbias;
  int64_t L = d.c * d.s;
  double count = static_cast<double>(d.n * d.s);
  bool need_sums = gweight || gbias || (gx && training);

  ChannelAffine affine(int64_t c) const {
    return channel_affine(mean[c], rstd[c], weight ? double(weight[c]) : 1.0,
                          bias ? double(bias[c]) : 0.0);
  }
  Coef coef(int64_t c, double sg, double sgx) const {
    const double w = weight ? double(weight[c]) : 1.0, r = rstd[c], m = mean[c];
    const ChannelAffine af = affine(c);
    if (gweight) gweight[c] = static_cast<T>(sgx * r);
    if (gbias) gbias[c] = static_cast<T>(sg);
    Coef k{T(af.scale), T(af.shift), T(w * r), T(0), T(0)};
    if (training) {
      const double bb = -w * r * r * r * sgx / count;
      k.b = T(bb);
      k.c = T(-w * r * sg / count - bb * m);
    }
    return k;
  }
};

// Plane path (s > kMaxColumnS): one channel at a time, sums over its n planes then gx.
template <class T>
void batch_norm_backward_planes(const BatchNormGrad<T>& bg) {
  const BatchNormDims& d = bg.d;
  const T *x = bg.x, *gy = bg.gy;
  const int64_t L = bg.L;
  const bool relu = bg.relu;
  parallel_for(d.c, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t base = c * d.s;
      const ChannelAffine af = bg.affine(c);
      double sg = 0, sgx = 0;
      if (bg.need_sums) {
        for (int64_t i = 0; i < d.n; ++i) {
          grad_sums(x + base + i * L, gy + base + i * L, d.s, bg.mean[c], T(af.scale), T(af.shift),
                    relu, sg, sgx);
        }
      }
      const auto k = bg.coef(c, sg, sgx);
      if (!bg.gx) continue;
      for (int64_t i = 0; i < d.n; ++i) {
        const T* xr = x + base + i * L;
        const T* gr = gy + base + i * L;
        T* out = bg.gx + base + i * L;
#pragma omp simd
        for (int64_t j = 0; j < d.s; ++j) {
          const T g = !relu || xr[j] * k.scale + k.shift > T(0) ? gr[j] : T(0);
          out[j] = k.a * g + k.b * xr[j] + k.c;
        }
      }
    }
  });
}

// Column path (s <= kMaxColumnS): blocks of whole channels, per-column sums over the n rows, then
// gx with the coefficients spread along the columns.
template <class T>
void batch_norm_backward_columns(const BatchNormGrad<T>& bg) {
  const BatchNormDims& d = bg.d;
  const T *x = bg.x, *gy = bg.gy, *mean = bg.mean;
  T* gx = bg.gx;
  const int64_t L = bg.L;
  const bool relu = bg.relu, need_sums = bg.need_sums;
  const ColumnBlocks cb = column_blocks(d);
  parallel_for(cb.count, 1, [&](int64_t bb, int64_t be) {
    const int64_t maxw = cb.per_block * d.s;
    ColumnSums<T> sums(maxw);
    std::vector<T> m(maxw), sc(maxw), sh(maxw), ka(maxw), kb(maxw), kc(maxw);
    for (int64_t blk = bb; blk < be; ++blk) {
      const int64_t c0 = blk * cb.per_block, nc = std::min(cb.per_block, d.c - c0);
      const int64_t l0 = c0 * d.s, w = nc * d.s;
      for (int64_t q = 0; q < nc; ++q) {
        const ChannelAffine af = bg.affine(c0 + q);
        std::fill_n(m.begin() + q * d.s, d.s, mean[c0 + q]);
        std::fill_n(sc.begin() + q * d.s, d.s, T(af.scale));
        std::fill_n(sh.begin() + q * d.s, d.s, T(af.shift));
      }
      if (need_sums) {
        sums.run(d.n, w, [&](int64_t n, T* a1, T* a2) {
          const T* xr = x + n * L + l0;
          const T* gr = gy + n * L + l0;
          if (n + 1 < d.n) prefetch_span(xr + L, w), prefetch_span(gr + L, w);
#pragma omp simd
          for (int64_t j = 0; j < w; ++j) {
            const T g = !relu || xr[j] * sc[j] + sh[j] > T(0) ? gr[j] : T(0);
            a1[j] += g;
            a2[j] += g * (xr[j] - m[j]);
          }
        });
      }
      for (int64_t q = 0; q < nc; ++q) {
        double sg = 0, sgx = 0;
        if (need_sums) sums.channel(q, d.s, sg, sgx);
        const auto k = bg.coef(c0 + q, sg, sgx);
        std::fill_n(ka.begin() + q * d.s, d.s, k.a);
        std::fill_n(kb.begin() + q * d.s, d.s, k.b);
        std::fill_n(kc.begin() + q * d.s, d.s, k.c);
      }
      if (!gx) continue;
      for (int64_t n = 0; n < d.n; ++n) {
        const T* xr = x + n * L + l0;
        const T* gr = gy + n * L + l0;
        T* out = gx + n * L + l0;
        if (n + 1 < d.n) {
          prefetch_span_write(out + L, w);
          if (!need_sums) prefetch_span(xr + L, w), prefetch_span(gr + L, w);
        }
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) {
          const T g = !relu || xr[j] * sc[j] + sh[j] > T(0) ? gr[j] : T(0);
          out[j] = ka[j] * g + kb[j] * xr[j] + kc[j];
        }
      }
    }
  });
}

}  // namespace

template <class T>
void batch_norm_backward(const BatchNormDims& d, const T* x, const T* gy, const T* mean,
                         const T* rstd, const T* weight, const T* bias, bool training, bool relu,
                         T* gx, T* gweight, T* gbias, void*) {
  if (d.n * d.c * d.s == 0) {  // empty input (eval mode): the parameter gradients are zero
    for (int64_t c = 0; c < d.c; ++c) {
      if (gweight) gweight[c] = T(0);
      if (gbias) gbias[c] = T(0);
    }
    return;
  }
  const BatchNormGrad<T> bg{d, x, gy, mean, rstd, weight, bias, training, relu, gx, gweight, gbias};
  if (d.s > kMaxColumnS) {
    batch_norm_backward_planes(bg);
  } else {
    batch_norm_backward_columns(bg);
  }
}

template <class R, class T>
void batch_norm_update_running(int64_t c, R* running, int64_t stride, const T* stat,
                               double momentum, double factor) {
  for (int64_t i = 0; i < c; ++i) {
    const double old = convert<double>(running[i * stride]);
    running[i * stride] =
        convert<R>((1.0 - momentum) * old + momentum * factor * static_cast<double>(stat[i]));
  }
}

template <class R, class T>
void batch_norm_eval_stats(int64_t c, const R* running_mean, int64_t mean_stride,
                           const R* running_var, int64_t var_stride, double eps, T* mean, T* rstd) {
  for (int64_t i = 0; i < c; ++i) {
    mean[i] = static_cast<T>(convert<double>(running_mean[i * mean_stride]));
    rstd[i] = static_cast<T>(1.0 / std::sqrt(convert<double>(running_var[i * var_stride]) + eps));
  }
}

#define MEL_RUNNING_INSTANTIATE(R, T)                                                              \
  template void batch_norm_update_running<R, T>(int64_t, R*, int64_t, const T*, double, double);   \
  template void batch_norm_eval_stats<R, T>(int64_t, const R*, int64_t, const R*, int64_t, double, \
                                            T*, T*);
#define MEL_RUNNING_INSTANTIATE_ALL(T) \
  MEL_RUNNING_INSTANTIATE(float, T)    \
  MEL_RUNNING_INSTANTIATE(double, T)   \
  MEL_RUNNING_INSTANTIATE(bfloat16, T) \
  MEL_RUNNING_INSTANTIATE(half, T)
MEL_RUNNING_INSTANTIATE_ALL(float)
MEL_RUNNING_INSTANTIATE_ALL(double)
#undef MEL_RUNNING_INSTANTIATE_ALL
#undef MEL_RUNNING_INSTANTIATE

#define MEL_NORM_INSTANTIATE(T)                                                                 \
  template void batch_norm_forward_train<T>(const BatchNormDims&, const T*, const T*, const T*, \
                                            double, bool, T*, T*, T*, T*, void*);               \
  template void batch_norm_forward_apply<T>(const BatchNormDims&, const T*, const T*, const T*, \
                                            const T*, const T*, bool, T*, void*);               \
  template void batch_norm_backward<T>(const BatchNormDims&, const T*, const T*, const T*,      \
                                       const T*, const T*, const T*, bool, bool, T*, T*, T*,    \
                                       void*);
MEL_NORM_INSTANTIATE(float)
MEL_NORM_INSTANTIATE(double)
#undef MEL_NORM_INSTANTIATE

}  // namespace mel::kernels::cpu
