#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "kernels/cpu/gemm.h"

namespace mel::kernels::cpu {
namespace {

template <class T>
using GemmFn = void (*)(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*,
                        int64_t, T, T*, int64_t);

// Stored operands of one product, with row strides padded past the row length so that lda/ldb/ldc
// are exercised, and the float64 reference result.
template <class T>
struct Problem {
  bool ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
  T alpha, beta;
  std::vector<T> A, B, C0;
  int64_t row_step = 1;  // reference rows checked: every row_step-th and the last

  Problem(bool ta_, bool tb_, int64_t m, int64_t n, int64_t k, T al, T be, uint32_t seed)
      : ta(ta_), tb(tb_), M(m), N(n), K(k), alpha(al), beta(be) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    lda = (ta ? M : K) + 3;
    ldb = (tb ? K : N) + 2;
    ldc = N + 1;
    A.resize((ta ? K : M) * lda);
    B.resize((tb ? N : K) * ldb);
    C0.resize(M * ldc);
    for (T& v : A) v = static_cast<T>(u(gen));
    for (T& v : B) v = static_cast<T>(u(gen));
    for (T& v : C0) v = static_cast<T>(u(gen));
  }
  double a(int64_t i, int64_t k) const { return ta ? A[k * lda + i] : A[i * lda + k]; }
  double b(int64_t k, int64_t j) const { return tb ? B[j * ldb + k] : B[k * ldb + j]; }

  // The naive triple loop in f64 (value and error bound) for the rows checked, computed once and
  // shared by every implementation run on this problem.
  struct Ref {
    std::vector<int64_t> rows;
    std::vector<double> sum, mag;  // alpha-free products, per checked row x N
  };
  mutable std::unique_ptr<Ref> ref_;
  const Ref& ref() const {
    if (ref_) return *ref_;
    ref_ = std::make_unique<Ref>();
    for (int64_t i = 0; i < M; i = (i + row_step < M || i == M - 1) ? i + row_step : M - 1) {
      ref_->rows.push_back(i);
      if (i == M - 1) break;
    }
    ref_->sum.assign(ref_->rows.size() * N, 0.0);
    ref_->mag.assign(ref_->rows.size() * N, 0.0);
    for (size_t r = 0; r < ref_->rows.size(); ++r) {
      const int64_t i = ref_->rows[r];
      for (int64_t k = 0; k < K; ++k) {
        const double aik = a(i, k);
        for (int64_t j = 0; j < N; ++j) {
          ref_->sum[r * N + j] += aik * b(k, j);
          ref_->mag[r * N + j] += std::abs(aik * b(k, j));
        }
      }
    }
    return *ref_;
  }

  // Checks C (as computed) against the naive triple loop; `c_in` is what C held on entry.
  ::testing::AssertionResult check(const std::vector<T>& C, const std::vector<T>& c_in) const {
    const double eps = std::numeric_limits<T>::epsilon();
    const Ref& rf = ref();
    for (size_t r = 0; r < rf.rows.size(); ++r) {
      const int64_t i = rf.rows[r];
      for (int64_t j = 0; j < N; ++j) {
        double ref = alpha * rf.sum[r * N + j], bound = std::abs(alpha) * rf.mag[r * N + j];
        if (beta != T(0)) {
          ref += beta * static_cast<double>(c_in[i * ldc + j]);
          bound += std::abs(beta * static_cast<double>(c_in[i * ldc + j]));
        }
        const double got = C[i * ldc + j];
        if (!(std::abs(got - ref) <= 4 * (K + 2) * eps * bound + 1e-30)) {
          return ::testing::AssertionFailure()
                 << "ta=" << ta << " tb=" << tb << " M=" << M << " N=" << N << " K=" << K << ": C["
                 << i << "," << j << "] = " << got << ", expected " << ref;
        }
      }
    }
    // padding between rows must be untouched
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = N; j < ldc; ++j) {
        if (!(C[i * ldc + j] == c_in[i * ldc + j] ||
              (std::isnan(C[i * ldc + j]) && std::isnan(c_in[i * ldc + j])))) {
          return ::testing::AssertionFailure() << "padding at row " << i << " was written";
        }
      }
    }
    return ::testing::AssertionSuccess();
  }

  // C as `fn` leaves it (C0 on entry, or NaN everywhere with nan_c).
  std::vector<T> compute(GemmFn<T> fn, bool nan_c = false) const {
    std::vector<T> C = C0;
    if (nan_c) std::fill(C.begin(), C.end(), std::numeric_limits<T>::quiet_NaN());
    fn(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
    return C;
  }

  ::testing::AssertionResult run(GemmFn<T> fn, bool nan_c = false) const {
    std::vector<T> c_in = C0;
    if (nan_c) std::fill(c_in.begin(), c_in.end(), std::numeric_limits<T>::quiet_NaN());
    return check(compute(fn, nan_c), c_in);
  }
};

