// The Winograd F(4x4, 3x3) kernel transforms (see conv_winograd.cpp): weights into the 6x6
// transform domain, and the weight gradient back out of it.
#include "kernels/cpu/conv_impl.h"

#include <vector>

#include "kernels/strided.h"

namespace mel::kernels::cpu::conv_detail {
namespace {

// Kernel: u = G g with G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6;
// 1/24 -1/12 1/6; 0 0 1].
template <class T>
inline void g6(T g0, T g1, T g2, T u[6]) {
  const T s = g0 + g2, sixth = T(1) / T(6);
  const T a = g0 * (T(1) / T(24)) + g2 * sixth, b = g1 * (T(1) / T(12));
  u[0] = g0 * T(0.25);
  u[1] = -(s + g1) * sixth;
  u[2] = -(s - g1) * sixth;
  u[3] = a + b;
  u[4] = a - b;
  u[5] = g2;
}
// Kernel gradient: dg = G^T du.
template <class T>
inline void gt3(const T du[6], T dg[3]) {
  const T s = du[1] + du[2], c = du[3] + du[4], sixth = T(1) / T(6);
  dg[0] = du[0] * T(0.25) - s * sixth + c * (T(1) / T(24));
  dg[1] = (du[2] - du[1]) * sixth + (du[3] - du[4]) * (T(1) / T(12));
  dg[2] = (c - s) * sixth + du[5];
}

// out[k * ld_out + i] = (M x)[k] for the 3 -> 6 kernel transform g6 (or, with gt, the 6 -> 3
// adjoint gt3) applied to x[m] = in[m * ld_in + i], i < len: one vectorisable pass per call.
template <class T>
void g6_rows(const T* in, int64_t ld_in, T* out, int64_t ld_out, int64_t len) {
  const T* __restrict x0 = in;
  const T* __restrict x1 = in + ld_in;
  const T* __restrict x2 = in + 2 * ld_in;
  T* __restrict o0 = out;
  T* __restrict o1 = out + ld_out;
  T* __restrict o2 = out + 2 * ld_out;
  T* __restrict o3 = out + 3 * ld_out;
  T* __restrict o4 = out + 4 * ld_out;
  T* __restrict o5 = out + 5 * ld_out;
#pragma GCC ivdep
  for (int64_t i = 0; i < len; ++i) {
    T u[6];
    g6(x0[i], x1[i], x2[i], u);
    o0[i] = u[0];
    o1[i] = u[1];
    o2[i] = u[2];
    o3[i] = u[3];
    o4[i] = u[4];
    o5[i] = u[5];
  }
}
template <class T>
void gt3_rows(const T* in, int64_t ld_in, T* out, int64_t ld_out, int64_t len) {
  const T* __restrict x0 = in;
  const T* __restrict x1 = in + ld_in;
  const T* __restrict x2 = in + 2 * ld_in;
  const T* __restrict x3 = in + 3 * ld_in;
  const T* __restrict x4 = in + 4 * ld_in;
  const T* __restrict x5 = in + 5 * ld_in;
  T* __restrict o0 = out;
  T* __restrict o1 = out + ld_out;
  T* __restrict o2 = out + 2 * ld_out;
#pragma GCC ivdep
  for (int64_t i = 0; i < len; ++i) {
    const T v[6] = {x0[i], x1[i], x2[i], x3[i], x4[i], x5[i]};
    T r[3];
    gt3(v, r);
    o0[i] = r[0];
    o1[i] = r[1];
    o2[i] = r[2];
  }
}

// Kernel transforms run on several threads from this many (c_out, c_in) pairs per thread.
constexpr int64_t kParallelPairs = 8192;

}  // namespace

// Each task gathers one row of kernels (fixed co, or fixed ci for the adjoint) into [tap][channel]
// so that the transform runs across channels in vectors and stores contiguous rows of U.
template <class T>
void wino_weights(const Conv2dGeometry& g, const WinoPlan& p, const T* w, bool adjoint, T* U) {
  const int64_t pairs = p.cout_g * p.cin_g;
  const int64_t len = adjoint ? p.cout_g : p.cin_g;  // row length of U
  const int64_t per_group = adjoint ? p.cin_g : p.cout_g;
  parallel_for(g.groups * per_group, ceil_div(kParallelPairs, len), [&](int64_t lo, int64_t hi) {
    std::vector<T> buf(27 * len);
    T* taps = buf.data();   // [tap row i][tap column j][channel]
    T* t = taps + 9 * len;  // G down the columns: [a][j][channel]
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t grp = row / per_group, fixed = row % per_group;
      for (int64_t i = 0; i < len; ++i) {
        const int64_t co = adjoint ? i : fixed, ci = adjoint ? fixed : i;
        const T* k = w + ((grp * p.cout_g + co) * p.cin_g + ci) * 9;
        for (int e = 0; e < 9; ++e) taps[e * len + i] = adjoint ? k[8 - e] : k[e];
      }
      for (int j = 0; j < 3; ++j) g6_rows(taps + j * len, 3 * len, t + j * len, 3 * len, len);
      T* dst = U + grp * kPos * pairs + fixed * len;
      for (int a = 0; a < 6; ++a) g6_rows(t + a * 3 * len, len, dst + a * 6 * pairs, pairs, len);
    }
  });
}

// dw[co][ci] = G^T dU[co][ci] G (3x3 from the 6x6 positions, stride `pairs` apart), across ci in
// vectors, then scattered to the [co][ci][3][3] layout.
template <class T>
void wino_weight_grad(const Conv2dGeometry& g, const WinoPlan& p, const T* dU, T* dw) {
  const int64_t pairs = p.cout_g * p.cin_g, len = p.cin_g;
  parallel_for(g.c_out, ceil_div(kParallelPairs, len), [&](int64_t lo, int64_t hi) {
    std::vector<T> buf(27 * len);
    T* t = buf.data();      // G^T along the rows: [a][j][ci]
    T* out = t + 18 * len;  // then down the columns: [i][j][ci]
    for (int64_t co_all = lo; co_all < hi; ++co_all) {
      const int64_t grp = co_all / p.cout_g, co = co_all % p.cout_g;
      const T* src = dU + grp * kPos * pairs + co * len;
      for (int a = 0; a < 6; ++a) gt3_rows(src + a * 6 * pairs, pairs, t + a * 3 * len, len, len);
      for (int j = 0; j < 3; ++j) gt3_rows(t + j * len, 3 * len, out + j * len, 3 * len, len);
      T* d = dw + co_all * len * 9;
      for (int64_t i = 0; i < len; ++i) {
        for (int e = 0; e < 9; ++e) d[i * 9 + e] = out[e * len + i];
      }
    }
  });
}

template void wino_weights<float>(const Conv2dGeometry&, const WinoPlan&, const float*, bool,
                                  float*);
template void wino_weights<double>(const Conv2dGeometry&, const WinoPlan&, const double*, bool,
                                   double*);
template void wino_weight_grad<float>(const Conv2dGeometry&, const WinoPlan&, const float*, float*);
template void wino_weight_grad<double>(const Conv2dGeometry&, const WinoPlan&, const double*,
                                       double*);

}  // namespace mel::kernels::cpu::conv_detail
