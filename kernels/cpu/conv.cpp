#include "kernels/cpu/conv.h"

#include <omp.h>

#include <algorithm>
#include <memory>
#include <new>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "kernels/cpu/gemm.h"
#include "kernels/strided.h"

namespace mel::kernels::cpu {
namespace {

// ---- shared machinery --------------------------------------------------------------------------

// At least this many chunks when the batch allows, so that every thread gets work.
constexpr int64_t kMinChunks = 8;
// Weight gradients are summed per slot (a fixed run of chunks) and the slots are added in order.
// A slot count fixed by the shapes keeps results identical for every thread count up to it; each
// slot holds a partial gradient (36 / 9 of the weights' size under Winograd), so few slots keep
// the workspace and the final reduction small.
constexpr int64_t kSlots = 4;
// Below this many flops a convolution runs on one thread: waking the others costs more.
constexpr double kParallelFlops = 1 << 20;

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}
int64_t round_up(int64_t a, int64_t b) {
  return ceil_div(a, b) * b;
}

struct AlignedFree {
  void operator()(void* p) const { ::operator delete(p, std::align_val_t(64)); }
};

// Per-thread buffers reused across calls (slots 0 and 1: a chunk's large matrices, slot 2: small
// per-row temporaries). Fresh multi-megabyte buffers per call would be mmapped and page-faulted
// every time.
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

double conv_flops(const Conv2dGeometry& g) {
  return 2.0 * static_cast<double>(g.n) * static_cast<double>(g.c_out) *
         static_cast<double>(g.c_in / g.groups) * static_cast<double>(g.kh * g.kw) *
         static_cast<double>(g.h_out * g.w_out);
}

// Runs body(unit) for units [0, units): across threads when that balances well (each call to
// gemm inside then runs single-threaded), else one after another with gemm parallel inside. Units
// are handed out dynamically: a core slowed by another process then takes fewer of them. Which
// thread runs a unit never changes a result.
template <class F>
void for_units(int64_t units, double flops, F&& body) {
  const int threads = omp_in_parallel() || flops < kParallelFlops ? 1 : omp_get_max_threads();
  const bool outer = threads > 1 && units >= threads &&
                     4 * ceil_div(units, threads) * threads <= 5 * units;  // <= 25% idle
  if (!outer) {
    for (int64_t u = 0; u < units; ++u) body(u);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t u = 0; u < units; ++u) body(u);
}

int64_t slot_count(int64_t chunks) {
  return std::min<int64_t>(chunks, std::max<int64_t>(kSlots, omp_get_max_threads()));
}

// Images per chunk for `per_image` units of work (columns or tiles) against a target, capped so
// that the batch still splits into kMinChunks chunks.
int64_t images_per_chunk(const Conv2dGeometry& g, int64_t per_image, int64_t target) {
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

// ---- im2col + GEMM (any geometry) ------------------------------------------------------------

// A chunk's column matrix has this many columns when the images are small enough: narrower
// products waste the GEMM's register tile on ragged edges and repack the weights too often...
constexpr int64_t kTargetCols = 512;
// ...but at most this many elements, about the L2 size, so that gemm's packing reads it from cache.
constexpr int64_t kColElems = int64_t(1) << 20;

// How the batch is cut: chunks of `nb` whole images, or, when one image's column matrix is too
// large, single images processed in bands of `band` output rows.
struct Plan {
  int64_t hw_out = 0, cin_g = 0, cout_g = 0, ckk = 0;
  int64_t nb = 1, chunks = 0, band = 0;
  bool pointwise = false;  // 1x1, stride 1, no padding: the column matrix is the input itself
};

Plan make_plan(const Conv2dGeometry& g) {
  Plan p;
  p.hw_out = g.h_out * g.w_out;
  p.cin_g = g.c_in / g.groups;
  p.cout_g = g.c_out / g.groups;
  p.ckk = p.cin_g * g.kh * g.kw;
  p.pointwise =
      g.kh == 1 && g.kw == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0;
  const int64_t col_per_image = p.ckk * p.hw_out;
  p.nb = std::min(images_per_chunk(g, p.hw_out, kTargetCols),
                  std::max<int64_t>(1, kColElems / std::max<int64_t>(col_per_image, 1)));
  p.chunks = ceil_div(g.n, p.nb);
  p.band = g.h_out;
  if (col_per_image > kColElems) {
    p.band = std::clamp<int64_t>(kColElems / std::max<int64_t>(p.ckk * g.w_out, 1), 1, g.h_out);
  }
  return p;
}

// Output columns [lo, hi) of a row whose input column is ow * stride - a (a = pad - kj * dil)
// fall inside [0, w); the rest read zero padding.
void valid_cols(int64_t w, int64_t w_out, int64_t stride, int64_t a, int64_t* lo, int64_t* hi) {
  const int64_t l = a <= 0 ? 0 : ceil_div(a, stride);
  const int64_t b = w - 1 + a;
  const int64_t h = b < 0 ? 0 : b / stride + 1;
  *hi = std::clamp<int64_t>(h, 0, w_out);
  *lo = std::clamp<int64_t>(l, 0, *hi);
}

// Column matrix of channels [0, cin_g) of `nimg` images starting at x (image stride
// c_in * h * w), output rows [oh0, oh1): row (c, ki, kj), column (image, oh, ow), ld `ldc`.
template <class T>
void im2col(const Conv2dGeometry& g, const Plan& p, const T* x, int64_t nimg, int64_t oh0,
            int64_t oh1, T* col, int64_t ldc) {
  const int64_t img_stride = g.c_in * g.h * g.w;
  const int64_t rows = oh1 - oh0;
  for (int64_t c = 0; c < p.cin_g; ++c) {
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        T* dst_row = col + ((c * g.kh + ki) * g.kw + kj) * ldc;
        const int64_t a = g.pad_w - kj * g.dil_w;
        int64_t lo, hi;
        valid_cols(g.w, g.w_out, g.stride_w, a, &lo, &hi);
        for (int64_t i = 0; i < nimg; ++i) {
          const T* src_img = x + i * img_stride + c * g.h * g.w;
          for (int64_t oh = oh0; oh < oh1; ++oh) {
            T* d = dst_row + (i * rows + oh - oh0) * g.w_out;
            const int64_t ih = oh * g.stride_h - g.pad_h + ki * g.dil_h;
            if (ih < 0 || ih >= g.h) {
              std::fill(d, d + g.w_out, T(0));
              continue;
            }
            std::fill(d, d + lo, T(0));
            const T* s = src_img + ih * g.w - a;
            if (g.stride_w == 1) {
              std::copy(s + lo, s + hi, d + lo);
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) d[ow] = s[ow * g.stride_w];
            }
            std::fill(d + hi, d + g.w_out, T(0));
          }
        }
      }
    }
  }
}

