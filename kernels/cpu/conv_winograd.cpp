#include "kernels/cpu/conv_impl.h"

#include <algorithm>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "kernels/cpu/gemm.h"

namespace mel::kernels::cpu::conv_detail {

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

// Tiles per chunk to aim for, and when one image's transform buffers (elements) are bigger than
// this the im2col path (which splits images into bands) is used instead.
constexpr int64_t kWinoTiles = 256;
constexpr int64_t kWinoMaxImageElems = int64_t(8) << 20;
// With fewer input channels the 36 products have too short a K to run near peak, and im2col
// (K = 9 c_in) wins; measured on the layer shapes of small CNNs.
constexpr int64_t kWinoMinInChannels = 12;

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

namespace {

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

// hv[i][k][tj * n + img] = A^T down the columns of the 6x6 blocks M[xi][t] of one tile row (m:
// its first tile in plane xi = 0).
template <class T>
void wino_output_columns(const T* m, int64_t ld_xi, int64_t row_len, T* hv) {
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
}

// Output rows of tile row ti (those above rows_out) = A^T along the rows of hv, plus b, into the
// transposed plane Y [oh][ow][img] with `cols` columns.
template <class T>
void wino_output_rows(const WinoSide<T>& s, const T* hv, int64_t ti, int64_t rows_out, int64_t cols,
                      T b, T* Y) {
  const int64_t n = s.nimg, tw = s.tw, row_len = tw * n;
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
      wino_output_columns(M + c * tiles + ti * row_len, ld_xi, row_len, hv);
      wino_output_rows(s, hv, ti, rows_out, cols, b, Y);
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

}  // namespace

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

template void wino_forward_chunk<float>(const Conv2dGeometry&, const WinoPlan&, const float*,
                                        const float*, const float*, float*, int64_t);
template void wino_forward_chunk<double>(const Conv2dGeometry&, const WinoPlan&, const double*,
                                         const double*, const double*, double*, int64_t);
template void wino_backward_chunk<float>(const Conv2dGeometry&, const WinoPlan&, const float*,
                                         const float*, const float*, float*, const SlotOut<float>&,
                                         int64_t);
template void wino_backward_chunk<double>(const Conv2dGeometry&, const WinoPlan&, const double*,
                                          const double*, const double*, double*,
                                          const SlotOut<double>&, int64_t);

}  // namespace mel::kernels::cpu::conv_detail