// Keeps the built-in GEMM on its AVX2 kernels for a scope (a no-op on CPUs without AVX-512).
class Avx2Only {
 public:
  Avx2Only() : prev_(gemm_allow_avx512(false)) {}
  ~Avx2Only() { gemm_allow_avx512(prev_); }
  Avx2Only(const Avx2Only&) = delete;
  Avx2Only& operator=(const Avx2Only&) = delete;

 private:
  bool prev_;
};

// Every implementation a product can take: gemm (OpenBLAS when it is used), the built-in kernel
// with its best instruction set (AVX-512 where the CPU has it), and the built-in kernel held to
// AVX2, the fallback for CPUs without AVX-512.
template <class T>
struct Impl {
  const char* name;
  GemmFn<T> fn;
  bool avx2_only;
};
template <class T>
const Impl<T> kImpls[] = {{"gemm", &gemm<T>, false},
                          {"gemm_blocked", &gemm_blocked<T>, false},
                          {"gemm_blocked (AVX2 kernels)", &gemm_blocked<T>, true}};

template <class T>
::testing::AssertionResult run_all(const Problem<T>& p, bool nan_c = false) {
  for (const Impl<T>& im : kImpls<T>) {
    std::optional<Avx2Only> avx2;
    if (im.avx2_only) avx2.emplace();
    ::testing::AssertionResult r = p.run(im.fn, nan_c);
    if (!r) return r << " [" << im.name << "]";
  }
  return ::testing::AssertionSuccess();
}

template <class T>
void all_shapes_and_transposes() {
  // Odd sizes around the register tiles (8 x 48 / 6 x 16 floats), the vector width (17, 49 and
  // 52 leave 1 and 4 columns past a whole vector) and the cache blocks (257 > KC).
  const int64_t sizes[] = {1, 7, 17, 33, 52, 100};
  uint32_t seed = 1;
  for (int t = 0; t < 4; ++t) {
    for (int64_t m : sizes) {
      for (int64_t n : sizes) {
        for (int64_t k : sizes) {
          Problem<T> p(t & 1, t & 2, m, n, k, T(1.5), T(-0.5), seed++);
          ASSERT_TRUE(run_all(p));
        }
      }
    }
    for (int64_t k : {int64_t(49), int64_t(257)}) {
      Problem<T> p(t & 1, t & 2, 67, 49, k, T(1.5), T(-0.5), seed++);
      ASSERT_TRUE(run_all(p));
    }
  }
}

TEST(Gemm, FloatMatchesNaiveAllTransposesAndSizes) {
  all_shapes_and_transposes<float>();
}

TEST(Gemm, DoubleMatchesNaiveAllTransposesAndSizes) {
  all_shapes_and_transposes<double>();
}

// N = 16 q + r for every r: columns past the last whole vector take their own paths (dot products
// along K, extra columns fused into the micro-kernel, masked vectors), for both layouts of A and B
// and an M that ends in a partial sliver.
template <class T>
void ragged_columns() {
  uint32_t seed = 50;
  for (int t = 0; t < 4; ++t) {
    for (int64_t n : {3, 8, 16, 21, 25, 29, 34, 40, 48, 63, 100, 113}) {
      Problem<T> p(t & 1, t & 2, 27, n, 45, T(0.5), T(2), seed++);
      ASSERT_TRUE(run_all(p));
      Problem<T> q(t & 1, t & 2, 2 * n + 3, 27, 45, T(0.5), T(0), seed++);  // the transposed shape
      ASSERT_TRUE(run_all(q, /*nan_c=*/true));
    }
  }
}

TEST(Gemm, RaggedColumnTails) {
  ragged_columns<float>();
  ragged_columns<double>();
}

template <class T>
void alpha_beta_cases() {
  for (int t = 0; t < 4; ++t) {
    for (auto [alpha, beta] : {std::pair<T, T>{1, 0}, {1, 1}, {-2, 0.25}, {0, 3}, {0, 0}}) {
      Problem<T> p(t & 1, t & 2, 33, 17, 65, alpha, beta, 100 + t);
      EXPECT_TRUE(run_all(p)) << "alpha " << alpha << " beta " << beta;
    }
  }
}

TEST(Gemm, AlphaBeta) {
  alpha_beta_cases<float>();
  alpha_beta_cases<double>();
}

// beta == 0 must overwrite C without reading it: NaN * 0 would poison the result.
template <class T>
void beta_zero_nan() {
  for (int t = 0; t < 4; ++t) {
    for (int64_t k : {int64_t(0), int64_t(1), int64_t(7), int64_t(300)}) {
      Problem<T> p(t & 1, t & 2, 13, 37, k, T(0.75), T(0), 200 + t);
      EXPECT_TRUE(run_all(p, /*nan_c=*/true)) << "K " << k;
    }
  }
}

