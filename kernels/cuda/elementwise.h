// CUDA elementwise kernels: the twins of kernels/cpu/elementwise.h's unary math (and backward),
// binary arithmetic, comparisons and where, on a stream. Every pointer is device memory.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/elementwise_ops.h"
#include "kernels/strided.h"

namespace mel::kernels::cuda {

// One set of op codes for both backends (kernels/elementwise_ops.h), so core chooses the op once.
using kernels::BinaryOp;
using kernels::CompareOp;
using kernels::UnaryArgs;
using kernels::UnaryOp;

// y = op(x); operand 0 of `it` is y, operand 1 is x. T: float or double.
template <class T>
void unary(UnaryOp op, UnaryArgs args, const Iter<2>& it, T* y, const T* x, cudaStream_t stream);
// gx = gy * op'(x); all contiguous with n elements. Only the tensor the op's backward reads
// (grad_reads(op)) must be given; the other may be null.
template <class T>
void unary_backward(UnaryOp op, UnaryArgs args, int64_t n, const T* x, const T* y, const T* gy,
                    T* gx, cudaStream_t stream);

// out = a op b; operands of `it`: 0 out, 1 a, 2 b. T: float, double, int32_t, int64_t, uint8_t.
// Integer division by zero gives 0, as on the CPU.
template <class T>
void binary(BinaryOp op, const Iter<3>& it, T* out, const T* a, const T* b, cudaStream_t stream);

// The gradient of operand `which` of out = a op b over the output's shape (see the CPU kernel).
template <class T>
void binary_backward(BinaryOp op, int which, const Iter<5>& it, T* grad, const T* g, const T* a,
                     const T* b, const T* y, cudaStream_t stream);

// out = (a op b) as 0/1 bytes.
template <class T>
void compare(CompareOp op, const Iter<3>& it, uint8_t* out, const T* a, const T* b,
             cudaStream_t stream);

// out = cond ? a : b; operands: 0 out, 1 cond, 2 a, 3 b.
template <class T>
void where(const Iter<4>& it, T* out, const uint8_t* cond, const T* a, const T* b,
           cudaStream_t stream);

}  // namespace mel::kernels::cuda
