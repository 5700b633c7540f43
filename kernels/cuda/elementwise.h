// CUDA elementwise kernels: the twins of kernels/cpu/elementwise.h's unary math (and backward),
// binary arithmetic, comparisons and where, on a stream. Every pointer is device memory.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cpu/elementwise.h"
#include "kernels/strided.h"

namespace mel::kernels::cuda {

// One set of op codes for both backends, so core chooses the op once.
using cpu::BinaryOp;
using cpu::CompareOp;
using cpu::UnaryArgs;
using cpu::UnaryOp;

// y = op(x); operand 0 of `it` is y, operand 1 is x. T: float or double.
template <class T>
void unary(UnaryOp op, UnaryArgs args, const Iter<2>& it, T* y, const T* x, cudaStream_t stream);
// gx = gy * op'(x); all contiguous with n elements. x may be null for exp, sqrt, rsqrt, tanh,
// sigmoid and neg (their derivative reads y = op(x)); y may be null for all the others.
template <class T>
void unary_backward(UnaryOp op, UnaryArgs args, int64_t n, const T* x, const T* y, const T* gy,
                    T* gx, cudaStream_t stream);

// out = a op b; operands of `it`: 0 out, 1 a, 2 b. T: float, double, int32_t, int64_t, uint8_t.
// Integer division by zero gives 0, as on the CPU.
template <class T>
void binary(BinaryOp op, const Iter<3>& it, T* out, const T* a, const T* b, cudaStream_t stream);

// out = (a op b) as 0/1 bytes.
template <class T>
void compare(CompareOp op, const Iter<3>& it, uint8_t* out, const T* a, const T* b,
             cudaStream_t stream);

// out = cond ? a : b; operands: 0 out, 1 cond, 2 a, 3 b.
template <class T>
void where(const Iter<4>& it, T* out, const uint8_t* cond, const T* a, const T* b,
           cudaStream_t stream);

}  // namespace mel::kernels::cuda