// Adds the column matrix back into channels [0, cin_g) of `nimg` images at dx (the adjoint of
// im2col); dx must hold the running sum (zero before the first band).
template <class T>
void col2im(const Conv2dGeometry& g, const Plan& p, const T* col, int64_t ldc, int64_t nimg,
            int64_t oh0, int64_t oh1, T* dx) {
  const int64_t img_stride = g.c_in * g.h * g.w;
  const int64_t rows = oh1 - oh0;
  for (int64_t c = 0; c < p.cin_g; ++c) {
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const T* src_row = col + ((c * g.kh + ki) * g.kw + kj) * ldc;
        const int64_t a = g.pad_w - kj * g.dil_w;
        int64_t lo, hi;
        valid_cols(g.w, g.w_out, g.stride_w, a, &lo, &hi);
        for (int64_t i = 0; i < nimg; ++i) {
          T* dst_img = dx + i * img_stride + c * g.h * g.w;
          for (int64_t oh = oh0; oh < oh1; ++oh) {
            const int64_t ih = oh * g.stride_h - g.pad_h + ki * g.dil_h;
            if (ih < 0 || ih >= g.h) continue;
            const T* s = src_row + (i * rows + oh - oh0) * g.w_out;
            T* d = dst_img + ih * g.w - a;
            if (g.stride_w == 1) {
              for (int64_t ow = lo; ow < hi; ++ow) d[ow] += s[ow];
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) d[ow * g.stride_w] += s[ow];
            }
          }
        }
      }
    }
  }
}

template <class T>
void forward_chunk(const Conv2dGeometry& g, const Plan& p, const T* x, const T* w, const T* bias,
                   T* y, int64_t chunk) {
  const int64_t i0 = chunk * p.nb, nimg = std::min(p.nb, g.n - i0);
  const int64_t x_img = g.c_in * g.h * g.w, y_img = g.c_out * p.hw_out;
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    const T* xg = x + i0 * x_img + grp * p.cin_g * g.h * g.w;
    const T* wg = w + grp * p.cout_g * p.ckk;
    const T* bg = bias ? bias + grp * p.cout_g : nullptr;
    T* yg = y + i0 * y_img + grp * p.cout_g * p.hw_out;
    if (nimg == 1) {
      for (int64_t oh0 = 0; oh0 < g.h_out; oh0 += p.band) {
        const int64_t oh1 = std::min(g.h_out, oh0 + p.band);
        const int64_t cols = (oh1 - oh0) * g.w_out;
        const T* b = xg;
        int64_t ldb = p.hw_out;
        if (!p.pointwise) {
          T* col = scratch<T>(0, p.ckk * cols);
          im2col(g, p, xg, 1, oh0, oh1, col, cols);
          b = col;
          ldb = cols;
        }
        gemm<T>(false, false, p.cout_g, cols, p.ckk, T(1), wg, p.ckk, b, ldb, T(0),
                yg + oh0 * g.w_out, p.hw_out);
      }
      if (bg) {
        for (int64_t co = 0; co < p.cout_g; ++co) {
          T* r = yg + co * p.hw_out;
          for (int64_t j = 0; j < p.hw_out; ++j) r[j] += bg[co];
        }
      }
      continue;
    }
    // Several images side by side in one product, then scattered to their own output blocks.
    const int64_t cols = nimg * p.hw_out;
    T* col = scratch<T>(0, p.ckk * cols);
    T* out = scratch<T>(1, p.cout_g * cols);
    im2col(g, p, xg, nimg, 0, g.h_out, col, cols);
    gemm<T>(false, false, p.cout_g, cols, p.ckk, T(1), wg, p.ckk, col, cols, T(0), out, cols);
    for (int64_t i = 0; i < nimg; ++i) {
      for (int64_t co = 0; co < p.cout_g; ++co) {
        const T* s = out + co * cols + i * p.hw_out;
        T* d = yg + i * y_img + co * p.hw_out;
        const T b = bg ? bg[co] : T(0);
        for (int64_t j = 0; j < p.hw_out; ++j) d[j] = s[j] + b;
      }
    }
  }
}

