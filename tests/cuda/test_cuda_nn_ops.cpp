// GPU parity of softmax, log_softmax and cross-entropy: values and gradients against the CPU op on
// rows of 1..257 and class counts 1..1500 (every kernel path: sub-warp, warp with the row in
// registers, block per row, strided axis), non-contiguous logits, bf16/f16, label smoothing,
// ignore_index and every reduction. Tolerances: tol_for(dtype, true) (rows are reductions).
#include <gtest/gtest.h>

#include <cmath>

#include "core/ops_nn.h"
#include "nn_parity.h"

namespace mel::testing {
namespace {

const int64_t kRows[] = {1, 7, 257};
// sub-warp (1, 3, 10), one register per lane (17), several (33, 128, 1000), block per row (1500)
const int64_t kClasses[] = {1, 3, 10, 17, 33, 128, 1000, 1500};

TEST(CudaSoftmax, RowsOfEveryLengthMatchCpu) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 1;
  for (DType dt : {DType::f32, DType::f64}) {
    for (int64_t n : kRows) {
      for (int64_t c : kClasses) {
        Tensor x = random_cpu({n, c}, seed++, dt, -4.0, 4.0);
        for (bool log : {false, true}) {
          auto f = [log](const std::vector<Tensor>& in) {
            return log ? log_softmax(in[0], 1) : softmax(in[0], 1);
          };
          EXPECT_TRUE(parity(f, {x}, {true}, tol_for(dt, true)))
              << dtype_name(dt) << " [" << n << ", " << c << "] log " << log;
        }
      }
    }
  }
}

TEST(CudaSoftmax, StridedAxisAndNonContiguousInputs) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 100;
  for (DType dt : {DType::f32, DType::f64}) {
    // every dim of a 3-D tensor: dims 0 and 1 walk a strided axis (B > 1)
    for (const Shape& s : {Shape{2, 3, 70}, Shape{5, 1000, 3}, Shape{4, 1, 5}, Shape{7}}) {
      Tensor x = random_cpu(s, seed++, dt, -3.0, 3.0);
      for (int64_t d = 0; d < x.dim(); ++d) {
        for (bool log : {false, true}) {
          auto f = [d, log](const std::vector<Tensor>& in) {
            return log ? log_softmax(in[0], d) : softmax(in[0], d);
          };
          EXPECT_TRUE(parity(f, {x}, {true}, tol_for(dt, true)))
              << dtype_name(dt) << " " << shape_str(s) << " dim " << d << " log " << log;
        }
      }
    }
    Tensor nc = random_strided_cpu({33, 7, 9}, seed++, dt);
    ASSERT_FALSE(nc.is_contiguous());
    for (int64_t d = 0; d < 3; ++d) {
      EXPECT_TRUE(parity([d](const std::vector<Tensor>& in) { return softmax(in[0], d); }, {nc},
                         {true}, tol_for(dt, true)))
          << "non-contiguous, dim " << d;
      EXPECT_TRUE(parity([d](const std::vector<Tensor>& in) { return log_softmax(in[0], d); }, {nc},
                         {true}, tol_for(dt, true)))
          << "non-contiguous, dim " << d;
    }
  }
}

TEST(CudaSoftmax, HalfTypesComputeInF32) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 200;
  for (DType dt : {DType::bf16, DType::f16}) {
    for (const Shape& s : {Shape{7, 10}, Shape{257, 1000}, Shape{3, 1500}, Shape{4, 6, 5}}) {
      Tensor x = random_cpu(s, seed++, dt, -4.0, 4.0);
      for (bool log : {false, true}) {
        auto f = [log](const std::vector<Tensor>& in) {
          return log ? log_softmax(in[0], 1) : softmax(in[0], 1);
        };
        EXPECT_TRUE(parity(f, {x}, {true}, tol_for(dt, true)))
            << dtype_name(dt) << " " << shape_str(s) << " log " << log;
      }
    }
  }
}

TEST(CudaSoftmax, ExtremeLogitsEmptyAndScalar) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = tensor({1000, -1000, 0, -1000, -1000, -1000}, {2, 3}, dt);
    EXPECT_TRUE(gpu_close(softmax(x.to(gpu()), 1), softmax(x, 1), tol_for(dt)));
    EXPECT_TRUE(gpu_close(log_softmax(x.to(gpu()), 1), log_softmax(x, 1), tol_for(dt)));
    EXPECT_TRUE(gpu_close(log_softmax(x.to(gpu()), 0), log_softmax(x, 0), tol_for(dt)));
    Tensor s = full({}, 5.0, dt, gpu());
    EXPECT_DOUBLE_EQ(softmax(s, 0).item(), 1.0);
    EXPECT_DOUBLE_EQ(log_softmax(s, -1).item(), 0.0);
    EXPECT_EQ(softmax(zeros({0, 3}, dt, gpu()), 1).shape(), (Shape{0, 3}));
  }
}

