#include "kernels/cpu/conv.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/conv_impl.h"
#include "kernels/cpu/gemm.h"
#include "kernels/strided.h"

namespace mel::kernels::cpu {
namespace {

using conv_detail::add_bias_grad;
using conv_detail::ceil_div;
using conv_detail::images_per_chunk;
using conv_detail::kPos;
using conv_detail::make_wino_plan;
using conv_detail::scratch;
using conv_detail::SlotOut;
using conv_detail::use_winograd;
using conv_detail::wino_backward_chunk;
using conv_detail::wino_forward_chunk;
using conv_detail::wino_weight_grad;
using conv_detail::wino_weights;
using conv_detail::WinoPlan;

// ---- shared machinery --------------------------------------------------------------------------

// Weight gradients are summed per slot (a fixed run of chunks) and the slots are added in order.
// A slot count fixed by the shapes keeps results identical for every thread count up to it; each
// slot holds a partial gradient (36 / 9 of the weights' size under Winograd), so few slots keep
// the workspace and the final reduction small.
constexpr int64_t kSlots = 4;
// Below this many flops a convolution runs on one thread: waking the others costs more.
constexpr double kParallelFlops = 1 << 20;

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

// ---- backward: slots and their reduction ------------------------------------------------------

// How the backward pass cuts its work: the chunks of either path, run as `slots` runs of
// consecutive chunks, each run accumulating its own partial weight gradient (`part` elements: dU
// for Winograd, dw for im2col) and bias gradient.
struct SlotPlan {
  bool wino = false;
  WinoPlan wp;
  Plan p;
  int64_t chunks = 0, slots = 0, part = 0;
};

SlotPlan make_slot_plan(const Conv2dGeometry& g, int64_t wsize) {
  SlotPlan sp;
  sp.wino = use_winograd(g);
  sp.wp = sp.wino ? make_wino_plan(g) : WinoPlan();
  sp.p = sp.wino ? Plan() : make_plan(g);
  sp.chunks = sp.wino ? sp.wp.chunks : sp.p.chunks;
  sp.slots = slot_count(sp.chunks);
  sp.part = sp.wino ? kPos * g.c_out * (g.c_in / g.groups) : wsize;
  return sp;
}

// Partial weight gradients, one per slot: dU for Winograd (slot 0 included), dw itself and then
// the workspace for im2col.
template <class T>
T* slot_partial(const SlotPlan& sp, T* dw, T* workspace, int64_t s) {
  return sp.wino ? workspace + s * sp.part : s == 0 ? dw : workspace + (s - 1) * sp.part;
}

// Slot partials added in slot order, into slot 0's buffer (returned).
template <class T>
T* sum_slot_partials(const SlotPlan& sp, T* dw, T* workspace) {
  T* sum = slot_partial(sp, dw, workspace, 0);
  if (sp.slots > 1) {
    parallel_for(sp.part, 16384, [&](int64_t lo, int64_t hi) {
      for (int64_t s = 1; s < sp.slots; ++s) {
        const T* ps = slot_partial(sp, dw, workspace, s);
        for (int64_t i = lo; i < hi; ++i) sum[i] += ps[i];
      }
    });
  }
  return sum;
}

// dbias from the slots' double sums, added in slot order.
template <class T>
void sum_bias_partials(const std::vector<double>& bias_part, int64_t slots, int64_t c_out,
                       T* dbias) {
  for (int64_t c = 0; c < c_out; ++c) {
    double total = 0;
    for (int64_t s = 0; s < slots; ++s) total += bias_part[s * c_out + c];
    dbias[c] = static_cast<T>(total);
  }
}

}  // namespace

// ---- entry points ------------------------------------------------------------------------------

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
  const SlotPlan sp = make_slot_plan(g, wsize);
  // The adjoint kernel transform follows the Winograd partials.
  T* Ut = nullptr;
  if (sp.wino && dx) {
    Ut = workspace + (dw ? sp.slots * sp.part : 0);
    wino_weights(g, sp.wp, w, true, Ut);
  }
  std::vector<double> bias_part(dbias ? sp.slots * g.c_out : 0, 0.0);
  for_units(sp.slots, conv_flops(g), [&](int64_t s) {
    SlotOut<T> so;
    if (dw) so.dw = slot_partial(sp, dw, workspace, s);
    so.dbias = dbias ? bias_part.data() + s * g.c_out : nullptr;
    const int64_t c0 = sp.chunks * s / sp.slots, c1 = sp.chunks * (s + 1) / sp.slots;
    for (int64_t c = c0; c < c1; ++c) {
      so.first = c == c0;
      if (sp.wino) {
        wino_backward_chunk(g, sp.wp, dy, x, Ut, dx, so, c);
      } else {
        backward_chunk(g, sp.p, dy, x, w, dx, so, c);
      }
    }
  });
  if (dw) {
    T* sum = sum_slot_partials(sp, dw, workspace);
    if (sp.wino) wino_weight_grad(g, sp.wp, sum, dw);
  }
  if (dbias) sum_bias_partials(bias_part, sp.slots, g.c_out, dbias);
}

template void conv2d_forward<float>(const Conv2dGeometry&, const float*, const float*, const float*,
                                    float*, float*);
template void conv2d_forward<double>(const Conv2dGeometry&, const double*, const double*,
                                     const double*, double*, double*);
template void conv2d_backward<float>(const Conv2dGeometry&, const float*, const float*,
                                     const float*, float*, float*, float*, float*);
template void conv2d_backward<double>(const Conv2dGeometry&, const double*, const double*,
                                      const double*, double*, double*, double*, double*);

template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y,
                    const ConvResources& r) {
  const int64_t n = conv2d_forward_workspace(g);
  T* ws = n > 0 ? static_cast<T*>(r.workspace(static_cast<size_t>(n) * sizeof(T))) : nullptr;
  conv2d_forward<T>(g, x, w, bias, y, ws);
}

template <class T>
void conv2d_backward(const Conv2dGeometry& g, const T* dy, const T* x, const T* w, T* dx, T* dw,
                     T* dbias, const ConvResources& r) {
  const int64_t n = conv2d_backward_workspace(g, dx != nullptr, dw != nullptr);
  T* ws = n > 0 ? static_cast<T*>(r.workspace(static_cast<size_t>(n) * sizeof(T))) : nullptr;
  conv2d_backward<T>(g, dy, x, w, dx, dw, dbias, ws);
}

#define MEL_CONV_RESOURCES_INSTANTIATE(T)                                                       \
  template void conv2d_forward<T>(const Conv2dGeometry&, const T*, const T*, const T*, T*,      \
                                  const ConvResources&);                                        \
  template void conv2d_backward<T>(const Conv2dGeometry&, const T*, const T*, const T*, T*, T*, \
                                   T*, const ConvResources&);
MEL_CONV_RESOURCES_INSTANTIATE(float)
MEL_CONV_RESOURCES_INSTANTIATE(double)
#undef MEL_CONV_RESOURCES_INSTANTIATE

}  // namespace mel::kernels::cpu