template <class T>
void backward_chunk(const Conv2dGeometry& g, const Plan& p, const T* dy, const T* x, const T* w,
                    T* dx, const SlotOut<T>& so, int64_t chunk) {
  const int64_t i0 = chunk * p.nb, nimg = std::min(p.nb, g.n - i0);
  const int64_t x_img = g.c_in * g.h * g.w, y_img = g.c_out * p.hw_out;
  if (so.dbias) add_bias_grad(g, dy, i0, nimg, so.dbias);
  if (dx) std::fill(dx + i0 * x_img, dx + (i0 + nimg) * x_img, T(0));
  if (!dx && !so.dw) return;
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    const T* xg = x ? x + i0 * x_img + grp * p.cin_g * g.h * g.w : nullptr;
    const T* wg = w ? w + grp * p.cout_g * p.ckk : nullptr;
    const T* dyg = dy + i0 * y_img + grp * p.cout_g * p.hw_out;
    T* dxg = dx ? dx + i0 * x_img + grp * p.cin_g * g.h * g.w : nullptr;
    T* dwg = so.dw ? so.dw + grp * p.cout_g * p.ckk : nullptr;
    const bool single = nimg == 1;
    const int64_t band = single ? p.band : g.h_out;
    for (int64_t oh0 = 0; oh0 < g.h_out; oh0 += band) {
      const int64_t oh1 = std::min(g.h_out, oh0 + band);
      const int64_t cols = nimg * (oh1 - oh0) * g.w_out;
      // The output gradient as a [cout_g, cols] matrix: in place for one image, else gathered.
      const T* d = dyg + oh0 * g.w_out;
      int64_t ldd = p.hw_out;
      if (!single) {
        T* buf = scratch<T>(1, p.cout_g * cols);
        for (int64_t co = 0; co < p.cout_g; ++co) {
          for (int64_t i = 0; i < nimg; ++i) {
            std::copy_n(dyg + i * y_img + co * p.hw_out, p.hw_out, buf + co * cols + i * p.hw_out);
          }
        }
        d = buf;
        ldd = cols;
      }
      const bool direct = p.pointwise && single;  // x and dx serve as column matrices in place
      T* col = direct ? nullptr : scratch<T>(0, p.ckk * cols);
      if (dwg) {
        const T* b = xg + oh0 * g.w_out;
        int64_t ldb = p.hw_out;
        if (!direct) {
          im2col(g, p, xg, nimg, oh0, oh1, col, cols);
          b = col;
          ldb = cols;
        }
        const T beta = so.first && oh0 == 0 ? T(0) : T(1);
        gemm<T>(false, true, p.cout_g, p.ckk, cols, T(1), d, ldd, b, ldb, beta, dwg, p.ckk);
      }
      if (dxg) {
        if (direct) {
          gemm<T>(true, false, p.ckk, cols, p.cout_g, T(1), wg, p.ckk, d, ldd, T(0),
                  dxg + oh0 * g.w_out, p.hw_out);
        } else {
          gemm<T>(true, false, p.ckk, cols, p.cout_g, T(1), wg, p.ckk, d, ldd, T(0), col, cols);
          col2im(g, p, col, cols, nimg, oh0, oh1, dxg);
        }
      }
    }
  }
}

// ---- Winograd F(4x4, 3x3) ----------------------------------------------------------------------
//
// Each 4x4 output tile is A^T [(G w G^T) . (B^T d B)] A for the 6x6 input patch d under it: 36
// multiplies per tile and channel pair instead of 144. Over a chunk of tiles that is 36
// independent GEMMs, one per position xi of the 6x6 transform domain: M_xi [c_out x tiles] = U_xi
// [c_out x c_in] V_xi [c_in x tiles]. The input gradient is the same computation on dy with the
// kernel rotated by 180 degrees and in/out swapped; the weight gradient is the adjoint,
// dU_xi = Z_xi V_xi^T with Z = A dY A^T, mapped back by dw = G^T dU G. The matrices are Lavin's
// (interpolation points 0, +-1, +-2, infinity); in f32 the result differs from a direct sum by
// about 1e-6 of the outputs' magnitude, a few times the direct sum's own rounding error, which
// training does not notice. Three quarters of the multiplies are gone, and the GEMMs run at the
// same rate as im2col's, so a 3x3 layer costs about half as much.

constexpr int64_t kTile = 4;               // output tile side
constexpr int64_t kAlpha = kTile + 2;      // input patch side
constexpr int64_t kPos = kAlpha * kAlpha;  // transform-domain positions, one GEMM each

// Tiles per chunk to aim for, and when one image's transform buffers (elements) are bigger than
// this the im2col path (which splits images into bands) is used instead.
constexpr int64_t kWinoTiles = 256;
constexpr int64_t kWinoMaxImageElems = int64_t(8) << 20;
// With fewer input channels the 36 products have too short a K to run near peak, and im2col
// (K = 9 c_in) wins; measured on the layer shapes of small CNNs.
constexpr int64_t kWinoMinInChannels = 12;

