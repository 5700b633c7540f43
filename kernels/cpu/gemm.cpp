#include "kernels/cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <climits>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>

#ifdef MEL_HAVE_OPENBLAS
#include <cblas.h>
#endif

#include "kernels/cpu/gemm_avx2.h"
#include "kernels/cpu/gemm_impl.h"
#include "kernels/strided.h"

namespace mel::kernels::cpu {
namespace {

using gemm_detail::Arch;
using gemm_detail::Operands;

// The built-in GEMM: a driver (blocked_impl) shared by two instruction sets, each supplying packing
// routines and micro-kernels through gemm_detail::Arch: the AVX2 ones in gemm_avx2.cpp, which every
// x86-64-v3 CPU runs, and the AVX-512 ones in gemm_avx512.cpp, chosen at run time where the CPU
// has them.

// Per-core L2 of the machines this is tuned for (Sapphire Rapids: 2 MiB).
constexpr double kL2Bytes = 2 << 20;

// Below this many flops a fork/join costs more than it saves.
constexpr double kParallelFlops = 1 << 19;

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

int64_t round_up(int64_t a, int64_t b) {
  return ceil_div(a, b) * b;
}

// Boundary i of [0, total) cut into `parts` near-equal ranges at multiples of `unit`.
int64_t split_point(int64_t total, int64_t unit, int64_t parts, int64_t i) {
  if (i >= parts) return total;
  return std::min(total, (total * i / parts + unit / 2) / unit * unit);
}

int64_t largest_part(int64_t total, int64_t unit, int64_t parts) {
  int64_t largest = 0;
  for (int64_t i = 0; i < parts; ++i) {
    largest = std::max(largest,
                       split_point(total, unit, parts, i + 1) - split_point(total, unit, parts, i));
  }
  return largest;
}

// Packed panels are read with full-vector loads; 64-byte alignment keeps them on cache lines.
struct AlignedFree {
  void operator()(void* p) const { ::operator delete(p, std::align_val_t(64)); }
};
template <class T>
std::unique_ptr<T[], AlignedFree> aligned_buffer(int64_t n) {
  void* p = ::operator new(static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T),
                           std::align_val_t(64));
  return std::unique_ptr<T[], AlignedFree>(static_cast<T*>(p));
}

// Packing space reused across calls on the same thread: fresh panels of 100+ KiB would come from
// mmap on every call, and the page faults and TLB shootdowns of that cost as much as a 128^3
// product. slot 0: B panel, slot 1: A blocks.
template <class T>
T* scratch(int slot, int64_t n) {
  struct Buf {
    std::unique_ptr<T[], AlignedFree> p;
    int64_t n = 0;
  };
  thread_local Buf bufs[2];
  Buf& b = bufs[slot];
  if (b.n < n) {
    b.p = aligned_buffer<T>(n);
    b.n = n;
  }
  return b.p.get();
}

template <class T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  if (beta == T(1)) return;
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0)) {
      std::fill(c, c + N, T(0));  // not 0 * C: C may hold NaN
    } else {
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
  }
}

std::atomic<bool> g_allow_avx512{true};

// The AVX-512 kernels where the CPU has them (checked once) unless a test turned them off.
template <class T>
const Arch<T>& select_arch() {
  if (g_allow_avx512.load(std::memory_order_relaxed)) {
    const Arch<T>* a;
    if constexpr (std::is_same_v<T, float>) {
      a = gemm_detail::avx512_arch_f32();
    } else {
      a = gemm_detail::avx512_arch_f64();
    }
    if (a) return *a;
  }
  if constexpr (std::is_same_v<T, float>) {
    return gemm_detail::avx2_arch_f32();
  } else {
    return gemm_detail::avx2_arch_f64();
  }
}

// Estimated cycles for C = op(A) op(B) (transposed: computing C^T with C's storage). Vectors run
// along N, so an N just past a multiple of the vector width (a 7 x 7 feature map: N = 49 of 64
// lanes) wastes work; B is read as rows of op(B), so a B stored N x K must first be transposed into
// slivers (the in-place kernels read every other layout as it is; the AVX2 ones always pack,
// transposing a non-trans A); and C^T is stored through register transposes once per K panel.
template <class T>
double plan_cost(const Arch<T>& arch, int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
                 bool transposed) {
  const double m = static_cast<double>(M), n = static_cast<double>(N), k = static_cast<double>(K);
  const int64_t ragged = N % arch.n_grain;
  const double n_eff = ragged > 0 && ragged <= arch.max_tail
                           ? static_cast<double>(N - ragged) + arch.tail_cost * ragged
                           : static_cast<double>(round_up(N, arch.n_grain));
  double cost = static_cast<double>(round_up(M, arch.m_grain)) * n_eff * k / arch.lanes;
  if (trans_b) cost += arch.transpose_cost * n * k;
  if (!arch.in_place && !trans_a) cost += arch.transpose_cost * m * k;
  cost += (transposed ? arch.store_cost_t : arch.store_cost) * m * n *
          static_cast<double>(ceil_div(K, arch.kc));
  return cost;
}

