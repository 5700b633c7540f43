// Elementwise operations: arithmetic with broadcasting, unary math and activations, clamp, where,
// comparisons. All differentiable ones record autograd nodes; bf16/f16 inputs compute in f32.
#pragma once
#include "core/tensor.h"
#include "kernels/elementwise_ops.h"

namespace mel {

using kernels::BinaryOp;
using kernels::CompareOp;
using kernels::UnaryArgs;
using kernels::UnaryOp;

// ---- the table ops by code (kernels/elementwise_ops.h) ----
// y = op(x); differentiable; bf16/f16 compute in f32. Integral neg is 0 - x.
Tensor unary(UnaryOp op, const Tensor& x, UnaryArgs args = {});
// out = a op b with broadcasting (same dtype and device required); differentiable.
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
// (a op b) as u8 0/1, broadcasting; not differentiable.
Tensor compare(CompareOp op, const Tensor& a, const Tensor& b);

// ---- named forms, one per table entry: add(a, b) ... minimum(a, b); neg(x) ... silu(x) for the
// unary ops without arguments (gelu_tanh and gelu_erf included); eq(a, b) ... ge(a, b).
// maximum / minimum send the gradient to a on ties.
#define MEL_X(name, ...) Tensor name(const Tensor& a, const Tensor& b);
MEL_BINARY_OPS(MEL_X)
MEL_COMPARE_OPS(MEL_X)
#undef MEL_X
#define MEL_DECLARE_UNARY_plain(name) Tensor name(const Tensor& x);
#define MEL_DECLARE_UNARY_args(name)
#define MEL_X(name, takes, ...) MEL_DECLARE_UNARY_##takes(name)
MEL_UNARY_OPS(MEL_X)
#undef MEL_X

// scalar forms (the scalar takes the tensor's dtype)
Tensor add(const Tensor& a, double b);
Tensor sub(const Tensor& a, double b);
Tensor mul(const Tensor& a, double b);
Tensor div(const Tensor& a, double b);

// ---- unary ops with arguments ----
Tensor pow(const Tensor& x, double exponent);
Tensor clamp(const Tensor& x, double min, double max);  // gradient passes where min <= x <= max
enum class GeluApprox { none, tanh };                   // none: exact erf form
Tensor gelu(const Tensor& x, GeluApprox approx = GeluApprox::none);

// cond: u8 (0/1); a and b broadcast with cond. Gradient flows to a where cond, to b elsewhere.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

// ---- operators ----
inline Tensor operator+(const Tensor& a, const Tensor& b) {
  return add(a, b);
}
inline Tensor operator-(const Tensor& a, const Tensor& b) {
  return sub(a, b);
}
inline Tensor operator*(const Tensor& a, const Tensor& b) {
  return mul(a, b);
}
inline Tensor operator/(const Tensor& a, const Tensor& b) {
  return div(a, b);
}
inline Tensor operator+(const Tensor& a, double b) {
  return add(a, b);
}
inline Tensor operator-(const Tensor& a, double b) {
  return sub(a, b);
}
inline Tensor operator*(const Tensor& a, double b) {
  return mul(a, b);
}
inline Tensor operator/(const Tensor& a, double b) {
  return div(a, b);
}
inline Tensor operator+(double a, const Tensor& b) {
  return add(b, a);
}
inline Tensor operator*(double a, const Tensor& b) {
  return mul(b, a);
}
inline Tensor operator-(double a, const Tensor& b) {
  return add(neg(b), a);
}
inline Tensor operator-(const Tensor& x) {
  return neg(x);
}

}  // namespace mel