TEST(Gemm, BetaZeroDoesNotReadC) {
  beta_zero_nan<float>();
  beta_zero_nan<double>();
}

TEST(Gemm, ZeroSizes) {
  for (const Impl<float>& im : kImpls<float>) {
    std::optional<Avx2Only> avx2;
    if (im.avx2_only) avx2.emplace();
    // M or N == 0: nothing is touched (null pointers are never dereferenced).
    im.fn(false, false, 0, 5, 3, 1.f, nullptr, 3, nullptr, 5, 0.f, nullptr, 5);
    im.fn(true, true, 4, 0, 3, 1.f, nullptr, 4, nullptr, 3, 0.f, nullptr, 1);
    // K == 0: C = beta * C, and beta == 0 clears NaN.
    std::vector<float> c(6, 2.f);
    im.fn(false, false, 2, 3, 0, 1.f, nullptr, 1, nullptr, 3, 3.f, c.data(), 3);
    EXPECT_EQ(c, std::vector<float>(6, 6.f)) << im.name;
    std::fill(c.begin(), c.end(), std::numeric_limits<float>::quiet_NaN());
    im.fn(false, true, 2, 3, 0, 1.f, nullptr, 1, nullptr, 1, 0.f, c.data(), 3);
    EXPECT_EQ(c, std::vector<float>(6, 0.f)) << im.name;
  }
}

// Sizes past every cache block (MC, KC and NC: 1024 floats and 512 doubles, 4080 and 2040 with the
// AVX2 kernels) so that C is built up over several K panels and column panels, with B large enough
// to be packed; run on a few rows only to keep the reference cheap.
TEST(Gemm, SpansSeveralCacheBlocks) {
  for (int t = 0; t < 4; ++t) {
    Problem<float> pf(t & 1, t & 2, 251, t == 0 ? 4100 : 2100, 530, 1.f, 0.5f, 300 + t);
    pf.row_step = 29;
    EXPECT_TRUE(run_all(pf));
    Problem<double> pd(t & 1, t & 2, 200, 1100, 513, 1.0, 0.0, 400 + t);
    pd.row_step = 37;
    EXPECT_TRUE(run_all(pd, true));
  }
}

// The products of a 3 x 3 convolution through im2col: forward (weights x columns), weight gradient
// (output gradient x columns^T) and data gradient (weights^T x output gradient), over 14 x 14 and
// 7 x 7 maps (N = 196 and 49 are not multiples of the vector width).
TEST(Gemm, ConvolutionShapes) {
  struct Shape {
    bool ta, tb;
    int64_t M, N, K;
  };
  const Shape shapes[] = {{false, false, 64, 196, 576},   {false, false, 128, 49, 1152},
                          {false, true, 64, 576, 196},    {false, true, 128, 1152, 49},
                          {true, false, 576, 196, 64},    {true, false, 1152, 49, 128},
                          {false, false, 32, 4 * 49, 288}};
  uint32_t seed = 700;
  for (const Shape& sh : shapes) {
    Problem<float> p(sh.ta, sh.tb, sh.M, sh.N, sh.K, 1.f, 0.f, seed++);
    p.row_step = sh.M > 100 ? 13 : 3;
    EXPECT_TRUE(run_all(p, /*nan_c=*/true));
  }
}

// Overlapping rows (ld smaller than the row: a broadcast operand) are legal for the built-in
// kernel; gemm must route them away from BLAS, which would reject them.
TEST(Gemm, BroadcastRowsThroughZeroStride) {
  const int64_t M = 5, N = 4, K = 3;
  std::vector<double> a = {1, 2, 3};  // every row of A is the same, lda = 0
  std::vector<double> b(K * N);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<double>(i) - 4;
  for (const Impl<double>& im : kImpls<double>) {
    std::optional<Avx2Only> avx2;
    if (im.avx2_only) avx2.emplace();
    std::vector<double> c(M * N, -1);
    im.fn(false, false, M, N, K, 1.0, a.data(), 0, b.data(), N, 0.0, c.data(), N);
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        double ref = 0;
        for (int64_t k = 0; k < K; ++k) ref += a[k] * b[k * N + j];
        EXPECT_DOUBLE_EQ(c[i * N + j], ref) << im.name;
      }
    }
  }
}

