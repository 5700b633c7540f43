// The elementwise op tables: every unary, binary and comparison op declared once (forward,
// derivative, what backward reads), with host/device functors that the CPU and the CUDA kernels
// both compile.
#pragma once
#include <math.h>

#include <cstdint>
#include <type_traits>

#include "kernels/half.h"
#ifndef __CUDACC__
#include "kernels/fast_math.h"
#endif

namespace mel::kernels {

// ---- math shared by both backends (float and double overloads; libm on the host, CUDA's on the
// device), so that one expression is written once for every backend -------------------------------

MEL_HOST_DEVICE inline float m_exp(float v) {
  return ::expf(v);
}
MEL_HOST_DEVICE inline double m_exp(double v) {
  return ::exp(v);
}
MEL_HOST_DEVICE inline float m_log(float v) {
  return ::logf(v);
}
MEL_HOST_DEVICE inline double m_log(double v) {
  return ::log(v);
}
MEL_HOST_DEVICE inline float m_sqrt(float v) {
  return ::sqrtf(v);
}
MEL_HOST_DEVICE inline double m_sqrt(double v) {
  return ::sqrt(v);
}
MEL_HOST_DEVICE inline float m_tanh(float v) {
  return ::tanhf(v);
}
MEL_HOST_DEVICE inline double m_tanh(double v) {
  return ::tanh(v);
}
MEL_HOST_DEVICE inline float m_erf(float v) {
  return ::erff(v);
}
MEL_HOST_DEVICE inline double m_erf(double v) {
  return ::erf(v);
}
MEL_HOST_DEVICE inline float m_abs(float v) {
  return ::fabsf(v);
}
MEL_HOST_DEVICE inline double m_abs(double v) {
  return ::fabs(v);
}
MEL_HOST_DEVICE inline float m_pow(float v, float p) {
  return ::powf(v, p);
}
MEL_HOST_DEVICE inline double m_pow(double v, double p) {
  return ::pow(v, p);
}

namespace ew_math {

inline constexpr double kSqrt2OverPi = 0.79788456080286535588;
inline constexpr double kGeluC = 0.044715;
inline constexpr double kInvSqrt2 = 0.70710678118654752440;
inline constexpr double kInvSqrt2Pi = 0.39894228040143267794;

// Both branches keep exp's argument <= 0, so neither overflows.
template <class T>
MEL_HOST_DEVICE inline T sigmoid_of(T v) {
  return v >= T(0) ? T(1) / (T(1) + m_exp(-v)) : m_exp(v) / (T(1) + m_exp(v));
}
template <class T>
MEL_HOST_DEVICE inline T gelu_tanh_of(T v) {
  T u = T(kSqrt2OverPi) * (v + T(kGeluC) * v * v * v);
  return T(0.5) * v * (T(1) + m_tanh(u));
}
template <class T>
MEL_HOST_DEVICE inline T gelu_tanh_grad(T v) {
  T u = T(kSqrt2OverPi) * (v + T(kGeluC) * v * v * v);
  T t = m_tanh(u);
  T du = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluC) * v * v);
  return T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * du;
}
template <class T>
MEL_HOST_DEVICE inline T gelu_erf_of(T v) {
  return T(0.5) * v * (T(1) + m_erf(v * T(kInvSqrt2)));
}
template <class T>
MEL_HOST_DEVICE inline T gelu_erf_grad(T v) {
  T cdf = T(0.5) * (T(1) + m_erf(v * T(kInvSqrt2)));
  return cdf + v * T(kInvSqrt2Pi) * m_exp(T(-0.5) * v * v);
}
#ifndef __CUDACC__
// f32 on the CPU: erf and exp from kernels/fast_math.h, which GCC vectorises (libm's erff and
// expf are one call per element; GELU was a sixth of a GPT training step). Absolute error in the
// CDF at most 1.5e-7. f64 (the gradient checks) and the GPU keep the library functions.
inline float gelu_erf_of(float v) {
  return 0.5f * v * (1.0f + erf_fast(v * static_cast<float>(kInvSqrt2)));
}
inline float gelu_erf_grad(float v) {
  const float cdf = 0.5f * (1.0f + erf_fast(v * static_cast<float>(kInvSqrt2)));
  return cdf + v * static_cast<float>(kInvSqrt2Pi) * exp_fast(-0.5f * v * v);
}
#endif
template <class T>
MEL_HOST_DEVICE inline T silu_grad(T v) {
  T s = sigmoid_of(v);
  return s * (T(1) + v * (T(1) - s));
}
template <class T>
MEL_HOST_DEVICE inline T pow_grad(T v, T p) {
  if (p == T(0)) return T(0);
  if (p == T(1)) return T(1);
  if (p == T(2)) return T(2) * v;
  return p * m_pow(v, p - T(1));
}
template <class T>
MEL_HOST_DEVICE inline T sign_of(T v) {
  return v > T(0) ? T(1) : (v < T(0) ? T(-1) : T(0));
}
// 1 where lo <= v <= hi (clamp passes the gradient there), else 0.
template <class T>
MEL_HOST_DEVICE inline T in_range(T v, T lo, T hi) {
  return (v >= lo && v <= hi) ? T(1) : T(0);
}
// Integer division by zero is undefined in C++; it is defined as 0 here, like a masked lane.
template <class T>
MEL_HOST_DEVICE inline T div_of(T u, T v) {
  if constexpr (std::is_integral_v<T>) {
    return v == T(0) ? T(0) : static_cast<T>(u / v);
  } else {
    return u / v;
  }
}

}  // namespace ew_math

