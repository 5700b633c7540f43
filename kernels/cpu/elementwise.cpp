#include "kernels/cpu/elementwise.h"

#include <cmath>

namespace mel::kernels::cpu {
namespace {

constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluC = 0.044715;
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

template <class T, class F>
void map1(const Iter<2>& it, T* y, const T* x, F f) {
  parallel_runs(it, [&](const int64_t* off, int64_t n, const int64_t* st) {
    T* yp = y + off[0];
    const T* xp = x + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; ++i) yp[i] = f(xp[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) yp[i * st[0]] = f(xp[i * st[1]]);
    }
  });
}

template <class T, class F>
void map2(const Iter<3>& it, T* out, const T* a, const T* b, F f) {
  parallel_runs(it, [&](const int64_t* off, int64_t n, const int64_t* st) {
    T* o = out + off[0];
    const T* ap = a + off[1];
    const T* bp = b + off[2];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = f(ap[i], bp[i]);
    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
      const T bv = *bp;
      for (int64_t i = 0; i < n; ++i) o[i] = f(ap[i], bv);
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = f(ap[i * st[1]], bp[i * st[2]]);
    }
  });
}

template <class T, class F>
void grad_map(int64_t n, const T* x, const T* y, const T* gy, T* gx, F f) {
  parallel_for(n, 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) gx[i] = gy[i] * f(x ? x[i] : T(0), y ? y[i] : T(0));
  });
}

template <class T>
T sigmoid_of(T v) {
  return v >= T(0) ? T(1) / (T(1) + std::exp(-v)) : std::exp(v) / (T(1) + std::exp(v));
}

}  // namespace

template <class T>
void unary(UnaryOp op, UnaryArgs args, const Iter<2>& it, T* y, const T* x) {
  switch (op) {
    case UnaryOp::neg:
      return map1(it, y, x, [](T v) { return -v; });
    case UnaryOp::exp:
      return map1(it, y, x, [](T v) { return std::exp(v); });
    case UnaryOp::log:
      return map1(it, y, x, [](T v) { return std::log(v); });
    case UnaryOp::sqrt:
      return map1(it, y, x, [](T v) { return std::sqrt(v); });
    case UnaryOp::rsqrt:
      return map1(it, y, x, [](T v) { return T(1) / std::sqrt(v); });
    case UnaryOp::abs:
      return map1(it, y, x, [](T v) { return std::abs(v); });
    case UnaryOp::tanh:
      return map1(it, y, x, [](T v) { return std::tanh(v); });
    case UnaryOp::sigmoid:
      return map1(it, y, x, [](T v) { return sigmoid_of(v); });
    case UnaryOp::relu:
      return map1(it, y, x, [](T v) { return v > T(0) ? v : T(0); });
    case UnaryOp::gelu_tanh:
      return map1(it, y, x, [](T v) {
        T u = T(kSqrt2OverPi) * (v + T(kGeluC) * v * v * v);
        return T(0.5) * v * (T(1) + std::tanh(u));
      });
    case UnaryOp::gelu_erf:
      return map1(it, y, x, [](T v) { return T(0.5) * v * (T(1) + std::erf(v * T(kInvSqrt2))); });
    case UnaryOp::silu:
      return map1(it, y, x, [](T v) { return v * sigmoid_of(v); });
    case UnaryOp::pow: {
      const T p = static_cast<T>(args.a);
      if (args.a == 2.0) return map1(it, y, x, [](T v) { return v * v; });
      return map1(it, y, x, [p](T v) { return std::pow(v, p); });
    }
    case UnaryOp::clamp: {
      const T lo = static_cast<T>(args.a), hi = static_cast<T>(args.b);
      return map1(it, y, x, [lo, hi](T v) { return v < lo ? lo : (v > hi ? hi : v); });
    }
  }
}