// One product as the driver runs it: C = alpha * op(A) op(B) + beta * C with element (i, j) of
// the C being computed at C[i * rsc + j * csc] (rsc = 1 when the driver computes C^T).
template <class T>
struct Problem {
  bool trans_a, trans_b;
  int64_t M, N, K;
  T alpha;
  const T* A;
  int64_t lda;
  const T* B;
  int64_t ldb;
  T beta;
  T* C;
  int64_t rsc, csc;
};

// Turns pr into C^T = op(B)^T op(A)^T when the cost model says that is cheaper.
template <class T>
void choose_orientation(const Arch<T>& arch, Problem<T>& pr) {
  if (plan_cost(arch, pr.N, pr.M, pr.K, !pr.trans_b, !pr.trans_a, true) <
      plan_cost(arch, pr.M, pr.N, pr.K, pr.trans_a, pr.trans_b, false)) {
    const bool ta = !pr.trans_b, tb = !pr.trans_a;
    pr.trans_a = ta;
    pr.trans_b = tb;
    std::swap(pr.M, pr.N);
    std::swap(pr.A, pr.B);
    std::swap(pr.lda, pr.ldb);
    std::swap(pr.rsc, pr.csc);
  }
}

// How the driver cuts a problem: the register tile, which operands it packs, the K panel size and
// the tm x tn grid of thread rectangles.
struct Blocks {
  int64_t MR, NR;
  bool pack_a, pack_b;
  int64_t kc_blk;
  int tm = 1, tn = 1;
};

// Threads take a tm x tn grid of C rectangles, cut at multiples of the register tile, and each
// packs what it reads itself: no shared buffers, so no barriers, and a thread held up by another
// process does not hold up the rest at every K panel. The grid is the one whose largest rectangle
// (plus its B packing) is cheapest.
template <class T>
void choose_grid(const Arch<T>& arch, const Problem<T>& pr, int nthreads, Blocks& bk) {
  if (nthreads <= 1) return;
  double best = 0;
  for (int a = 1; a <= nthreads; ++a) {
    if (nthreads % a != 0) continue;
    const int b = nthreads / a;
    const double rows = static_cast<double>(largest_part(pr.M, bk.MR, a));
    const double cols = static_cast<double>(largest_part(pr.N, bk.NR, b));
    double cost = rows * cols * static_cast<double>(pr.K) / arch.lanes;
    if (bk.pack_b) cost += (pr.trans_b ? 1.0 : 0.3) * arch.transpose_cost * cols * pr.K;
    if (bk.tm * bk.tn == 1 || cost < best) {
      best = cost;
      bk.tm = a;
      bk.tn = b;
    }
  }
}

// Points op at the B operand of K panel [pc, pc + kc) and columns [jc, jc + nc): packed into bp,
// or in place.
template <class T>
void set_b_operand(const Arch<T>& arch, const Problem<T>& pr, const Blocks& bk, int64_t pc,
                   int64_t kc, int64_t jc, int64_t nc, T* bp, Operands<T>& op) {
  if (bk.pack_b) {
    arch.pack_b(pr.trans_b, pr.B, pr.ldb, pc, kc, jc, nc, 0, ceil_div(nc, bk.NR), bp);
    op.b = bp;
    op.b_sliver = bk.NR * kc;
    op.b_ks = bk.NR;
    op.b_packed = true;
  } else {
    op.b = pr.B + pc * pr.ldb + jc;
    op.b_sliver = bk.NR;
    op.b_ks = pr.ldb;
    op.b_packed = false;
  }
}

// Points op at the A operand of rows [i0, i0 + mc) and K panel [pc, pc + kc): packed into ap, or
// in place.
template <class T>
void set_a_operand(const Arch<T>& arch, const Problem<T>& pr, const Blocks& bk, int64_t i0,
                   int64_t mc, int64_t pc, int64_t kc, T* ap, Operands<T>& op) {
  if (bk.pack_a) {
    arch.pack_a(pr.trans_a, pr.A, pr.lda, i0, mc, pc, kc, ap);
    op.a = ap;
    op.a_sliver = bk.MR * kc;
    op.a_rs = 1;
    op.a_ks = bk.MR;
  } else {
    op.a_rs = pr.trans_a ? 1 : pr.lda;
    op.a_ks = pr.trans_a ? pr.lda : 1;
    op.a = pr.A + i0 * op.a_rs + pc * op.a_ks;
    op.a_sliver = bk.MR * op.a_rs;
  }
}