struct WinoPlan {
  int64_t cin_g = 0, cout_g = 0;
  int64_t th = 0, tw = 0;    // tiles of the output (forward, weight gradient)
  int64_t thx = 0, twx = 0;  // tiles of the input (input gradient)
  int64_t nb = 1, chunks = 0;
};

bool use_winograd(const Conv2dGeometry& g) {
  const int64_t cin_g = g.c_in / g.groups, cout_g = g.c_out / g.groups;
  if (!g.allow_winograd || g.kh != 3 || g.kw != 3 || g.stride_h != 1 || g.stride_w != 1 ||
      g.dil_h != 1 || g.dil_w != 1 || cin_g < kWinoMinInChannels) {
    return false;
  }
  const int64_t tiles = std::max(ceil_div(g.h_out, kTile) * ceil_div(g.w_out, kTile),
                                 ceil_div(g.h, kTile) * ceil_div(g.w, kTile));
  return kPos * (cin_g + cout_g) * tiles <= kWinoMaxImageElems;
}

WinoPlan make_wino_plan(const Conv2dGeometry& g) {
  WinoPlan p;
  p.cin_g = g.c_in / g.groups;
  p.cout_g = g.c_out / g.groups;
  p.th = ceil_div(g.h_out, kTile);
  p.tw = ceil_div(g.w_out, kTile);
  p.thx = ceil_div(g.h, kTile);
  p.twx = ceil_div(g.w, kTile);
  p.nb = images_per_chunk(g, std::max(p.th * p.tw, p.thx * p.twx), kWinoTiles);
  // Whole vectors of images where the batch allows (the transforms run across images).
  const int64_t cap = g.n / kMinChunks / 8 * 8;
  if (p.nb > 4 && cap >= 8) p.nb = std::min(round_up(p.nb, 8), cap);
  p.chunks = ceil_div(g.n, p.nb);
  return p;
}

// The 1-D transforms. Input: v = B^T d with B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
// 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1].
template <class T>
inline void bt6(T d0, T d1, T d2, T d3, T d4, T d5, T v[6]) {
  v[0] = T(4) * d0 - T(5) * d2 + d4;
  v[1] = d3 + d4 - T(4) * (d1 + d2);
  v[2] = T(4) * (d1 - d2) + d4 - d3;
  v[3] = T(2) * (d3 - d1) + d4 - d2;
  v[4] = T(2) * (d1 - d3) + d4 - d2;
  v[5] = T(4) * d1 - T(5) * d3 + d5;
}
// Output: y = A^T m with A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
template <class T>
inline void at4(T m0, T m1, T m2, T m3, T m4, T m5, T y[4]) {
  const T a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
  y[0] = m0 + a + c;
  y[1] = b + T(2) * d;
  y[2] = a + T(4) * c;
  y[3] = b + T(8) * d + m5;
}
// Output gradient: z = A e (the adjoint of at4).
template <class T>
inline void a6(T e0, T e1, T e2, T e3, T z[6]) {
  const T s = e0 + e2, t = e1 + e3, u = e0 + T(4) * e2, v = T(2) * e1 + T(8) * e3;
  z[0] = e0;
  z[1] = s + t;
  z[2] = s - t;
  z[3] = u + v;
  z[4] = u - v;
  z[5] = e3;
}
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

// U[grp][xi][co][ci] = (G w[co][ci] G^T)[xi], or with `adjoint` U[grp][xi][ci][co] for the kernel
// rotated by 180 degrees (the input gradient's convolution). Each task gathers one row of kernels
// (fixed co, or fixed ci for the adjoint) into [tap][channel] so that the transform runs across
// channels in vectors and stores contiguous rows of U.
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

// One side of a Winograd convolution: `nimg` images of `nc` channels, h x w, image stride
// `img_stride`, covered by th x tw tiles whose 6x6 patches start at (4 ti - ph, 4 tj - pw) (the
// padding may be negative). Tile t = (ti * tw + tj) * nimg + img: the images of a chunk are the
// innermost index, so the transforms run across images in contiguous vectors and never stride
// through a row four columns at a time. Transform-domain planes (V, M, Z: [xi][c][t]) are `ld()`
// apart, padded so that the 36 planes a transform streams through do not share cache sets.
template <class T>
struct WinoSide {
  int64_t nimg, nc, h, w, img_stride, ph, pw, th, tw;
  int64_t tiles() const { return th * tw * nimg; }
  int64_t ld() const { return nc * tiles() + 64 / static_cast<int64_t>(sizeof(T)); }
};

// dst[i * ld_dst + k] = src[k * ld_src + i] for k < rows and i < cols (both <= 8).
template <class T>
inline void transpose_block(const T* src, int64_t ld_src, int64_t rows, int64_t cols, T* dst,
                            int64_t ld_dst) {
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t k = 0; k < rows; ++k) dst[i * ld_dst + k] = src[k * ld_src + i];
  }
}

