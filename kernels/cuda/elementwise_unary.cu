#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/elementwise_impl.cuh"

namespace mel::kernels::cuda {
namespace {

constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluC = 0.044715;
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

// Single and double precision libm calls by argument type (the CPU kernels use std:: overloads).
__device__ __forceinline__ float m_exp(float v) {
  return ::expf(v);
}
__device__ __forceinline__ double m_exp(double v) {
  return ::exp(v);
}
__device__ __forceinline__ float m_log(float v) {
  return ::logf(v);
}
__device__ __forceinline__ double m_log(double v) {
  return ::log(v);
}
__device__ __forceinline__ float m_sqrt(float v) {
  return ::sqrtf(v);
}
__device__ __forceinline__ double m_sqrt(double v) {
  return ::sqrt(v);
}
__device__ __forceinline__ float m_tanh(float v) {
  return ::tanhf(v);
}
__device__ __forceinline__ double m_tanh(double v) {
  return ::tanh(v);
}
__device__ __forceinline__ float m_erf(float v) {
  return ::erff(v);
}
__device__ __forceinline__ double m_erf(double v) {
  return ::erf(v);
}
__device__ __forceinline__ float m_abs(float v) {
  return ::fabsf(v);
}
__device__ __forceinline__ double m_abs(double v) {
  return ::fabs(v);
}
__device__ __forceinline__ float m_pow(float v, float p) {
  return ::powf(v, p);
}
__device__ __forceinline__ double m_pow(double v, double p) {
  return ::pow(v, p);
}

template <class T>
__device__ __forceinline__ T sigmoid_of(T v) {
  return v >= T(0) ? T(1) / (T(1) + m_exp(-v)) : m_exp(v) / (T(1) + m_exp(v));
}

// y = op(x), the same expressions as kernels/cpu/elementwise.cpp.
template <class T, UnaryOp Op>
struct UnaryF {
  T a, b;
  bool square;  // pow with exponent exactly 2: the CPU multiplies instead of calling pow

  __device__ __forceinline__ T operator()(T v) const {
    if constexpr (Op == UnaryOp::neg) {
      return -v;
    } else if constexpr (Op == UnaryOp::exp) {
      return m_exp(v);
    } else if constexpr (Op == UnaryOp::log) {
      return m_log(v);
    } else if constexpr (Op == UnaryOp::sqrt) {
      return m_sqrt(v);
    } else if constexpr (Op == UnaryOp::rsqrt) {
      return T(1) / m_sqrt(v);
    } else if constexpr (Op == UnaryOp::abs) {
      return m_abs(v);
    } else if constexpr (Op == UnaryOp::tanh) {
      return m_tanh(v);
    } else if constexpr (Op == UnaryOp::sigmoid) {
      return sigmoid_of(v);
    } else if constexpr (Op == UnaryOp::relu) {
      return v > T(0) ? v : T(0);
    } else if constexpr (Op == UnaryOp::gelu_tanh) {
      T u = T(kSqrt2OverPi) * (v + T(kGeluC) * v * v * v);
      return T(0.5) * v * (T(1) + m_tanh(u));
    } else if constexpr (Op == UnaryOp::gelu_erf) {
      return T(0.5) * v * (T(1) + m_erf(v * T(kInvSqrt2)));
    } else if constexpr (Op == UnaryOp::silu) {
      return v * sigmoid_of(v);
    } else if constexpr (Op == UnaryOp::pow) {
      return square ? v * v : m_pow(v, a);
    } else {  // clamp: a = min, b = max
      return v < a ? a : (v > b ? b : v);
    }
  }
};

// op'(in), where `in` is y for the ops whose derivative reads the output, x for the others.
template <class T, UnaryOp Op>
__device__ __forceinline__ T derivative(T in, T a, T b) {
  if constexpr (Op == UnaryOp::exp) {
    return in;
  } else if constexpr (Op == UnaryOp::log) {
    return T(1) / in;
  } else if constexpr (Op == UnaryOp::sqrt) {
    return T(0.5) / in;
  } else if constexpr (Op == UnaryOp::rsqrt) {
    return T(-0.5) * in * in * in;
  } else if constexpr (Op == UnaryOp::abs) {
    return in > T(0) ? T(1) : (in < T(0) ? T(-1) : T(0));
  } else if constexpr (Op == UnaryOp::tanh) {
    return T(1) - in * in;
  } else if constexpr (Op == UnaryOp::sigmoid) {
    return in * (T(1) - in);
  } else if constexpr (Op == UnaryOp::relu) {
    return in > T(0) ? T(1) : T(0);
  } else if constexpr (Op == UnaryOp::gelu_tanh) {
    T u = T(kSqrt2OverPi) * (in + T(kGeluC) * in * in * in);
    T t = m_tanh(u);
    T du = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluC) * in * in);
    return T(0.5) * (T(1) + t) + T(0.5) * in * (T(1) - t * t) * du;
  } else if constexpr (Op == UnaryOp::gelu_erf) {
    T cdf = T(0.5) * (T(1) + m_erf(in * T(kInvSqrt2)));
    return cdf + in * T(kInvSqrt2Pi) * m_exp(T(-0.5) * in * in);
  } else if constexpr (Op == UnaryOp::silu) {
    T s = sigmoid_of(in);
    return s * (T(1) + in * (T(1) - s));
  } else if constexpr (Op == UnaryOp::pow) {
    if (a == T(0)) return T(0);
    if (a == T(1)) return T(1);
    if (a == T(2)) return T(2) * in;
    return a * m_pow(in, a - T(1));
  } else {  // clamp
    return (in >= a && in <= b) ? T(1) : T(0);
  }
}

