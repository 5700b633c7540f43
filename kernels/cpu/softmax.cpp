#include "kernels/cpu/softmax.h"

#include "kernels/cpu/reduce.h"

#include <algorithm>
#include <cmath>

#include "kernels/strided.h"

namespace mel::kernels::cpu {

namespace {

// Elements of work per parallel chunk: rows are short, exp is not cheap, so chunks of a few
// thousand elements keep thread start-up small against the work.
constexpr int64_t kChunkWork = 8192;
// Columns of a B > 1 block handled together: per-column max and sum live in small stack buffers
// while the C rows of the strip are walked contiguously.
constexpr int64_t kStrip = 64;

int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, kChunkWork / std::max<int64_t>(work_per_item, 1));
}

// kLog selects log_softmax. Sums accumulate in double so that float rows of many classes keep
// their precision.
template <class T, bool kLog>
void softmax_impl(const T* x, int64_t A, int64_t C, int64_t B, T* y) {
  if (A == 0 || C == 0 || B == 0) return;
  if (B == 1) {
    parallel_for(A, grain_for(C), [&](int64_t lo, int64_t hi) {
      for (int64_t a = lo; a < hi; ++a) {
        const T* xr = x + a * C;
        T* yr = y + a * C;
        T m = xr[0];
        for (int64_t c = 1; c < C; ++c) m = std::max(m, xr[c]);
        double s = 0;
        if constexpr (kLog) {
          for (int64_t c = 0; c < C; ++c) s += std::exp(xr[c] - m);
          const T ls = static_cast<T>(std::log(s));
          for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) - ls;
        } else {
          for (int64_t c = 0; c < C; ++c) {
            const T e = std::exp(xr[c] - m);
            yr[c] = e;
            s += e;
          }
          const T inv = static_cast<T>(1.0 / s);
          for (int64_t c = 0; c < C; ++c) yr[c] *= inv;
        }
      }
    });
    return;
  }
  const int64_t strips = (B + kStrip - 1) / kStrip;
  parallel_for(A * strips, grain_for(C * std::min(B, kStrip)), [&](int64_t lo, int64_t hi) {
    T m[kStrip];
    double s[kStrip];
    for (int64_t job = lo; job < hi; ++job) {
      const int64_t a = job / strips;
      const int64_t b0 = (job % strips) * kStrip;
      const int64_t nb = std::min(kStrip, B - b0);
      const T* xb = x + a * C * B + b0;
      T* yb = y + a * C * B + b0;
      for (int64_t j = 0; j < nb; ++j) {
        m[j] = xb[j];
        s[j] = 0;
      }
      for (int64_t c = 1; c < C; ++c) {
        const T* row = xb + c * B;
        for (int64_t j = 0; j < nb; ++j) m[j] = std::max(m[j], row[j]);
      }
      for (int64_t c = 0; c < C; ++c) {
        const T* row = xb + c * B;
        T* out = yb + c * B;
        for (int64_t j = 0; j < nb; ++j) {
          const T e = std::exp(row[j] - m[j]);
          if constexpr (!kLog) out[j] = e;
          s[j] += e;
        }
      }
      if constexpr (kLog) {
        T ls[kStrip];
        for (int64_t j = 0; j < nb; ++j) ls[j] = static_cast<T>(std::log(s[j]));
        for (int64_t c = 0; c < C; ++c) {
          const T* row = xb + c * B;
          T* out = yb + c * B;
          for (int64_t j = 0; j < nb; ++j) out[j] = (row[j] - m[j]) - ls[j];
        }
      } else {
        T inv[kStrip];
        for (int64_t j = 0; j < nb; ++j) inv[j] = static_cast<T>(1.0 / s[j]);
        for (int64_t c = 0; c < C; ++c) {
          T* out = yb + c * B;
          for (int64_t j = 0; j < nb; ++j) out[j] *= inv[j];
        }
      }
    }
  });
}

// softmax: gx = y * (gy - sum(gy * y)); log_softmax: gx = gy - exp(y) * sum(gy).
template <class T, bool kLog>
void softmax_backward_impl(const T* y, const T* gy, int64_t A, int64_t C, int64_t B, T* gx) {
  if (A == 0 || C == 0 || B == 0) return;
  if (B == 1) {
    parallel_for(A, grain_for(C), [&](int64_t lo, int64_t hi) {
      for (int64_t a = lo; a < hi; ++a) {
        const T* yr = y + a * C;
        const T* gr = gy + a * C;
        T* out = gx + a * C;
        double s = 0;
        if constexpr (kLog) {
          for (int64_t c = 0; c < C; ++c) s += gr[c];
          const T st = static_cast<T>(s);
          for (int64_t c = 0; c < C; ++c) out[c] = gr[c] - std::exp(yr[c]) * st;
        } else {
          for (int64_t c = 0; c < C; ++c) s += static_cast<double>(gr[c]) * yr[c];
          const T st = static_cast<T>(s);
          for (int64_t c = 0; c < C; ++c) out[c] = yr[c] * (gr[c] - st);
        }
      }
    });
    return;
  }
  const int64_t strips = (B + kStrip - 1) / kStrip;
  parallel_for(A * strips, grain_for(C * std::min(B, kStrip)), [&](int64_t lo, int64_t hi) {
    double s[kStrip];
    T st[kStrip];
    for (int64_t job = lo; job < hi; ++job) {
      const int64_t a = job / strips;
      const int64_t b0 = (job % strips) * kStrip;
      const int64_t nb = std::min(kStrip, B - b0);
      const int64_t base = a * C * B + b0;
      for (int64_t j = 0; j < nb; ++j) s[j] = 0;
      for (int64_t c = 0; c < C; ++c) {
        const T* yr = y + base + c * B;
        const T* gr = gy + base + c * B;
        for (int64_t j = 0; j < nb; ++j) {
          if constexpr (kLog) {
            s[j] += gr[j];
          } else {
            s[j] += static_cast<double>(gr[j]) * yr[j];
          }
        }
      }
      for (int64_t j = 0; j < nb; ++j) st[j] = static_cast<T>(s[j]);
      for (int64_t c = 0; c < C; ++c) {
        const T* yr = y + base + c * B;
        const T* gr = gy + base + c * B;
        T* out = gx + base + c * B;
        for (int64_t j = 0; j < nb; ++j) {
          if constexpr (kLog) {
            out[j] = gr[j] - std::exp(yr[j]) * st[j];
          } else {
            out[j] = yr[j] * (gr[j] - st[j]);
          }
        }
      }
    }
  });
}

}  // namespace

