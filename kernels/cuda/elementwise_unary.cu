// The unary kernels of kernels/cuda/elementwise.h, generated from the op table of
// kernels/elementwise_ops.h (the expressions the CPU kernels compile too).
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/elementwise_impl.cuh"

namespace mel::kernels::cuda {
namespace {

template <class T, UnaryOp Op>
struct UnaryF {
  UnaryParams<T> p;
  __device__ __forceinline__ T operator()(T v) const { return Unary<Op>::forward(v, p); }
};

// gx = gy * op'(in), `in` being what the op's backward reads (x, y or nothing).
template <class T, UnaryOp Op>
struct GradF {
  UnaryParams<T> p;
  __device__ __forceinline__ T operator()(T in, T gy) const {
    if constexpr (Unary<Op>::reads == GradReads::output) {
      return gy * Unary<Op>::derivative(T(0), in, p);
    } else {
      return gy * Unary<Op>::derivative(in, T(0), p);
    }
  }
};

template <class T, UnaryOp Op>
struct ConstGradF {
  UnaryParams<T> p;
  __device__ __forceinline__ T operator()(T gy) const {
    return gy * Unary<Op>::derivative(T(0), T(0), p);
  }
};

template <class T, UnaryOp Op>
void run_unary(const UnaryParams<T>& p, const Iter<2>& it, T* y, const T* x, cudaStream_t stream) {
  ew::launch(it, stream, UnaryF<T, Op>{p}, y, x);
}

template <class T, UnaryOp Op>
void run_grad(const UnaryParams<T>& p, int64_t n, const T* x, const T* y, const T* gy, T* gx,
              cudaStream_t stream) {
  constexpr GradReads reads = Unary<Op>::reads;
  if constexpr (reads == GradReads::none) {
    ew::launch_contiguous(n, stream, ConstGradF<T, Op>{p}, gx, gy);
  } else {
    ew::launch_contiguous(n, stream, GradF<T, Op>{p}, gx, reads == GradReads::output ? y : x, gy);
  }
}

}  // namespace

template <class T>
void unary(UnaryOp op, UnaryArgs args, const Iter<2>& it, T* y, const T* x, cudaStream_t stream) {
  const UnaryParams<T> p = args.params<T>();
  switch (op) {
#define MEL_X(NAME, ...) \
  case UnaryOp::NAME:    \
    return run_unary<T, UnaryOp::NAME>(p, it, y, x, stream);
    MEL_UNARY_OPS(MEL_X)
#undef MEL_X
  }
}

template <class T>
void unary_backward(UnaryOp op, UnaryArgs args, int64_t n, const T* x, const T* y, const T* gy,
                    T* gx, cudaStream_t stream) {
  const UnaryParams<T> p = args.params<T>();
  switch (op) {
#define MEL_X(NAME, ...) \
  case UnaryOp::NAME:    \
    return run_grad<T, UnaryOp::NAME>(p, n, x, y, gy, gx, stream);
    MEL_UNARY_OPS(MEL_X)
#undef MEL_X
  }
}

#define MEL_INSTANTIATE_UNARY(T)                                                                 \
  template void unary<T>(UnaryOp, UnaryArgs, const Iter<2>&, T*, const T*, cudaStream_t);        \
  template void unary_backward<T>(UnaryOp, UnaryArgs, int64_t, const T*, const T*, const T*, T*, \
                                  cudaStream_t);
MEL_INSTANTIATE_UNARY(float)
MEL_INSTANTIATE_UNARY(double)
#undef MEL_INSTANTIATE_UNARY

}  // namespace mel::kernels::cuda
