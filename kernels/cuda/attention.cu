// Causal self-attention kernels of kernels/cuda/attention.h, flash-attention style on CUDA cores.
// A block of 4 warps owns a tile of rows (query rows in the forward and dq kernels, key rows in the
// dk/dv kernel); each warp owns kRW of those rows, and its 32 lanes take the 32 rows of the other
// side's tile, which the block stages in shared memory (one [32][Dh + 1] buffer, loaded in turn
// with k, v, q or dout). Scores, probabilities and their gradients live in registers (one per lane
// and row) and reach the other lanes by shuffles; lane l accumulates output columns l, l + 32, ...
// Each output element is summed by one thread in a fixed order: no atomics, results repeat bitwise.
#include "kernels/cuda/attention.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/rows.cuh"
#include "kernels/error.h"

#include <string>

namespace mel::kernels::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarp;
constexpr int kTile = kWarp;  // rows of the staged tile: one per lane
constexpr size_t kSmemLimit = 48 * 1024;

// Rows per warp for a kernel that keeps `tiles` arrays of [kWarps * rows][kDh] beside the
// [kTile][kDh + 1] buffer: the most of 4, 2 or 1 that fit in 48 KiB of static shared memory.
template <class T, int kDh, int tiles>
constexpr int rows_per_warp() {
  constexpr size_t fixed = sizeof(T) * kTile * (kDh + 1);
  constexpr size_t per_row = sizeof(T) * tiles * kWarps * kDh;
  return fixed + 4 * per_row <= kSmemLimit ? 4 : (fixed + 2 * per_row <= kSmemLimit ? 2 : 1);
}

// The forward keeps the query tile; dq the query and dout tiles; dk/dv the key and value tiles.
template <class T, int kDh>
constexpr int kForwardRows = rows_per_warp<T, kDh, 1>();
template <class T, int kDh>
constexpr int kDqRows = rows_per_warp<T, kDh, 2>();
template <class T, int kDh>
constexpr int kDkvRows = rows_per_warp<T, kDh, 2>();

// Element offsets of head (b, h) = bh's first column in qkv ([B, L, 3D]) and out ([B, L, D]).
struct HeadOffsets {
  int64_t qkv, out;
};

__device__ __forceinline__ HeadOffsets head_offsets(int64_t bh, int64_t L, int64_t H, int64_t Dh) {
  const int64_t b = bh / H, h = bh % H, D = H * Dh;
  return {b * L * 3 * D + h * Dh, b * L * D + h * Dh};
}

// tile[r][d] = src[(r0 + r) * ld + d] for r < kRows, d < kDh; 0 beyond row L or column Dh. Every
// thread of the block calls it.
template <int kRows, int kDh, class T, int kPitch>
__device__ __forceinline__ void load_tile(T (*tile)[kPitch], const T* src, int64_t ld, int64_t r0,
                                          int64_t L, int64_t Dh) {
  for (int e = static_cast<int>(threadIdx.x); e < kRows * kDh; e += kThreads) {
    const int r = e / kDh, d = e % kDh;
    const int64_t i = r0 + r;
    tile[r][d] = i < L && d < Dh ? src[i * ld + d] : T(0);
  }
}

template <class T>
__device__ __forceinline__ T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma unroll 4
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

// acc[c] += sum over the tile's rows jj of w_jj * tile[jj][lane + 32 c], w_jj being lane jj's
// `w`. Every lane of the warp calls it.
template <int kC, class T, int kPitch>
__device__ __forceinline__ void accumulate_rows(T (&acc)[kC], T w, const T (*tile)[kPitch],
                                                int lane) {
#pragma unroll 4
  for (int jj = 0; jj < kTile; ++jj) {
    const T wj = __shfl_sync(0xffffffffu, w, jj);
#pragma unroll
    for (int c = 0; c < kC; ++c) acc[c] += wj * tile[jj][lane + kWarp * c];
  }
}