// Thread tid's rectangle: column panels of at most NC, K panels, row blocks of at most MC, each
// block handed to the instruction set's `block`.
template <class T>
void run_rectangle(const Arch<T>& arch, const Problem<T>& pr, const Blocks& bk, int tid) {
  const int64_t MR = bk.MR, NR = bk.NR, M = pr.M, N = pr.N, K = pr.K;
  const int ti = tid / bk.tn, tj = tid % bk.tn;
  const int64_t r0 = split_point(M, MR, bk.tm, ti), r1 = split_point(M, MR, bk.tm, ti + 1);
  const int64_t c0 = split_point(N, NR, bk.tn, tj), c1 = split_point(N, NR, bk.tn, tj + 1);
  if (r0 >= r1 || c0 >= c1) return;
  const int64_t mc_blk = round_up(ceil_div(r1 - r0, ceil_div(r1 - r0, arch.mc)), MR);
  const int64_t nc_blk = round_up(ceil_div(c1 - c0, ceil_div(c1 - c0, arch.nc)), NR);
  const int64_t kc_blk = bk.kc_blk;
  T* const bp =
      bk.pack_b ? scratch<T>(0, kc_blk * std::min(nc_blk, round_up(c1 - c0, NR))) : nullptr;
  T* const ap = bk.pack_a ? scratch<T>(1, mc_blk * kc_blk) : nullptr;
  for (int64_t jc = c0; jc < c1; jc += nc_blk) {
    const int64_t nc = std::min(nc_blk, c1 - jc);
    for (int64_t pc = 0; pc < K; pc += kc_blk) {
      const int64_t kc = std::min(kc_blk, K - pc);
      const T beta_blk = pc == 0 ? pr.beta : T(1);  // later K panels accumulate
      Operands<T> op;
      set_b_operand(arch, pr, bk, pc, kc, jc, nc, bp, op);
      for (int64_t i0 = r0; i0 < r1; i0 += mc_blk) {
        const int64_t mc = std::min(mc_blk, r1 - i0);
        set_a_operand(arch, pr, bk, i0, mc, pc, kc, ap, op);
        op.c = pr.C + i0 * pr.rsc + jc * pr.csc;
        op.c_rs = pr.rsc;
        op.c_cs = pr.csc;
        arch.block(mc, nc, kc, op, pr.alpha, beta_blk);
      }
    }
  }
}

template <class T>
void blocked_impl(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                  int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc,
                  bool allow_parallel) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == T(0)) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  const Arch<T>& arch = select_arch<T>();
  Problem<T> pr{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 1};
  choose_orientation(arch, pr);
  const double flops = 2.0 * static_cast<double>(pr.M) * static_cast<double>(pr.N) * K;
  const int nthreads =
      allow_parallel && flops >= kParallelFlops && !omp_in_parallel() ? omp_get_max_threads() : 1;
  Blocks bk;
  bk.MR = arch.mr;
  bk.NR = arch.nr;
  bk.pack_a = !arch.in_place;
  // B read in place is fastest while it sits in L2 (where im2col just wrote it); from further
  // away its rows, one page apart, defeat the prefetchers, and a packed copy streams better.
  bk.pack_b = !arch.in_place || pr.trans_b ||
              static_cast<double>(K) * static_cast<double>(pr.N) * sizeof(T) > kL2Bytes;
  // K panels of equal size. They depend on the shape alone, so every element's products are added
  // in the same order however C is split among threads (and each micro-kernel variant adds an
  // element's products alike), which keeps results bitwise reproducible.
  bk.kc_blk = ceil_div(K, ceil_div(K, arch.kc));
  choose_grid(arch, pr, nthreads, bk);
  // A lone thread never touches OpenMP, which keeps calls from inside a parallel region (one
  // image per thread) free of nested-region overhead.
  if (bk.tm * bk.tn == 1) {
    run_rectangle(arch, pr, bk, 0);
  } else {
#pragma omp parallel for schedule(static, 1) num_threads(bk.tm* bk.tn)
    for (int t = 0; t < bk.tm * bk.tn; ++t) run_rectangle(arch, pr, bk, t);
  }
}

