// CPU elementwise kernels: unary math (and its backward), binary arithmetic (and its backward),
// comparisons and where, with broadcasting through strides; the ops come from one table.
#pragma once
#include <cstdint>

#include "kernels/elementwise_ops.h"
#include "kernels/strided.h"

namespace mel::kernels::cpu {

// The op codes and their expressions come from the shared table (kernels/elementwise_ops.h).
using kernels::BinaryOp;
using kernels::CompareOp;
using kernels::UnaryArgs;
using kernels::UnaryOp;

// y = op(x); operand 0 of `it` is y, operand 1 is x. T: float or double.
template <class T>
void unary(UnaryOp op, UnaryArgs args, const Iter<2>& it, T* y, const T* x);
// gx = gy * op'(x); all contiguous with n elements. Only the tensor the op's backward reads
// (grad_reads(op): x, y = op(x), or neither) must be given; the other may be null.
template <class T>
void unary_backward(UnaryOp op, UnaryArgs args, int64_t n, const T* x, const T* y, const T* gy,
                    T* gx);

// out = a op b; operands of `it`: 0 out, 1 a, 2 b. T: float, double, int32_t, int64_t, uint8_t.
template <class T>
void binary(BinaryOp op, const Iter<3>& it, T* out, const T* a, const T* b);

// The gradient of operand `which` (0: a, 1: b) of out = a op b, over the output's shape:
// operands of `it`: 0 grad (written), 1 g (the incoming gradient), 2 a, 3 b, 4 y = a op b. An
// operand the op's gradient does not read may be any readable array of the iteration's extent (g
// itself, say). T: float or double.
template <class T>
void binary_backward(BinaryOp op, int which, const Iter<5>& it, T* grad, const T* g, const T* a,
                     const T* b, const T* y);

// out = (a op b) as 0/1 bytes.
template <class T>
void compare(CompareOp op, const Iter<3>& it, uint8_t* out, const T* a, const T* b);

// out = cond ? a : b; operands: 0 out, 1 cond, 2 a, 3 b.
template <class T>
void where(const Iter<4>& it, T* out, const uint8_t* cond, const T* a, const T* b);

}  // namespace mel::kernels::cpu
