// One catalogue of op cases that every backend iterates (the pattern of ggml's test-backend-ops
// and PyTorch's OpInfo): the f64 gradient checks run every case on the CPU, the GPU parity tests
// compare every case's forward and backward with the CPU. A table op (kernels/elementwise_ops.h)
// without a case fails OpCatalogue.EveryTableOpHasACase.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/mel.h"

namespace mel::testing {

// One input of a case: its shape, the range its values are drawn from, and whether it is a
// non-contiguous view, differentiable, or an integer index tensor (values in [0, index_limit)).
struct OpInput {
  Shape shape;
  double lo = -1.0, hi = 1.0;
  bool strided = false;
  bool grad = true;
  int64_t index_limit = 0;  // > 0: an i64 index tensor
};

struct OpCase {
  std::string op;       // the op's name (the table's name for table ops)
  std::string variant;  // what this case exercises ("broadcast", "strided", ...)
  std::vector<OpInput> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  bool accumulates = false;  // sums over many terms: looser GPU tolerance in f32
  std::string name() const { return variant.empty() ? op : op + "/" + variant; }
};

// The inputs of `c` as CPU tensors of `dtype` (f64 for gradient checks), drawn from `seed`.
inline std::vector<Tensor> make_inputs(const OpCase& c, DType dtype, uint64_t seed) {
  std::vector<Tensor> out;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const OpInput& in = c.inputs[i];
    Generator gen(seed * 101 + i);
    if (in.index_limit > 0) {
      out.push_back(randint(0, in.index_limit, in.shape, gen));
      continue;
    }
    Tensor t;
    if (in.strided && in.shape.size() >= 2) {
      Shape rev(in.shape.rbegin(), in.shape.rend());
      Shape perm;
      for (int64_t d = static_cast<int64_t>(in.shape.size()) - 1; d >= 0; --d) perm.push_back(d);
      t = rand(rev, gen, DType::f64, in.lo, in.hi).to(dtype).permute(perm).detach();
    } else {
      t = rand(in.shape, gen, DType::f64, in.lo, in.hi).to(dtype);
    }
    if (in.grad) t.requires_grad_();
    out.push_back(t);
  }
  return out;
}

using Ins = std::vector<Tensor>;

// The table ops: one line per unary op (on a domain where it is smooth), binary ops broadcasting
// both ways, and strided inputs.
inline void add_elementwise_cases(std::vector<OpCase>& c) {
  const OpInput x{{3, 5}, -2.0, 2.0};
  const OpInput pos{{3, 5}, 0.2, 3.0};
  auto unary_case = [&](UnaryOp op, OpInput in, UnaryArgs args = {}, std::string variant = "") {
    c.push_back({kernels::unary_op_name(op), variant, {in}, [op, args](const Ins& t) {
                   return unary(op, t[0], args);
                 }});
  };
  // ---- unary table ops: one line each (domains where the op is smooth) ----
  unary_case(UnaryOp::neg, x);
  unary_case(UnaryOp::exp, x);
  unary_case(UnaryOp::log, pos);
  unary_case(UnaryOp::sqrt, pos);
  unary_case(UnaryOp::rsqrt, pos);
  unary_case(UnaryOp::abs, x);
  unary_case(UnaryOp::tanh, x);
  unary_case(UnaryOp::sigmoid, x);
  unary_case(UnaryOp::relu, x);
  unary_case(UnaryOp::gelu_tanh, x);
  unary_case(UnaryOp::gelu_erf, x);
  unary_case(UnaryOp::silu, x);
  unary_case(UnaryOp::pow, x, {3.0, 0});
  unary_case(UnaryOp::pow, pos, {-1.5, 0}, "negative exponent");
  unary_case(UnaryOp::pow, x, {2.0, 0}, "square");
  unary_case(UnaryOp::clamp, x, {-0.5, 0.7});
  unary_case(UnaryOp::tanh, {{4, 3}, -2.0, 2.0, true}, {}, "strided");
  // ---- binary table ops: broadcasting both ways ----
  auto binary_case = [&](BinaryOp op, OpInput a, OpInput b, std::string variant = "") {
    c.push_back({kernels::binary_op_name(op), variant, {a, b}, [op](const Ins& t) {
                   return binary(op, t[0], t[1]);
                 }});
  };
  const OpInput row{{5}, 0.5, 1.5}, col{{3, 1}, 0.5, 1.5};
  binary_case(BinaryOp::add, x, row);
  binary_case(BinaryOp::sub, x, col);
  binary_case(BinaryOp::mul, row, col);
  binary_case(BinaryOp::div, x, col);
  binary_case(BinaryOp::div, row, x, "broadcast a");
  binary_case(BinaryOp::maximum, x, row);
  binary_case(BinaryOp::minimum, x, col);
  binary_case(BinaryOp::mul, {{3, 5}, -1, 1, true}, {{3, 5}, 0.5, 2.0, true}, "strided");
}

