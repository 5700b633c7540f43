// Private to the CPU convolutions: what the im2col path and entry points (conv.cpp), the Winograd
// path (conv_winograd.cpp) and its kernel transforms (conv_winograd_weights.cpp) share.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>

#include "kernels/cpu/conv.h"

namespace mel::kernels::cpu::conv_detail {

// At least this many chunks when the batch allows, so that every thread gets work.
constexpr int64_t kMinChunks = 8;

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}
inline int64_t round_up(int64_t a, int64_t b) {
  return ceil_div(a, b) * b;
}

struct AlignedFree {
  void operator()(void* p) const { ::operator delete(p, std::align_val_t(64)); }
};

// Per-thread buffers reused across calls (slots 0 and 1: a chunk's large matrices, slot 2: small
// per-row temporaries). Fresh multi-megabyte buffers per call would be mmapped and page-faulted
// every time. An inline template, so both convolution paths share one set per thread.
template <class T>
T* scratch(int slot, int64_t n) {
  struct Buf {
    std::unique_ptr<T[], AlignedFree> p;
    int64_t n = 0;
  };
  thread_local Buf bufs[3];
  Buf& b = bufs[slot];
  if (b.n < n) {
    b.p.reset(
        static_cast<T*>(::operator new(static_cast<size_t>(n) * sizeof(T), std::align_val_t(64))));
    b.n = n;
  }
  return b.p.get();
}

// Images per chunk for `per_image` units of work (columns or tiles) against a target, capped so
// that the batch still splits into kMinChunks chunks.
inline int64_t images_per_chunk(const Conv2dGeometry& g, int64_t per_image, int64_t target) {
  const int64_t nb = ceil_div(target, std::max<int64_t>(per_image, 1));
  return std::clamp<int64_t>(nb, 1, std::max<int64_t>(1, g.n / kMinChunks));
}

// Where a backward chunk accumulates: its slot's partial weight gradient (null when not wanted)
// and bias gradient, and whether the chunk is the slot's first (which overwrites, not adds).
template <class T>
struct SlotOut {
  T* dw = nullptr;
  double* dbias = nullptr;
  bool first = false;
};

template <class T>
void add_bias_grad(const Conv2dGeometry& g, const T* dy, int64_t i0, int64_t nimg, double* db) {
  const int64_t hw = g.h_out * g.w_out;
  for (int64_t i = i0; i < i0 + nimg; ++i) {
    for (int64_t c = 0; c < g.c_out; ++c) {
      const T* r = dy + (i * g.c_out + c) * hw;
      double s = 0;
      for (int64_t j = 0; j < hw; ++j) s += r[j];
      db[c] += s;
    }
  }
}

// ---- Winograd F(4x4, 3x3) (conv_winograd.cpp) ---------------------------------------------------

constexpr int64_t kTile = 4;               // output tile side
constexpr int64_t kAlpha = kTile + 2;      // input patch side
constexpr int64_t kPos = kAlpha * kAlpha;  // transform-domain positions, one GEMM each

struct WinoPlan {
  int64_t cin_g = 0, cout_g = 0;
  int64_t th = 0, tw = 0;    // tiles of the output (forward, weight gradient)
  int64_t thx = 0, twx = 0;  // tiles of the input (input gradient)
  int64_t nb = 1, chunks = 0;
};

bool use_winograd(const Conv2dGeometry& g);
WinoPlan make_wino_plan(const Conv2dGeometry& g);

// U[grp][xi][co][ci] = (G w[co][ci] G^T)[xi], or with `adjoint` U[grp][xi][ci][co] for the kernel
// rotated by 180 degrees (the input gradient's convolution). T: float or double, as below.
template <class T>
void wino_weights(const Conv2dGeometry& g, const WinoPlan& p, const T* w, bool adjoint, T* U);

// dw[co][ci] = G^T dU[co][ci] G (3x3 from the 6x6 positions), in the [co][ci][3][3] layout.
template <class T>
void wino_weight_grad(const Conv2dGeometry& g, const WinoPlan& p, const T* dU, T* dw);

// y for the images of one chunk, through the transformed kernel U from wino_weights.
template <class T>
void wino_forward_chunk(const Conv2dGeometry& g, const WinoPlan& p, const T* x, const T* U,
                        const T* bias, T* y, int64_t chunk);

// `Ut`: the adjoint kernel transform (for dx); so.dw: the slot's partial dU [groups][kPos][co][ci].
template <class T>
void wino_backward_chunk(const Conv2dGeometry& g, const WinoPlan& p, const T* dy, const T* x,
                         const T* Ut, T* dx, const SlotOut<T>& so, int64_t chunk);

}  // namespace mel::kernels::cpu::conv_detail