TEST(Gemm, BatchedWithRepeatedOperands) {
  for (int64_t size : {int64_t(6), int64_t(70)}) {  // small: parallel over the batch; large: not
    const int64_t batch = 9;
    std::vector<Problem<float>> ps;
    for (int64_t i = 0; i < batch; ++i) {
      ps.emplace_back(true, false, size, size + 1, size + 2, 1.f, 0.f, 600 + i);
    }
    // operand A shared by all entries (a broadcast batch dimension)
    for (int64_t i = 1; i < batch; ++i) ps[i].A = ps[0].A;
    std::vector<std::vector<float>> cs(batch);
    std::vector<const float*> pa(batch), pb(batch);
    std::vector<float*> pc(batch);
    for (int64_t i = 0; i < batch; ++i) {
      cs[i].assign(ps[i].C0.size(), std::numeric_limits<float>::quiet_NaN());
      pa[i] = ps[0].A.data();
      pb[i] = ps[i].B.data();
      pc[i] = cs[i].data();
    }
    const Problem<float>& p = ps[0];
    gemm_batched<float>(p.ta, p.tb, p.M, p.N, p.K, 1.f, pa.data(), p.lda, pb.data(), p.ldb, 0.f,
                        pc.data(), p.ldc, batch);
    for (int64_t i = 0; i < batch; ++i) {
      std::vector<float> nan_in(cs[i].size(), std::numeric_limits<float>::quiet_NaN());
      EXPECT_TRUE(ps[i].check(cs[i], nan_in)) << "batch entry " << i << " size " << size;
    }
  }
}

// Restores OpenMP's thread count on exit.
class OmpThreads {
 public:
  explicit OmpThreads(int n) : prev_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(prev_); }
  OmpThreads(const OmpThreads&) = delete;
  OmpThreads& operator=(const OmpThreads&) = delete;

 private:
  int prev_;
};

// The same product is bitwise the same on one thread, on two, and from inside a parallel region
// (one product per thread, as a convolution runs one image per thread), and through the batched
// entry point: the K blocking depends on the shape alone.
template <class T>
void deterministic(bool avx2_only) {
  std::optional<Avx2Only> avx2;
  if (avx2_only) avx2.emplace();
  const bool tr[][2] = {{false, false}, {false, true}, {true, false}, {true, true}};
  uint32_t seed = 800;
  for (const auto& t : tr) {
    for (auto [m, n, k] :
         {std::tuple<int64_t, int64_t, int64_t>{64, 196, 300}, {136, 49, 290}, {40, 1100, 270}}) {
      const Problem<T> p(t[0], t[1], m, n, k, T(1), T(0.5), seed++);
      std::vector<T> one, two;
      {
        OmpThreads threads(1);
        one = p.compute(&gemm_blocked<T>);
      }
      {
        OmpThreads threads(2);
        two = p.compute(&gemm_blocked<T>);
      }
      EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(T)), 0)
          << "1 vs 2 threads, " << m << "x" << n << "x" << k << " ta=" << t[0] << " tb=" << t[1];
      std::vector<std::vector<T>> inner(2);
#pragma omp parallel num_threads(2)
      inner[omp_get_thread_num()] = p.compute(&gemm_blocked<T>);
      for (int i = 0; i < 2; ++i) {
        if (inner[i].empty()) continue;  // the runtime gave the region one thread
        EXPECT_EQ(std::memcmp(one.data(), inner[i].data(), one.size() * sizeof(T)), 0)
            << "inside a parallel region, " << m << "x" << n << "x" << k;
      }
      std::vector<T> batched = p.C0;
      const T* pa = p.A.data();
      const T* pb = p.B.data();
      T* pc = batched.data();
      gemm_batched<T>(p.ta, p.tb, m, n, k, p.alpha, &pa, p.lda, &pb, p.ldb, p.beta, &pc, p.ldc, 1);
      if (std::string_view(gemm_backend()).rfind("blocked", 0) == 0) {  // not OpenBLAS
        EXPECT_EQ(std::memcmp(one.data(), batched.data(), one.size() * sizeof(T)), 0)
            << "gemm_batched, " << m << "x" << n << "x" << k;
      }
    }
  }
}

TEST(Gemm, DeterministicAcrossThreadCounts) {
  deterministic<float>(false);
  deterministic<float>(true);
  deterministic<double>(false);
}

TEST(Gemm, NamesItsBackend) {
  const std::string backend = gemm_backend();
  EXPECT_TRUE(backend.rfind("openblas", 0) == 0 || backend.rfind("blocked", 0) == 0) << backend;
  RecordProperty("gemm_backend", backend);
  if (backend.rfind("blocked", 0) == 0) {
    const Avx2Only avx2;
    EXPECT_EQ(std::string(gemm_backend()).rfind("blocked avx2", 0), 0u) << gemm_backend();
  }
}

TEST(Gemm, AllowAvx512ReturnsThePreviousSetting) {
  const bool prev = gemm_allow_avx512(false);
  EXPECT_FALSE(gemm_allow_avx512(true));
  EXPECT_TRUE(gemm_allow_avx512(prev));
}

}  // namespace
}  // namespace mel::kernels::cpu