// Forward: item = (b, h, tile of kWarps * kRW query rows), later tiles (more keys) first. Online
// softmax over key tiles: running max m, sum l and unnormalised output o per row.
template <class T, int kDh>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(const T* __restrict__ qkv, int64_t L, int64_t H, int64_t Dh, T scale,
                             int64_t items, T* __restrict__ out, T* __restrict__ lse) {
  constexpr int kRW = kForwardRows<T, kDh>, kBQ = kWarps * kRW, kC = kDh / kWarp;
  __shared__ T qs[kBQ][kDh];
  __shared__ T kv[kTile][kDh + 1];
  const int warp = static_cast<int>(threadIdx.x) / kWarp,
            lane = static_cast<int>(threadIdx.x) % kWarp;
  const int64_t D = H * Dh, ld = 3 * D, tiles = (L + kBQ - 1) / kBQ;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t bh = item / tiles, q0 = (tiles - 1 - item % tiles) * kBQ;
    const HeadOffsets ho = head_offsets(bh, L, H, Dh);
    const T* q = qkv + ho.qkv;
    __syncthreads();  // the previous item's tiles are read no more
    load_tile<kBQ, kDh>(qs, q, ld, q0, L, Dh);
    T m[kRW], l[kRW], o[kRW][kC];
#pragma unroll
    for (int rr = 0; rr < kRW; ++rr) {
      m[rr] = neg_inf<T>();
      l[rr] = 0;
#pragma unroll
      for (int c = 0; c < kC; ++c) o[rr][c] = 0;
    }
    const int64_t kend = q0 + kBQ < L ? q0 + kBQ : L;
    for (int64_t j0 = 0; j0 < kend; j0 += kTile) {
      __syncthreads();
      load_tile<kTile, kDh>(kv, q + D, ld, j0, L, Dh);
      __syncthreads();
      const int64_t j = j0 + lane;
      T p[kRW];
#pragma unroll
      for (int rr = 0; rr < kRW; ++rr) {
        const int r = warp * kRW + rr;
        const int64_t i = q0 + r;
        p[rr] = 0;
        if (i >= L || j0 > i) continue;  // the whole warp agrees
        const T s = j <= i ? dot(qs[r], kv[lane], Dh) * scale : neg_inf<T>();
        const T mn = dmax(m[rr], warp_max(s));
        const T corr = dexp(m[rr] - mn);
        p[rr] = j <= i ? dexp(s - mn) : T(0);
        l[rr] = l[rr] * corr + warp_sum(p[rr]);
#pragma unroll
        for (int c = 0; c < kC; ++c) o[rr][c] *= corr;
        m[rr] = mn;
      }
      __syncthreads();
      load_tile<kTile, kDh>(kv, q + 2 * D, ld, j0, L, Dh);
      __syncthreads();
#pragma unroll
      for (int rr = 0; rr < kRW; ++rr) {
        const int64_t i = q0 + warp * kRW + rr;
        if (i >= L || j0 > i) continue;
        accumulate_rows(o[rr], p[rr], kv, lane);
      }
    }
#pragma unroll
    for (int rr = 0; rr < kRW; ++rr) {
      const int64_t i = q0 + warp * kRW + rr;
      if (i >= L) continue;
      const T inv = T(1) / l[rr];
#pragma unroll
      for (int c = 0; c < kC; ++c) {
        const int d = lane + kWarp * c;
        if (d < Dh) out[ho.out + i * D + d] = o[rr][c] * inv;
      }
      if (lane == 0) lse[bh * L + i] = m[rr] + dlog(l[rr]);
    }
  }
}

// delta[(b, h), i] = sum_d dout[b, i, h, d] * out[b, i, h, d]: one thread per row.
template <class T>
__global__ void attention_delta_kernel(const T* __restrict__ out, const T* __restrict__ dout,
                                       int64_t rows, int64_t L, int64_t H, int64_t Dh,
                                       T* __restrict__ delta) {
  const int64_t D = H * Dh;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < rows;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t off = head_offsets(idx / L, L, H, Dh).out + (idx % L) * D;
    delta[idx] = dot(dout + off, out + off, Dh);
  }
}