#ifdef __AVX2__
// The 8 x 8 float case in registers, partial blocks through masked loads and stores.
template <>
inline void transpose_block<float>(const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                                   float* dst, int64_t ld_dst) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i col_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(cols)), lane);
  __m256 r[8];
  for (int k = 0; k < 8; ++k) {
    if (k < rows) {
      r[k] = cols == 8 ? _mm256_loadu_ps(src + k * ld_src)
                       : _mm256_maskload_ps(src + k * ld_src, col_mask);
    } else {
      r[k] = _mm256_setzero_ps();
    }
  }
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 o[8] = {_mm256_permute2f128_ps(s0, s4, 0x20), _mm256_permute2f128_ps(s1, s5, 0x20),
                       _mm256_permute2f128_ps(s2, s6, 0x20), _mm256_permute2f128_ps(s3, s7, 0x20),
                       _mm256_permute2f128_ps(s0, s4, 0x31), _mm256_permute2f128_ps(s1, s5, 0x31),
                       _mm256_permute2f128_ps(s2, s6, 0x31), _mm256_permute2f128_ps(s3, s7, 0x31)};
  const __m256i row_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rows)), lane);
  for (int i = 0; i < cols; ++i) {
    if (rows == 8) {
      _mm256_storeu_ps(dst + i * ld_dst, o[i]);
    } else {
      _mm256_maskstore_ps(dst + i * ld_dst, row_mask, o[i]);
    }
  }
}
#endif

// P[(r * cols + col) * nimg + img] = plane value (r - pr, col - pc) of channel `c` of each image,
// zero outside the plane: the transposed, padded copy the transforms read. Only rows
// [r_lo, r_hi) = those that meet the plane are written; the others would be all zero.
template <class T>
void load_transposed(const WinoSide<T>& s, const T* src, int64_t c, int64_t pr, int64_t pc,
                     int64_t cols, int64_t r_lo, int64_t r_hi, T* P) {
  const int64_t n = s.nimg;
  const int64_t c_lo = std::clamp<int64_t>(pc, 0, cols), c_hi = std::clamp(pc + s.w, c_lo, cols);
  const T* plane = src + c * s.h * s.w;
  for (int64_t r = r_lo; r < r_hi; ++r) {
    T* row = P + r * cols * n;
    std::fill(row, row + c_lo * n, T(0));
    std::fill(row + c_hi * n, row + cols * n, T(0));
    const T* in = plane + (r - pr) * s.w - pc;
    for (int64_t i0 = 0; i0 < n; i0 += 8) {
      for (int64_t c0 = c_lo; c0 < c_hi; c0 += 8) {
        transpose_block(in + i0 * s.img_stride + c0, s.img_stride, std::min<int64_t>(8, n - i0),
                        std::min<int64_t>(8, c_hi - c0), row + c0 * n + i0, n);
      }
    }
  }
}

// V[xi][c][t] = (B^T d B)[xi] for every channel and tile.
template <class T>
void wino_input(const WinoSide<T>& s, const T* src, T* V) {
  const int64_t n = s.nimg, tw = s.tw, tiles = s.tiles(), ld_xi = s.ld();
  const int64_t rows = kTile * s.th + 2, cols = kTile * tw + 2, row_len = tw * n;
  T* P = scratch<T>(2, rows * cols * n + rows * 6 * row_len);
  T* q = P + rows * cols * n;  // horizontal transforms: [row][k][tj * n + img]
  // Rows of patches that meet the image; the others are padding, whose transform is zero.
  const int64_t r_lo = std::clamp<int64_t>(s.ph, 0, rows);
  const int64_t r_hi = std::clamp(s.ph + s.h, r_lo, rows);
  std::fill(q, q + r_lo * 6 * row_len, T(0));
  std::fill(q + r_hi * 6 * row_len, q + rows * 6 * row_len, T(0));
  for (int64_t c = 0; c < s.nc; ++c) {
    load_transposed(s, src, c, s.ph, s.pw, cols, r_lo, r_hi, P);
    for (int64_t r = r_lo; r < r_hi; ++r) {
      T* qr = q + r * 6 * row_len;
      for (int64_t j = 0; j < tw; ++j) {
        const T* __restrict d = P + (r * cols + kTile * j) * n;
        T* __restrict o = qr + j * n;
#pragma GCC ivdep
        for (int64_t i = 0; i < n; ++i) {
          T v[6];
          bt6(d[i], d[n + i], d[2 * n + i], d[3 * n + i], d[4 * n + i], d[5 * n + i], v);
          for (int k = 0; k < 6; ++k) o[k * row_len + i] = v[k];
        }
      }
    }
    for (int64_t ti = 0; ti < s.th; ++ti) {
      const T* r0 = q + kTile * ti * 6 * row_len;
      T* v = V + c * tiles + ti * row_len;
      for (int k = 0; k < 6; ++k) {
        const T* __restrict d0 = r0 + k * row_len;
        const T* __restrict d1 = d0 + 6 * row_len;
        const T* __restrict d2 = d1 + 6 * row_len;
        const T* __restrict d3 = d2 + 6 * row_len;
        const T* __restrict d4 = d3 + 6 * row_len;
        const T* __restrict d5 = d4 + 6 * row_len;
        T* __restrict v0 = v + k * ld_xi;
        T* __restrict v1 = v + (6 + k) * ld_xi;
        T* __restrict v2 = v + (12 + k) * ld_xi;
        T* __restrict v3 = v + (18 + k) * ld_xi;
        T* __restrict v4 = v + (24 + k) * ld_xi;
        T* __restrict v5 = v + (30 + k) * ld_xi;
#pragma GCC ivdep
        for (int64_t j = 0; j < row_len; ++j) {
          T o[6];
          bt6(d0[j], d1[j], d2[j], d3[j], d4[j], d5[j], o);
          v0[j] = o[0];
          v1[j] = o[1];
          v2[j] = o[2];
          v3[j] = o[3];
          v4[j] = o[4];
          v5[j] = o[5];
        }
      }
    }
  }
}

