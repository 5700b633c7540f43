// Private to the CPU GEMM: the interface between the blocked driver (gemm.cpp) and an instruction-set
// specific set of packing routines and micro-kernels (AVX2 in gemm.cpp, AVX-512 in gemm_avx512.cpp).
#pragma once
#include <cstdint>

namespace mel::kernels::cpu::gemm_detail {

// One instruction set's GEMM building blocks for element type T. The driver splits C into blocks of
// at most mc x nc, K into panels of at most kc, packs op(A) and op(B) through pack_a / pack_b and
// multiplies the packed blocks with `block`. Everything that differs between instruction sets
// lives behind these pointers; the driver (threading, block order, K order) is shared, so both
// paths have the same determinism guarantees.
template <class T>
struct Arch {
  const char* name;
  int mr, nr;  // register tile: packed A comes in slivers of mr rows, packed B of nr columns
  // The kernels compute C in steps of m_grain rows and n_grain columns (1 where edge tiles are
  // exact, the vector width along N): the driver's cost model for computing C^T instead.
  int m_grain, n_grain;
  int64_t kc, mc, nc;

  // Rows [i0, i0 + mc) x columns [p0, p0 + kc) of op(A) (op(A) = A^T when trans) as slivers of mr
  // rows: sliver s starts at out + s * mr * kc and holds kc groups of mr values, zero past row mc.
  void (*pack_a)(bool trans, const T* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0,
                 int64_t kc, T* out);
  // Slivers [s0, s1) of rows [p0, p0 + kc) x columns [j0, j0 + nc) of op(B): sliver s starts at
  // out + s * nr * kc and holds kc groups of nr values, zero past column nc.
  void (*pack_b)(bool trans, const T* B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0,
                 int64_t nc, int64_t s0, int64_t s1, T* out);
  // C[i * rsc + j * csc] = alpha * (packed A x packed B)[i, j] + beta * C[...] for i < mc, j < nc,
  // reading C only when beta != 0. One of rsc, csc is 1 (csc != 1: the driver computes C^T).
  void (*block)(int64_t mc, int64_t nc, int64_t kc, const T* ap, const T* bp, T* c, int64_t rsc,
                int64_t csc, T alpha, T beta);
};

// The AVX-512 building blocks, or nullptr when this CPU (or compiler) lacks AVX-512F/VL/BW/DQ.
const Arch<float>* avx512_arch_f32();
const Arch<double>* avx512_arch_f64();

}  // namespace mel::kernels::cpu::gemm_detail