// dq for item = (b, h, tile of query rows): dq_i = scale * sum_{j <= i} dS_ij k_j with
// dS_ij = P_ij (dout_i . v_j - delta_i), P_ij = exp(scale q_i . k_j - lse_i).
template <class T, int kDh>
__global__ void __launch_bounds__(kThreads)
    attention_dq_kernel(const T* __restrict__ qkv, const T* __restrict__ dout,
                        const T* __restrict__ lse, const T* __restrict__ delta, int64_t L,
                        int64_t H, int64_t Dh, T scale, int64_t items, T* __restrict__ dqkv) {
  constexpr int kRW = kDqRows<T, kDh>, kBQ = kWarps * kRW, kC = kDh / kWarp;
  __shared__ T qs[kBQ][kDh];
  __shared__ T gs[kBQ][kDh];
  __shared__ T kv[kTile][kDh + 1];
  const int warp = static_cast<int>(threadIdx.x) / kWarp,
            lane = static_cast<int>(threadIdx.x) % kWarp;
  const int64_t D = H * Dh, ld = 3 * D, tiles = (L + kBQ - 1) / kBQ;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t bh = item / tiles, q0 = (tiles - 1 - item % tiles) * kBQ;
    const HeadOffsets ho = head_offsets(bh, L, H, Dh);
    const T* q = qkv + ho.qkv;
    __syncthreads();
    load_tile<kBQ, kDh>(qs, q, ld, q0, L, Dh);
    load_tile<kBQ, kDh>(gs, dout + ho.out, D, q0, L, Dh);
    T li[kRW], di[kRW], acc[kRW][kC];
#pragma unroll
    for (int rr = 0; rr < kRW; ++rr) {
      const int64_t i = q0 + warp * kRW + rr;
      li[rr] = i < L ? lse[bh * L + i] : T(0);
      di[rr] = i < L ? delta[bh * L + i] : T(0);
#pragma unroll
      for (int c = 0; c < kC; ++c) acc[rr][c] = 0;
    }
    const int64_t kend = q0 + kBQ < L ? q0 + kBQ : L;
    for (int64_t j0 = 0; j0 < kend; j0 += kTile) {
      const int64_t j = j0 + lane;
      T p[kRW], ds[kRW];
      __syncthreads();
      load_tile<kTile, kDh>(kv, q + D, ld, j0, L, Dh);
      __syncthreads();
#pragma unroll
      for (int rr = 0; rr < kRW; ++rr) {
        const int r = warp * kRW + rr;
        const int64_t i = q0 + r;
        p[rr] = i < L && j <= i ? dexp(dot(qs[r], kv[lane], Dh) * scale - li[rr]) : T(0);
      }
      __syncthreads();
      load_tile<kTile, kDh>(kv, q + 2 * D, ld, j0, L, Dh);
      __syncthreads();
#pragma unroll
      for (int rr = 0; rr < kRW; ++rr) {
        const int r = warp * kRW + rr;
        const int64_t i = q0 + r;
        ds[rr] = i < L && j <= i ? p[rr] * (dot(gs[r], kv[lane], Dh) - di[rr]) : T(0);
      }
      __syncthreads();
      load_tile<kTile, kDh>(kv, q + D, ld, j0, L, Dh);
      __syncthreads();
#pragma unroll
      for (int rr = 0; rr < kRW; ++rr) {
        const int64_t i = q0 + warp * kRW + rr;
        if (i >= L || j0 > i) continue;  // the whole warp agrees
        accumulate_rows(acc[rr], ds[rr], kv, lane);
      }
    }
#pragma unroll
    for (int rr = 0; rr < kRW; ++rr) {
      const int64_t i = q0 + warp * kRW + rr;
      if (i >= L) continue;
#pragma unroll
      for (int c = 0; c < kC; ++c) {
        const int d = lane + kWarp * c;
        if (d < Dh) dqkv[ho.qkv + i * ld + d] = acc[rr][c] * scale;
      }
    }
  }
}

