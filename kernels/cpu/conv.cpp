#include "kernels/cpu/conv.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/strided.h"

namespace mel::kernels::cpu {
namespace {

// A chunk's im2col matrix has this many columns when the images are small enough: narrower
// products waste the GEMM's 16-wide register tile on ragged edges and repack the weights (the A
// operand) too often per flop.
constexpr int64_t kTargetCols = 512;
// ...but its bytes stay near the L2 size so that gemm's packing reads it from cache.
constexpr int64_t kColBytes = int64_t(4) << 20;
// At least this many chunks when the batch allows, so that every thread gets work.
constexpr int64_t kMinChunks = 8;
// Weight gradients are summed per slot (a fixed run of chunks) and the slots are added in order.
// A fixed slot count keeps results identical for every thread count up to it.
constexpr int64_t kSlots = 8;

struct AlignedFree {
  void operator()(void* p) const { ::operator delete(p, std::align_val_t(64)); }
};

// Per-thread buffers reused across calls: the column matrix (slot 0) and the gathered output or
// output gradient of a chunk (slot 1). Fresh multi-megabyte buffers per call would be mmapped and
// page-faulted every time.
template <class T>
T* scratch(int slot, int64_t n) {
  struct Buf {
    std::unique_ptr<T[], AlignedFree> p;
    int64_t n = 0;
  };
  thread_local Buf bufs[2];
  Buf& b = bufs[slot];
  if (b.n < n) {
    b.p.reset(static_cast<T*>(
        ::operator new(static_cast<size_t>(n) * sizeof(T), std::align_val_t(64))));
    b.n = n;
  }
  return b.p.get();
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// How the batch is cut: chunks of `nb` whole images, or, when one image's column matrix is too
// large, single images processed in bands of `band` output rows.
struct Plan {
  int64_t hw_out = 0, cin_g = 0, cout_g = 0, ckk = 0;
  int64_t nb = 1, chunks = 0, band = 0;
  bool pointwise = false;  // 1x1, stride 1, no padding: the column matrix is the input itself
};

template <class T>
Plan make_plan(const Conv2dGeometry& g) {
  Plan p;
  p.hw_out = g.h_out * g.w_out;
  p.cin_g = g.c_in / g.groups;
  p.cout_g = g.c_out / g.groups;
  p.ckk = p.cin_g * g.kh * g.kw;
  p.pointwise = g.kh == 1 && g.kw == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 &&
                g.pad_w == 0;
  const int64_t col_bytes_per_image = p.ckk * p.hw_out * static_cast<int64_t>(sizeof(T));
  int64_t nb = ceil_div(kTargetCols, std::max<int64_t>(p.hw_out, 1));
  nb = std::min(nb, std::max<int64_t>(1, kColBytes / std::max<int64_t>(col_bytes_per_image, 1)));
  nb = std::clamp<int64_t>(nb, 1, std::max<int64_t>(1, g.n / kMinChunks));
  p.nb = nb;
  p.chunks = ceil_div(g.n, nb);
  p.band = g.h_out;
  if (col_bytes_per_image > kColBytes) {
    const int64_t row_bytes = p.ckk * g.w_out * static_cast<int64_t>(sizeof(T));
    p.band = std::clamp<int64_t>(kColBytes / std::max<int64_t>(row_bytes, 1), 1, g.h_out);
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

// Below this many flops a convolution runs on one thread: waking the others costs more.
constexpr double kParallelFlops = 1 << 20;

double conv_flops(const Conv2dGeometry& g, const Plan& p) {
  return 2.0 * static_cast<double>(g.n) * static_cast<double>(g.c_out) *
         static_cast<double>(p.ckk) * static_cast<double>(p.hw_out);
}

// Runs body(unit) for units [0, units): across threads when that balances well (each call to
// gemm inside then runs single-threaded), else one after another with gemm parallel inside.
template <class F>
void for_units(int64_t units, double flops, F&& body) {
  const int threads = omp_in_parallel() || flops < kParallelFlops ? 1 : omp_get_max_threads();
  const bool outer = threads > 1 && units >= threads &&
                     4 * ceil_div(units, threads) * threads <= 5 * units;  // <= 25% idle
  if (!outer) {
    for (int64_t u = 0; u < units; ++u) body(u);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t u = 0; u < units; ++u) body(u);
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

// Pointers a backward chunk writes to: this chunk's slot partial of dw (null when not wanted) and
// of dbias, and whether the chunk is the slot's first (which overwrites rather than adds).
template <class T>
struct SlotOut {
  T* dw = nullptr;
  double* dbias = nullptr;
  bool first = false;
};

template <class T>
void backward_chunk(const Conv2dGeometry& g, const Plan& p, const T* dy, const T* x, const T* w,
                    T* dx, const SlotOut<T>& so, int64_t chunk) {
  const int64_t i0 = chunk * p.nb, nimg = std::min(p.nb, g.n - i0);
  const int64_t x_img = g.c_in * g.h * g.w, y_img = g.c_out * p.hw_out;
  if (dx) std::fill(dx + i0 * x_img, dx + (i0 + nimg) * x_img, T(0));
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    const T* xg = x ? x + i0 * x_img + grp * p.cin_g * g.h * g.w : nullptr;
    const T* wg = w ? w + grp * p.cout_g * p.ckk : nullptr;
    const T* dyg = dy + i0 * y_img + grp * p.cout_g * p.hw_out;
    T* dxg = dx ? dx + i0 * x_img + grp * p.cin_g * g.h * g.w : nullptr;
    T* dwg = so.dw ? so.dw + grp * p.cout_g * p.ckk : nullptr;
    double* dbg = so.dbias ? so.dbias + grp * p.cout_g : nullptr;
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
      if (dbg) {
        for (int64_t co = 0; co < p.cout_g; ++co) {
          double s = 0;
          const T* r = d + co * ldd;
          for (int64_t j = 0; j < cols; ++j) s += r[j];
          dbg[co] += s;
        }
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

int64_t slot_count(const Plan& p) {
  return std::min<int64_t>(p.chunks, std::max<int64_t>(kSlots, omp_get_max_threads()));
}

}  // namespace

template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  if (g.n == 0) return;
  const Plan p = make_plan<T>(g);
  for_units(p.chunks, conv_flops(g, p), [&](int64_t c) { forward_chunk(g, p, x, w, bias, y, c); });
}

int64_t conv2d_backward_workspace(const Conv2dGeometry& g, bool need_dw) {
  if (!need_dw || g.n == 0) return 0;
  // The plan for float has at least as many chunks as for double, so its slot count bounds both.
  const Plan p = make_plan<float>(g);
  const Plan pd = make_plan<double>(g);
  const int64_t slots = std::max(slot_count(p), slot_count(pd));
  return (slots - 1) * g.c_out * (g.c_in / g.groups) * g.kh * g.kw;
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
  const Plan p = make_plan<T>(g);
  const int64_t slots = slot_count(p);
  std::vector<double> bias_part(dbias ? slots * g.c_out : 0, 0.0);
  for_units(slots, conv_flops(g, p), [&](int64_t s) {
    SlotOut<T> so;
    so.dw = dw ? (s == 0 ? dw : workspace + (s - 1) * wsize) : nullptr;
    so.dbias = dbias ? bias_part.data() + s * g.c_out : nullptr;
    const int64_t c0 = p.chunks * s / slots, c1 = p.chunks * (s + 1) / slots;
    for (int64_t c = c0; c < c1; ++c) {
      so.first = c == c0;
      backward_chunk(g, p, dy, x, w, dx, so, c);
    }
  });
  if (dw && slots > 1) {
    parallel_for(wsize, 16384, [&](int64_t lo, int64_t hi) {
      for (int64_t s = 1; s < slots; ++s) {
        const T* part = workspace + (s - 1) * wsize;
        for (int64_t i = lo; i < hi; ++i) dw[i] += part[i];
      }
    });
  }
  if (dbias) {
    for (int64_t c = 0; c < g.c_out; ++c) {
      double sum = 0;
      for (int64_t s = 0; s < slots; ++s) sum += bias_part[s * g.c_out + c];
      dbias[c] = static_cast<T>(sum);
    }
  }
}

template void conv2d_forward<float>(const Conv2dGeometry&, const float*, const float*, const float*,
                                    float*);
template void conv2d_forward<double>(const Conv2dGeometry&, const double*, const double*,
                                     const double*, double*);
template void conv2d_backward<float>(const Conv2dGeometry&, const float*, const float*,
                                     const float*, float*, float*, float*, float*);
template void conv2d_backward<double>(const Conv2dGeometry&, const double*, const double*,
                                      const double*, double*, double*, double*, double*);

}  // namespace mel::kernels::cpu