template <class T>
void softmax(const T* x, int64_t A, int64_t C, int64_t B, T* y) {
  softmax_impl<T, false>(x, A, C, B, y);
}

template <class T>
void log_softmax(const T* x, int64_t A, int64_t C, int64_t B, T* y) {
  softmax_impl<T, true>(x, A, C, B, y);
}

template <class T>
void softmax_backward(const T* y, const T* gy, int64_t A, int64_t C, int64_t B, T* gx) {
  softmax_backward_impl<T, false>(y, gy, A, C, B, gx);
}

template <class T>
void log_softmax_backward(const T* y, const T* gy, int64_t A, int64_t C, int64_t B, T* gx) {
  softmax_backward_impl<T, true>(y, gy, A, C, B, gx);
}

template <class T>
void cross_entropy_forward(const T* logits, const int64_t* labels, int64_t N, int64_t C, double eps,
                           int64_t ignore_index, T* loss, T* lse) {
  parallel_for(N, grain_for(C), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const int64_t label = labels[n];
      if (label == ignore_index) {
        loss[n] = T(0);
        lse[n] = T(0);
        continue;
      }
      const T* xr = logits + n * C;
      T m = xr[0];
      for (int64_t c = 1; c < C; ++c) m = std::max(m, xr[c]);
      double s = 0, sx = 0;
      for (int64_t c = 0; c < C; ++c) s += std::exp(xr[c] - m);
      const double l = static_cast<double>(m) + std::log(s);
      double row = (1.0 - eps) * (l - static_cast<double>(xr[label]));
      // Skipped when eps == 0 so that a -inf logit of another class does not turn 0 * inf into NaN.
      if (eps > 0) {
        for (int64_t c = 0; c < C; ++c) sx += xr[c];
        row += eps * (l - sx / static_cast<double>(C));
      }
      loss[n] = static_cast<T>(row);
      lse[n] = static_cast<T>(l);
    }
  });
}

template <class T>
void cross_entropy_backward(const T* logits, const int64_t* labels, const T* lse, const T* gy,
                            int64_t gy_stride, double alpha, int64_t N, int64_t C, double eps,
                            int64_t ignore_index, T* dlogits, const double* alpha_dev) {
  const double a = alpha_dev ? alpha * *alpha_dev : alpha;
  const T off = static_cast<T>(eps / static_cast<double>(C));
  const T on = static_cast<T>(1.0 - eps + eps / static_cast<double>(C));
  parallel_for(N, grain_for(C), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      T* out = dlogits + n * C;
      const int64_t label = labels[n];
      if (label == ignore_index) {
        std::fill(out, out + C, T(0));
        continue;
      }
      const T* xr = logits + n * C;
      const T l = lse[n];
      const T scale = static_cast<T>(static_cast<double>(gy[n * gy_stride]) * a);
      for (int64_t c = 0; c < C; ++c) out[c] = (std::exp(xr[c] - l) - off) * scale;
      out[label] = (std::exp(xr[label] - l) - on) * scale;
    }
  });
}

template <class T>
void cross_entropy_reduce(const T* loss, const int64_t* labels, int64_t N, int64_t ignore_index,
                          bool mean, T* out, double* scale) {
  sum_axis<T>(loss, 1, N, 1, out, nullptr);
  int64_t count = 0;
  if (mean || scale) {
    for (int64_t n = 0; n < N; ++n) count += labels[n] != ignore_index;
  }
  if (mean) out[0] = out[0] / static_cast<T>(count);
  if (scale) *scale = mean && count > 0 ? 1.0 / static_cast<double>(count) : 1.0;
}

#define MEL_INSTANTIATE_SOFTMAX(T)                                                               \
  template void softmax<T>(const T*, int64_t, int64_t, int64_t, T*);                             \
  template void log_softmax<T>(const T*, int64_t, int64_t, int64_t, T*);                         \
  template void softmax_backward<T>(const T*, const T*, int64_t, int64_t, int64_t, T*);          \
  template void log_softmax_backward<T>(const T*, const T*, int64_t, int64_t, int64_t, T*);      \
  template void cross_entropy_forward<T>(const T*, const int64_t*, int64_t, int64_t, double,     \
                                         int64_t, T*, T*);                                       \
  template void cross_entropy_backward<T>(const T*, const int64_t*, const T*, const T*, int64_t, \
                                          double, int64_t, int64_t, double, int64_t, T*,         \
                                          const double*);                                        \
  template void cross_entropy_reduce<T>(const T*, const int64_t*, int64_t, int64_t, bool, T*,    \
                                        double*);
MEL_INSTANTIATE_SOFTMAX(float)
MEL_INSTANTIATE_SOFTMAX(double)

}  // namespace mel::kernels::cpu