// dk and dv for item = (b, h, tile of key rows), earlier tiles (more queries) first:
// dk_j = scale * sum_{i >= j} dS_ij q_i, dv_j = sum_{i >= j} P_ij dout_i.
template <class T, int kDh>
__global__ void __launch_bounds__(kThreads)
    attention_dkv_kernel(const T* __restrict__ qkv, const T* __restrict__ dout,
                         const T* __restrict__ lse, const T* __restrict__ delta, int64_t L,
                         int64_t H, int64_t Dh, T scale, int64_t items, T* __restrict__ dqkv) {
  constexpr int kRW = kDkvRows<T, kDh>, kBK = kWarps * kRW, kC = kDh / kWarp;
  __shared__ T ks[kBK][kDh];
  __shared__ T vs[kBK][kDh];
  __shared__ T buf[kTile][kDh + 1];
  const int warp = static_cast<int>(threadIdx.x) / kWarp,
            lane = static_cast<int>(threadIdx.x) % kWarp;
  const int64_t D = H * Dh, ld = 3 * D, tiles = (L + kBK - 1) / kBK;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t bh = item / tiles, k0 = (item % tiles) * kBK;
    const HeadOffsets ho = head_offsets(bh, L, H, Dh);
    const T* q = qkv + ho.qkv;
    const T* g = dout + ho.out;
    __syncthreads();
    load_tile<kBK, kDh>(ks, q + D, ld, k0, L, Dh);
    load_tile<kBK, kDh>(vs, q + 2 * D, ld, k0, L, Dh);
    T dk[kRW][kC], dv[kRW][kC];
#pragma unroll
    for (int rr = 0; rr < kRW; ++rr) {
#pragma unroll
      for (int c = 0; c < kC; ++c) dk[rr][c] = dv[rr][c] = 0;
    }
    for (int64_t i0 = k0; i0 < L; i0 += kTile) {
      const int64_t i = i0 + lane;
      const T li = i < L ? lse[bh * L + i] : T(0);
      const T di = i < L ? delta[bh * L + i] : T(0);
      T p[kRW], ds[kRW];
      __syncthreads();
      load_tile<kTile, kDh>(buf, q, ld, i0, L, Dh);
      __syncthreads();
#pragma unroll
      for (int rr = 0; rr < kRW; ++rr) {
        const int r = warp * kRW + rr;
        const int64_t j = k0 + r;
        p[rr] = i < L && j <= i ? dexp(dot(buf[lane], ks[r], Dh) * scale - li) : T(0);
      }
      __syncthreads();
      load_tile<kTile, kDh>(buf, g, D, i0, L, Dh);
      __syncthreads();
#pragma unroll
      for (int rr = 0; rr < kRW; ++rr) {
        const int r = warp * kRW + rr;
        const int64_t j = k0 + r;
        ds[rr] = i < L && j <= i ? p[rr] * (dot(buf[lane], vs[r], Dh) - di) : T(0);
        if (j >= L) continue;  // the whole warp agrees
        accumulate_rows(dv[rr], p[rr], buf, lane);
      }
      __syncthreads();
      load_tile<kTile, kDh>(buf, q, ld, i0, L, Dh);
      __syncthreads();
#pragma unroll
      for (int rr = 0; rr < kRW; ++rr) {
        if (k0 + warp * kRW + rr >= L) continue;
        accumulate_rows(dk[rr], ds[rr], buf, lane);
      }
    }
#pragma unroll
    for (int rr = 0; rr < kRW; ++rr) {
      const int64_t j = k0 + warp * kRW + rr;
      if (j >= L) continue;
#pragma unroll
      for (int c = 0; c < kC; ++c) {
        const int d = lane + kWarp * c;
        if (d >= Dh) continue;
        dqkv[ho.qkv + D + j * ld + d] = dk[rr][c] * scale;
        dqkv[ho.qkv + 2 * D + j * ld + d] = dv[rr][c];
      }
    }
  }
}

