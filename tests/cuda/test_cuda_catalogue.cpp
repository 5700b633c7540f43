// The op catalogue on the GPU: every case's forward and backward (the gradient of a fixed random
// projection of its output) matches the CPU kernels, in f32 and f64, with the inputs' strides.
#include <gtest/gtest.h>

#include "cuda_testing.h"
#include "op_catalogue.h"

namespace mel::testing {
namespace {

class CudaCatalogue : public ::testing::TestWithParam<size_t> {};

// Forward and input gradients of `c` on `inputs` (their device is where it runs).
std::vector<Tensor> run_case(const OpCase& c, const std::vector<Tensor>& inputs) {
  Tensor out = c.fn(inputs);
  std::vector<Tensor> results{out.detach()};
  Generator gen(99);
  Tensor r = rand(out.shape(), gen, DType::f64, -1.0, 1.0).to(out.dtype()).to(out.device());
  sum(mul(out, r)).backward();
  for (const Tensor& t : inputs) {
    if (t.requires_grad()) results.push_back(t.grad());
  }
  return results;
}

TEST_P(CudaCatalogue, ForwardAndBackwardMatchCpu) {
  MEL_REQUIRE_GPU();
  const OpCase& c = op_catalogue()[GetParam()];
  // matmuls run cuBLASLt, convolutions cuDNN
  if (c.name().starts_with("matmul") || c.name().starts_with("conv")) MEL_REQUIRE_VENDOR_LIBS();
  for (DType dt : {DType::f32, DType::f64}) {
    SCOPED_TRACE(c.name() + " " + dtype_name(dt));
    const std::vector<Tensor> cpu_in = make_inputs(c, dt, 11);
    std::vector<Tensor> gpu_in;
    for (const Tensor& t : cpu_in) {
      Tensor g = to_gpu_keep_strides(t.detach());
      if (t.requires_grad()) g.requires_grad_();
      gpu_in.push_back(g);
    }
    const std::vector<Tensor> want = run_case(c, cpu_in);
    const std::vector<Tensor> got = run_case(c, gpu_in);
    ASSERT_EQ(want.size(), got.size());
    const Tol tol = tol_for(dt, c.accumulates);
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_TRUE(gpu_close(got[i], want[i], tol)) << (i == 0 ? "forward" : "gradient");
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<size_t>& info) {
  std::string n = op_catalogue()[info.param].name();
  for (char& ch : n) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return n;
}

INSTANTIATE_TEST_SUITE_P(Ops, CudaCatalogue, ::testing::Range(size_t{0}, op_catalogue().size()),
                         case_name);

}  // namespace
}  // namespace mel::testing
