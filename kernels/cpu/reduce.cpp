#include "kernels/cpu/reduce.h"

#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/strided.h"

namespace mel::kernels::cpu {

template <class T>
void sum_axis(const T* x, int64_t A, int64_t R, int64_t B, T* out, void*) {
  using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;
  if (B == 1 && A < 8 && R >= (int64_t(1) << 16)) {
    // Few long rows: fixed-size chunks summed in parallel, then added in chunk order, so the
    // result does not depend on the number of threads.
    constexpr int64_t kChunk = int64_t(1) << 15;
    const int64_t chunks = (R + kChunk - 1) / kChunk;
    std::vector<Acc> part(static_cast<size_t>(A * chunks));
    parallel_for(A * chunks, 1, [&](int64_t b, int64_t e) {
      for (int64_t job = b; job < e; ++job) {
        const int64_t a = job / chunks, c = job % chunks;
        const T* p = x + a * R + c * kChunk;
        const int64_t n = std::min(kChunk, R - c * kChunk);
        Acc s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int64_t r = 0;
        for (; r + 4 <= n; r += 4) {
          s0 += p[r];
          s1 += p[r + 1];
          s2 += p[r + 2];
          s3 += p[r + 3];
        }
        for (; r < n; ++r) s0 += p[r];
        part[job] = (s0 + s1) + (s2 + s3);
      }
    });
    for (int64_t a = 0; a < A; ++a) {
      Acc s = 0;
      for (int64_t c = 0; c < chunks; ++c) s += part[a * chunks + c];
      out[a] = static_cast<T>(s);
    }
    return;
  }
  if (B == 1) {
    parallel_for(A, std::max<int64_t>(1, 16384 / std::max<int64_t>(R, 1)),
                 [&](int64_t b, int64_t e) {
                   for (int64_t a = b; a < e; ++a) {
                     const T* row = x + a * R;
                     Acc s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                     int64_t r = 0;
                     for (; r + 4 <= R; r += 4) {
                       s0 += row[r];
                       s1 += row[r + 1];
                       s2 += row[r + 2];
                       s3 += row[r + 3];
                     }
                     for (; r < R; ++r) s0 += row[r];
                     out[a] = static_cast<T>((s0 + s1) + (s2 + s3));
                   }
                 });
    return;
  }
  // Columns: parallel over (a, block of b); accumulate a strip of B in registers/cache.
  constexpr int64_t kStrip = 256;
  const int64_t strips = (B + kStrip - 1) / kStrip;
  parallel_for(A * strips, std::max<int64_t>(1, 4096 / std::max<int64_t>(R, 1)),
               [&](int64_t b, int64_t e) {
                 Acc acc[kStrip];
                 for (int64_t job = b; job < e; ++job) {
                   const int64_t a = job / strips;
                   const int64_t b0 = (job % strips) * kStrip;
                   const int64_t nb = std::min(kStrip, B - b0);
                   for (int64_t j = 0; j < nb; ++j) acc[j] = 0;
                   const T* base = x + a * R * B + b0;
                   for (int64_t r = 0; r < R; ++r) {
                     const T* row = base + r * B;
                     for (int64_t j = 0; j < nb; ++j) acc[j] += row[j];
                   }
                   for (int64_t j = 0; j < nb; ++j) out[a * B + b0 + j] = static_cast<T>(acc[j]);
                 }
               });
}

template void sum_axis<float>(const float*, int64_t, int64_t, int64_t, float*, void*);
template void sum_axis<double>(const double*, int64_t, int64_t, int64_t, double*, void*);
template void sum_axis<int32_t>(const int32_t*, int64_t, int64_t, int64_t, int32_t*, void*);
template void sum_axis<int64_t>(const int64_t*, int64_t, int64_t, int64_t, int64_t*, void*);

template <class T>
void max_axis(const T* x, int64_t A, int64_t R, int64_t B, T* out, int64_t* idx, void*) {
  parallel_for(A * B, std::max<int64_t>(1, 8192 / std::max<int64_t>(R, 1)),
               [&](int64_t lo, int64_t hi) {
                 for (int64_t j = lo; j < hi; ++j) {
                   const int64_t a = j / B, b = j % B;
                   const T* p = x + a * R * B + b;
                   T best = p[0];
                   int64_t bi = 0;
                   bool nan = false;
                   if constexpr (std::is_floating_point_v<T>) nan = std::isnan(best);
                   for (int64_t r = 1; r < R && !nan; ++r) {
                     T v = p[r * B];
                     if constexpr (std::is_floating_point_v<T>) {
                       if (std::isnan(v)) {
                         best = v;
                         bi = r;
                         nan = true;
                         break;
                       }
                     }
                     if (v > best) {
                       best = v;
                       bi = r;
                     }
                   }
                   out[j] = best;
                   idx[j] = bi;
                 }
               });
}

template <class T>
void max_axis_backward(const T* g, const int64_t* idx, int64_t A, int64_t R, int64_t B, T* gx) {
  parallel_for(A, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t a = lo; a < hi; ++a) {
      T* base = gx + a * R * B;
      for (int64_t k = 0; k < R * B; ++k) base[k] = T(0);
      for (int64_t b = 0; b < B; ++b) base[idx[a * B + b] * B + b] = g[a * B + b];
    }
  });
}

#define MEL_INSTANTIATE_MAX(T)                                                         \
  template void max_axis<T>(const T*, int64_t, int64_t, int64_t, T*, int64_t*, void*); \
  template void max_axis_backward<T>(const T*, const int64_t*, int64_t, int64_t, int64_t, T*);
MEL_INSTANTIATE_MAX(float)
MEL_INSTANTIATE_MAX(double)
MEL_INSTANTIATE_MAX(int32_t)
MEL_INSTANTIATE_MAX(int64_t)

}  // namespace mel::kernels::cpu