void check_head_dim(int64_t Dh) {
  if (Dh > kAttentionMaxHeadDim) {
    throw Error("causal_attention (CUDA): head dim " + std::to_string(Dh) +
                " is above the kernels' limit of " + std::to_string(kAttentionMaxHeadDim));
  }
}

// Calls f(std::integral_constant<int, kDh>) with the kernels' head-dim tile for Dh (32, 64, 128).
template <class F>
void with_head_dim(int64_t Dh, F&& f) {
  if (Dh <= 32) return f(std::integral_constant<int, 32>{});
  if (Dh <= 64) return f(std::integral_constant<int, 64>{});
  return f(std::integral_constant<int, 128>{});
}

}  // namespace

template <class T>
void causal_attention_forward(const T* qkv, int64_t B, int64_t L, int64_t H, int64_t Dh,
                              double scale, T* out, T* lse, cudaStream_t stream) {
  if (B <= 0 || L <= 0 || H <= 0) return;
  check_head_dim(Dh);
  with_head_dim(Dh, [&](auto dh) {
    constexpr int kBQ = kWarps * kForwardRows<T, decltype(dh)::value>;
    const int64_t items = B * H * ((L + kBQ - 1) / kBQ);
    attention_forward_kernel<T, decltype(dh)::value>
        <<<grid_for(items, 1), kThreads, 0, stream>>>(qkv, L, H, Dh, T(scale), items, out, lse);
  });
  MEL_CUDA_CHECK_LAUNCH();
}

template <class T>
void causal_attention_backward(const T* qkv, const T* out, const T* lse, const T* dout, int64_t B,
                               int64_t L, int64_t H, int64_t Dh, double scale, T* delta, T* dqkv,
                               cudaStream_t stream) {
  if (B <= 0 || L <= 0 || H <= 0) return;
  check_head_dim(Dh);
  const int64_t rows = B * H * L;
  attention_delta_kernel<T>
      <<<grid_for(rows), kBlock, 0, stream>>>(out, dout, rows, L, H, Dh, delta);
  MEL_CUDA_CHECK_LAUNCH();
  with_head_dim(Dh, [&](auto dh) {
    constexpr int kBQ = kWarps * kDqRows<T, decltype(dh)::value>;
    const int64_t items = B * H * ((L + kBQ - 1) / kBQ);
    attention_dq_kernel<T, decltype(dh)::value><<<grid_for(items, 1), kThreads, 0, stream>>>(
        qkv, dout, lse, delta, L, H, Dh, T(scale), items, dqkv);
  });
  MEL_CUDA_CHECK_LAUNCH();
  with_head_dim(Dh, [&](auto dh) {
    constexpr int kBK = kWarps * kDkvRows<T, decltype(dh)::value>;
    const int64_t items = B * H * ((L + kBK - 1) / kBK);
    attention_dkv_kernel<T, decltype(dh)::value><<<grid_for(items, 1), kThreads, 0, stream>>>(
        qkv, dout, lse, delta, L, H, Dh, T(scale), items, dqkv);
  });
  MEL_CUDA_CHECK_LAUNCH();
}

#define MEL_INSTANTIATE_ATTENTION(T)                                                              \
  template void causal_attention_forward<T>(const T*, int64_t, int64_t, int64_t, int64_t, double, \
                                            T*, T*, cudaStream_t);                                \
  template void causal_attention_backward<T>(const T*, const T*, const T*, const T*, int64_t,     \
                                             int64_t, int64_t, int64_t, double, T*, T*,           \
                                             cudaStream_t);
MEL_INSTANTIATE_ATTENTION(float)
MEL_INSTANTIATE_ATTENTION(double)
#undef MEL_INSTANTIATE_ATTENTION

}  // namespace mel::kernels::cuda