// The other differentiable ops.
inline void add_nn_cases(std::vector<OpCase>& c) {
  const OpInput x{{3, 5}, -2.0, 2.0};
  const OpInput row{{5}, 0.5, 1.5};
  c.push_back({"where", "", {x, row}, [](const Ins& t) {
                 return where(gt(t[0].detach(), zeros({}, t[0].dtype(), t[0].device())), t[0],
                              t[1]);
               }});
  c.push_back({"softmax", "", {{{4, 6}}}, [](const Ins& t) { return softmax(t[0], 1); }});
  c.push_back({"log_softmax", "middle dim", {{{2, 5, 3}}}, [](const Ins& t) {
                 return log_softmax(t[0], 1);
               }});
  c.push_back({"cross_entropy",
               "label smoothing",
               {{{6, 5}}, {{6}, 0, 0, false, false, 5}},
               [](const Ins& t) {
                 CrossEntropyOptions o;
                 o.label_smoothing = 0.1;
                 return cross_entropy(t[0], t[1].to(t[0].device()), o);
               }});
  c.push_back({"matmul",
               "batched broadcast",
               {{{2, 3, 4}}, {{4, 5}}},
               [](const Ins& t) { return matmul(t[0], t[1]); },
               true});
  c.push_back({"conv2d",
               "stride padding",
               {{{2, 3, 6, 5}}, {{4, 3, 3, 3}}, {{4}}},
               [](const Ins& t) {
                 Conv2dOptions o;
                 o.stride = {2, 1};
                 o.padding = {1, 1};
                 return conv2d(t[0], t[1], t[2], o);
               },
               true});
  c.push_back({"max_pool2d", "", {{{2, 3, 6, 6}}}, [](const Ins& t) {
                 Pool2dOptions o;
                 o.kernel = {2, 2};
                 return max_pool2d(t[0], o);
               }});
  c.push_back({"avg_pool2d", "padding", {{{1, 2, 5, 5}}}, [](const Ins& t) {
                 Pool2dOptions o;
                 o.kernel = {3, 3};
                 o.stride = {2, 2};
                 o.padding = {1, 1};
                 return avg_pool2d(t[0], o);
               }});
  c.push_back({"adaptive_avg_pool2d", "", {{{1, 2, 5, 7}}}, [](const Ins& t) {
                 return adaptive_avg_pool2d(t[0], {2, 3});
               }});
  c.push_back({"batch_norm",
               "training",
               {{{4, 3, 2, 2}}, {{3}, 0.5, 1.5}, {{3}}},
               [](const Ins& t) {
                 return batch_norm(t[0], t[1], t[2], Tensor(), Tensor(), true, 0.1, 1e-5);
               },
               true});
  c.push_back({"batch_norm_relu",
               "training",
               {{{4, 3, 2, 2}}, {{3}, 0.5, 1.5}, {{3}}},
               [](const Ins& t) {
                 return batch_norm_relu(t[0], t[1], t[2], Tensor(), Tensor(), true, 0.1, 1e-5);
               },
               true});
  c.push_back({"layer_norm",
               "",
               {{{3, 4, 5}}, {{5}, 0.5, 1.5}, {{5}}},
               [](const Ins& t) { return layer_norm(t[0], {5}, t[1], t[2], 1e-5); },
               true});
  c.push_back({"sum", "dims", {{{3, 4, 5}}}, [](const Ins& t) { return sum(t[0], {0, 2}); }, true});
  c.push_back({"max", "dim", {{{3, 4}}}, [](const Ins& t) { return max(t[0], 1).first; }});
  c.push_back({"index_select", "", {{{5, 3}}, {{4}, 0, 0, false, false, 5}}, [](const Ins& t) {
                 return index_select(t[0], 0, t[1].to(t[0].device()));
               }});
  c.push_back({"concat", "", {{{2, 3}}, {{4, 3}}}, [](const Ins& t) {
                 return concat({t[0], t[1]}, 0);
               }});
  c.push_back({"causal_self_attention",
               "strided odd",
               {{{2, 7, 18}, -1.0, 1.0, true}},
               [](const Ins& t) { return causal_self_attention(t[0], 3); },
               true});
}

inline const std::vector<OpCase>& op_catalogue() {
  static const std::vector<OpCase> cases = [] {
    std::vector<OpCase> c;
    add_elementwise_cases(c);
    add_nn_cases(c);
    return c;
  }();
  return cases;
}

}  // namespace mel::testing