// ---- unary ops ---------------------------------------------------------------------------------
// One line per op: name; `plain` (core generates `Tensor name(const Tensor&)`) or `args` (it reads
// p.a, p.b and core has a hand-written function: pow(x, e), clamp(x, lo, hi)); what its backward
// reads (none, the input x or the output y); y = f(x); and dy/dx written with x or y (only the one
// it reads is valid). `p.square` says pow's exponent is exactly 2. Everything else (enums, names,
// CPU and CUDA kernel switches, autograd's save rule, core's named functions, the test catalogue's
// completeness check) follows from this table.
// clang-format off
#define MEL_UNARY_OPS(X)                                                                        \
  /* name      takes  reads   forward y = f(x)                       dy/dx                   */ \
  X(neg,       plain, none,   -x,                                    T(-1))                     \
  X(exp,       plain, output, m_exp(x),                              y)                         \
  X(log,       plain, input,  m_log(x),                              T(1) / x)                  \
  X(sqrt,      plain, output, m_sqrt(x),                             T(0.5) / y)                \
  X(rsqrt,     plain, output, T(1) / m_sqrt(x),                      T(-0.5) * y * y * y)       \
  X(abs,       plain, input,  m_abs(x),                              sign_of(x))                \
  X(tanh,      plain, output, m_tanh(x),                             T(1) - y * y)              \
  X(sigmoid,   plain, output, sigmoid_of(x),                         y * (T(1) - y))            \
  X(relu,      plain, input,  x > T(0) ? x : T(0),                   x > T(0) ? T(1) : T(0))    \
  X(gelu_tanh, plain, input,  gelu_tanh_of(x),                       gelu_tanh_grad(x))         \
  X(gelu_erf,  plain, input,  gelu_erf_of(x),                        gelu_erf_grad(x))          \
  X(silu,      plain, input,  x * sigmoid_of(x),                     silu_grad(x))              \
  X(pow,       args,  input,  p.square ? x * x : m_pow(x, p.a),      pow_grad(x, p.a))          \
  X(clamp,     args,  input,  x < p.a ? p.a : (x > p.b ? p.b : x),   in_range(x, p.a, p.b))
// clang-format on

enum class UnaryOp : uint8_t {
#define MEL_X(name, ...) name,
  MEL_UNARY_OPS(MEL_X)
#undef MEL_X
};

#define MEL_X(...) +1
inline constexpr int kUnaryOpCount = 0 MEL_UNARY_OPS(MEL_X);
#undef MEL_X

// What a backward pass must keep: a chain of activations then holds one tensor per op, not two.
enum class GradReads : uint8_t { none, input, output };

// An op's arguments as the kernels read them (converted once per call from UnaryArgs).
template <class T>
struct UnaryParams {
  T a = T(0), b = T(0);
  bool square = false;
};

// The host-side arguments: pow: a = exponent; clamp: a = min, b = max.
struct UnaryArgs {
  double a = 0;
  double b = 0;
  template <class T>
  UnaryParams<T> params() const {
    return UnaryParams<T>{static_cast<T>(a), static_cast<T>(b), a == 2.0};
  }
};

