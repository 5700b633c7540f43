// CPU elementwise kernels: unary math (and its backward), binary arithmetic and comparisons with
// broadcasting through strides, where, and dtype-converting copies.
#pragma once
#include <cstdint>
#include <type_traits>

#include "kernels/half.h"
#include "kernels/strided.h"

namespace mel::kernels::cpu {

enum class UnaryOp : uint8_t {
  neg,
  exp,
  log,
  sqrt,
  rsqrt,
  abs,
  tanh,
  sigmoid,
  relu,
  gelu_tanh,
  gelu_erf,
  silu,
  pow,
  clamp
};
// pow: a = exponent; clamp: a = min, b = max.
struct UnaryArgs {
  double a = 0;
  double b = 0;
};

// y = op(x); operand 0 of `it` is y, operand 1 is x. T: float or double.
template <class T>
void unary(UnaryOp op, UnaryArgs args, const Iter<2>& it, T* y, const T* x);
// gx = gy * op'(x); all contiguous with n elements. x may be null for exp, sqrt, rsqrt, tanh,
// sigmoid and neg (their derivative reads y = op(x)); y may be null for all the others.
template <class T>
void unary_backward(UnaryOp op, UnaryArgs args, int64_t n, const T* x, const T* y, const T* gy,
                    T* gx);

enum class BinaryOp : uint8_t { add, sub, mul, div, maximum, minimum };
// out = a op b; operands of `it`: 0 out, 1 a, 2 b. T: float, double, int32_t, int64_t.
template <class T>
void binary(BinaryOp op, const Iter<3>& it, T* out, const T* a, const T* b);

enum class CompareOp : uint8_t { eq, ne, lt, le, gt, ge };
// out = (a op b) as 0/1 bytes.
template <class T>
void compare(CompareOp op, const Iter<3>& it, uint8_t* out, const T* a, const T* b);

// out = cond ? a : b; operands: 0 out, 1 cond, 2 a, 3 b.
template <class T>
void where(const Iter<4>& it, T* out, const uint8_t* cond, const T* a, const T* b);

// ---- dtype-converting copy (header-only: instantiated for every pair of types) ----
template <class D, class S>
inline D convert(S s) {
  if constexpr (std::is_same_v<D, S>) {
    return s;
  } else if constexpr (std::is_same_v<D, bfloat16> || std::is_same_v<D, half>) {
    return D(static_cast<float>(s));
  } else if constexpr (std::is_same_v<S, bfloat16> || std::is_same_v<S, half>) {
    return static_cast<D>(static_cast<float>(s));
  } else {
    return static_cast<D>(s);
  }
}

// dst = convert(src); operands of `it`: 0 dst, 1 src.
template <class D, class S>
void copy(const Iter<2>& it, D* dst, const S* src) {
  parallel_runs(it, [&](const int64_t* off, int64_t n, const int64_t* st) {
    D* d = dst + off[0];
    const S* s = src + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; ++i) d[i] = convert<D>(s[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) d[i * st[0]] = convert<D>(s[i * st[1]]);
    }
  });
}

// dst[i] = value for a strided destination (operand 0 of a one-operand walk).
template <class T>
void fill(const Iter<1>& it, T* dst, T value) {
  parallel_runs(it, [&](const int64_t* off, int64_t n, const int64_t* st) {
    T* d = dst + off[0];
    for (int64_t i = 0; i < n; ++i) d[i * st[0]] = value;
  });
}

}  // namespace mel::kernels::cpu