template <class T, UnaryOp Op>
struct GradF {
  T a, b;
  __device__ __forceinline__ T operator()(T in, T gy) const {
    return gy * derivative<T, Op>(in, a, b);
  }
};

template <class T>
struct NegGradF {
  __device__ __forceinline__ T operator()(T gy) const { return gy * T(-1); }
};

constexpr bool reads_output(UnaryOp op) {
  return op == UnaryOp::exp || op == UnaryOp::sqrt || op == UnaryOp::rsqrt || op == UnaryOp::tanh ||
         op == UnaryOp::sigmoid;
}

template <class T, UnaryOp Op>
void run_unary(UnaryArgs args, const Iter<2>& it, T* y, const T* x, cudaStream_t stream) {
  UnaryF<T, Op> f{static_cast<T>(args.a), static_cast<T>(args.b), args.a == 2.0};
  ew::launch(it, stream, f, y, x);
}

template <class T, UnaryOp Op>
void run_grad(UnaryArgs args, int64_t n, const T* x, const T* y, const T* gy, T* gx,
              cudaStream_t stream) {
  if constexpr (Op == UnaryOp::neg) {
    ew::launch_contiguous(n, stream, NegGradF<T>{}, gx, gy);
  } else {
    GradF<T, Op> f{static_cast<T>(args.a), static_cast<T>(args.b)};
    ew::launch_contiguous(n, stream, f, gx, reads_output(Op) ? y : x, gy);
  }
}

}  // namespace

template <class T>
void unary(UnaryOp op, UnaryArgs args, const Iter<2>& it, T* y, const T* x, cudaStream_t stream) {
  switch (op) {
#define MEL_UNARY_CASE(name) \
  case UnaryOp::name:        \
    return run_unary<T, UnaryOp::name>(args, it, y, x, stream);
    MEL_UNARY_CASE(neg)
    MEL_UNARY_CASE(exp)
    MEL_UNARY_CASE(log)
    MEL_UNARY_CASE(sqrt)
    MEL_UNARY_CASE(rsqrt)
    MEL_UNARY_CASE(abs)
    MEL_UNARY_CASE(tanh)
    MEL_UNARY_CASE(sigmoid)
    MEL_UNARY_CASE(relu)
    MEL_UNARY_CASE(gelu_tanh)
    MEL_UNARY_CASE(gelu_erf)
    MEL_UNARY_CASE(silu)
    MEL_UNARY_CASE(pow)
    MEL_UNARY_CASE(clamp)
#undef MEL_UNARY_CASE
  }
}

template <class T>
void unary_backward(UnaryOp op, UnaryArgs args, int64_t n, const T* x, const T* y, const T* gy,
                    T* gx, cudaStream_t stream) {
  switch (op) {
#define MEL_GRAD_CASE(name) \
  case UnaryOp::name:       \
    return run_grad<T, UnaryOp::name>(args, n, x, y, gy, gx, stream);
    MEL_GRAD_CASE(neg)
    MEL_GRAD_CASE(exp)
    MEL_GRAD_CASE(log)
    MEL_GRAD_CASE(sqrt)
    MEL_GRAD_CASE(rsqrt)
    MEL_GRAD_CASE(abs)
    MEL_GRAD_CASE(tanh)
    MEL_GRAD_CASE(sigmoid)
    MEL_GRAD_CASE(relu)
    MEL_GRAD_CASE(gelu_tanh)
    MEL_GRAD_CASE(gelu_erf)
    MEL_GRAD_CASE(silu)
    MEL_GRAD_CASE(pow)
    MEL_GRAD_CASE(clamp)
#undef MEL_GRAD_CASE
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
