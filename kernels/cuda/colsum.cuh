// Deterministic two-value column sums over [rows, cols], split into row chunks so that a few
// columns still fill the GPU; the per-chunk partials are added in a fixed order by the caller.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/rows.cuh"

namespace mel::kernels::cuda {

constexpr int kColTile = 32;  // columns per block (one warp reads 32 neighbours)
constexpr int kColLanes = 8;  // row lanes per block
constexpr int64_t kColMinRows = 64;
constexpr int64_t kTargetBlocks = 1024;  // about 8 resident blocks on each of 132 SMs

struct ColSplit {
  int64_t tiles = 1, chunks = 1, rows_per_chunk = 1;
};

inline ColSplit col_split(int64_t rows, int64_t cols) {
  ColSplit s;
  s.tiles = std::max<int64_t>(1, (cols + kColTile - 1) / kColTile);
  const int64_t max_chunks = std::max<int64_t>(1, (rows + kColMinRows - 1) / kColMinRows);
  s.chunks = std::clamp<int64_t>(kTargetBlocks / s.tiles, 1, max_chunks);
  s.rows_per_chunk = std::max<int64_t>(1, (rows + s.chunks - 1) / s.chunks);
  s.chunks = std::max<int64_t>(1, (rows + s.rows_per_chunk - 1) / s.rows_per_chunk);
  return s;
}

// p1[chunk * cols + col], p2[...] = sums over the chunk's rows r of term(r, col, col / group, a1,
// a2), which adds its two values into a1 and a2. Grid: (tiles, chunks), block (kColTile,
// kColLanes). Each thread adds its rows in order; the kColLanes partials are added in lane order.
template <class Term>
__global__ void __launch_bounds__(kColTile* kColLanes)
    col_partials_kernel(int64_t rows, int64_t cols, int64_t group, int64_t rows_per_chunk,
                        Term term, double* __restrict__ p1, double* __restrict__ p2) {
  __shared__ double s1[kColLanes][kColTile + 1], s2[kColLanes][kColTile + 1];
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  const int64_t col = int64_t(blockIdx.x) * kColTile + tx;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = std::min(rows, r0 + rows_per_chunk);
  double a1 = 0, a2 = 0;
  if (col < cols) {
    const int64_t g = col / group;
    for (int64_t r = r0 + ty; r < r1; r += kColLanes) term(r, col, g, a1, a2);
  }
  s1[ty][tx] = a1;
  s2[ty][tx] = a2;
  __syncthreads();
  if (ty != 0 || col >= cols) return;
  double t1 = 0, t2 = 0;
  for (int k = 0; k < kColLanes; ++k) t1 += s1[k][tx], t2 += s2[k][tx];
  p1[blockIdx.y * cols + col] = t1;
  p2[blockIdx.y * cols + col] = t2;
}

template <class Term>
void launch_col_partials(const ColSplit& s, int64_t rows, int64_t cols, int64_t group, Term term,
                         double* p1, double* p2, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(s.tiles), static_cast<unsigned>(s.chunks));
  const dim3 block(kColTile, kColLanes);
  col_partials_kernel<<<grid, block, 0, stream>>>(rows, cols, group, s.rows_per_chunk, term, p1,
                                                  p2);
}

}  // namespace mel::kernels::cuda