// dst planes (h x w, the tiles' output side) = A^T M A (+ bias) for M[xi][c][t]; tile outputs
// past the plane's edge are dropped.
template <class T>
void wino_output(const WinoSide<T>& s, const T* M, const T* bias, T* dst) {
  const int64_t n = s.nimg, tw = s.tw, tiles = s.tiles(), ld_xi = s.ld(), row_len = tw * n;
  const int64_t cols = kTile * tw, rows_out = std::min(s.h, kTile * s.th);
  T* buf = scratch<T>(2, 24 * row_len + rows_out * cols * n);
  T* const hv = buf;                // vertical transforms of a tile row: [i][k][tj * n + img]
  T* const Y = buf + 24 * row_len;  // the output plane, transposed: [oh][ow][img]
  for (int64_t c = 0; c < s.nc; ++c) {
    const T b = bias ? bias[c] : T(0);
    for (int64_t ti = 0; ti < s.th; ++ti) {
      const T* m = M + c * tiles + ti * row_len;
      for (int k = 0; k < 6; ++k) {
        const T* __restrict m0 = m + k * ld_xi;
        const T* __restrict m1 = m + (6 + k) * ld_xi;
        const T* __restrict m2 = m + (12 + k) * ld_xi;
        const T* __restrict m3 = m + (18 + k) * ld_xi;
        const T* __restrict m4 = m + (24 + k) * ld_xi;
        const T* __restrict m5 = m + (30 + k) * ld_xi;
        T* __restrict h0 = hv + k * row_len;
        T* __restrict h1 = hv + (6 + k) * row_len;
        T* __restrict h2 = hv + (12 + k) * row_len;
        T* __restrict h3 = hv + (18 + k) * row_len;
#pragma GCC ivdep
        for (int64_t u = 0; u < row_len; ++u) {
          T y[4];
          at4(m0[u], m1[u], m2[u], m3[u], m4[u], m5[u], y);
          h0[u] = y[0];
          h1[u] = y[1];
          h2[u] = y[2];
          h3[u] = y[3];
        }
      }
      for (int64_t i = 0; i < kTile && kTile * ti + i < rows_out; ++i) {
        const T* hi = hv + i * 6 * row_len;
        T* yrow = Y + (kTile * ti + i) * cols * n;
        for (int64_t j = 0; j < tw; ++j) {
          const T* __restrict e = hi + j * n;
          T* __restrict o = yrow + kTile * j * n;
#pragma GCC ivdep
          for (int64_t l = 0; l < n; ++l) {
            T y[4];
            at4(e[l], e[row_len + l], e[2 * row_len + l], e[3 * row_len + l], e[4 * row_len + l],
                e[5 * row_len + l], y);
            o[l] = y[0] + b;
            o[n + l] = y[1] + b;
            o[2 * n + l] = y[2] + b;
            o[3 * n + l] = y[3] + b;
          }
        }
      }
    }
    T* plane = dst + c * s.h * s.w;
    for (int64_t oh = 0; oh < rows_out; ++oh) {
      for (int64_t i0 = 0; i0 < n; i0 += 8) {
        for (int64_t c0 = 0; c0 < s.w; c0 += 8) {
          transpose_block(Y + (oh * cols + c0) * n + i0, n, std::min<int64_t>(8, s.w - c0),
                          std::min<int64_t>(8, n - i0), plane + i0 * s.img_stride + oh * s.w + c0,
                          s.img_stride);
        }
      }
    }
  }
}

// Z[xi][c][t] = (A dY A^T)[xi] for the output gradient planes (h x w = the tiles' output side),
// reading zero past their edges.
template <class T>
void wino_grad_output(const WinoSide<T>& s, const T* dy, T* Z) {
  const int64_t n = s.nimg, tw = s.tw, tiles = s.tiles(), ld_xi = s.ld(), row_len = tw * n;
  const int64_t rows = kTile * s.th, cols = kTile * tw;
  T* P = scratch<T>(2, rows * cols * n + kTile * 6 * row_len);
  T* p = P + rows * cols * n;  // horizontal transforms of a tile row: [r][k][tj * n + img]
  for (int64_t c = 0; c < s.nc; ++c) {
    load_transposed(s, dy, c, 0, 0, cols, 0, s.h, P);
    std::fill(P + s.h * cols * n, P + rows * cols * n, T(0));
    for (int64_t ti = 0; ti < s.th; ++ti) {
      for (int64_t r = 0; r < kTile; ++r) {
        for (int64_t j = 0; j < tw; ++j) {
          const T* __restrict e = P + ((kTile * ti + r) * cols + kTile * j) * n;
          T* __restrict o = p + r * 6 * row_len + j * n;
#pragma GCC ivdep
          for (int64_t i = 0; i < n; ++i) {
            T z[6];
            a6(e[i], e[n + i], e[2 * n + i], e[3 * n + i], z);
            for (int k = 0; k < 6; ++k) o[k * row_len + i] = z[k];
          }
        }
      }
      T* zc = Z + c * tiles + ti * row_len;
      for (int k = 0; k < 6; ++k) {  // A down the columns
        const T* __restrict e0 = p + k * row_len;
        const T* __restrict e1 = e0 + 6 * row_len;
        const T* __restrict e2 = e1 + 6 * row_len;
        const T* __restrict e3 = e2 + 6 * row_len;
        T* __restrict z0 = zc + k * ld_xi;
        T* __restrict z1 = zc + (6 + k) * ld_xi;
        T* __restrict z2 = zc + (12 + k) * ld_xi;
        T* __restrict z3 = zc + (18 + k) * ld_xi;
        T* __restrict z4 = zc + (24 + k) * ld_xi;
        T* __restrict z5 = zc + (30 + k) * ld_xi;
#pragma GCC ivdep
        for (int64_t j = 0; j < row_len; ++j) {
          T z[6];
          a6(e0[j], e1[j], e2[j], e3[j], z);
          z0[j] = z[0];
          z1[j] = z[1];
          z2[j] = z[2];
          z3[j] = z[3];
          z4[j] = z[4];
          z5[j] = z[5];
        }
      }
    }
  }
}

