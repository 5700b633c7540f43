// Private to the CPU GEMM: the interface between the blocked driver (gemm.cpp) and an
// instruction-set specific set of packing routines and micro-kernels (AVX2 in gemm_avx2.cpp,
// AVX-512 in gemm_avx512.cpp).
#pragma once
#include <cstdint>

namespace mel::kernels::cpu::gemm_detail {

// Where `block` finds its operands. A is read in slivers of mr rows: sliver s starts at
// a + s * a_sliver and holds element (r, k) at [r * a_rs + k * a_ks] with a_rs == 1 or a_ks == 1
// (packed slivers, or op(A) read in place). B is read in slivers of nr columns: sliver s starts at
// b + s * b_sliver with element (k, c) at [k * b_ks + c] (packed slivers, or op(B) in place when
// its rows are contiguous). C element (i, j) is c[i * c_rs + j * c_cs], one of the two being 1
// (c_cs != 1 when the driver computes C^T).
template <class T>
struct Operands {
  const T* a;
  int64_t a_sliver, a_rs, a_ks;
  const T* b;
  int64_t b_sliver, b_ks;
  bool b_packed;  // zero-padded slivers, so columns past nc can be read
  T* c;
  int64_t c_rs, c_cs;
};

// One instruction set's GEMM building blocks for element type T. The driver splits C into blocks of
// at most mc x nc and K into panels of at most kc, packs op(A) and op(B) through pack_a / pack_b
// (or lets `block` read them in place) and multiplies the blocks with `block`. Everything that
// differs between instruction sets lives behind these pointers; the driver (threading, block
// order, K order) is shared, so both paths have the same determinism guarantees.
template <class T>
struct Arch {
  const char* name;
  int mr, nr;  // register tile: A comes in slivers of mr rows, B in slivers of nr columns
  // The driver's cost model for choosing between C and C^T: the kernels compute C in steps of
  // m_grain rows and n_grain columns (1 where edge tiles are exact, the vector width along N),
  // except that up to max_tail columns past the last whole vector cost about tail_cost columns
  // each; they do `lanes` multiply-adds per cycle; packing one element of a transposed operand
  // costs about `transpose_cost` cycles, and storing one element of C per K panel `store_cost`
  // cycles (`store_cost_t` when computing C^T).
  int m_grain, n_grain, max_tail;
  double tail_cost, lanes, transpose_cost, store_cost, store_cost_t;
  int64_t kc, mc, nc;
  // Whether `block` takes A in place and B in place when op(B)'s rows are contiguous (else both
  // are always packed). Broadcasting A from wherever it lies costs nothing, while packing it took
  // a third of the time at the small N of a convolution's later layers (N = 49).
  bool in_place;

  // Rows [i0, i0 + mc) x columns [p0, p0 + kc) of op(A) (op(A) = A^T when trans) as slivers of mr
  // rows: sliver s starts at out + s * mr * kc and holds kc groups of mr values (a_rs = 1,
  // a_ks = mr), zero past row mc. Unused (null) with in_place.
  void (*pack_a)(bool trans, const T* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0,
                 int64_t kc, T* out);
  // Slivers [s0, s1) of rows [p0, p0 + kc) x columns [j0, j0 + nc) of op(B): sliver s starts at
  // out + s * nr * kc and holds kc groups of nr values (b_ks = nr), zero past column nc.
  void (*pack_b)(bool trans, const T* B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0,
                 int64_t nc, int64_t s0, int64_t s1, T* out);
  // C = alpha * A B + beta * C over an mc x nc block and kc steps of K, reading C only when
  // beta != 0.
  void (*block)(int64_t mc, int64_t nc, int64_t kc, const Operands<T>& op, T alpha, T beta);
};

// The AVX-512 building blocks, or nullptr when this CPU (or compiler) lacks AVX-512F/VL/BW/DQ.
const Arch<float>* avx512_arch_f32();
const Arch<double>* avx512_arch_f64();

}  // namespace mel::kernels::cpu::gemm_detail