template <class T>
void unary_backward(UnaryOp op, UnaryArgs args, int64_t n, const T* x, const T* y, const T* gy,
                    T* gx) {
  switch (op) {
    case UnaryOp::neg:
      return grad_map(n, x, y, gy, gx, [](T, T) { return T(-1); });
    case UnaryOp::exp:
      return grad_map(n, x, y, gy, gx, [](T, T yv) { return yv; });
    case UnaryOp::log:
      return grad_map(n, x, y, gy, gx, [](T xv, T) { return T(1) / xv; });
    case UnaryOp::sqrt:
      return grad_map(n, x, y, gy, gx, [](T, T yv) { return T(0.5) / yv; });
    case UnaryOp::rsqrt:
      return grad_map(n, x, y, gy, gx, [](T, T yv) { return T(-0.5) * yv * yv * yv; });
    case UnaryOp::abs:
      return grad_map(n, x, y, gy, gx,
                      [](T xv, T) { return xv > T(0) ? T(1) : (xv < T(0) ? T(-1) : T(0)); });
    case UnaryOp::tanh:
      return grad_map(n, x, y, gy, gx, [](T, T yv) { return T(1) - yv * yv; });
    case UnaryOp::sigmoid:
      return grad_map(n, x, y, gy, gx, [](T, T yv) { return yv * (T(1) - yv); });
    case UnaryOp::relu:
      return grad_map(n, x, y, gy, gx, [](T xv, T) { return xv > T(0) ? T(1) : T(0); });
    case UnaryOp::gelu_tanh:
      return grad_map(n, x, y, gy, gx, [](T v, T) {
        T u = T(kSqrt2OverPi) * (v + T(kGeluC) * v * v * v);
        T t = std::tanh(u);
        T du = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluC) * v * v);
        return T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * du;
      });
    case UnaryOp::gelu_erf:
      return grad_map(n, x, y, gy, gx, [](T v, T) {
        T cdf = T(0.5) * (T(1) + std::erf(v * T(kInvSqrt2)));
        return cdf + v * T(kInvSqrt2Pi) * std::exp(T(-0.5) * v * v);
      });
    case UnaryOp::silu:
      return grad_map(n, x, y, gy, gx, [](T v, T) {
        T s = sigmoid_of(v);
        return s * (T(1) + v * (T(1) - s));
      });
    case UnaryOp::pow: {
      const T p = static_cast<T>(args.a);
      return grad_map(n, x, y, gy, gx, [p](T v, T) {
        if (p == T(0)) return T(0);
        if (p == T(1)) return T(1);
        if (p == T(2)) return T(2) * v;
        return p * std::pow(v, p - T(1));
      });
    }
    case UnaryOp::clamp: {
      const T lo = static_cast<T>(args.a), hi = static_cast<T>(args.b);
      return grad_map(n, x, y, gy, gx,
                      [lo, hi](T v, T) { return (v >= lo && v <= hi) ? T(1) : T(0); });
    }
  }
}

template <class T>
void binary(BinaryOp op, const Iter<3>& it, T* out, const T* a, const T* b) {
  switch (op) {
    case BinaryOp::add:
      return map2(it, out, a, b, [](T u, T v) { return u + v; });
    case BinaryOp::sub:
      return map2(it, out, a, b, [](T u, T v) { return u - v; });
    case BinaryOp::mul:
      return map2(it, out, a, b, [](T u, T v) { return u * v; });
    case BinaryOp::div:
      if constexpr (std::is_integral_v<T>) {
        // integer division by zero is undefined in C++; define it as 0 like a masked lane
        return map2(it, out, a, b, [](T u, T v) { return v == T(0) ? T(0) : T(u / v); });
      } else {
        return map2(it, out, a, b, [](T u, T v) { return u / v; });
      }
    case BinaryOp::maximum:
      return map2(it, out, a, b, [](T u, T v) { return u < v ? v : u; });
    case BinaryOp::minimum:
      return map2(it, out, a, b, [](T u, T v) { return v < u ? v : u; });
  }
}

template <class T>
void compare(CompareOp op, const Iter<3>& it, uint8_t* out, const T* a, const T* b) {
  auto run = [&](auto f) {
    parallel_runs(it, [&](const int64_t* off, int64_t n, const int64_t* st) {
      uint8_t* o = out + off[0];
      const T* ap = a + off[1];
      const T* bp = b + off[2];
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = f(ap[i * st[1]], bp[i * st[2]]) ? 1 : 0;
    });
  };
  switch (op) {
    case CompareOp::eq:
      return run([](T u, T v) { return u == v; });
    case CompareOp::ne:
      return run([](T u, T v) { return u != v; });
    case CompareOp::lt:
      return run([](T u, T v) { return u < v; });
    case CompareOp::le:
      return run([](T u, T v) { return u <= v; });
    case CompareOp::gt:
      return run([](T u, T v) { return u > v; });
    case CompareOp::ge:
      return run([](T u, T v) { return u >= v; });
  }
}

template <class T>
void where(const Iter<4>& it, T* out, const uint8_t* cond, const T* a, const T* b) {
  parallel_runs(it, [&](const int64_t* off, int64_t n, const int64_t* st) {
    T* o = out + off[0];
    const uint8_t* c = cond + off[1];
    const T* ap = a + off[2];
    const T* bp = b + off[3];
    for (int64_t i = 0; i < n; ++i) o[i * st[0]] = c[i * st[1]] ? ap[i * st[2]] : bp[i * st[3]];
  });
}

#define MEL_INSTANTIATE_FLOAT(T)                                            \
  template void unary<T>(UnaryOp, UnaryArgs, const Iter<2>&, T*, const T*); \
  template void unary_backward<T>(UnaryOp, UnaryArgs, int64_t, const T*, const T*, const T*, T*);
MEL_INSTANTIATE_FLOAT(float)
MEL_INSTANTIATE_FLOAT(double)

#define MEL_INSTANTIATE_NUMERIC(T)                                                   \
  template void binary<T>(BinaryOp, const Iter<3>&, T*, const T*, const T*);         \
  template void compare<T>(CompareOp, const Iter<3>&, uint8_t*, const T*, const T*); \
  template void where<T>(const Iter<4>&, T*, const uint8_t*, const T*, const T*);
MEL_INSTANTIATE_NUMERIC(float)
MEL_INSTANTIATE_NUMERIC(double)
MEL_INSTANTIATE_NUMERIC(int32_t)
MEL_INSTANTIATE_NUMERIC(int64_t)
MEL_INSTANTIATE_NUMERIC(uint8_t)

}  // namespace mel::kernels::cpu
