// GPU indexing ops against the CPU: index_select, gather, one_hot, embedding (forward and backward
// with repeated indices), concat / stack, on odd and non-contiguous shapes, and the range errors.
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "cuda_testing.h"

namespace mel::testing {
namespace {

Tensor random_index(int64_t limit, const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  return randint(0, limit, shape, gen);
}

// Random values of `dt` (integers in [-100, 100)), contiguous or a transposed view.
Tensor values(const Shape& shape, uint64_t seed, DType dt, bool strided = false) {
  Tensor v =
      strided ? random_strided_cpu(shape, seed, DType::f64) : random_cpu(shape, seed, DType::f64);
  if (!is_floating(dt)) v = mul(v, 100.0);
  return v.to(dt);
}

// A GPU leaf with x's values and strides, requiring grad when x is floating.
Tensor gpu_leaf(const Tensor& x) {
  Tensor g = to_gpu_keep_strides(x);
  if (is_floating(x.dtype())) g.requires_grad_();
  return g;
}

Tensor cpu_leaf(const Tensor& x) {
  Tensor c = x.detach();
  if (is_floating(x.dtype())) c.requires_grad_();
  return c;
}

TEST(CudaIndex, IndexSelectForwardBackward) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 10;
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64}) {
    for (bool strided : {false, true}) {
      const Shape shape = {7, 33, 5};
      Tensor src = values(shape, ++seed, dt, strided);
      for (int64_t dim : {0, 1, -1}) {
        const int64_t size = shape[dim < 0 ? 2 : dim];
        for (int64_t k : {1, 13, 257}) {
          // k > size forces repeats; the i32 index exercises the conversion
          Tensor idx = random_index(size, {k}, ++seed);
          if (k == 13) idx = idx.to(DType::i32);
          Tensor xc = cpu_leaf(src), xg = gpu_leaf(src);
          Tensor yc = index_select(xc, dim, idx);
          Tensor yg = index_select(xg, dim, idx.to(gpu()));
          const std::string what = std::string(dtype_name(dt)) + " dim " + std::to_string(dim) +
                                   " k " + std::to_string(k) + (strided ? " strided" : "");
          ASSERT_TRUE(gpu_close(yg, yc, tol_for(dt))) << what;
          if (!is_floating(dt)) continue;
          Tensor gy = random_cpu(yc.shape(), ++seed, dt);
          yc.backward(gy);
          yg.backward(gy.to(gpu()));
          EXPECT_TRUE(gpu_close(xg.grad(), xc.grad(), tol_for(dt, true))) << what;
        }
      }
    }
  }
}

TEST(CudaIndex, IndexSelectEmptyIndex) {
  MEL_REQUIRE_GPU();
  Tensor x = random_cpu({4, 6}, 1).to(gpu()).requires_grad_();
  Tensor y = index_select(x, 1, zeros({0}, DType::i64, gpu()));
  EXPECT_EQ(y.shape(), (Shape{4, 0}));
  y.backward(zeros({4, 0}, DType::f32, gpu()));
  EXPECT_TRUE(gpu_close(x.grad(), zeros({4, 6}), tol_for(DType::f32)));
}

TEST(CudaIndex, GatherForwardBackward) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 100;
  for (DType dt : {DType::f32, DType::f64, DType::f16, DType::i64}) {
    for (bool strided : {false, true}) {
      const Shape xs = {9, 17, 4};
      Tensor src = values(xs, ++seed, dt, strided);
      for (int64_t dim : {0, 1, 2}) {
        // the gathered dimension larger than the input's (repeats), the others smaller or equal
        Shape is = {7, 13, 3};
        is[dim] = 2 * xs[dim] + 1;
        Tensor idx = random_index(xs[dim], is, ++seed);
        Tensor xc = cpu_leaf(src), xg = gpu_leaf(src);
        Tensor yc = gather(xc, dim, idx);
        Tensor yg = gather(xg, dim, idx.to(gpu()));
        const std::string what = std::string(dtype_name(dt)) + " dim " + std::to_string(dim) +
                                 (strided ? " strided" : "");
        ASSERT_TRUE(gpu_close(yg, yc, tol_for(dt))) << what;
        if (!is_floating(dt)) continue;
        Tensor gy = random_cpu(yc.shape(), ++seed, dt);
        yc.backward(gy);
        yg.backward(gy.to(gpu()));
        EXPECT_TRUE(gpu_close(xg.grad(), xc.grad(), tol_for(dt, true))) << what;
      }
    }
  }
}