// Unary<op>::forward(x, p) and ::derivative(x, y, p); a missing table entry has no specialisation
// and fails to compile wherever it is used.
template <UnaryOp Op>
struct Unary;

#define MEL_X(NAME, TAKES, READS, FORWARD, DERIVATIVE)                       \
  template <>                                                                \
  struct Unary<UnaryOp::NAME> {                                              \
    static constexpr GradReads reads = GradReads::READS;                     \
    template <class T>                                                       \
    MEL_HOST_DEVICE static T forward(T x, const UnaryParams<T>& p) {         \
      using namespace ew_math;                                               \
      (void)p;                                                               \
      return FORWARD;                                                        \
    }                                                                        \
    template <class T>                                                       \
    MEL_HOST_DEVICE static T derivative(T x, T y, const UnaryParams<T>& p) { \
      using namespace ew_math;                                               \
      (void)x;                                                               \
      (void)y;                                                               \
      (void)p;                                                               \
      return DERIVATIVE;                                                     \
    }                                                                        \
  };
MEL_UNARY_OPS(MEL_X)
#undef MEL_X

inline constexpr const char* kUnaryOpNames[] = {
#define MEL_X(name, ...) #name,
    MEL_UNARY_OPS(MEL_X)
#undef MEL_X
};
inline constexpr GradReads kUnaryGradReads[] = {
#define MEL_X(name, takes, reads, ...) GradReads::reads,
    MEL_UNARY_OPS(MEL_X)
#undef MEL_X
};
static_assert(sizeof(kUnaryOpNames) / sizeof(kUnaryOpNames[0]) == kUnaryOpCount);

constexpr const char* unary_op_name(UnaryOp op) {
  return kUnaryOpNames[static_cast<int>(op)];
}
constexpr GradReads grad_reads(UnaryOp op) {
  return kUnaryGradReads[static_cast<int>(op)];
}

// ---- binary ops --------------------------------------------------------------------------------
// One line per op: name, out = f(a, b), and the gradients of a and b from the incoming gradient g
// (and a, b, the output y). A gradient that is exactly `g` is passed through without a kernel.
// maximum / minimum keep the first operand unless the comparison is true (NaN included) and send
// the gradient to a on ties.
// clang-format off
#define MEL_BINARY_OPS(X)                                                       \
  /* name     out = f(a, b)    gradient of a          gradient of b          */ \
  X(add,      a + b,           g,                     g)                        \
  X(sub,      a - b,           g,                     -g)                       \
  X(mul,      a * b,           g * b,                 g * a)                    \
  X(div,      div_of(a, b),    g / b,                 -((g / b) * y))           \
  X(maximum,  a < b ? b : a,   a >= b ? g : T(0),     a >= b ? T(0) : g)        \
  X(minimum,  b < a ? b : a,   a <= b ? g : T(0),     a <= b ? T(0) : g)
// clang-format on

enum class BinaryOp : uint8_t {
#define MEL_X(name, ...) name,
  MEL_BINARY_OPS(MEL_X)
#undef MEL_X
};

#define MEL_X(...) +1
inline constexpr int kBinaryOpCount = 0 MEL_BINARY_OPS(MEL_X);
#undef MEL_X

