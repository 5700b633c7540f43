// The binary, comparison and where kernels of kernels/cuda/elementwise.h, generated from the op
// tables of kernels/elementwise_ops.h (the expressions the CPU kernels compile too).
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/elementwise_impl.cuh"

namespace mel::kernels::cuda {
namespace {

template <class T, BinaryOp Op>
struct BinaryF {
  __device__ __forceinline__ T operator()(T u, T v) const { return Binary<Op>::forward(u, v); }
};

template <class T, BinaryOp Op, int Which>
struct BinaryGradF {
  __device__ __forceinline__ T operator()(T g, T a, T b, T y) const {
    if constexpr (Which == 0) {
      return Binary<Op>::grad_a(g, a, b, y);
    } else {
      return Binary<Op>::grad_b(g, a, b, y);
    }
  }
};

template <class T, CompareOp Op>
struct CompareF {
  __device__ __forceinline__ uint8_t operator()(T u, T v) const { return Compare<Op>::apply(u, v); }
};

template <class T>
struct WhereF {
  __device__ __forceinline__ T operator()(uint8_t c, T u, T v) const { return c ? u : v; }
};

template <class T, BinaryOp Op>
void run_binary_grad(int which, const Iter<5>& it, T* grad, const T* g, const T* a, const T* b,
                     const T* y, cudaStream_t stream) {
  if (which == 0) {
    ew::launch(it, stream, BinaryGradF<T, Op, 0>{}, grad, g, a, b, y);
  } else {
    ew::launch(it, stream, BinaryGradF<T, Op, 1>{}, grad, g, a, b, y);
  }
}

}  // namespace

template <class T>
void binary(BinaryOp op, const Iter<3>& it, T* out, const T* a, const T* b, cudaStream_t stream) {
  switch (op) {
#define MEL_X(NAME, ...) \
  case BinaryOp::NAME:   \
    return ew::launch(it, stream, BinaryF<T, BinaryOp::NAME>{}, out, a, b);
    MEL_BINARY_OPS(MEL_X)
#undef MEL_X
  }
}

template <class T>
void binary_backward(BinaryOp op, int which, const Iter<5>& it, T* grad, const T* g, const T* a,
                     const T* b, const T* y, cudaStream_t stream) {
  switch (op) {
#define MEL_X(NAME, ...) \
  case BinaryOp::NAME:   \
    return run_binary_grad<T, BinaryOp::NAME>(which, it, grad, g, a, b, y, stream);
    MEL_BINARY_OPS(MEL_X)
#undef MEL_X
  }
}

template <class T>
void compare(CompareOp op, const Iter<3>& it, uint8_t* out, const T* a, const T* b,
             cudaStream_t stream) {
  switch (op) {
#define MEL_X(NAME, ...) \
  case CompareOp::NAME:  \
    return ew::launch(it, stream, CompareF<T, CompareOp::NAME>{}, out, a, b);
    MEL_COMPARE_OPS(MEL_X)
#undef MEL_X
  }
}

template <class T>
void where(const Iter<4>& it, T* out, const uint8_t* cond, const T* a, const T* b,
           cudaStream_t stream) {
  ew::launch(it, stream, WhereF<T>{}, out, cond, a, b);
}

#define MEL_INSTANTIATE_NUMERIC(T)                                                                 \
  template void binary<T>(BinaryOp, const Iter<3>&, T*, const T*, const T*, cudaStream_t);         \
  template void compare<T>(CompareOp, const Iter<3>&, uint8_t*, const T*, const T*, cudaStream_t); \
  template void where<T>(const Iter<4>&, T*, const uint8_t*, const T*, const T*, cudaStream_t);
MEL_INSTANTIATE_NUMERIC(float)
MEL_INSTANTIATE_NUMERIC(double)
MEL_INSTANTIATE_NUMERIC(int32_t)
MEL_INSTANTIATE_NUMERIC(int64_t)
MEL_INSTANTIATE_NUMERIC(uint8_t)
#undef MEL_INSTANTIATE_NUMERIC

#define MEL_INSTANTIATE_GRAD(T)                                                           \
  template void binary_backward<T>(BinaryOp, int, const Iter<5>&, T*, const T*, const T*, \
                                   const T*, const T*, cudaStream_t);
MEL_INSTANTIATE_GRAD(float)
MEL_INSTANTIATE_GRAD(double)
#undef MEL_INSTANTIATE_GRAD

}  // namespace mel::kernels::cuda