// dst = conv(src) over one chunk and group through the transformed kernel U [kPos][nco][nci].
template <class T>
void wino_conv(const WinoSide<T>& in, const T* src, const T* U, const WinoSide<T>& out,
               const T* bias, T* dst) {
  const int64_t tiles = in.tiles();
  T* V = scratch<T>(0, kPos * in.ld());
  T* M = scratch<T>(1, kPos * out.ld());
  wino_input(in, src, V);
  for (int64_t xi = 0; xi < kPos; ++xi) {
    gemm<T>(false, false, out.nc, tiles, in.nc, T(1), U + xi * out.nc * in.nc, in.nc,
            V + xi * in.ld(), tiles, T(0), M + xi * out.ld(), tiles);
  }
  wino_output(out, M, bias, dst);
}

// The two sides of the forward convolution (x -> y) and of the input gradient (dy -> dx) for the
// images of one chunk.
template <class T>
WinoSide<T> wino_x_side(const Conv2dGeometry& g, const WinoPlan& p, int64_t nimg, bool forward) {
  const int64_t th = forward ? p.th : p.thx, tw = forward ? p.tw : p.twx;
  return {nimg, p.cin_g, g.h, g.w, g.c_in * g.h * g.w, g.pad_h, g.pad_w, th, tw};
}
template <class T>
WinoSide<T> wino_y_side(const Conv2dGeometry& g, const WinoPlan& p, int64_t nimg, bool forward) {
  const int64_t th = forward ? p.th : p.thx, tw = forward ? p.tw : p.twx;
  // For dy -> dx the 180-degree-rotated kernel pads by 2 - pad.
  return {nimg,        p.cout_g,    g.h_out, g.w_out, g.c_out * g.h_out * g.w_out,
          2 - g.pad_h, 2 - g.pad_w, th,      tw};
}

template <class T>
void wino_forward_chunk(const Conv2dGeometry& g, const WinoPlan& p, const T* x, const T* U,
                        const T* bias, T* y, int64_t chunk) {
  const int64_t i0 = chunk * p.nb, nimg = std::min(p.nb, g.n - i0);
  const WinoSide<T> in = wino_x_side<T>(g, p, nimg, true);
  const WinoSide<T> out = wino_y_side<T>(g, p, nimg, true);
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    wino_conv(in, x + i0 * in.img_stride + grp * p.cin_g * g.h * g.w,
              U + grp * kPos * p.cout_g * p.cin_g, out, bias ? bias + grp * p.cout_g : nullptr,
              y + i0 * out.img_stride + grp * p.cout_g * g.h_out * g.w_out);
  }
}

// `Ut`: the adjoint kernel transform (for dx); so.dw: the slot's partial dU [groups][kPos][co][ci].
template <class T>
void wino_backward_chunk(const Conv2dGeometry& g, const WinoPlan& p, const T* dy, const T* x,
                         const T* Ut, T* dx, const SlotOut<T>& so, int64_t chunk) {
  const int64_t i0 = chunk * p.nb, nimg = std::min(p.nb, g.n - i0);
  if (so.dbias) add_bias_grad(g, dy, i0, nimg, so.dbias);
  const int64_t pairs = p.cout_g * p.cin_g;
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    const int64_t x_off = grp * p.cin_g * g.h * g.w, y_off = grp * p.cout_g * g.h_out * g.w_out;
    if (so.dw) {
      const WinoSide<T> xs = wino_x_side<T>(g, p, nimg, true);
      const WinoSide<T> ys = wino_y_side<T>(g, p, nimg, true);
      const int64_t tiles = xs.tiles();
      T* V = scratch<T>(0, kPos * xs.ld());
      T* Z = scratch<T>(1, kPos * ys.ld());
      wino_input(xs, x + i0 * xs.img_stride + x_off, V);
      wino_grad_output(ys, dy + i0 * ys.img_stride + y_off, Z);
      const T beta = so.first ? T(0) : T(1);
      for (int64_t xi = 0; xi < kPos; ++xi) {
        gemm<T>(false, true, p.cout_g, p.cin_g, tiles, T(1), Z + xi * ys.ld(), tiles,
                V + xi * xs.ld(), tiles, beta, so.dw + (grp * kPos + xi) * pairs, p.cin_g);
      }
    }
    if (dx) {
      const WinoSide<T> in = wino_y_side<T>(g, p, nimg, false);
      const WinoSide<T> out = wino_x_side<T>(g, p, nimg, false);
      wino_conv<T>(in, dy + i0 * in.img_stride + y_off, Ut + grp * kPos * pairs, out, nullptr,
                   dx + i0 * out.img_stride + x_off);
    }
  }
}

}  // namespace

