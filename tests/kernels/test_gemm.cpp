#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
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

  // Checks C (as computed) against the naive triple loop; `c_in` is what C held on entry.
  ::testing::AssertionResult check(const std::vector<T>& C, const std::vector<T>& c_in) const {
    const double eps = std::numeric_limits<T>::epsilon();
    for (int64_t i = 0; i < M; i = (i + row_step < M || i == M - 1) ? i + row_step : M - 1) {
      for (int64_t j = 0; j < N; ++j) {
        double s = 0, mag = 0;
        for (int64_t k = 0; k < K; ++k) {
          s += a(i, k) * b(k, j);
          mag += std::abs(a(i, k) * b(k, j));
        }
        double ref = alpha * s, bound = std::abs(alpha) * mag;
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

  ::testing::AssertionResult run(GemmFn<T> fn, bool nan_c = false) const {
    std::vector<T> c_in = C0;
    if (nan_c) std::fill(c_in.begin(), c_in.end(), std::numeric_limits<T>::quiet_NaN());
    std::vector<T> C = c_in;
    fn(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
    return check(C, c_in);
  }
};

template <class T>
void all_shapes_and_transposes(GemmFn<T> fn, const char* name) {
  const int64_t sizes[] = {1, 7, 33, 65, 130};
  uint32_t seed = 1;
  for (int t = 0; t < 4; ++t) {
    for (int64_t m : sizes) {
      for (int64_t n : sizes) {
        for (int64_t k : sizes) {
          Problem<T> p(t & 1, t & 2, m, n, k, T(1.5), T(-0.5), seed++);
          ASSERT_TRUE(p.run(fn)) << name;
        }
      }
    }
  }
}

TEST(Gemm, FloatMatchesNaiveAllTransposesAndSizes) {
  all_shapes_and_transposes<float>(&gemm<float>, "gemm");
  all_shapes_and_transposes<float>(&gemm_blocked<float>, "gemm_blocked");
}

TEST(Gemm, DoubleMatchesNaiveAllTransposesAndSizes) {
  all_shapes_and_transposes<double>(&gemm<double>, "gemm");
  all_shapes_and_transposes<double>(&gemm_blocked<double>, "gemm_blocked");
}

template <class T>
void alpha_beta_cases(GemmFn<T> fn) {
  for (int t = 0; t < 4; ++t) {
    for (auto [alpha, beta] : {std::pair<T, T>{1, 0}, {1, 1}, {-2, 0.25}, {0, 3}, {0, 0}}) {
      Problem<T> p(t & 1, t & 2, 33, 17, 65, alpha, beta, 100 + t);
      EXPECT_TRUE(p.run(fn)) << "alpha " << alpha << " beta " << beta;
    }
  }
}

TEST(Gemm, AlphaBeta) {
  alpha_beta_cases<float>(&gemm<float>);
  alpha_beta_cases<float>(&gemm_blocked<float>);
  alpha_beta_cases<double>(&gemm<double>);
  alpha_beta_cases<double>(&gemm_blocked<double>);
}

// beta == 0 must overwrite C without reading it: NaN * 0 would poison the result.
template <class T>
void beta_zero_nan(GemmFn<T> fn) {
  for (int t = 0; t < 4; ++t) {
    for (int64_t k : {int64_t(0), int64_t(1), int64_t(7), int64_t(300)}) {
      Problem<T> p(t & 1, t & 2, 13, 37, k, T(0.75), T(0), 200 + t);
      EXPECT_TRUE(p.run(fn, /*nan_c=*/true)) << "K " << k;
    }
  }
}

TEST(Gemm, BetaZeroDoesNotReadC) {
  beta_zero_nan<float>(&gemm<float>);
  beta_zero_nan<float>(&gemm_blocked<float>);
  beta_zero_nan<double>(&gemm<double>);
  beta_zero_nan<double>(&gemm_blocked<double>);
}

TEST(Gemm, ZeroSizes) {
  for (GemmFn<float> fn : {&gemm<float>, &gemm_blocked<float>}) {
    // M or N == 0: nothing is touched (null pointers are never dereferenced).
    fn(false, false, 0, 5, 3, 1.f, nullptr, 3, nullptr, 5, 0.f, nullptr, 5);
    fn(true, true, 4, 0, 3, 1.f, nullptr, 4, nullptr, 3, 0.f, nullptr, 1);
    // K == 0: C = beta * C, and beta == 0 clears NaN.
    std::vector<float> c(6, 2.f);
    fn(false, false, 2, 3, 0, 1.f, nullptr, 1, nullptr, 3, 3.f, c.data(), 3);
    EXPECT_EQ(c, std::vector<float>(6, 6.f));
    std::fill(c.begin(), c.end(), std::numeric_limits<float>::quiet_NaN());
    fn(false, true, 2, 3, 0, 1.f, nullptr, 1, nullptr, 1, 0.f, c.data(), 3);
    EXPECT_EQ(c, std::vector<float>(6, 0.f));
  }
}

// Sizes past every cache block (MC, KC and, for float, NC = 4080 columns) so that C is built up
// over several K panels and column panels; run on a few rows only to keep the reference cheap.
TEST(Gemm, SpansSeveralCacheBlocks) {
  for (int t = 0; t < 4; ++t) {
    Problem<float> pf(t & 1, t & 2, 151, 4100, 530, 1.f, 0.5f, 300 + t);
    pf.row_step = 29;
    EXPECT_TRUE(pf.run(&gemm_blocked<float>));
    Problem<double> pd(t & 1, t & 2, 200, 2050, 513, 1.0, 0.0, 400 + t);
    pd.row_step = 37;
    EXPECT_TRUE(pd.run(&gemm_blocked<double>, true));
  }
  Problem<float> p(false, true, 257, 4100, 300, 2.f, 1.f, 500);
  p.row_step = 51;
  EXPECT_TRUE(p.run(&gemm<float>));
}

// Overlapping rows (ld smaller than the row: a broadcast operand) are legal for the built-in
// kernel; gemm must route them away from BLAS, which would reject them.
TEST(Gemm, BroadcastRowsThroughZeroStride) {
  const int64_t M = 5, N = 4, K = 3;
  std::vector<double> a = {1, 2, 3};  // every row of A is the same, lda = 0
  std::vector<double> b(K * N);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<double>(i) - 4;
  for (GemmFn<double> fn : {&gemm<double>, &gemm_blocked<double>}) {
    std::vector<double> c(M * N, -1);
    fn(false, false, M, N, K, 1.0, a.data(), 0, b.data(), N, 0.0, c.data(), N);
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        double ref = 0;
        for (int64_t k = 0; k < K; ++k) ref += a[k] * b[k * N + j];
        EXPECT_DOUBLE_EQ(c[i * N + j], ref);
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

TEST(Gemm, NamesItsBackend) {
  const std::string backend = gemm_backend();
  EXPECT_TRUE(backend.rfind("openblas", 0) == 0 || backend.rfind("blocked", 0) == 0) << backend;
  RecordProperty("gemm_backend", backend);
}

}  // namespace
}  // namespace mel::kernels::cpu