TEST(CudaIndex, GatherZeroDimAndSingleLine) {
  MEL_REQUIRE_GPU();
  Tensor x = full({}, 3.5);
  Tensor idx = zeros({}, DType::i64);
  EXPECT_TRUE(gpu_close(gather(x.to(gpu()), 0, idx.to(gpu())), gather(x, 0, idx), {0, 0}));
  // one long line along dim 0 (a 1-D input): every index lands in the same line
  Tensor v = random_cpu({33}, 5).requires_grad_();
  Tensor vg = v.detach().to(gpu()).requires_grad_();
  Tensor i1 = random_index(33, {1000}, 6);
  Tensor yc = gather(v, 0, i1), yg = gather(vg, 0, i1.to(gpu()));
  ASSERT_TRUE(gpu_close(yg, yc, tol_for(DType::f32)));
  Tensor gy = random_cpu({1000}, 7);
  yc.backward(gy);
  yg.backward(gy.to(gpu()));
  EXPECT_TRUE(gpu_close(vg.grad(), v.grad(), tol_for(DType::f32, true)));
}

TEST(CudaIndex, OneHot) {
  MEL_REQUIRE_GPU();
  Tensor labels = random_index(10, {5, 7}, 3);
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64, DType::u8}) {
    Tensor c = one_hot(labels, 10, dt);
    Tensor g = one_hot(labels.to(gpu()), 10, dt);
    EXPECT_EQ(g.shape(), (Shape{5, 7, 10}));
    EXPECT_TRUE(gpu_close(g, c, {0, 0})) << dtype_name(dt);
  }
  Tensor l32 = random_index(3, {33}, 4).to(DType::i32);
  EXPECT_TRUE(gpu_close(one_hot(l32.to(gpu()), 3), one_hot(l32, 3), {0, 0}));
}

TEST(CudaIndex, EmbeddingRepeatedIndices) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 200;
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    // small vocabulary, many tokens: every row is hit many times (and row 0 as padding often)
    for (auto [V, E, shape] : {std::tuple<int64_t, int64_t, Shape>{37, 33, {4, 65}},
                               std::tuple<int64_t, int64_t, Shape>{5, 1, {1}},
                               std::tuple<int64_t, int64_t, Shape>{50, 128, {32, 129}}}) {
      Tensor w = random_cpu({V, E}, ++seed, dt);
      Tensor idx = random_index(V, shape, ++seed);
      if (idx.numel() > 8) idx.reshape({-1}).narrow(0, 0, idx.numel() / 4).fill_(0);
      Tensor wc = cpu_leaf(w), wg = gpu_leaf(w);
      Tensor yc = embedding(wc, idx), yg = embedding(wg, idx.to(gpu()));
      const std::string what = std::string(dtype_name(dt)) + " V " + std::to_string(V);
      ASSERT_TRUE(gpu_close(yg, yc, tol_for(dt))) << what;
      Tensor gy = random_cpu(yc.shape(), ++seed, dt);
      yc.backward(gy);
      yg.backward(gy.to(gpu()));
      EXPECT_TRUE(gpu_close(wg.grad(), wc.grad(), tol_for(dt, true))) << what;
      if (dt != DType::bf16) {
        // the sorted index_add adds in the CPU's order: bitwise the CPU's gradient
        EXPECT_TRUE(gpu_close(wg.grad(), wc.grad(), {0, 0})) << what << " (bitwise)";
      }
    }
  }
}