// ---- entry points
// --------------------------------------------------------------------------------

int64_t conv2d_forward_workspace(const Conv2dGeometry& g) {
  return g.n > 0 && use_winograd(g) ? kPos * g.c_out * (g.c_in / g.groups) : 0;
}

int64_t conv2d_backward_workspace(const Conv2dGeometry& g, bool need_dx, bool need_dw) {
  if (g.n == 0) return 0;
  const int64_t wsize = g.c_out * (g.c_in / g.groups) * g.kh * g.kw;
  if (use_winograd(g)) {
    const int64_t usize = kPos * g.c_out * (g.c_in / g.groups);
    const int64_t slots = slot_count(make_wino_plan(g).chunks);
    return (need_dw ? slots * usize : 0) + (need_dx ? usize : 0);
  }
  return need_dw ? (slot_count(make_plan(g).chunks) - 1) * wsize : 0;
}

template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y,
                    T* workspace) {
  if (g.n == 0) return;
  if (use_winograd(g)) {
    const WinoPlan p = make_wino_plan(g);
    wino_weights(g, p, w, false, workspace);
    for_units(p.chunks, conv_flops(g),
              [&](int64_t c) { wino_forward_chunk(g, p, x, workspace, bias, y, c); });
    return;
  }
  const Plan p = make_plan(g);
  for_units(p.chunks, conv_flops(g), [&](int64_t c) { forward_chunk(g, p, x, w, bias, y, c); });
}

template <class T>
void conv2d_backward(const Conv2dGeometry& g, const T* dy, const T* x, const T* w, T* dx, T* dw,
                     T* dbias, T* workspace) {
  const int64_t wsize = g.c_out * (g.c_in / g.groups) * g.kh * g.kw;
  if (g.n == 0) {
    if (dw) std::fill(dw, dw + wsize, T(0));
    if (dbias) std::fill(dbias, dbias + g.c_out, T(0));
    return;
  }
  const bool wino = use_winograd(g);
  const WinoPlan wp = wino ? make_wino_plan(g) : WinoPlan();
  const Plan p = wino ? Plan() : make_plan(g);
  const int64_t chunks = wino ? wp.chunks : p.chunks;
  const int64_t slots = slot_count(chunks);
  // Partial weight gradients, one per slot: dU for Winograd (slot 0 included), dw itself and
  // then the workspace for im2col. The adjoint kernel transform follows the Winograd partials.
  const int64_t part = wino ? kPos * g.c_out * (g.c_in / g.groups) : wsize;
  auto partial = [&](int64_t s) {
    return wino ? workspace + s * part : s == 0 ? dw : workspace + (s - 1) * part;
  };
  T* Ut = nullptr;
  if (wino && dx) {
    Ut = workspace + (dw ? slots * part : 0);
    wino_weights(g, wp, w, true, Ut);
  }
  std::vector<double> bias_part(dbias ? slots * g.c_out : 0, 0.0);
  for_units(slots, conv_flops(g), [&](int64_t s) {
    SlotOut<T> so;
    if (dw) so.dw = partial(s);
    so.dbias = dbias ? bias_part.data() + s * g.c_out : nullptr;
    const int64_t c0 = chunks * s / slots, c1 = chunks * (s + 1) / slots;
    for (int64_t c = c0; c < c1; ++c) {
      so.first = c == c0;
      if (wino) {
        wino_backward_chunk(g, wp, dy, x, Ut, dx, so, c);
      } else {
        backward_chunk(g, p, dy, x, w, dx, so, c);
      }
    }
  });
  if (dw) {
    // Slot partials added in slot order, into slot 0's buffer.
    T* sum = partial(0);
    if (slots > 1) {
      parallel_for(part, 16384, [&](int64_t lo, int64_t hi) {
        for (int64_t s = 1; s < slots; ++s) {
          const T* ps = partial(s);
          for (int64_t i = lo; i < hi; ++i) sum[i] += ps[i];
        }
      });
    }
    if (wino) wino_weight_grad(g, wp, sum, dw);
  }
  if (dbias) {
    for (int64_t c = 0; c < g.c_out; ++c) {
      double total = 0;
      for (int64_t s = 0; s < slots; ++s) total += bias_part[s * g.c_out + c];
      dbias[c] = static_cast<T>(total);
    }
  }
}

template void conv2d_forward<float>(const Conv2dGeometry&, const float*, const float*, const float*,
                                    float*, float*);
template void conv2d_forward<double>(const Conv2dGeometry&, const double*, const double*,
                                     const double*, double*, double*);
template void conv2d_backward<float>(const Conv2dGeometry&, const float*, const float*,
                                     const float*, float*, float*, float*, float*);
template void conv2d_backward<double>(const Conv2dGeometry&, const double*, const double*,
                                      const double*, double*, double*, double*, double*);

}  // namespace mel::kernels::cpu