#ifdef MEL_HAVE_OPENBLAS
// A DYNAMIC_ARCH OpenBLAS picks kernels by CPU model, and a model newer than the library falls
// back to generic ones: 0.3.21 runs an Emerald Rapids Xeon as "Prescott" (SSE3) at ~65 GFLOP/s on
// two cores where the kernels here reach ~150 (AVX2) and ~300 (AVX-512). So pre-AVX2 cores on an
// AVX2 machine are bypassed (OPENBLAS_CORETYPE=SkylakeX in the environment restores OpenBLAS,
// ~300 GFLOP/s there).
struct BlasChoice {
  bool use = true;
  std::string description;
};

const BlasChoice& blas_choice() {
  static const BlasChoice choice = [] {
    BlasChoice c;
    const char* name = openblas_get_corename();
    std::string core = name ? name : "unknown";
    std::string lower = core;
    for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    constexpr std::string_view kPreAvx2[] = {
        "unknown",   "prescott", "core2",      "penryn",     "dunnington",  "nehalem",
        "atom",      "katmai",   "coppermine", "northwood",  "banias",      "opteron",
        "barcelona", "bobcat",   "bulldozer",  "piledriver", "steamroller", "sandybridge"};
    const bool cpu_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool old_core = std::find(std::begin(kPreAvx2), std::end(kPreAvx2),
                                    std::string_view(lower)) != std::end(kPreAvx2);
    c.use = !(cpu_avx2 && old_core);
    c.description = c.use ? "openblas (" + core + ")"
                          : "blocked (OpenBLAS core " + core + " lacks AVX2 on an AVX2 CPU)";
    return c;
  }();
  return choice;
}
#endif

}  // namespace

const char* gemm_backend() {
  std::string reason;
#ifdef MEL_HAVE_OPENBLAS
  if (blas_choice().use) return blas_choice().description.c_str();
  reason = blas_choice().description.substr(std::string_view("blocked").size());
#endif
  // Both answers are built once: the pointer must outlive a later gemm_allow_avx512 call.
  static const std::string with_avx512 =
      (gemm_detail::avx512_arch_f32() ? "blocked avx512" : "blocked avx2") + reason;
  static const std::string avx2_only = "blocked avx2" + reason;
  return std::string_view(select_arch<float>().name) == "avx2" ? avx2_only.c_str()
                                                               : with_avx512.c_str();
}

bool gemm_allow_avx512(bool allow) {
  return g_allow_avx512.exchange(allow);
}

template <class T>
void gemm_blocked(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                  int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  blocked_impl(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, true);
}

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
#ifdef MEL_HAVE_OPENBLAS
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  // BLAS insists on ld >= the row length even where a single row makes ld meaningless.
  const int64_t cols_a = trans_a ? M : K, cols_b = trans_b ? K : N;
  if ((trans_a ? K : M) == 1) lda = std::max(lda, cols_a);
  if ((trans_b ? N : K) == 1) ldb = std::max(ldb, cols_b);
  if (M == 1) ldc = std::max(ldc, N);
  const bool blas_ok = lda >= cols_a && ldb >= cols_b && ldc >= N && M <= INT_MAX && N <= INT_MAX &&
                       K <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX && ldc <= INT_MAX;
  if (blas_ok && blas_choice().use) {
    const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    if constexpr (std::is_same_v<T, float>) {
      cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    } else {
      cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    }
    return;
  }
#endif
  blocked_impl(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, true);
}

template <class T>
void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                  const T* const* A, int64_t lda, const T* const* B, int64_t ldb, T beta,
                  T* const* C, int64_t ldc, int64_t batch) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  const double flops =
      2.0 * static_cast<double>(M) * static_cast<double>(N) * std::max<int64_t>(K, 1);
  // A product big enough to keep every thread busy on its own is best left to the parallel gemm.
  if (batch == 1 || flops >= 16 * kParallelFlops) {
    for (int64_t i = 0; i < batch; ++i) {
      gemm(trans_a, trans_b, M, N, K, alpha, A[i], lda, B[i], ldb, beta, C[i], ldc);
    }
    return;
  }
  const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kParallelFlops / flops));
  parallel_for(batch, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      blocked_impl(trans_a, trans_b, M, N, K, alpha, A[i], lda, B[i], ldb, beta, C[i], ldc, false);
    }
  });
}

#define MEL_INSTANTIATE_GEMM(T)                                                                \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, \
                        int64_t, T, T*, int64_t);                                              \
  template void gemm_blocked<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t,   \
                                const T*, int64_t, T, T*, int64_t);                            \
  template void gemm_batched<T>(bool, bool, int64_t, int64_t, int64_t, T, const T* const*,     \
                                int64_t, const T* const*, int64_t, T, T* const*, int64_t,      \
                                int64_t);
MEL_INSTANTIATE_GEMM(float)
MEL_INSTANTIATE_GEMM(double)
#undef MEL_INSTANTIATE_GEMM

}  // namespace mel::kernels::cpu