TEST(CudaIndex, ConcatAndStack) {
  MEL_REQUIRE_GPU();
  uint64_t seed = 300;
  for (DType dt : {DType::f32, DType::f64, DType::i64}) {
    for (int64_t dim : {0, 1, -1}) {
      Shape a = {3, 5, 7}, b = a, c = a;
      const int64_t d = dim < 0 ? 2 : dim;
      b[d] = 1;
      c[d] = 33;
      std::vector<Tensor> cpu_in, gpu_in;
      int i = 0;
      for (const Shape& s : {a, b, c}) {
        // the middle one transposed: concat must copy strided inputs
        Tensor t = values(s, ++seed, dt, i++ == 1);
        cpu_in.push_back(cpu_leaf(t));
        gpu_in.push_back(gpu_leaf(t));
      }
      Tensor yc = concat(cpu_in, dim), yg = concat(gpu_in, dim);
      ASSERT_TRUE(gpu_close(yg, yc, {0, 0})) << dtype_name(dt) << " dim " << dim;
      if (is_floating(dt)) {
        Tensor gy = random_cpu(yc.shape(), ++seed, dt);
        yc.backward(gy);
        yg.backward(gy.to(gpu()));
        for (size_t k = 0; k < 3; ++k) {
          EXPECT_TRUE(gpu_close(gpu_in[k].grad(), cpu_in[k].grad(), {0, 0})) << k;
        }
      }
    }
    std::vector<Tensor> cpu_in, gpu_in;
    for (int k = 0; k < 4; ++k) {
      Tensor t = values({7, 1, 3}, ++seed, dt);
      cpu_in.push_back(t);
      gpu_in.push_back(t.to(gpu()));
    }
    for (int64_t dim : {0, 2, 3}) {
      EXPECT_TRUE(gpu_close(stack(gpu_in, dim), stack(cpu_in, dim), {0, 0})) << dim;
    }
  }
}

TEST(CudaIndex, OutOfRangeIndicesAreErrors) {
  MEL_REQUIRE_GPU();
  Tensor x = random_cpu({4, 6}, 1).to(gpu());
  Tensor idx = tensor_i64({0, 5, 6, -1}, {4}).to(gpu());
  EXPECT_MEL_ERROR(index_select(x, 1, idx), "index 6 at position 2 is out of range",
                   "dimension 1 of size 6");
  EXPECT_MEL_ERROR(index_select(x, 0, tensor_i64({-3}, {1}).to(gpu())), "index -3 at position 0");
  Tensor gi = tensor_i64({0, 1, 2, 0, 1, 9}, {2, 3}).to(gpu());
  EXPECT_MEL_ERROR(gather(x, 1, gi), "index 9 at position [1, 2]");
  EXPECT_MEL_ERROR(one_hot(tensor_i64({1, 3}, {2}).to(gpu()), 3), "label 3 at position 1");
  EXPECT_MEL_ERROR(embedding(x, tensor_i64({1, 2, 4, 4}, {4}).to(gpu())), "index 4 at position 2",
                   "4 embeddings");
  // the index lives on the input's device
  EXPECT_MEL_ERROR(index_select(x, 0, tensor_i64({0}, {1})), "move it with .to(device)");
  EXPECT_MEL_ERROR(embedding(x, tensor_i64({0}, {1})), "move it with .to(device)");
  // a failed check leaves the device usable
  Tensor ok = index_select(x, 1, tensor_i64({5, 0}, {2}).to(gpu()));
  EXPECT_TRUE(gpu_close(ok, index_select(x.to(Device::cpu()), 1, tensor_i64({5, 0}, {2})), {0, 0}));
}

}  // namespace
}  // namespace mel::testing