namespace ew_detail {
constexpr bool same_text(const char* a, const char* b) {
  while (*a && *a == *b) ++a, ++b;
  return *a == *b;
}
constexpr bool ident_char(char c) {
  return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
// Whether the expression text mentions the one-letter variable `v` (as a whole identifier): what
// a gradient formula reads, and so what autograd must keep for it.
constexpr bool mentions(const char* expr, char v) {
  for (int i = 0; expr[i]; ++i) {
    if (expr[i] == v && (i == 0 || !ident_char(expr[i - 1])) && !ident_char(expr[i + 1])) {
      return true;
    }
  }
  return false;
}
}  // namespace ew_detail

template <BinaryOp Op>
struct Binary;

#define MEL_X(NAME, FORWARD, GRAD_A, GRAD_B)                                       \
  template <>                                                                      \
  struct Binary<BinaryOp::NAME> {                                                  \
    static constexpr bool grad_a_is_g = ew_detail::same_text(#GRAD_A, "g");        \
    static constexpr bool grad_b_is_g = ew_detail::same_text(#GRAD_B, "g");        \
    static constexpr bool reads_a = ew_detail::mentions(#GRAD_A " " #GRAD_B, 'a'); \
    static constexpr bool reads_b = ew_detail::mentions(#GRAD_A " " #GRAD_B, 'b'); \
    static constexpr bool reads_y = ew_detail::mentions(#GRAD_A " " #GRAD_B, 'y'); \
    template <class T>                                                             \
    MEL_HOST_DEVICE static T forward(T a, T b) {                                   \
      using namespace ew_math;                                                     \
      return static_cast<T>(FORWARD);                                              \
    }                                                                              \
    template <class T>                                                             \
    MEL_HOST_DEVICE static T grad_a(T g, T a, T b, T y) {                          \
      using namespace ew_math;                                                     \
      (void)a;                                                                     \
      (void)b;                                                                     \
      (void)y;                                                                     \
      return GRAD_A;                                                               \
    }                                                                              \
    template <class T>                                                             \
    MEL_HOST_DEVICE static T grad_b(T g, T a, T b, T y) {                          \
      using namespace ew_math;                                                     \
      (void)a;                                                                     \
      (void)b;                                                                     \
      (void)y;                                                                     \
      return GRAD_B;                                                               \
    }                                                                              \
  };
MEL_BINARY_OPS(MEL_X)
#undef MEL_X

inline constexpr const char* kBinaryOpNames[] = {
#define MEL_X(name, ...) #name,
    MEL_BINARY_OPS(MEL_X)
#undef MEL_X
};
inline constexpr bool kBinaryGradIsG[][2] = {
#define MEL_X(name, ...) {Binary<BinaryOp::name>::grad_a_is_g, Binary<BinaryOp::name>::grad_b_is_g},
    MEL_BINARY_OPS(MEL_X)
#undef MEL_X
};
inline constexpr bool kBinaryGradReads[][3] = {
#define MEL_X(name, ...)                                             \
  {Binary<BinaryOp::name>::reads_a, Binary<BinaryOp::name>::reads_b, \
   Binary<BinaryOp::name>::reads_y},
    MEL_BINARY_OPS(MEL_X)
#undef MEL_X
};
static_assert(sizeof(kBinaryOpNames) / sizeof(kBinaryOpNames[0]) == kBinaryOpCount);
static_assert(!Binary<BinaryOp::add>::reads_a && Binary<BinaryOp::mul>::reads_b &&
              Binary<BinaryOp::div>::reads_y && !Binary<BinaryOp::div>::reads_a);

constexpr const char* binary_op_name(BinaryOp op) {
  return kBinaryOpNames[static_cast<int>(op)];
}
// Whether the gradients of `op` read a (0), b (1) or the output y (2): what autograd keeps.
constexpr bool binary_grad_reads(BinaryOp op, int what) {
  return kBinaryGradReads[static_cast<int>(op)][what];
}
// True when operand `which` (0: a, 1: b) receives the incoming gradient unchanged.
constexpr bool binary_grad_is_g(BinaryOp op, int which) {
  return kBinaryGradIsG[static_cast<int>(op)][which];
}

// ---- comparisons (u8 0/1 results, not differentiable) ------------------------------------------
// clang-format off
#define MEL_COMPARE_OPS(X) \
  X(eq, a == b) X(ne, a != b) X(lt, a < b) X(le, a <= b) X(gt, a > b) X(ge, a >= b)
// clang-format on

enum class CompareOp : uint8_t {
#define MEL_X(name, ...) name,
  MEL_COMPARE_OPS(MEL_X)
#undef MEL_X
};

template <CompareOp Op>
struct Compare;

#define MEL_X(NAME, EXPR)                            \
  template <>                                        \
  struct Compare<CompareOp::NAME> {                  \
    template <class T>                               \
    MEL_HOST_DEVICE static uint8_t apply(T a, T b) { \
      return (EXPR) ? uint8_t(1) : uint8_t(0);       \
    }                                                \
  };
MEL_COMPARE_OPS(MEL_X)
#undef MEL_X

inline constexpr const char* kCompareOpNames[] = {
#define MEL_X(name, ...) #name,
    MEL_COMPARE_OPS(MEL_X)
#undef MEL_X
};

}  // namespace mel::kernels