// Labels in [0, C) with every `ignore_every`-th row (if > 0) set to ignore_index.
Tensor make_labels(int64_t n, int64_t c, uint64_t seed, int64_t ignore_every, int64_t ignore) {
  Generator gen(seed);
  Tensor lab = randint(0, c, {n}, gen);
  if (ignore_every > 0) {
    for (int64_t i = 0; i < n; i += ignore_every) lab.set({i}, static_cast<double>(ignore));
  }
  return lab;
}

TEST(CudaCrossEntropy, EveryReductionSmoothingAndShape) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 300;
  for (DType dt : {DType::f32, DType::f64}) {
    for (int64_t n : kRows) {
      for (int64_t c :
           {int64_t(1), int64_t(3), int64_t(10), int64_t(33), int64_t(1000), int64_t(1500)}) {
        Tensor x = random_cpu({n, c}, seed++, dt, -5.0, 5.0);
        Tensor lab = make_labels(n, c, seed++, n > 2 ? 3 : 0, -100);
        for (double eps : {0.0, 0.1}) {
          for (Reduction r : {Reduction::mean, Reduction::sum, Reduction::none}) {
            CrossEntropyOptions o;
            o.label_smoothing = eps;
            o.reduction = r;
            auto f = [o](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], o); };
            EXPECT_TRUE(parity(f, {x, lab}, {true, false}, tol_for(dt, true)))
                << dtype_name(dt) << " [" << n << ", " << c << "] eps " << eps << " reduction "
                << static_cast<int>(r);
          }
        }
      }
    }
  }
}

TEST(CudaCrossEntropy, NonContiguousLogitsI32LabelsAndHalf) {
  MEL_REQUIRE_GPU();
  CrossEntropyOptions o;
  o.label_smoothing = 0.2;
  auto f = [o](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], o); };
  Tensor nc = random_strided_cpu({37, 11}, 400, DType::f32);
  ASSERT_FALSE(nc.is_contiguous());
  Tensor lab = make_labels(37, 11, 401, 0, -100);
  EXPECT_TRUE(parity(f, {nc, lab}, {true, false}, tol_for(DType::f32, true)));
  EXPECT_TRUE(parity(f, {nc, lab.to(DType::i32)}, {true, false}, tol_for(DType::f32, true)));
  for (DType dt : {DType::bf16, DType::f16}) {
    Tensor x = random_cpu({19, 10}, 402, dt, -3.0, 3.0);
    EXPECT_TRUE(parity(f, {x, make_labels(19, 10, 403, 4, -100)}, {true, false}, tol_for(dt, true)))
        << dtype_name(dt);
  }
}

TEST(CudaCrossEntropy, IgnoredRowsExtremeLogitsAndBadLabels) {
  MEL_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    // every row ignored: the mean is 0 / 0 = NaN on both devices, the gradient zero
    Tensor x = random_cpu({4, 5}, 500, dt);
    Tensor all_ignored = full({4}, 7.0, DType::i64);
    CrossEntropyOptions o;
    o.ignore_index = 7;
    auto f = [o](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], o); };
    EXPECT_TRUE(parity(f, {x, all_ignored}, {true, false}, tol_for(dt, true)));
    EXPECT_TRUE(std::isnan(cross_entropy(x.to(gpu()), all_ignored.to(gpu()), o).item()));
    // -inf and huge logits stay finite without smoothing, as on the CPU
    Tensor ext = tensor({1000, -1000, 0, -INFINITY, 3, 1}, {2, 3}, dt);
    Tensor lab = tensor_i64({0, 1}, {2});
    EXPECT_TRUE(parity([](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1]); },
                       {ext, lab}, {true, false}, tol_for(dt, true)));
    // a label out of range (5 of 5 classes) cannot be reported without a host round trip: its
    // row is NaN
    Tensor bad = tensor_i64({0, 5}, {2});
    CrossEntropyOptions none;
    none.reduction = Reduction::none;
    Tensor rows = cross_entropy(x.slice(0, 0, 2).to(gpu()), bad.to(gpu()), none);
    std::vector<double> v = rows.to_vector();
    EXPECT_TRUE(std::isfinite(v[0]));
    EXPECT_TRUE(std::isnan(v[1]));
  }
  EXPECT_MEL_ERROR(cross_entropy(zeros({2, 3}, DType::f32, gpu()), tensor_i64({0, 1}, {2})),
                   "cross_entropy", "different devices");
}

}  // namespace
}  // namespace mel::testing
